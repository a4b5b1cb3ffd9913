//! What produced a number. Every metric row carries one, so that results measured under
//! different protocols (N, weights, reference split, SSIM border, ...) are never compared
//! silently.
use serde::{Deserialize, Serialize};

/// The measurement protocol of one metric row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    /// Which implementation computed the value, and what it reproduces.
    pub implementation: String,
    /// Version of that implementation (this crate's version).
    pub version: String,
    /// sha256 of the network weights file (FID and proxies), if any.
    pub weights_sha256: Option<String>,
    /// Number of generated images measured.
    pub n_generated: i64,
    /// Number of reference images (1 for a single backdoor target).
    pub n_reference: i64,
    /// Name of the reference split (e.g. "cifar10-train"), when known.
    pub reference_split: Option<String>,
    /// Content hash of the reference: the image set hash, the statistics or target file's sha256.
    pub reference_hash: Option<String>,
    /// How images were resized before the network, if at all.
    pub resize: Option<String>,
    /// How the generated images were stored and read.
    pub image_format: String,
    /// Numeric types of the computation.
    pub dtype: String,
    /// Device the computation ran on.
    pub device: String,
    /// Caveats of this measurement (e.g. fewer samples than feature dimensions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One measured value with its protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Metric name: `FID`, `MSE`, `MSE_threshold_rate`, `SSIM`, or a proxy's name.
    pub metric: String,
    pub value: f64,
    pub protocol: Protocol,
}
