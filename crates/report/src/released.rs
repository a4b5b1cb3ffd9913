//! The authors' released numbers (their `score.json` files, committed in `paper/released_scores.toml`) side by
//! side with a `released`-profile run's measurements of the same checkpoints.
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::schema::Row;
use crate::tables::{num, Table};

/// One released value in the frame's terms.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ReleasedScore {
    pub model: String,
    pub poison_rate: f64,
    pub trigger: String,
    pub target: String,
    pub metric: String,
    pub samples: String,
    pub sampler: String,
    pub steps: i64,
    pub clip: String,
    pub n: i64,
    /// The key in the authors' `score.json`.
    pub key: String,
    pub value: f64,
}

/// How far ours may lie from theirs, per metric, under the same protocol (N, clip, sampler).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Band {
    pub metric: String,
    #[serde(flatten)]
    pub width: Width,
    /// Why this width.
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Width {
    /// |ours / theirs − 1| ≤ value.
    Relative(f64),
    /// ours / theirs within [1 / value, value].
    Factor(f64),
    /// |ours − theirs| ≤ value.
    Absolute(f64),
}

impl Width {
    pub fn contains(self, ours: f64, theirs: f64) -> bool {
        match self {
            Width::Relative(v) => (ours / theirs - 1.0).abs() <= v,
            Width::Factor(v) => {
                let r = ours / theirs;
                r >= 1.0 / v && r <= v
            }
            Width::Absolute(v) => (ours - theirs).abs() <= v,
        }
    }

    fn text(self) -> String {
        match self {
            Width::Relative(v) => format!("±{} %", num(v * 100.0)),
            Width::Factor(v) => format!("×/÷ {}", num(v)),
            Width::Absolute(v) => format!("± {}", num(v)),
        }
    }
}

/// The released scores and the bands ours are compared with.
#[derive(Clone, Debug, Deserialize)]
pub struct Released {
    pub score: Vec<ReleasedScore>,
    #[serde(default)]
    pub band: Vec<Band>,
}

/// Reads the released-scores file.
pub fn read(path: &Path) -> Result<Released> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the released scores {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn matches(s: &ReleasedScore, r: &Row) -> bool {
    (s.poison_rate - r.poison_rate).abs() < 1e-9
        && s.trigger == r.trigger
        && s.target == r.target
        && s.metric == r.metric
        && s.samples == r.samples
        && s.sampler == r.sampler
        && s.steps == r.steps
        && s.clip == r.clip
        && s.n == r.n_generated
        && r.defense != "anp"
}

/// One row per released value: theirs, ours (mean over seeds when several), the ratio, the
/// band for that metric and whether ours lies within it.
pub fn table(released: &Released, rows: &[Row]) -> Table {
    let out = released
        .score
        .iter()
        .map(|s| {
            let ours: Vec<f64> = rows
                .iter()
                .filter(|r| matches(s, r))
                .map(|r| r.value)
                .collect();
            let band = released.band.iter().find(|b| b.metric == s.metric);
            let mean = (!ours.is_empty()).then(|| ours.iter().sum::<f64>() / ours.len() as f64);
            let within = match (band, mean) {
                (Some(b), Some(m)) if b.width.contains(m, s.value) => "✓ within".to_string(),
                (Some(_), Some(_)) => "✗ outside".to_string(),
                (None, _) => "no band".to_string(),
                (_, None) => "not run".to_string(),
            };
            let band_text = band.map_or_else(|| "—".to_string(), |b| b.width.text());
            let (ours_cell, ratio) = if ours.is_empty() {
                ("not run".to_string(), "—".to_string())
            } else {
                let m = ours.iter().sum::<f64>() / ours.len() as f64;
                let ratio = if s.value != 0.0 {
                    num(m / s.value)
                } else {
                    "—".into()
                };
                (num(m), ratio)
            };
            vec![
                s.model.clone(),
                crate::figures::rate_label(s.poison_rate),
                s.key.clone(),
                format!("{} {}", s.sampler, s.steps),
                s.clip.clone(),
                s.n.to_string(),
                num(s.value),
                ours_cell,
                ratio,
                band_text,
                within,
            ]
        })
        .collect();
    Table {
        id: "released".into(),
        caption: "The authors' released scores (single runs, their `score.json`) beside ours"
            .into(),
        header: [
            "model",
            "poison rate",
            "score.json key",
            "sampler",
            "clip",
            "N",
            "released",
            "ours",
            "ours / released",
            "band",
            "ours within",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'r', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'l', 'l'],
        rows: out,
        note: (!released.band.is_empty()).then(|| {
            released
                .band
                .iter()
                .map(|b| format!("{} band {}: {}", b.metric, b.width.text(), b.reason))
                .collect::<Vec<_>>()
                .join(" ")
        }),
    }
}
