//! `cargo xtask bench --scaling`: how the smoke profile should spend its 2 cores, measured as
//! ratios in one run (ours only; there is no peer for a scheduling choice):
//! (a) throughput of two processes at 1 thread each against one process at 2 threads, for a
//!     training step and for sampling (small convolutions scale poorly across threads, so two
//!     cells side by side may beat one cell on both cores);
//! (b) sampling every evaluation set of one model (clean and trigger noise, each under three
//!     clippings: 6 sets) in one pass against one pass per set, at the profile's batch;
//! (c) images per second of sampling at other batch sizes, against the profile's batch.
//! Each configuration alternates with its counterpart over the rounds, so that load from other
//! users of the machine hits both alike.
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::binaries::baddiff;
use crate::project_root;

/// Evaluation sets of one fine-tuned model in the smoke profile's E4 cells.
const SETS_PER_MODEL: i64 = 6;
const BATCHES: [i64; 5] = [32, 64, 128, 256, 512];

/// Median of the timed repetitions a `baddiff bench --json` measurement reports.
fn median_s(m: &Value) -> Result<f64> {
    m["median_s"]
        .as_f64()
        .context("a measurement without median_s")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (a): work per second of `procs` processes at 1 thread against 1 process at `procs` threads,
/// from each side's seconds per repetition.
pub fn parallel_ratio(one_process_s: f64, each_process_s: &[f64]) -> f64 {
    let many: f64 = each_process_s.iter().map(|t| 1.0 / t).sum();
    many * one_process_s
}

fn spawn(spec: &Path, workload: &str, threads: u32, reps: usize) -> Result<std::process::Child> {
    Command::new(baddiff())
        .current_dir(project_root())
        .args(["bench", workload, "--json", "--spec-file"])
        .arg(spec)
        .args([
            "--threads",
            &threads.to_string(),
            "--reps",
            &reps.to_string(),
        ])
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting baddiff bench {workload}"))
}

fn finish(child: std::process::Child, what: &str) -> Result<Value> {
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON"))?;
    Ok(serde_json::from_str(line)?)
}

/// Seconds per repetition of `workload` under `spec`, `procs` processes side by side at
/// `threads` each; one median per process.
fn time(spec: &Path, workload: &str, procs: usize, threads: u32, reps: usize) -> Result<Vec<f64>> {
    let children: Vec<_> = (0..procs)
        .map(|_| spawn(spec, workload, threads, reps))
        .collect::<Result<_>>()?;
    children
        .into_iter()
        .map(|c| median_s(&finish(c, workload)?))
        .collect()
}

fn spec_of(workload: &str) -> Result<Value> {
    let out = Command::new(baddiff())
        .current_dir(project_root())
        .args(["bench", workload, "--spec"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "baddiff bench {workload} --spec failed"
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn write_spec(dir: &Path, name: &str, spec: &Value) -> Result<std::path::PathBuf> {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(spec)?)?;
    Ok(p)
}

pub fn run(rounds: usize, reps: usize) -> Result<Value> {
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();

    // (a) 2 processes x 1 thread against 1 process x 2 threads.
    for workload in ["train-step-scale", "sample-scale"] {
        let spec = write_spec(tmp.path(), workload, &spec_of(workload)?)?;
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            eprintln!("bench --scaling (a) {workload}: round {}/{rounds}", r + 1);
            one.push(time(&spec, workload, 1, 2, reps)?[0]);
            two.push(parallel_ratio(1.0, &time(&spec, workload, 2, 1, reps)?));
        }
        let t_one = median(&mut one);
        let work_two = median(&mut two); // repetitions per second of the pair
        rows.push(json!({
            "id": "a", "workload": workload,
            "what": "2 processes x 1 thread vs 1 process x 2 threads: work per second",
            "baseline": "1 process x 2 threads", "baseline_s": t_one,
            "ratio": work_two * t_one,
        }));
    }

    // (b) all evaluation sets of a model in one pass vs one pass per set, same batch.
    let base = spec_of("sample-scale")?;
    let n = base["n"].as_i64().context("sample-scale spec without n")?;
    let mut all = base.clone();
    all["n"] = json!(n * SETS_PER_MODEL);
    let (one_set, all_sets) = (
        write_spec(tmp.path(), "one-set", &base)?,
        write_spec(tmp.path(), "all-sets", &all)?,
    );
    let (mut per_set, mut batched) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        eprintln!("bench --scaling (b): round {}/{rounds}", r + 1);
        per_set.push(time(&one_set, "sample-scale", 1, 2, reps)?[0] * SETS_PER_MODEL as f64);
        batched.push(time(&all_sets, "sample-scale", 1, 2, reps)?[0]);
    }
    let (per_set, batched) = (median(&mut per_set), median(&mut batched));
    rows.push(json!({
        "id": "b", "workload": "sample-scale",
        "what": format!("{SETS_PER_MODEL} sets of {n} images in one pass vs one pass per set"),
        "baseline": "one pass per set", "baseline_s": per_set,
        "ratio": per_set / batched,
    }));

    // (c) sampling batch size, images per second against the profile's batch.
    let profile_batch = base["batch"]
        .as_i64()
        .context("sample-scale spec without batch")?;
    let n_c = *BATCHES.iter().max().unwrap();
    let mut times = vec![Vec::new(); BATCHES.len()];
    for r in 0..rounds {
        eprintln!("bench --scaling (c): round {}/{rounds}", r + 1);
        for (k, &b) in BATCHES.iter().enumerate() {
            let mut s = base.clone();
            s["batch"] = json!(b);
            s["n"] = json!(n_c);
            let p = write_spec(tmp.path(), &format!("batch-{b}"), &s)?;
            times[k].push(time(&p, "sample-scale", 1, 2, reps)?[0]);
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let at_profile = BATCHES
        .iter()
        .position(|&b| b == profile_batch)
        .map(|k| medians[k])
        .context("the profile's sampling batch is not among the measured ones")?;
    for (k, &b) in BATCHES.iter().enumerate() {
        rows.push(json!({
            "id": "c", "workload": "sample-scale",
            "what": format!("{n_c} images at batch {b}"),
            "baseline": format!("batch {profile_batch}"), "baseline_s": at_profile,
            "ratio": at_profile / medians[k], "seconds": medians[k],
        }));
    }
    Ok(json!({ "rounds": rounds, "reps": reps, "rows": rows }))
}

/// The table of a `run` result: one line per comparison, ratio > 1 meaning the alternative wins.
pub fn markdown(doc: &Value) -> String {
    let mut s = String::from(
        "| | workload | alternative | baseline | baseline s | ratio |\n|---|---|---|---|---|---|\n",
    );
    for r in doc["rows"].as_array().into_iter().flatten() {
        s += &format!(
            "| ({}) | {} | {} | {} | {:.3} | **{:.2}×** |\n",
            r["id"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            r["what"].as_str().unwrap_or(""),
            r["baseline"].as_str().unwrap_or(""),
            r["baseline_s"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
        );
    }
    s += "\nratio > 1: the alternative does more work per second than the baseline.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_that_each_take_the_same_time_as_one_do_twice_the_work() {
        assert_eq!(parallel_ratio(1.0, &[1.0, 1.0]), 2.0);
        // Each single-threaded process twice as slow: a tie.
        assert_eq!(parallel_ratio(1.0, &[2.0, 2.0]), 1.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn the_table_names_each_comparison_and_its_ratio() {
        let doc = json!({"rows": [{"id": "a", "workload": "w", "what": "x", "baseline": "y", "baseline_s": 1.5, "ratio": 1.25}]});
        let md = markdown(&doc);
        assert!(
            md.contains("| (a) | w | x | y | 1.500 | **1.25×** |"),
            "{md}"
        );
    }
}
