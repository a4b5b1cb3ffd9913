//! Regression diff of two runs' frames. Each metric has an absolute and a relative tolerance and a
//! direction (`results/tolerances.toml`); a change in the worse direction beyond
//! `abs + rel·|A|` is a regression. Rows measured under a different protocol (N, weights, sampler,
//! steps) are flagged instead of compared, and fail the diff unless the caller allows a protocol
//! change; rows found in only one run are listed, and a baseline row missing from B fails it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::schema::Row;
use crate::tables::{num, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Lower is better: an increase beyond tolerance regresses.
    Lower,
    /// Higher is better: a decrease beyond tolerance regresses.
    Higher,
    /// Any change beyond tolerance regresses.
    Either,
    /// Listed, never judged: wall-clock costs measure the machine and its load, not the
    /// reproduction.
    Ignore,
}

/// One tolerance rule. Match fields are exact values, `PREFIX*`, or `!VALUE`; absent matches all.
/// The first matching rule wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub metric: Option<String>,
    pub experiment: Option<String>,
    pub samples: Option<String>,
    pub clip: Option<String>,
    pub defense: Option<String>,
    pub abs: f64,
    pub rel: f64,
    pub direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerances {
    pub rule: Vec<Rule>,
}

/// The committed default tolerances.
pub fn default_tolerances_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results/tolerances.toml")
}

impl Tolerances {
    pub fn read(path: &Path) -> Result<Tolerances> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading tolerances {}", path.display()))?;
        let tol: Tolerances = toml::from_str(&text).with_context(|| {
            format!(
                "parsing {}: expected [[rule]] tables with abs, rel, direction = lower|higher|either",
                path.display()
            )
        })?;
        tol.validate()
            .with_context(|| format!("in tolerances {}", path.display()))?;
        Ok(tol)
    }

    /// Tolerances are finite and not negative: a NaN bound would accept every change.
    pub fn validate(&self) -> Result<()> {
        for (i, r) in self.rule.iter().enumerate() {
            for (name, v) in [("abs", r.abs), ("rel", r.rel)] {
                anyhow::ensure!(
                    v.is_finite() && v >= 0.0,
                    "rule {} (metric {}): {name} = {v} must be a finite number >= 0",
                    i + 1,
                    r.metric.as_deref().unwrap_or("any")
                );
            }
        }
        Ok(())
    }

    /// The first rule matching the row; without one, exact comparison in either direction.
    pub fn rule_for(&self, r: &Row) -> Rule {
        let m = |pat: &Option<String>, v: &str| match pat.as_deref() {
            None => true,
            Some(p) if p.starts_with('!') => &p[1..] != v,
            Some(p) if p.ends_with('*') => v.starts_with(&p[..p.len() - 1]),
            Some(p) => p == v,
        };
        self.rule
            .iter()
            .find(|x| {
                m(&x.metric, &r.metric)
                    && m(&x.experiment, &r.experiment)
                    && m(&x.samples, &r.samples)
                    && m(&x.clip, &r.clip)
                    && m(&x.defense, &r.defense)
            })
            .cloned()
            .unwrap_or(Rule {
                metric: None,
                experiment: None,
                samples: None,
                clip: None,
                defense: None,
                abs: 0.0,
                rel: 0.0,
                direction: Direction::Either,
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Regressed,
    ProtocolMismatch,
    OnlyA,
    OnlyB,
    Improved,
    /// A value whose rule says `direction = "ignore"`.
    NotCompared,
    Ok,
}

/// One compared (or unmatched) measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffRow {
    pub label: String,
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
    pub allowed: Option<f64>,
    pub direction: Direction,
    pub status: Status,
    /// Protocol fields that differ, as "field: A → B".
    pub protocol: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    pub run_a: String,
    pub run_b: String,
    pub counts: BTreeMap<String, usize>,
    pub rows: Vec<DiffRow>,
    /// Whether measurements under another protocol are accepted (listed, not failed).
    #[serde(default)]
    pub allow_protocol_change: bool,
}

/// The identity of a measurement, without sampler/steps (matched second) and without protocol.
fn key(r: &Row, with_sampler: bool) -> String {
    let mut k = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}",
        r.cell,
        r.experiment,
        r.dataset,
        r.image_size,
        r.channels,
        r.trigger,
        r.target,
        r.poison_rate,
        r.training,
        r.epochs,
        r.seed,
        r.defense,
        r.defense_param,
        r.defense_epoch,
        r.clip,
        r.samples,
        r.metric
    );
    // E7's inputs and E6's kept models (older frames read as "none" and 1).
    k.push_str(&format!("|{}|{}", r.corruption, r.schedule_share));
    if with_sampler {
        k.push_str(&format!("|{}|{}", r.sampler, r.steps));
    }
    k
}

fn label(r: &Row) -> String {
    let mut s = format!(
        "{} ({}) {} seed {} {}-{} clip {}",
        r.metric, r.samples, r.cell, r.seed, r.sampler, r.steps, r.clip
    );
    if r.defense != "none" {
        s.push_str(&format!(" {} {}", r.defense, r.defense_param));
    }
    if let Some(e) = r.defense_epoch {
        s.push_str(&format!(" epoch {e}"));
    }
    if r.corruption != "none" {
        s.push_str(&format!(" from {}", r.corruption));
    }
    if r.schedule_share != 1.0 {
        s.push_str(&format!(" after {} epochs", r.epochs));
    }
    s
}

/// Protocol fields that differ between two matched rows.
fn protocol_diff(a: &Row, b: &Row) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: {x} → {y}"));
        }
    };
    cmp(
        "n_generated",
        a.n_generated.to_string(),
        b.n_generated.to_string(),
    );
    cmp(
        "n_reference",
        a.n_reference.to_string(),
        b.n_reference.to_string(),
    );
    cmp("sampler", a.sampler.clone(), b.sampler.clone());
    cmp("steps", a.steps.to_string(), b.steps.to_string());
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match (parse(&a.protocol), parse(&b.protocol)) {
        (Some(serde_json::Value::Object(pa)), Some(serde_json::Value::Object(pb))) => {
            let keys: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
            for k in keys {
                if ["n_generated", "n_reference", "sampler", "steps"].contains(&k.as_str()) {
                    continue;
                }
                let show = |v: Option<&serde_json::Value>| {
                    v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into())
                };
                if pa.get(k) != pb.get(k) {
                    out.push(format!(
                        "protocol.{k}: {} → {}",
                        show(pa.get(k)),
                        show(pb.get(k))
                    ));
                }
            }
        }
        _ if a.protocol != b.protocol => {
            out.push(format!("protocol: {} → {}", a.protocol, b.protocol))
        }
        _ => {}
    }
    out
}

fn compare(a: &Row, b: &Row, tol: &Tolerances) -> DiffRow {
    let rule = tol.rule_for(a);
    let protocol = protocol_diff(a, b);
    let delta = b.value - a.value;
    let allowed = rule.abs + rule.rel * a.value.abs();
    let status = if rule.direction == Direction::Ignore {
        Status::NotCompared
    } else if !protocol.is_empty() {
        Status::ProtocolMismatch
    } else if a.value.is_nan() || b.value.is_nan() {
        if a.value.is_nan() && b.value.is_nan() {
            Status::Ok
        } else {
            Status::Regressed
        }
    } else if delta.abs() <= allowed {
        Status::Ok
    } else {
        let worse = match rule.direction {
            Direction::Lower => delta > 0.0,
            Direction::Higher => delta < 0.0,
            Direction::Either | Direction::Ignore => true,
        };
        if worse {
            Status::Regressed
        } else {
            Status::Improved
        }
    };
    DiffRow {
        label: label(a),
        metric: a.metric.clone(),
        a: Some(a.value),
        b: Some(b.value),
        delta: Some(delta),
        allowed: Some(allowed),
        direction: rule.direction,
        status,
        protocol,
    }
}

fn unmatched(r: &Row, status: Status, tol: &Tolerances) -> DiffRow {
    let (a, b) = if status == Status::OnlyA {
        (Some(r.value), None)
    } else {
        (None, Some(r.value))
    };
    DiffRow {
        label: label(r),
        metric: r.metric.clone(),
        a,
        b,
        delta: None,
        allowed: None,
        direction: tol.rule_for(r).direction,
        status,
        protocol: Vec::new(),
    }
}

/// Compares run B against run A (the baseline).
pub fn diff(run_a: &str, a: &[Row], run_b: &str, b: &[Row], tol: &Tolerances) -> DiffReport {
    let mut out = Vec::new();
    let mut left: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in a {
        left.entry(key(r, true)).or_default().push(r);
    }
    let mut rest_b = Vec::new();
    for r in b {
        match left
            .get_mut(&key(r, true))
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            Some(ra) => out.push(compare(ra, r, tol)),
            None => rest_b.push(r),
        }
    }
    // Second pass: the same measurement under another sampler or step count is a protocol change.
    let mut rest_a: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in left.into_values().flatten() {
        rest_a.entry(key(r, false)).or_default().push(r);
    }
    for r in rest_b {
        let k = key(r, false);
        match rest_a.get_mut(&k) {
            Some(v) if v.len() == 1 => {
                let ra = v.remove(0);
                out.push(compare(ra, r, tol));
            }
            _ => out.push(unmatched(r, Status::OnlyB, tol)),
        }
    }
    for r in rest_a.into_values().flatten() {
        out.push(unmatched(r, Status::OnlyA, tol));
    }
    out.sort_by(|x, y| x.status.cmp(&y.status).then(x.label.cmp(&y.label)));
    let mut counts = BTreeMap::new();
    for r in &out {
        *counts.entry(status_name(r.status).to_string()).or_insert(0) += 1;
    }
    DiffReport {
        run_a: run_a.into(),
        run_b: run_b.into(),
        counts,
        rows: out,
        allow_protocol_change: false,
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Regressed => "regressed",
        Status::ProtocolMismatch => "protocol_mismatch",
        Status::OnlyA => "only_a",
        Status::OnlyB => "only_b",
        Status::Improved => "improved",
        Status::NotCompared => "not_compared",
        Status::Ok => "ok",
    }
}

impl DiffReport {
    /// Accept measurements whose protocol changed (listed, not compared, not failed).
    pub fn allowing_protocol_change(mut self, allow: bool) -> DiffReport {
        self.allow_protocol_change = allow;
        self
    }

    /// True when any metric regressed beyond its tolerance, a baseline measurement is missing
    /// from B (a run that lost a measurement is no pass; diff a filtered run against a baseline
    /// filtered alike), or a measurement's protocol changed without being allowed (it was not
    /// compared, so nothing says it did not regress). The command then exits non-zero.
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| match r.status {
            Status::Regressed | Status::OnlyA => true,
            Status::ProtocolMismatch => !self.allow_protocol_change,
            _ => false,
        })
    }

    /// How many measurements were compared value against value.
    pub fn compared(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.status, Status::Ok | Status::Improved | Status::Regressed))
            .count()
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("diff report serialises")
    }

    pub fn markdown(&self) -> String {
        let opt = |v: Option<f64>| v.map(num).unwrap_or_else(|| "—".into());
        let mut s = format!("# Diff: `{}` → `{}`\n\n", self.run_a, self.run_b);
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        s.push_str(&format!("{}.\n\n", counts.join(", ")));
        let sections = [
            (Status::Regressed, "Regressions beyond tolerance"),
            (
                Status::ProtocolMismatch,
                if self.allow_protocol_change {
                    "Protocol differs (not compared; allowed by --allow-protocol-change)"
                } else {
                    "Protocol differs (not compared: fails the diff unless --allow-protocol-change)"
                },
            ),
            (
                Status::OnlyA,
                "Only in A (missing from B: counts as a regression)",
            ),
            (Status::OnlyB, "Only in B"),
            (Status::Improved, "Improvements beyond tolerance"),
            (Status::NotCompared, "Not compared (machine costs)"),
        ];
        for (status, title) in sections {
            let rows: Vec<Vec<String>> = self
                .rows
                .iter()
                .filter(|r| r.status == status)
                .map(|r| {
                    vec![
                        r.label.clone(),
                        opt(r.a),
                        opt(r.b),
                        opt(r.delta),
                        opt(r.allowed),
                        format!("{:?}", r.direction).to_lowercase(),
                        r.protocol.join("; "),
                    ]
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let t = Table {
                id: status_name(status).into(),
                caption: title.into(),
                header: [
                    "measurement",
                    "A",
                    "B",
                    "B − A",
                    "allowed",
                    "better",
                    "protocol",
                ]
                .map(String::from)
                .to_vec(),
                align: vec!['l', 'r', 'r', 'r', 'r', 'l', 'l'],
                rows,
                note: None,
            };
            s.push_str(&t.markdown());
            s.push('\n');
        }
        let uncompared = self
            .rows
            .iter()
            .filter(|r| r.status == Status::ProtocolMismatch)
            .count();
        if self.compared() == 0 {
            s.push_str("No measurement was compared: nothing is known about regressions.\n");
        } else if !self.regressed() {
            s.push_str(&format!(
                "No compared metric ({}) regressed beyond its tolerance, and none is missing.",
                self.compared()
            ));
            if uncompared > 0 {
                s.push_str(&format!(
                    " {uncompared} measurement(s) under a changed protocol were not compared."
                ));
            }
            s.push('\n');
        }
        s
    }
}

/// A run directory (its `metrics.parquet`) or a Parquet file.
pub fn read_run(path: &Path) -> Result<(String, Vec<Row>)> {
    let file = if path.is_dir() {
        path.join(crate::schema::FRAME_FILE)
    } else {
        path.to_path_buf()
    };
    let rows = crate::schema::read_rows(&file)?;
    let name = rows
        .first()
        .map(|r| r.run_id.clone())
        .unwrap_or_else(|| path.display().to_string());
    Ok((name, rows))
}

#[cfg(test)]
mod tests;
