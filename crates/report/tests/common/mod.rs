//! Shared fixtures of the integration tests (the library's own fixture run).
#![allow(dead_code, unused_imports)]
use std::path::Path;

pub use report::fixture::{manifest, verdicts};

pub fn run_dir(dir: &Path) {
    report::fixture::write_run_dir(dir).unwrap();
}
