//! Bounded property tests of the UNet `config.json` parser: arbitrary text, and valid configs
//! with one field set to an arbitrary JSON value, return Ok or Err and never panic.
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// A JSON value of the kinds configs hold, with the edge cases of each.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(i64::MAX)].prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = UNet2DConfig::from_json_str(&text);
    }

    #[test]
    fn one_field_set_to_anything_never_panics(pick in any::<prop::sample::Index>(), value in any_json()) {
        let mut cfg = UNet2DConfig::scale(16, 1).to_json_value();
        let obj = cfg.as_object_mut().unwrap();
        let key = obj.keys().nth(pick.index(obj.len())).unwrap().clone();
        obj.insert(key, value);
        let _ = UNet2DConfig::from_json_value(cfg);
    }
}
