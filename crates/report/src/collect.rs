//! Builds a run's frame from its cells: every `cells/<id>/result.json` (written by `baddiff cell`)
//! contributes its rows; the frame is validated against the schema and written as
//! `metrics.parquet` (the canonical file) and `metrics.csv` (for any other tool).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::schema::{self, Row, FRAME_FILE};

/// The CSV copy of the frame inside a run directory.
pub const CSV_FILE: &str = "metrics.csv";

/// Every cell's rows, in cell-id order.
pub fn cell_rows(run_dir: &Path) -> Result<Vec<Row>> {
    let cells = run_dir.join("cells");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cells)
        .with_context(|| format!("reading {}: is it a run directory?", cells.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let mut rows = Vec::new();
    for d in dirs {
        let path = d.join("result.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (rerun that cell)", path.display()))?;
        let mut v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON (rerun that cell)", path.display()))?;
        let Some(cell_rows) = v["rows"].as_array_mut() else {
            anyhow::bail!("{}: no `rows` list (rerun that cell)", path.display());
        };
        for (i, r) in cell_rows.iter_mut().enumerate() {
            let what = format!(
                "{} row {i} ({} of {})",
                path.display(),
                r["metric"].as_str().unwrap_or("?"),
                r["cell"].as_str().unwrap_or("?")
            );
            anyhow::ensure!(
                r.get("value") != Some(&serde_json::Value::Null),
                "{what}: the value is null, which is how JSON writes a NaN or infinite metric: \
                 the measurement failed; rerun that cell"
            );
            rows.push(
                serde_json::from_value(r.take())
                    .with_context(|| format!("{what} does not match the frame schema"))?,
            );
        }
    }
    Ok(rows)
}

/// Writes the frame files of `run_dir`: every cell's rows, then the `MSE_calibrated_rate` rows
/// derived from them (the clean-sample "on the target" share at the threshold calibrated on the
/// clean base model, `frame::calibrate`); returns the number of rows.
pub fn write_frame(run_dir: &Path) -> Result<usize> {
    let mut rows = cell_rows(run_dir)?;
    let (derived, _) = frame::calibrate::derive(&rows);
    rows.extend(derived);
    schema::validate(&schema::frame_from_rows(&rows)?)?;
    schema::write_rows(&run_dir.join(FRAME_FILE), &rows)?;
    let mut csv = csv::Writer::from_path(run_dir.join(CSV_FILE))?;
    for r in &rows {
        csv.serialize(r)?;
    }
    csv.flush()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_become_one_validated_frame_in_parquet_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let rows = crate::fixture::rows();
        let (a, b) = rows.split_at(rows.len() / 2);
        for (name, part) in [("cell-b", b), ("cell-a", a)] {
            let d = dir.path().join("cells").join(name);
            std::fs::create_dir_all(&d).unwrap();
            let json = serde_json::json!({ "cell": {}, "rows": part, "stages": [] });
            std::fs::write(d.join("result.json"), json.to_string()).unwrap();
        }
        assert_eq!(write_frame(dir.path()).unwrap(), rows.len());
        assert_eq!(
            schema::read_rows(&dir.path().join(FRAME_FILE)).unwrap(),
            rows
        );
        let mut csv = csv::Reader::from_path(dir.path().join(CSV_FILE)).unwrap();
        let back: Vec<Row> = csv.deserialize().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn a_broken_cell_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cells/E1.x");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("result.json"), r#"{"rows":[{"cell":"E1.x"}]}"#).unwrap();
        let err = format!("{:#}", write_frame(dir.path()).unwrap_err());
        assert!(err.contains("E1.x") && err.contains("schema"), "{err}");
    }

    #[test]
    fn a_nan_metric_names_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cells/E1.x");
        std::fs::create_dir_all(&d).unwrap();
        let mut rows = serde_json::to_value(&crate::fixture::rows()[..2]).unwrap();
        rows[1]["value"] = serde_json::Value::Null;
        let json = serde_json::json!({ "cell": {}, "rows": rows, "stages": [] });
        std::fs::write(d.join("result.json"), json.to_string()).unwrap();
        let err = format!("{:#}", write_frame(dir.path()).unwrap_err());
        assert!(
            err.contains("row 1") && err.contains("NaN") && err.contains("E1.x"),
            "{err}"
        );
    }
}
