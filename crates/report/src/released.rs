//! The authors' released numbers (spec §8.3, committed in `paper/released_scores.toml`) side by
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

#[derive(Deserialize)]
struct File {
    score: Vec<ReleasedScore>,
}

/// Reads the released-scores file.
pub fn read(path: &Path) -> Result<Vec<ReleasedScore>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the released scores {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.score)
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

/// One row per released value: theirs, ours (mean over seeds when several) and the ratio.
pub fn table(scores: &[ReleasedScore], rows: &[Row]) -> Table {
    let out = scores
        .iter()
        .map(|s| {
            let ours: Vec<f64> = rows
                .iter()
                .filter(|r| matches(s, r))
                .map(|r| r.value)
                .collect();
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
            ]
        })
        .collect();
    Table {
        id: "released".into(),
        caption: "The authors' released scores (single runs, spec §8.3) beside ours".into(),
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
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'r', 'l', 'l', 'l', 'r', 'r', 'r', 'r'],
        rows: out,
        note: None,
    }
}
