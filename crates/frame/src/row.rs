//! One row of the metric frame: the contract between the pipeline (which writes rows into each
//! cell's `result.json`) and the report (which stores them as Parquet). Long format, one row per
//! measured value. The row struct, the column list and the column conversions are declared from
//! one list, so they can never disagree.
use serde::{Deserialize, Serialize};

/// Column types of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    I64,
    F64,
    /// Int64 that may be null (only `defense_epoch`, set on defense traces).
    OptI64,
}

/// One column's values, typed (what a columnar store reads and writes).
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    Str(Vec<String>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    OptI64(Vec<Option<i64>>),
}

/// A Rust type that one [`Kind`] of column holds.
pub trait ColumnValue: Sized + Clone {
    fn wrap(values: Vec<Self>) -> ColumnData;
    fn unwrap(col: &ColumnData) -> Option<&Vec<Self>>;
}

macro_rules! column_value {
    ($ty:ty, $variant:ident) => {
        impl ColumnValue for $ty {
            fn wrap(values: Vec<Self>) -> ColumnData {
                ColumnData::$variant(values)
            }
            fn unwrap(col: &ColumnData) -> Option<&Vec<Self>> {
                match col {
                    ColumnData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
column_value!(String, Str);
column_value!(i64, I64);
column_value!(f64, F64);
column_value!(Option<i64>, OptI64);

macro_rules! kind_ty {
    (Str) => { String };
    (I64) => { i64 };
    (F64) => { f64 };
    (OptI64) => { Option<i64> };
}

macro_rules! frame_schema {
    ($( $(#[$m:meta])* $name:ident : $kind:ident ),* $(,)?) => {
        /// One measured value with the settings of the cell that produced it.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Row { $( $(#[$m])* pub $name: kind_ty!($kind), )* }

        /// Every column of the frame, in order, with its type.
        pub const COLUMNS: &[(&str, Kind)] = &[ $( (stringify!($name), Kind::$kind), )* ];

        impl Row {
            /// The rows as columns, in [`COLUMNS`] order.
            pub fn to_columns(rows: &[Row]) -> Vec<(&'static str, ColumnData)> {
                vec![ $( (
                    stringify!($name),
                    <kind_ty!($kind) as ColumnValue>::wrap(rows.iter().map(|r| r.$name.clone()).collect()),
                ), )* ]
            }

            /// Rows from columns looked up by name; the error names a missing or mistyped column.
            pub fn from_columns<'a>(
                len: usize,
                column: impl Fn(&str) -> Option<&'a ColumnData>,
            ) -> Result<Vec<Row>, String> {
                $( let $name: &Vec<kind_ty!($kind)> = column(stringify!($name))
                    .and_then(<kind_ty!($kind) as ColumnValue>::unwrap)
                    .ok_or_else(|| format!("column `{}` is missing or not {:?}", stringify!($name), Kind::$kind))?;
                   if $name.len() != len {
                       return Err(format!("column `{}` has {} values, expected {len}", stringify!($name), $name.len()));
                   } )*
                Ok((0..len).map(|i| Row { $( $name: $name[i].clone(), )* }).collect())
            }
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
    /// Epochs the measured model was trained (0 for a model not trained here).
    epochs: F64,
    /// The share of its training's epochs the measured model had: 1 for a finished model and
    /// for one not trained here, less at an intermediate checkpoint (E6, the epochs needed).
    /// Rows written before the column existed read as 1.
    #[serde(default = "finished")]
    schedule_share: F64,
    seed: I64,
    defense: Str,
    /// e.g. "lr=0.0001,budget=4"; empty without a defense.
    defense_param: Str,
    /// ANP epoch of a trace row; null otherwise.
    defense_epoch: OptI64,
    sampler: Str,
    steps: I64,
    clip: Str,
    /// E7's input corruption ("denoise", "inpaint_box", "inpaint_line"; the sampler starts from
    /// the corrupted image), "none" where it starts from noise (also for rows written before
    /// the column existed).
    #[serde(default = "from_noise")]
    corruption: Str,
    /// Which samples were measured: "clean" (from clean noise) or "backdoor" (from triggered noise).
    samples: Str,
    /// "FID", a proxy such as "proxy_FD[fmnist-cnn]", "MSE", "MSE_threshold_rate", "SSIM", an
    /// empirical CDF point `MSE_rate_below[τ]` or the derived `MSE_calibrated_rate`.
    metric: Str,
    value: F64,
    n_generated: I64,
    n_reference: I64,
    /// The metric's protocol as JSON (weights hash, reference set, ...).
    protocol: Str,
}

fn finished() -> f64 {
    1.0
}

fn from_noise() -> String {
    "none".into()
}

/// Columns whose values come from a closed set.
pub const ENUMS: &[(&str, &[&str])] = &[
    (
        "training",
        &["finetune", "scratch", "pretrained", "released"],
    ),
    (
        "defense",
        &[
            "none",
            "anp",
            "anp-prune",
            "clip",
            "elijah",
            "terd",
            "noise-test",
        ],
    ),
    ("sampler", &["ddpm", "ddim", "dpm-solver"]),
    ("clip", &["none", "x0", "xt"]),
    (
        "corruption",
        &["none", "denoise", "inpaint_box", "inpaint_line"],
    ),
    // `inverted`: sampled from noise shifted by a defense's inverted trigger (Elijah); `none`: a
    // model statistic that samples nothing (TERD).
    ("samples", &["clean", "backdoor", "inverted", "none"]),
    (
        "experiment",
        &[
            "E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9", "anp", "sampler",
            // The defenses that came after the paper (Elijah, TERD, an input-noise test).
            "later",
            // The released profile's experiments (the authors' released models).
            "R1", "R2", "R3", "R4", "R5", "R6", "R7",
        ],
    ),
];

impl Row {
    /// The poison rate in parts per million: an exact key for grouping rows by rate.
    pub fn rate_key(&self) -> i64 {
        (self.poison_rate * 1e6).round() as i64
    }

    /// The value of a closed-set or free string column by name (`None` for numeric columns).
    pub fn text(&self, column: &str) -> Option<&str> {
        Some(match column {
            "run_id" => &self.run_id,
            "cell" => &self.cell,
            "experiment" => &self.experiment,
            "dataset" => &self.dataset,
            "trigger" => &self.trigger,
            "target" => &self.target,
            "training" => &self.training,
            "defense" => &self.defense,
            "defense_param" => &self.defense_param,
            "sampler" => &self.sampler,
            "clip" => &self.clip,
            "corruption" => &self.corruption,
            "samples" => &self.samples,
            "metric" => &self.metric,
            "protocol" => &self.protocol,
            _ => return None,
        })
    }
}

/// The metrics that measure the backdoor rather than clean quality.
pub const BACKDOOR_METRICS: &[&str] = &["MSE", "MSE_threshold_rate", "SSIM"];

/// True for the clean-quality metrics: "FID" or a proxy Fréchet distance (its name has `FD`,
/// e.g. `proxy_FD[fmnist-cnn]`).
pub fn is_utility_metric(metric: &str) -> bool {
    metric == "FID" || metric.contains("FD")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cell: &str, value: f64) -> Row {
        let mut r = crate::claims::tests::row(cell, "clean", "MSE", value);
        (r.defense, r.defense_param, r.defense_epoch) =
            ("anp".into(), "lr=0.0001,budget=4".into(), Some(3));
        r
    }

    #[test]
    fn rows_round_trip_through_columns_and_bad_columns_are_named() {
        let rows = vec![row("a", 0.5), row("b", f64::INFINITY)];
        let cols = Row::to_columns(&rows);
        assert_eq!(cols.len(), COLUMNS.len());
        let get = |name: &str| cols.iter().find(|(n, _)| *n == name).map(|(_, c)| c);
        assert_eq!(Row::from_columns(2, get).unwrap(), rows);
        let err = Row::from_columns(2, |n| if n == "seed" { None } else { get(n) }).unwrap_err();
        assert!(err.contains("seed"), "{err}");
        let err = Row::from_columns(3, get).unwrap_err();
        assert!(err.contains("run_id") && err.contains('3'), "{err}");
    }

    #[test]
    fn utility_metrics_are_fid_and_proxies_only() {
        assert!(is_utility_metric("FID") && is_utility_metric("proxy_FD[fmnist-cnn]"));
        assert!(is_utility_metric("FD_fmnist_cnn"));
        for m in [
            "MSE",
            "MSE_rate_below[1.000e-2]",
            "MSE_calibrated_rate",
            "cost_seconds",
        ] {
            assert!(!is_utility_metric(m), "{m}");
        }
    }
}
