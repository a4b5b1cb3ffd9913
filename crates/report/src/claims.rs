//! The claims verdicts: the claims engine (separate) judges each claim of `paper/claims.toml`
//! against a run and writes `claims.json` into the run directory; this renders it.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::tables::{num, Table};

/// Where a run's verdicts live inside its directory.
pub const CLAIMS_FILE: &str = "claims.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "partly")]
    Partly,
    #[serde(rename = "fails")]
    Fails,
    #[serde(rename = "not run")]
    NotRun,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Partly => "partly",
            Verdict::Fails => "fails",
            Verdict::NotRun => "not run",
        }
    }
}

/// One judged claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimVerdict {
    pub id: String,
    /// The paper's words.
    pub quote: String,
    pub section: String,
    /// e.g. "Fig. 2a"; links to that figure in the report.
    pub figure: String,
    pub verdict: Verdict,
    /// The measured numbers the rule used, by name.
    #[serde(default)]
    pub numbers: BTreeMap<String, serde_json::Value>,
    /// The rule's tolerance, as the claims file states it.
    #[serde(default)]
    pub tolerance: serde_json::Value,
    /// The run cells the claim needs.
    #[serde(default)]
    pub cells: Vec<String>,
    /// The command that reproduces only this claim, when the engine records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Reads `claims.json` (a JSON list of [`ClaimVerdict`]).
pub fn read(path: &Path) -> Result<Vec<ClaimVerdict>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading claims verdicts {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a list of claim verdicts {{id, quote, section, figure, verdict: holds|partly|fails|not run, numbers, tolerance, cells}}",
            path.display()
        )
    })
}

/// The report anchor of a figure name: "Fig. 2a" → "fig2a", "ANP" → "anp".
pub fn figure_anchor(figure: &str) -> String {
    figure
        .to_lowercase()
        .replace("fig.", "fig")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(num).unwrap_or_else(|| n.to_string()),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// The claims table: verdict, numbers, tolerance, figure link and cells per claim.
pub fn table(verdicts: &[ClaimVerdict]) -> Table {
    let rows = verdicts
        .iter()
        .map(|c| {
            let numbers = c
                .numbers
                .iter()
                .map(|(k, v)| format!("{k} = {}", value_text(v)))
                .collect::<Vec<_>>()
                .join("; ");
            let figure = if c.figure.is_empty() {
                "—".to_string()
            } else {
                format!("[{}](#{})", c.figure, figure_anchor(&c.figure))
            };
            vec![
                c.id.clone(),
                format!("“{}”", c.quote),
                c.section.clone(),
                figure,
                c.verdict.as_str().to_string(),
                if numbers.is_empty() {
                    "—".into()
                } else {
                    numbers
                },
                value_text(&c.tolerance),
                if c.cells.is_empty() {
                    "—".into()
                } else {
                    c.cells
                        .iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect::<Vec<_>>();
    Table {
        id: "claims".into(),
        caption: "Claims of the paper and their verdicts on this run".into(),
        header: [
            "claim",
            "quote",
            "section",
            "figure",
            "verdict",
            "numbers",
            "tolerance",
            "cells",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l'; 8],
        note: rows
            .is_empty()
            .then(|| "not run: no claims verdicts (claims.json) for this run".to_string()),
        rows,
    }
}

/// Counts per verdict, in a fixed order, for the report's summary line.
pub fn summary(verdicts: &[ClaimVerdict]) -> String {
    [
        Verdict::Holds,
        Verdict::Partly,
        Verdict::Fails,
        Verdict::NotRun,
    ]
    .iter()
    .map(|v| {
        let n = verdicts.iter().filter(|c| c.verdict == *v).count();
        format!("{n} {}", v.as_str())
    })
    .collect::<Vec<_>>()
    .join(", ")
}
