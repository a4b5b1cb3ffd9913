//! The metric frame: the contract between the reproduce pipeline (which writes it) and this crate
//! (which reads it). Long format, one row per measured value. Validation names every missing or
//! wrongly typed column so a pipeline change fails here with a message, not with an empty figure.
use std::path::Path;

use polars::prelude::*;

/// The file name of a run's frame inside `results/runs/<run-id>/`.
pub const FRAME_FILE: &str = "metrics.parquet";

/// A frame that breaks the contract; each message names the column and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("metric frame is missing column(s) {}: the pipeline must write every column of report::schema::COLUMNS", .0.join(", "))]
    Missing(Vec<String>),
    #[error("metric frame column `{column}` has type {found}, expected {expected}")]
    WrongType {
        column: String,
        expected: String,
        found: String,
    },
    #[error(
        "metric frame column `{column}` has {count} null value(s); only defense_epoch may be null"
    )]
    Nulls { column: String, count: usize },
    #[error(
        "metric frame column `{column}` has value {value:?} (row {row}); expected one of {allowed}"
    )]
    BadValue {
        column: String,
        value: String,
        row: usize,
        allowed: String,
    },
    #[error("reading the metric frame: {0}")]
    Polars(#[from] PolarsError),
}

pub use frame::row::{is_utility_metric, BACKDOOR_METRICS};
pub use frame::{ColumnData, Kind, Row, COLUMNS};

fn dtype(kind: Kind) -> DataType {
    match kind {
        Kind::Str => DataType::String,
        Kind::I64 | Kind::OptI64 => DataType::Int64,
        Kind::F64 => DataType::Float64,
    }
}

/// One polars column as typed values.
fn column_data(col: &Column, kind: Kind) -> PolarsResult<ColumnData> {
    Ok(match kind {
        Kind::Str => ColumnData::Str(
            col.str()?
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect(),
        ),
        Kind::I64 => ColumnData::I64(col.i64()?.iter().map(|v| v.unwrap_or(0)).collect()),
        Kind::OptI64 => ColumnData::OptI64(col.i64()?.iter().collect()),
        Kind::F64 => ColumnData::F64(col.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect()),
    })
}

fn extract_rows(df: &DataFrame) -> PolarsResult<Vec<Row>> {
    let cols = COLUMNS
        .iter()
        .map(|(name, kind)| Ok((*name, column_data(df.column(name)?, *kind)?)))
        .collect::<PolarsResult<Vec<_>>>()?;
    Row::from_columns(df.height(), |name| {
        cols.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
    })
    .map_err(|e| PolarsError::ComputeError(e.into()))
}

/// Builds a frame (in the contract's column order) from rows.
pub fn frame_from_rows(rows: &[Row]) -> PolarsResult<DataFrame> {
    let columns = Row::to_columns(rows)
        .into_iter()
        .map(|(name, data)| match data {
            ColumnData::Str(v) => Column::new(name.into(), v),
            ColumnData::I64(v) => Column::new(name.into(), v),
            ColumnData::F64(v) => Column::new(name.into(), v),
            ColumnData::OptI64(v) => Column::new(name.into(), v),
        })
        .collect();
    DataFrame::new(rows.len(), columns)
}

/// Checks the frame against [`COLUMNS`]: all missing columns are named at once, then the first
/// wrongly typed column, nulls, and values outside the closed sets.
pub fn validate(df: &DataFrame) -> Result<(), SchemaError> {
    let missing: Vec<String> = COLUMNS
        .iter()
        .filter(|(name, _)| df.column(name).is_err())
        .map(|(name, _)| name.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(SchemaError::Missing(missing));
    }
    for (name, kind) in COLUMNS {
        let col = df.column(name)?;
        if col.dtype() != &dtype(*kind) {
            return Err(SchemaError::WrongType {
                column: name.to_string(),
                expected: dtype(*kind).to_string(),
                found: col.dtype().to_string(),
            });
        }
        if *kind != Kind::OptI64 && col.null_count() > 0 {
            return Err(SchemaError::Nulls {
                column: name.to_string(),
                count: col.null_count(),
            });
        }
    }
    for (name, allowed) in frame::row::ENUMS {
        let ColumnData::Str(values) = column_data(df.column(name)?, Kind::Str)? else {
            unreachable!("string columns read as strings")
        };
        if let Some((row, value)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !allowed.contains(&v.as_str()))
        {
            return Err(SchemaError::BadValue {
                column: name.to_string(),
                value: value.clone(),
                row,
                allowed: allowed.join("|"),
            });
        }
    }
    Ok(())
}

/// Validates a frame and converts it to rows.
pub fn rows_from_frame(df: &DataFrame) -> Result<Vec<Row>, SchemaError> {
    validate(df)?;
    Ok(extract_rows(df)?)
}

/// Reads and validates `metrics.parquet`.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "opening the metric frame {} (a run directory holds {FRAME_FILE}; run `cargo xtask reproduce` first)",
            path.display()
        )
    })?;
    let mut df = ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow::anyhow!("reading Parquet {}: {e}", path.display()))?;
    with_later_columns(&mut df)?;
    rows_from_frame(&df).with_context(|| format!("in {}", path.display()))
}

/// Frames written before a column existed get the value every row then had: finished models
/// (`schedule_share` 1) sampled from noise (`corruption` "none"), so older runs still render
/// and diff.
fn with_later_columns(df: &mut DataFrame) -> PolarsResult<()> {
    let h = df.height();
    if df.column("schedule_share").is_err() {
        df.with_column(Column::new("schedule_share".into(), vec![1.0f64; h]))?;
    }
    if df.column("corruption").is_err() {
        df.with_column(Column::new("corruption".into(), vec!["none"; h]))?;
    }
    Ok(())
}

/// Writes rows as Parquet (used by tests and fixtures; the pipeline writes its own).
pub fn write_rows(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut df = frame_from_rows(rows)?;
    let file = std::fs::File::create(path)?;
    ParquetWriter::new(file).finish(&mut df)?;
    Ok(())
}

/// How a utility metric is labelled on figures: a proxy is never called FID.
pub fn utility_label(metric: &str) -> String {
    if metric == "FID" {
        "FID".to_string()
    } else {
        format!("{metric} (proxy, not FID)")
    }
}

#[cfg(test)]
mod tests;
