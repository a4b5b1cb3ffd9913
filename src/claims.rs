//! The paper's claims as machine-checkable rules (`paper/claims.toml`), judged against a run's
//! metric rows. A claim is one or more checks; a check compares two aggregated selections of
//! rows (e.g. mean backdoor MSE with clipping ÷ without) against a `holds` and a `partly` bound.
//! Verdicts: holds (every check within `holds`), partly (every check within `partly`), fails,
//! or not run (a selection matched no row).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::matrix::FrameRow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    #[serde(rename = "claim")]
    pub claims: Vec<Claim>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub id: String,
    pub quote: String,
    pub section: String,
    pub figure: String,
    /// Experiments whose cells the claim needs (`reproduce --claim ID` runs only these).
    pub experiments: Vec<String>,
    #[serde(rename = "check")]
    pub checks: Vec<Check>,
}

/// `op(agg(a), agg(b))` compared with the bounds, e.g. `ratio` `< 0.1`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// `ratio` (a / b) or `relative_change` (|a / b − 1|).
    pub op: String,
    pub a: Selection,
    pub b: Selection,
    /// e.g. "< 0.1" or ">= 10".
    pub holds: String,
    pub partly: String,
}

/// Rows whose fields equal the given values (numeric fields take `<`, `<=`, `>`, `>=`, `=`),
/// reduced by `agg` (mean, min or max).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Selection {
    #[serde(default = "default_agg")]
    pub agg: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

fn default_agg() -> String {
    "mean".into()
}

/// A bound like `< 0.1`.
fn within(bound: &str, x: f64) -> Result<bool> {
    let b = bound.trim();
    let (op, rest) = ["<=", ">=", "<", ">", "="]
        .iter()
        .find_map(|op| b.strip_prefix(op).map(|r| (*op, r)))
        .with_context(|| format!("bound {bound:?} must start with <, <=, >, >= or ="))?;
    let v: f64 = rest
        .trim()
        .parse()
        .with_context(|| format!("bound {bound:?}: not a number"))?;
    Ok(match op {
        "<=" => x <= v,
        ">=" => x >= v,
        "<" => x < v,
        ">" => x > v,
        _ => x == v,
    })
}

impl Selection {
    fn matches(&self, r: &FrameRow) -> Result<bool> {
        for (k, want) in &self.fields {
            let ok = match k.as_str() {
                "poison_rate" => num_match(want, r.poison_rate)?,
                "defense_epoch" => num_match(want, r.defense_epoch.unwrap_or(-1) as f64)?,
                "steps" => num_match(want, r.steps as f64)?,
                _ => {
                    let have = match k.as_str() {
                        "experiment" => &r.experiment,
                        "trigger" => &r.trigger,
                        "target" => &r.target,
                        "training" => &r.training,
                        "defense" => &r.defense,
                        "defense_param" => &r.defense_param,
                        "sampler" => &r.sampler,
                        "clip" => &r.clip,
                        "samples" => &r.samples,
                        "metric" => &r.metric,
                        _ => bail!("claims: unknown selection field `{k}`"),
                    };
                    want.split('|').any(|w| w == have)
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The aggregate and the cells it came from; None when no row matches.
    fn eval(&self, rows: &[FrameRow]) -> Result<Option<(f64, BTreeSet<String>)>> {
        let mut vals = Vec::new();
        let mut cells = BTreeSet::new();
        for r in rows {
            if self.matches(r)? && r.value.is_finite() {
                vals.push(r.value);
                cells.insert(r.cell.clone());
            }
        }
        if vals.is_empty() {
            return Ok(None);
        }
        let v = match self.agg.as_str() {
            "mean" => vals.iter().sum::<f64>() / vals.len() as f64,
            "min" => vals.iter().copied().fold(f64::INFINITY, f64::min),
            "max" => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            other => bail!("claims: agg = {other:?}: use mean, min or max"),
        };
        Ok(Some((v, cells)))
    }
}

fn num_match(want: &str, x: f64) -> Result<bool> {
    if want.trim_start().starts_with(['<', '>', '=']) {
        within(want, x)
    } else {
        Ok(want
            .parse::<f64>()
            .with_context(|| format!("claims: {want:?} is not a number"))?
            == x)
    }
}

impl ClaimsFile {
    pub fn load(path: &Path) -> Result<ClaimsFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ClaimsFile = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid claims file", path.display()))?;
        for c in &file.claims {
            for k in &c.checks {
                ensure!(
                    ["ratio", "relative_change"].contains(&k.op.as_str()),
                    "claim {}: op = {:?}: use ratio or relative_change",
                    c.id,
                    k.op
                );
                within(&k.holds, 0.0).with_context(|| format!("claim {}", c.id))?;
                within(&k.partly, 0.0).with_context(|| format!("claim {}", c.id))?;
            }
        }
        Ok(file)
    }

    /// The experiments the named claims need; unknown ids are an error listing the known ones.
    pub fn experiments_for(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for id in ids {
            let Some(c) = self.claims.iter().find(|c| &c.id == id) else {
                let known: Vec<&str> = self.claims.iter().map(|c| c.id.as_str()).collect();
                bail!(
                    "no claim `{id}` in paper/claims.toml; known: {}",
                    known.join(", ")
                );
            };
            out.extend(c.experiments.iter().cloned());
        }
        Ok(out)
    }

    /// Each claim's verdict as the report's `claims.json` entry.
    pub fn judge(&self, rows: &[FrameRow], profile: &str) -> Result<Vec<Value>> {
        self.claims.iter().map(|c| c.judge(rows, profile)).collect()
    }
}

impl Claim {
    fn judge(&self, rows: &[FrameRow], profile: &str) -> Result<Value> {
        let mut numbers = BTreeMap::new();
        let mut tolerance = BTreeMap::new();
        let mut cells = BTreeSet::new();
        let (mut all_hold, mut all_partly, mut missing) = (true, true, false);
        for k in &self.checks {
            tolerance.insert(
                k.name.clone(),
                json!({ "op": k.op, "holds": k.holds, "partly": k.partly }),
            );
            let (Some((a, ca)), Some((b, cb))) = (k.a.eval(rows)?, k.b.eval(rows)?) else {
                missing = true;
                continue;
            };
            let x = match k.op.as_str() {
                "ratio" => a / b,
                _ => (a / b - 1.0).abs(),
            };
            numbers.insert(format!("{} a", k.name), json!(a));
            numbers.insert(format!("{} b", k.name), json!(b));
            numbers.insert(k.name.clone(), json!(x));
            all_hold &= within(&k.holds, x)?;
            all_partly &= within(&k.partly, x)? || within(&k.holds, x)?;
            cells.extend(ca);
            cells.extend(cb);
        }
        let verdict = if missing {
            "not run"
        } else if all_hold {
            "holds"
        } else if all_partly {
            "partly"
        } else {
            "fails"
        };
        Ok(json!({
            "id": self.id,
            "quote": self.quote,
            "section": self.section,
            "figure": self.figure,
            "verdict": verdict,
            "numbers": numbers,
            "tolerance": tolerance,
            "cells": cells,
            "command": format!("cargo xtask reproduce --profile {profile} --claim {}", self.id),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cell: &str, clip: &str, samples: &str, metric: &str, value: f64) -> FrameRow {
        FrameRow {
            run_id: "r".into(),
            cell: cell.into(),
            experiment: "E1".into(),
            dataset: "fashion-mnist".into(),
            image_size: 16,
            channels: 1,
            trigger: "BOX_14".into(),
            target: "CORNER".into(),
            poison_rate: 0.5,
            training: "finetune".into(),
            epochs: 1.0,
            seed: 0,
            defense: "none".into(),
            defense_param: String::new(),
            defense_epoch: None,
            sampler: "ddpm".into(),
            steps: 100,
            clip: clip.into(),
            samples: samples.into(),
            metric: metric.into(),
            value,
            n_generated: 8,
            n_reference: 1,
            protocol: "{}".into(),
        }
    }

    const CLIP_CLAIM: &str = r#"
[[claim]]
id = "C5"
quote = "large MSE while maintaining similar FID"
section = "§4.6.2"
figure = "Fig. 5a"
experiments = ["E1"]
[[claim.check]]
name = "MSE with / without clipping"
op = "ratio"
a = { metric = "MSE", samples = "backdoor", clip = "x0|xt" }
b = { metric = "MSE", samples = "backdoor", clip = "none" }
holds = ">= 10"
partly = ">= 2"
[[claim.check]]
name = "FD change"
op = "relative_change"
a = { metric = "FD", samples = "clean", clip = "x0|xt" }
b = { metric = "FD", samples = "clean", clip = "none" }
holds = "<= 0.1"
partly = "<= 0.25"
"#;

    fn verdict(rows: &[FrameRow]) -> Value {
        let file: ClaimsFile = toml::from_str(CLIP_CLAIM).unwrap();
        file.judge(rows, "smoke").unwrap().remove(0)
    }

    #[test]
    fn verdicts_follow_the_bounds() {
        let rows = |mse_clip: f64, fd_clip: f64| {
            vec![
                row("a", "none", "backdoor", "MSE", 0.001),
                row("a", "x0", "backdoor", "MSE", mse_clip),
                row("a", "none", "clean", "FD", 10.0),
                row("a", "x0", "clean", "FD", fd_clip),
            ]
        };
        let v = verdict(&rows(0.05, 10.5));
        assert_eq!(v["verdict"], "holds");
        assert!(
            (v["numbers"]["MSE with / without clipping"]
                .as_f64()
                .unwrap()
                - 50.0)
                .abs()
                < 1e-9
        );
        assert_eq!(verdict(&rows(0.005, 10.5))["verdict"], "partly");
        assert_eq!(verdict(&rows(0.05, 20.0))["verdict"], "fails");
        assert_eq!(verdict(&rows(0.0011, 10.0))["verdict"], "fails");
        assert_eq!(verdict(&rows(0.05, 10.0)[..2])["verdict"], "not run");
        assert_eq!(verdict(&rows(0.05, 10.0))["cells"], json!(["a"]));
    }

    #[test]
    fn claims_name_their_experiments_and_reject_unknown_ids() {
        let file: ClaimsFile = toml::from_str(CLIP_CLAIM).unwrap();
        assert_eq!(
            file.experiments_for(&["C5".into()]).unwrap(),
            BTreeSet::from(["E1".to_string()])
        );
        let err = file
            .experiments_for(&["C9".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("C9") && err.contains("C5"), "{err}");
    }

    #[test]
    fn the_committed_claims_file_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = ClaimsFile::load(&root.join("paper/claims.toml")).unwrap();
        assert!(file.claims.len() >= 6);
        let profile = crate::matrix::Profile::load(root, "paper").expect("paper profile loads");
        let ids: BTreeSet<&str> = profile.experiments.iter().map(|e| e.id.as_str()).collect();
        for c in &file.claims {
            for e in &c.experiments {
                assert!(
                    ids.contains(e.as_str()),
                    "claim {} needs experiment {e}, which the paper profile lacks",
                    c.id
                );
            }
        }
    }
}
