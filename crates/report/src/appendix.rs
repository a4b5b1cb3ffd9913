//! The artifact-evaluation appendix, generated from the run's `manifest.json`: hardware and
//! toolchain, time and disk per stage and per experiment, the command per claim, and the manifest
//! itself. The manifest is read loosely: sections whose fields the pipeline did not write are left
//! out rather than invented.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::claims::ClaimVerdict;
use crate::doc::Block;
use crate::tables::{num, Table};

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_f64() => {
            Some(n.as_f64().map(num).unwrap_or_else(|| n.to_string()))
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Top-level scalars and the scalars of top-level objects (e.g. `git.commit`, `host.cpu`).
fn environment(manifest: &Value) -> Table {
    let mut rows = Vec::new();
    if let Value::Object(map) = manifest {
        for (k, v) in map {
            if let Some(s) = scalar(v) {
                rows.push(vec![k.clone(), s]);
            } else if let Value::Object(inner) = v {
                for (k2, v2) in inner {
                    if let Some(s) = scalar(v2) {
                        rows.push(vec![format!("{k}.{k2}"), s]);
                    }
                }
            }
        }
    }
    Table {
        id: "environment".into(),
        caption: "Hardware, toolchain and commit (from manifest.json)".into(),
        header: vec!["field".into(), "value".into()],
        align: vec!['l', 'l'],
        note: rows
            .is_empty()
            .then(|| "manifest.json has no scalar fields".to_string()),
        rows,
    }
}

/// Seconds as "1h 02m 03s", "2m 05s" or "12.3 s".
pub fn duration(s: f64) -> String {
    if !s.is_finite() {
        return "—".into();
    }
    let t = s.round() as u64;
    if t >= 3600 {
        format!("{}h {:02}m {:02}s", t / 3600, (t % 3600) / 60, t % 60)
    } else if t >= 60 {
        format!("{}m {:02}s", t / 60, t % 60)
    } else {
        format!("{s:.1} s")
    }
}

/// Bytes in binary units.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn field<'a>(obj: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| obj.get(n))
}

fn field_f64(obj: &Value, names: &[&str]) -> Option<f64> {
    field(obj, names).and_then(Value::as_f64)
}

fn field_str(obj: &Value, names: &[&str]) -> Option<String> {
    field(obj, names).and_then(scalar)
}

/// Stage records: `stages` as a list of objects, or as a map from stage name to object.
fn stages(manifest: &Value) -> Vec<(String, Value)> {
    match manifest.get("stages") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                let name = field_str(s, &["stage", "name", "kind"]).unwrap_or_default();
                (name, s.clone())
            })
            .collect(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Vec::new(),
    }
}

const WALL: &[&str] = &["wall_s", "wall_time_s", "seconds", "wall_seconds"];
const DISK: &[&str] = &["disk_bytes", "disk"];
const PEAK: &[&str] = &["peak_mem_bytes", "peak_rss_bytes", "peak_memory_bytes"];

fn cost_tables(manifest: &Value) -> Vec<Table> {
    let stages = stages(manifest);
    if stages.is_empty() {
        return Vec::new();
    }
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "—".into());
    let per_stage: Vec<Vec<String>> = stages
        .iter()
        .map(|(name, s)| {
            vec![
                name.clone(),
                field_str(s, &["experiment"]).unwrap_or_else(|| "—".into()),
                field_str(s, &["cell"]).unwrap_or_else(|| "—".into()),
                field_str(s, &["status", "outcome"]).unwrap_or_else(|| "—".into()),
                opt(field_f64(s, WALL), duration),
                opt(field_f64(s, PEAK), bytes),
                opt(field_f64(s, DISK), bytes),
            ]
        })
        .collect();
    // Cells list the stages they share (the base model, a model several evaluations sample):
    // each distinct stage counts once per experiment, and once in the total.
    let mut per_exp: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut total = (0.0, 0.0, 0usize);
    let mut seen_total: BTreeSet<String> = BTreeSet::new();
    for (i, (_, s)) in stages.iter().enumerate() {
        let exp = field_str(s, &["experiment"]).unwrap_or_else(|| "(shared)".into());
        let key = field_str(s, &["key"]).unwrap_or_else(|| format!("#{i}"));
        let (wall, disk) = (
            field_f64(s, WALL).unwrap_or(0.0),
            field_f64(s, DISK).unwrap_or(0.0),
        );
        if seen.insert((exp.clone(), key.clone())) {
            let e = per_exp.entry(exp).or_default();
            e.0 += wall;
            e.1 += disk;
            e.2 += 1;
        }
        if seen_total.insert(key) {
            total.0 += wall;
            total.1 += disk;
            total.2 += 1;
        }
    }
    let mut exp_rows: Vec<Vec<String>> = per_exp
        .into_iter()
        .map(|(k, (w, d, n))| vec![k, n.to_string(), duration(w), bytes(d)])
        .collect();
    exp_rows.push(vec![
        "all (distinct stages)".into(),
        total.2.to_string(),
        duration(total.0),
        bytes(total.1),
    ]);
    vec![
        Table {
            id: "cost-experiments".into(),
            caption: "Measured wall time and disk per experiment (each distinct stage once, as recorded when it ran; stages shared between experiments count in each)".into(),
            header: ["experiment", "stages", "wall time", "disk"]
                .map(String::from)
                .to_vec(),
            align: vec!['l', 'r', 'r', 'r'],
            rows: exp_rows,
            note: None,
        },
        Table {
            id: "cost-stages".into(),
            caption: "Measured wall time, peak memory and disk per stage".into(),
            header: [
                "stage",
                "experiment",
                "cell",
                "status",
                "wall time",
                "peak memory",
                "disk",
            ]
            .map(String::from)
            .to_vec(),
            align: vec!['l', 'l', 'l', 'l', 'r', 'r', 'r'],
            rows: per_stage,
            note: None,
        },
    ]
}

/// Commands per claim: from the verdicts, else from the manifest's `commands` map.
fn commands(manifest: Option<&Value>, verdicts: &[ClaimVerdict]) -> Option<Table> {
    let mut rows: Vec<Vec<String>> = verdicts
        .iter()
        .filter_map(|c| {
            c.command
                .as_ref()
                .map(|cmd| vec![c.id.clone(), format!("`{cmd}`")])
        })
        .collect();
    if rows.is_empty() {
        if let Some(Value::Object(m)) = manifest.and_then(|m| m.get("commands")) {
            rows = m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|c| vec![k.clone(), format!("`{c}`")]))
                .collect();
        }
    }
    (!rows.is_empty()).then(|| Table {
        id: "commands".into(),
        caption: "The command that reproduces each claim".into(),
        header: vec!["claim".into(), "command".into()],
        align: vec!['l', 'l'],
        rows,
        note: None,
    })
}

/// The appendix blocks.
pub fn blocks(manifest: Option<&Value>, verdicts: &[ClaimVerdict]) -> Vec<Block> {
    let mut out = vec![Block::Heading {
        level: 2,
        text: "Appendix: artifact evaluation".into(),
        anchor: Some("appendix".into()),
    }];
    let Some(m) = manifest else {
        out.push(Block::Para(
            "_This run has no manifest.json: hardware, commit and costs are unknown._".into(),
        ));
        return out;
    };
    out.push(Block::Table(environment(m)));
    let costs = cost_tables(m);
    if costs.is_empty() {
        out.push(Block::Para(
            "_The manifest records no per-stage wall time or disk._".into(),
        ));
    }
    out.extend(costs.into_iter().map(Block::Table));
    if let Some(t) = commands(Some(m), verdicts) {
        out.push(Block::Table(t));
    }
    out.push(Block::Heading {
        level: 3,
        text: "Run manifest".into(),
        anchor: Some("manifest".into()),
    });
    out.push(Block::Code(
        serde_json::to_string_pretty(m).unwrap_or_else(|_| m.to_string()),
    ));
    out
}
