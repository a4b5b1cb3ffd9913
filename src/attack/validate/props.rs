//! Bounded property tests of the cell config parser: arbitrary text, and a valid config with one
//! `key = value` line's value replaced by an arbitrary TOML value, read as Ok or Err and never
//! panic; what is read passes validation.
use proptest::prelude::*;

use super::super::AttackConfig;
use crate::matrix::props::{replace_value, toml_value};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.toml");
        std::fs::write(&path, text).unwrap();
        let _ = AttackConfig::from_toml_file(&path);
    }

    #[test]
    fn one_value_replaced_never_panics_and_what_is_read_is_valid(
        pick in any::<prop::sample::Index>(),
        value in toml_value(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.toml");
        std::fs::write(&path, replace_value(super::CELL, pick, &value)).unwrap();
        if let Ok(cfg) = AttackConfig::from_toml_file(&path) {
            prop_assert!(cfg.validate().is_ok());
            prop_assert!(cfg.train.accumulation().is_ok() || cfg.train.effective_batch % cfg.train.batch != 0);
        }
    }
}
