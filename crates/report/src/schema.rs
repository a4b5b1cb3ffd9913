//! The metric frame: the contract between the reproduce pipeline (which writes it) and this crate
//! (which reads it). Long format, one row per measured value. Validation names every missing or
//! wrongly typed column so a pipeline change fails here with a message, not with an empty figure.
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// The file name of a run's frame inside `results/runs/<run-id>/`.
pub const FRAME_FILE: &str = "metrics.parquet";

/// Column types of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    I64,
    F64,
    /// Int64 that may be null (only `defense_epoch`, set on ANP traces).
    OptI64,
}

impl Kind {
    fn dtype(self) -> DataType {
        match self {
            Kind::Str => DataType::String,
            Kind::I64 | Kind::OptI64 => DataType::Int64,
            Kind::F64 => DataType::Float64,
        }
    }
}

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

/// Reads one column into a Rust vector (the column was validated before).
trait Extract: Sized {
    fn extract(col: &Column) -> PolarsResult<Vec<Self>>;
    fn column(name: &str, values: Vec<Self>) -> Column;
}

impl Extract for String {
    fn extract(col: &Column) -> PolarsResult<Vec<Self>> {
        Ok(col
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
}

impl Extract for i64 {
    fn extract(col: &Column) -> PolarsResult<Vec<Self>> {
        Ok(col.i64()?.iter().map(|v| v.unwrap_or(0)).collect())
    }
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
}

impl Extract for Option<i64> {
    fn extract(col: &Column) -> PolarsResult<Vec<Self>> {
        Ok(col.i64()?.iter().collect())
    }
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
}

impl Extract for f64 {
    fn extract(col: &Column) -> PolarsResult<Vec<Self>> {
        Ok(col.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
}

macro_rules! kind_ty {
    (Str) => { String };
    (I64) => { i64 };
    (F64) => { f64 };
    (OptI64) => { Option<i64> };
}

/// Declares the row struct, the column list and the frame conversions from one list, so the three
/// can never disagree.
macro_rules! frame_schema {
    ($( $(#[$m:meta])* $name:ident : $kind:ident ),* $(,)?) => {
        /// One measured value with the settings of the cell that produced it.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Row { $( $(#[$m])* pub $name: kind_ty!($kind), )* }

        /// Every column of the frame, in order, with its type.
        pub const COLUMNS: &[(&str, Kind)] = &[ $( (stringify!($name), Kind::$kind), )* ];

        fn extract_rows(df: &DataFrame) -> PolarsResult<Vec<Row>> {
            $( let $name: Vec<kind_ty!($kind)> =
                <kind_ty!($kind) as Extract>::extract(df.column(stringify!($name))?)?; )*
            let mut rows = Vec::with_capacity(df.height());
            for i in 0..df.height() {
                rows.push(Row { $( $name: $name[i].clone(), )* });
            }
            Ok(rows)
        }

        /// Builds a frame (in the contract's column order) from rows.
        pub fn frame_from_rows(rows: &[Row]) -> PolarsResult<DataFrame> {
            DataFrame::new(rows.len(), vec![ $(
                <kind_ty!($kind) as Extract>::column(
                    stringify!($name),
                    rows.iter().map(|r| r.$name.clone()).collect(),
                ),
            )* ])
        }
    };
}

frame_schema! {
    run_id: Str,
    /// The pipeline's name for the trained model and measurement settings.
    cell: Str,
    /// "E1".."E9", "anp" or "sampler".
    experiment: Str,
    dataset: Str,
    image_size: I64,
    channels: I64,
    /// Trigger code name, e.g. "BOX_14", "STOP_SIGN_14"; "NONE" for a clean model.
    trigger: Str,
    target: Str,
    poison_rate: F64,
    training: Str,
    epochs: F64,
    seed: I64,
    defense: Str,
    /// e.g. "lr=0.0001,budget=4"; empty without a defense.
    defense_param: Str,
    /// ANP epoch of a trace row; null otherwise.
    defense_epoch: OptI64,
    sampler: Str,
    steps: I64,
    clip: Str,
    /// Which samples were measured: "clean" (from clean noise) or "backdoor" (from triggered noise).
    samples: Str,
    /// "FID", a proxy such as "FD_fmnist_cnn", "MSE", "MSE_threshold_rate" or "SSIM".
    metric: Str,
    value: F64,
    n_generated: I64,
    n_reference: I64,
    /// The metric's protocol as JSON (weights hash, reference set, ...).
    protocol: Str,
}

/// Columns whose values come from a closed set.
const ENUMS: &[(&str, &[&str])] = &[
    (
        "training",
        &["finetune", "scratch", "pretrained", "released"],
    ),
    ("defense", &["none", "anp", "anp-prune", "clip"]),
    ("sampler", &["ddpm", "ddim", "dpm-solver"]),
    ("clip", &["none", "x0", "xt"]),
    ("samples", &["clean", "backdoor"]),
];

const EXPERIMENTS: &[&str] = &[
    "E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9", "anp", "sampler",
    // The released profile's experiments (spec §8.3).
    "R1", "R2", "R3", "R4", "R5", "R6", "R7",
];

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
        if col.dtype() != &kind.dtype() {
            return Err(SchemaError::WrongType {
                column: name.to_string(),
                expected: kind.dtype().to_string(),
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
    let mut closed: Vec<(&str, &[&str])> = ENUMS.to_vec();
    closed.push(("experiment", EXPERIMENTS));
    for (name, allowed) in closed {
        let values = String::extract(df.column(name)?)?;
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
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow::anyhow!("reading Parquet {}: {e}", path.display()))?;
    rows_from_frame(&df).with_context(|| format!("in {}", path.display()))
}

/// Writes rows as Parquet (used by tests and fixtures; the pipeline writes its own).
pub fn write_rows(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut df = frame_from_rows(rows)?;
    let file = std::fs::File::create(path)?;
    ParquetWriter::new(file).finish(&mut df)?;
    Ok(())
}

impl Row {
    /// The poison rate in parts per million: an exact key for grouping rows by rate.
    pub fn rate_key(&self) -> i64 {
        (self.poison_rate * 1e6).round() as i64
    }
}

/// The metrics that measure the backdoor rather than clean quality.
pub const BACKDOOR_METRICS: &[&str] = &["MSE", "MSE_threshold_rate", "SSIM"];

/// True for the clean-quality metrics: "FID" or a proxy Fréchet distance.
pub fn is_utility_metric(metric: &str) -> bool {
    !BACKDOOR_METRICS.contains(&metric)
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
