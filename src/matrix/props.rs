//! Bounded property tests of the profile parser: arbitrary text, and the smoke profile with one
//! `key = value` line's value replaced by an arbitrary TOML value, load as Ok or Err and never
//! panic; what loads has every numeric setting in range.
use proptest::prelude::*;

use super::Profile;

/// A TOML value of the kinds settings hold, with the edge cases of each.
pub(crate) fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(2), Just(3)].prop_map(|i| i.to_string()),
        prop_oneof![
            Just("nan"),
            Just("inf"),
            Just("-inf"),
            Just("0.0"),
            Just("-0.5"),
            Just("1e300")
        ]
        .prop_map(String::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9_:@. -]{0,12}".prop_map(|s| format!("{s:?}")),
        proptest::collection::vec(-3i64..300, 0..3).prop_map(|v| format!("{v:?}")),
    ]
}

/// `text` with the value of its `pick`-th `key = value` line replaced.
pub(crate) fn replace_value(text: &str, pick: prop::sample::Index, value: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let settable: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let l = lines[i];
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .collect();
    let i = settable[pick.index(settable.len())];
    let key = lines[i].split_once(" = ").unwrap().0;
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[i] = format!("{key} = {value}");
    out.join("\n")
}

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let _ = Profile::load(root(), path.to_str().unwrap());
    }

    #[test]
    fn one_value_replaced_never_panics_and_what_loads_is_in_range(
        pick in any::<prop::sample::Index>(),
        value in toml_value(),
    ) {
        let smoke = std::fs::read_to_string(root().join("paper/profiles/smoke.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, replace_value(&smoke, pick, &value)).unwrap();
        if let Ok(p) = Profile::load(root(), path.to_str().unwrap()) {
            let m = &p.measure;
            prop_assert!(m.n >= 1 && m.batch >= 1 && m.threshold.is_finite() && m.threshold > 0.0);
            if let Some(f) = &p.finetune {
                prop_assert!(f.batch >= 1 && f.epochs >= 1 && f.learning_rate > 0.0);
            }
            let _ = p.cells(&super::Filter::default());
        }
    }
}
