//! A run's `manifest.json` (what ran, on what, how long), which the report's appendix and the
//! claims' scale label both read.
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// Where a run's manifest lives inside its directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The run's manifest; `None` when the run has none.
pub fn read(run_dir: &Path) -> Result<Option<Value>> {
    read_json(&run_dir.join(MANIFEST_FILE))
}

/// A JSON file; `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{} is not valid JSON", path.display())
    })?))
}
