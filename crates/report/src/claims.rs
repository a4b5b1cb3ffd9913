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
    /// The measured numbers the rule used: per check `NAME` its value, and the two operands
    /// it was computed from as `NAME a` and `NAME b`.
    #[serde(default)]
    pub numbers: BTreeMap<String, serde_json::Value>,
    /// Per check, its operation and bounds as the claims file states them.
    #[serde(default)]
    pub tolerance: BTreeMap<String, Check>,
    /// The run cells the claim needs.
    #[serde(default)]
    pub cells: Vec<String>,
    /// The command that reproduces only this claim, when the engine records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// One check of a claim's rule: `op(a, b)` against the bounds of each verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `ratio` (a / b) or `relative_change` (|a / b − 1|).
    pub op: String,
    /// e.g. `<= 0.1`.
    pub holds: String,
    pub partly: String,
}

impl Check {
    /// How the value comes from its operands, e.g. `0.0154 / 0.0815`.
    fn formula(&self, a: &str, b: &str) -> String {
        match self.op.as_str() {
            "ratio" => format!("{a} / {b}"),
            "relative_change" => format!("|{a} / {b} − 1|"),
            op => format!("{op}({a}, {b})"),
        }
    }
}

/// Each check as `name: value = formula (holds ≤ x, partly ≤ y)`, or `not measured`.
fn checks_text(c: &ClaimVerdict) -> String {
    let bound = |b: &str| b.replace("<=", "≤").replace(">=", "≥");
    c.tolerance
        .iter()
        .map(|(name, check)| {
            let bounds = format!(
                "holds {}, partly {}",
                bound(&check.holds),
                bound(&check.partly)
            );
            let operand = |k: &str| c.numbers.get(&format!("{name} {k}")).map(value_text);
            match (c.numbers.get(name), operand("a"), operand("b")) {
                (Some(v), Some(a), Some(b)) => format!(
                    "{name}: **{}** = {} ({bounds})",
                    value_text(v),
                    check.formula(&a, &b)
                ),
                (Some(v), _, _) => format!("{name}: **{}** ({bounds})", value_text(v)),
                _ => format!("{name}: not measured ({bounds})"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
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

/// The claims table: verdict, each check's measured value against its bounds, figure link and
/// cells per claim.
pub fn table(verdicts: &[ClaimVerdict]) -> Table {
    let rows = verdicts
        .iter()
        .map(|c| {
            let figure = if c.figure.is_empty() {
                "—".to_string()
            } else {
                format!("[{}](#{})", c.figure, figure_anchor(&c.figure))
            };
            let checks = checks_text(c);
            vec![
                c.id.clone(),
                format!("“{}”", c.quote),
                c.section.clone(),
                figure,
                c.verdict.as_str().to_string(),
                if checks.is_empty() {
                    "—".into()
                } else {
                    checks
                },
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
            "measured against the tolerance",
            "cells",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l'; 7],
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
