//! The arithmetic of the benchmark report: pooled medians and spread, the ratio peer/ours,
//! achieved FLOP/s against the matmul ceiling, the Markdown table, and `--compare` flagging.
//! Everything is plain JSON in and out, so old result files stay readable.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A ratio may fall by this fraction against the base before `--compare` calls it a slowdown:
/// repeated runs on this shared 2-core machine moved ratios by a few percent.
pub const DEFAULT_THRESHOLD: f64 = 0.10;

/// Reads a results JSON written by `cargo xtask bench`.
pub fn load(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if !doc["workloads"].is_array() {
        bail!(
            "{} is not a `cargo xtask bench` result (no `workloads` list); pass results/bench/<stamp>.json",
            path.display()
        );
    }
    Ok(doc)
}

/// Median and spread of a sample of times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation between order statistics).
    pub q1: f64,
    pub q3: f64,
}

/// `None` for an empty sample; non-finite values are dropped.
pub fn summarize(times: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
        let hi = (lo + 1).min(v.len() - 1);
        v[lo] + (v[hi] - v[lo]) * frac
    };
    Some(Summary {
        n: v.len(),
        median: q(0.5),
        min: v[0],
        max: v[v.len() - 1],
        q1: q(0.25),
        q3: q(0.75),
    })
}

fn times_of(runs: &[Value]) -> Vec<f64> {
    runs.iter()
        .flat_map(|r| r["times_s"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_f64())
        .collect()
}

fn max_of(runs: &[Value], key: &str) -> Option<f64> {
    runs.iter().filter_map(|r| r[key].as_f64()).reduce(f64::max)
}

fn side(runs: &[Value]) -> Result<Value> {
    let first = runs.first().context("no measurement")?;
    let s = summarize(&times_of(runs)).context("no repetition times")?;
    Ok(json!({
        "implementation": first["implementation"],
        "processes": runs.len(),
        "n": s.n,
        "median_s": s.median,
        "min_s": s.min,
        "max_s": s.max,
        "q1_s": s.q1,
        "q3_s": s.q3,
        "times_s": times_of(runs),
        // Peak memory over the side's processes, where measured (CUDA only): the tensors'
        // high-water mark (torch.cuda.max_memory_allocated, the peer only; tch has no binding)
        // and the process's whole GPU memory as nvidia-smi lists it (context and cache included).
        "peak_memory_bytes": max_of(runs, "peak_memory_bytes"),
        "gpu_memory_mib": max_of(runs, "gpu_memory_mib"),
    }))
}

/// One workload's row from the processes of both sides: pooled times, the ratio peer/ours, and
/// the FLOPs per repetition (whichever side counted them; the shapes are the same).
pub fn combine(workload: &str, ours: &[Value], peer: &[Value]) -> Result<Value> {
    let (o, p) = (
        ours.first().context("no measurement of ours")?,
        peer.first().context("no measurement of the peer")?,
    );
    for key in ["threads", "device", "dtype", "batch"] {
        if o[key] != p[key] {
            bail!(
                "{workload}: the sides ran with different {key} (ours {}, peer {}): the comparison would be unfair",
                o[key],
                p[key]
            );
        }
    }
    let (os, ps) = (side(ours)?, side(peer)?);
    let ratio =
        ps["median_s"].as_f64().unwrap_or(f64::NAN) / os["median_s"].as_f64().unwrap_or(f64::NAN);
    // The peer's share of time in the compute kernels both sides run (conv, matmul, attention):
    // even if everything else cost us nothing, peer/ours could not exceed 1/share.
    let share = peer.iter().find_map(|r| r["kernel_share"].as_f64());
    let counted = peer
        .iter()
        .chain(ours)
        .find(|r| r["flops"].as_f64().is_some_and(|f| f > 0.0));
    Ok(json!({
        "workload": workload,
        "what": o["spec"]["what"],
        "device": o["device"],
        "threads": o["threads"],
        "dtype": o["dtype"],
        "batch": o["batch"],
        "amp": o["amp"],
        "libtorch": {"ours": o["libtorch"], "peer": p["libtorch"]},
        "ours": os,
        "peer": ps,
        "ratio": ratio,
        "flops": counted.map(|r| r["flops"].clone()).unwrap_or(Value::Null),
        "flops_source": counted.map(|r| r["flops_source"].clone()).unwrap_or(Value::Null),
        "kernel_share": share,
        "ratio_bound": share.filter(|s| *s > 0.0).map(|s| 1.0 / s),
    }))
}

fn flops_per_s(row: &Value, side: &str) -> Option<f64> {
    let f = row["flops"].as_f64()?;
    let t = row[side]["median_s"].as_f64()?;
    (t > 0.0).then(|| f / t)
}

/// The whole result: rows with achieved FLOP/s and their fraction of the ceiling (the faster
/// side's matmul FLOP/s, when matmul ran).
pub fn document(meta: Value, mut rows: Vec<Value>, e2e: Option<Value>) -> Value {
    let ceiling = rows
        .iter()
        .find(|r| r["workload"] == "matmul")
        .and_then(|r| {
            let (a, b) = (flops_per_s(r, "ours"), flops_per_s(r, "peer"));
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        });
    for row in &mut rows {
        for s in ["ours", "peer"] {
            let achieved = flops_per_s(row, s);
            row[s]["flops_per_s"] = json!(achieved);
            row[s]["fraction_of_ceiling"] = json!(achieved.zip(ceiling).map(|(a, c)| a / c));
        }
    }
    json!({
        "meta": meta,
        "ceiling_flops_per_s": ceiling,
        "workloads": rows,
        "e2e": e2e,
    })
}

fn secs(v: &Value) -> String {
    match v.as_f64() {
        Some(t) if t >= 10.0 => format!("{t:.1}"),
        Some(t) if t >= 0.1 => format!("{t:.3}"),
        Some(t) => format!("{t:.4}"),
        None => "–".into(),
    }
}

fn gflops_and_share(side: &Value) -> String {
    rate_and_share(side, 1e9, "", "–")
}

/// A side's achieved FLOP/s in units of `per` (suffixed `unit`) with its share of the
/// ceiling, or `missing` when it was not counted; shared with the GPU check's table.
pub(crate) fn rate_and_share(side: &Value, per: f64, unit: &str, missing: &str) -> String {
    match (
        side["flops_per_s"].as_f64(),
        side["fraction_of_ceiling"].as_f64(),
    ) {
        (Some(f), Some(c)) => format!("{:.1}{unit} ({:.0} %)", f / per, c * 100.0),
        (Some(f), None) => format!("{:.1}{unit}", f / per),
        _ => missing.into(),
    }
}

/// The table for humans (and the README).
pub fn markdown(doc: &Value) -> String {
    let m = &doc["meta"];
    let mut s = String::new();
    s.push_str(&format!(
        "# Benchmarks {}\n\n`{}` at commit {}{} on {} ({} cores), {} threads per side, device {}, {} rounds of alternation.\n\n",
        m["stamp"].as_str().unwrap_or("?"),
        m["command"].as_str().unwrap_or("cargo xtask bench"),
        m["git_commit"].as_str().map(|c| &c[..c.len().min(10)]).unwrap_or("?"),
        if m["git_dirty"].as_bool() == Some(true) { " (with uncommitted changes)" } else { "" },
        m["host_cpu"].as_str().unwrap_or("unknown CPU"),
        m["host_cores"],
        m["threads"],
        m["device"].as_str().unwrap_or("?"),
        m["rounds"],
    ));
    s.push_str("| workload | ours median s [min–max] | peer median s [min–max] | peer/ours | bound | ours GFLOP/s (of ceiling) | peer GFLOP/s (of ceiling) | peer |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in doc["workloads"].as_array().into_iter().flatten() {
        let (o, p) = (&r["ours"], &r["peer"]);
        s.push_str(&format!(
            "| {} | {} [{}–{}] | {} [{}–{}] | **{:.2}×** | {} | {} | {} | {} |\n",
            r["workload"].as_str().unwrap_or("?"),
            secs(&o["median_s"]),
            secs(&o["min_s"]),
            secs(&o["max_s"]),
            secs(&p["median_s"]),
            secs(&p["min_s"]),
            secs(&p["max_s"]),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            match (r["ratio_bound"].as_f64(), r["kernel_share"].as_f64()) {
                (Some(b), Some(k)) => format!("{b:.2}× ({:.0} %)", k * 100.0),
                _ => "–".into(),
            },
            gflops_and_share(o),
            gflops_and_share(p),
            p["implementation"].as_str().unwrap_or("?"),
        ));
    }
    s.push_str("\npeer/ours > 1 means ours is faster. Times pool every timed repetition of every round (each process warms up once, untimed).\n");
    s.push_str("Bound: 1 / the peer's share of time in convolutions, matrix products and attention (in parentheses; measured once with torch.profiler on the CPU): the largest peer/ours possible while both sides run those same kernels, even if every other op of ours took no time. Only different kernels or less work (as fid-features' folded BatchNorm and channels-last convolutions) can pass it.\n");
    if let Some(c) = doc["ceiling_flops_per_s"].as_f64() {
        s.push_str(&format!(
            "Ceiling: the faster side's float32 matmul, {:.1} GFLOP/s. ",
            c / 1e9
        ));
    }
    s.push_str("FLOPs per repetition: matmul 2n³; the others counted once by torch.utils.flop_counter.FlopCounterMode in the peer (matmul, convolution, attention; elementwise ops not counted, so achieved rates are lower bounds).\n");
    for r in doc["workloads"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "\n- `{}`: {}",
            r["workload"].as_str().unwrap_or("?"),
            r["what"].as_str().unwrap_or("")
        ));
    }
    s.push('\n');
    if let Some(e) = doc["e2e"].as_object() {
        s.push_str(&format!(
            "\nSmoke profile end to end (`cargo xtask reproduce`): cold cache {} s, warm cache {} s.\n",
            secs(&e.get("cold_s").cloned().unwrap_or(Value::Null)),
            secs(&e.get("warm_s").cloned().unwrap_or(Value::Null)),
        ));
    }
    s
}

/// Workloads whose ratio fell below `(1 − threshold) ×` the base's, as messages.
pub fn regressions(base: &Value, new: &Value, threshold: f64) -> Vec<String> {
    let ratio_in = |doc: &Value, w: &str| {
        doc["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["workload"] == w)
            .and_then(|r| r["ratio"].as_f64())
    };
    let mut out = Vec::new();
    for r in new["workloads"].as_array().into_iter().flatten() {
        let Some(w) = r["workload"].as_str() else {
            continue;
        };
        let (Some(now), Some(before)) = (r["ratio"].as_f64(), ratio_in(base, w)) else {
            continue;
        };
        if now < before * (1.0 - threshold) {
            out.push(format!(
                "{w}: peer/ours {now:.2}× against {before:.2}× in the base ({:+.0} %)",
                (now / before - 1.0) * 100.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(side: &str, times: &[f64], flops: Option<f64>) -> Value {
        json!({
            "workload": "w", "side": side, "implementation": format!("{side} impl"),
            "device": "cpu", "threads": 2, "dtype": "float32", "batch": 4,
            "times_s": times, "flops": flops, "flops_source": flops.map(|_| "counted"),
            "libtorch": "2.13.0", "spec": {"what": "a test workload"},
        })
    }

    #[test]
    fn summary_median_quartiles_and_spread() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (5, 3.0, 1.0, 5.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        let even = summarize(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert_eq!((even.q1, even.q3), (1.75, 3.25));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN, 2.0]).unwrap().median, 2.0);
    }

    #[test]
    fn combine_pools_rounds_and_divides_peer_by_ours() {
        let ours = [run("ours", &[1.0, 3.0], None), run("ours", &[2.0], None)];
        let peer = [
            run("peer", &[4.0], Some(8e9)),
            run("peer", &[6.0, 5.0], None),
        ];
        let row = combine("w", &ours, &peer).unwrap();
        assert_eq!(row["ours"]["median_s"], 2.0);
        assert_eq!(row["peer"]["median_s"], 5.0);
        assert_eq!(row["ours"]["n"], 3);
        assert_eq!(row["ours"]["processes"], 2);
        assert_eq!(row["ratio"], 2.5);
        assert_eq!(row["flops"], 8e9);
        assert_eq!(row["flops_source"], "counted");
    }

    #[test]
    fn the_bound_is_one_over_the_peers_kernel_share() {
        let mut peer = run("peer", &[2.0], None);
        peer["kernel_share"] = json!(0.8);
        let row = combine("w", &[run("ours", &[1.5], None)], &[peer]).unwrap();
        assert_eq!(row["kernel_share"], 0.8);
        assert!((row["ratio_bound"].as_f64().unwrap() - 1.25).abs() < 1e-12);
        let md = markdown(&document(json!({}), vec![row], None));
        assert!(md.contains("| **1.33×** | 1.25× (80 %) |"), "{md}");
    }

    #[test]
    fn combine_refuses_unequal_settings() {
        let mut peer = run("peer", &[1.0], None);
        peer["threads"] = json!(1);
        let err = combine("w", &[run("ours", &[1.0], None)], &[peer])
            .unwrap_err()
            .to_string();
        assert!(err.contains("threads") && err.contains("unfair"), "{err}");
    }

    #[test]
    fn fractions_of_the_matmul_ceiling() {
        // matmul: ours 100 GFLOP/s, peer 80: the ceiling is 100.
        let mm = combine(
            "matmul",
            &[run("ours", &[0.1], Some(10e9))],
            &[run("peer", &[0.125], Some(10e9))],
        )
        .unwrap();
        let w = combine(
            "w",
            &[run("ours", &[1.0], None)],
            &[run("peer", &[2.5], Some(25e9))],
        )
        .unwrap();
        let doc = document(json!({}), vec![mm, w], None);
        assert!((doc["ceiling_flops_per_s"].as_f64().unwrap() - 100e9).abs() < 1.0);
        let row = &doc["workloads"][1];
        assert!((row["ours"]["fraction_of_ceiling"].as_f64().unwrap() - 0.25).abs() < 1e-12);
        assert!((row["peer"]["fraction_of_ceiling"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        let md = markdown(&doc);
        assert!(md.contains("| w | 1.000 [1.000–1.000] | 2.500 [2.500–2.500] | **2.50×** | – | 25.0 (25 %) | 10.0 (10 %) | peer impl |"), "{md}");
        // Without matmul there is no ceiling, only rates.
        let alone = document(json!({}), vec![doc["workloads"][1].clone()], None);
        assert!(alone["ceiling_flops_per_s"].is_null());
        assert!(alone["workloads"][0]["ours"]["fraction_of_ceiling"].is_null());
    }

    #[test]
    fn compare_flags_only_drops_beyond_the_threshold() {
        let doc = |ratios: &[(&str, f64)]| json!({"workloads": ratios.iter().map(|(w, r)| json!({"workload": w, "ratio": r})).collect::<Vec<_>>()});
        let base = doc(&[("a", 2.0), ("b", 1.0), ("c", 1.5)]);
        // a: -5 % (within 10 %), b: -20 % (flagged), c: faster, d: not in the base.
        let new = doc(&[("a", 1.9), ("b", 0.8), ("c", 1.8), ("d", 0.1)]);
        let slow = regressions(&base, &new, 0.10);
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(
            slow[0].starts_with("b:") && slow[0].contains("-20 %"),
            "{slow:?}"
        );
        assert!(regressions(&base, &base, 0.10).is_empty());
        assert_eq!(regressions(&base, &new, 0.03).len(), 2);
    }
}
