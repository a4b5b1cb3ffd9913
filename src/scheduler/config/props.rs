//! Bounded property tests of the scheduler config parser: arbitrary text, and a valid config with
//! one field set (or added) with an arbitrary JSON value, return Ok or Err and never panic.
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(i64::MAX)].prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::from("squaredcos_cap_v2")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

fn ddpm() -> Value {
    json!({"_class_name": "DDPMScheduler", "num_train_timesteps": 100, "beta_start": 0.001,
        "beta_end": 0.2, "beta_schedule": "linear", "variance_type": "fixed_large",
        "clip_sample": false, "prediction_type": "epsilon"})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = SchedulerConfig::from_json_str(&text);
    }

    #[test]
    fn one_field_set_to_anything_never_panics(
        pick in any::<prop::sample::Index>(),
        extra in "[a-z_]{1,12}",
        value in any_json(),
    ) {
        let mut cfg = ddpm();
        let obj = cfg.as_object_mut().unwrap();
        let key = match pick.index(obj.len() + 1) {
            i if i < obj.len() => obj.keys().nth(i).unwrap().clone(),
            _ => extra,
        };
        obj.insert(key, value);
        let _ = SchedulerConfig::from_json(&cfg);
    }
}
