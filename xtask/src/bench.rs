//! `cargo xtask bench`: our implementation against what users would otherwise run (PyTorch
//! eager, diffusers, pytorch-fid) on the same libtorch, same shapes and thread count.
//!
//! For each workload it asks `baddiff bench W --spec` for the shapes, then alternates processes
//! (ours, peer, ours, peer, ...) so that load from other users of the machine hits both alike,
//! pools each side's repetition times and reports medians, spread and the ratio peer/ours (> 1:
//! we are faster). Results go to `results/bench/<UTC stamp>.{md,json}` and `latest.{md,json}`.
//! The report math lives in [`report`] and is unit-tested; this file only runs programs.
mod kernels;
pub(crate) mod report;
mod scaling;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{git, project_root};

/// Every workload, in the order they run (the ceiling first).
const WORKLOADS: [&str; 5] = [
    "matmul",
    "train-step-cifar10",
    "train-step-scale",
    "sample-scale",
    "fid-features",
];

#[derive(clap::Args)]
pub struct Args {
    /// Rounds of alternation; each round runs ours once and the peer once (each process times
    /// the workload's default repetitions after a warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Only these workloads (repeatable): matmul, train-step-cifar10, train-step-scale,
    /// sample-scale, fid-features.
    #[arg(long)]
    only: Vec<String>,
    /// A previous results JSON: exit 1 if a workload's ratio fell by more than --threshold.
    /// With --kernels: the name of a saved criterion baseline; exit 1 if a kernel's mean time
    /// grew by more than --threshold beyond criterion's noise.
    #[arg(long, value_name = "BASE.json|NAME")]
    compare: Option<PathBuf>,
    /// Run the criterion benchmarks of the inner kernels instead of the side-by-side workloads
    /// (with --save-baseline and/or --compare NAME).
    #[arg(long)]
    kernels: bool,
    /// With --kernels: store this run's kernel times as criterion baseline NAME.
    #[arg(long, value_name = "NAME", requires = "kernels")]
    save_baseline: Option<String>,
    /// Allowed relative drop of a ratio against --compare's before it counts as a slowdown.
    #[arg(long, default_value_t = report::DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Also time the smoke profile end to end (`cargo xtask reproduce`), cold and warm cache.
    #[arg(long)]
    e2e: bool,
    /// Inputs for the cold --e2e run on machines without network (passed to reproduce).
    #[arg(long = "mirror", value_name = "DIR|URL")]
    mirrors: Vec<String>,
    /// Intra-op threads of both sides [default: the machine's cores].
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N for both sides [default: cpu].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Mixed precision (autocast) on both sides; CUDA only.
    #[arg(long)]
    amp: bool,
    /// Instead of the side-by-side workloads: how the smoke profile should use its cores
    /// (2 cells x 1 thread vs 1 cell x 2 threads, one sampling pass per model, sampling batch),
    /// as ratios over --reps rounds; writes results/bench/<stamp>-scaling.{md,json}.
    #[arg(long, conflicts_with = "kernels")]
    scaling: bool,
}

use crate::binaries::baddiff;

pub(crate) fn python() -> Result<PathBuf> {
    let py = project_root().join(".venv/bin/python");
    anyhow::ensure!(
        py.exists(),
        "the project's Python environment is missing ({}): run `cargo xtask setup`",
        py.display()
    );
    Ok(py)
}

/// Runs a measuring process and parses the one JSON object it prints. On CUDA, the process's
/// GPU memory as the driver reports it (`nvidia-smi`, polled while it runs) is added as
/// `gpu_memory_mib` when the driver lists the process.
fn measure(cmd: &mut Command, threads: usize, what: &str, cuda: bool) -> Result<Value> {
    let child = cmd
        .current_dir(project_root())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let poller = cuda.then(|| {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak: Option<u64> = None;
            while !done.load(Ordering::Relaxed) {
                if let Some(mib) = nvidia_smi_apps().and_then(|t| process_memory_mib(&t, pid)) {
                    peak = Some(peak.map_or(mib, |p| p.max(mib)));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        })
    });
    let out = child.wait_with_output();
    done.store(true, Ordering::Relaxed);
    let peak = poller.and_then(|p| p.join().ok().flatten());
    let out = out.with_context(|| format!("waiting for {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON: {text}"))?;
    let mut v: Value = serde_json::from_str(line)
        .with_context(|| format!("{what} printed invalid JSON: {line}"))?;
    if let Some(mib) = peak {
        v["gpu_memory_mib"] = json!(mib);
    }
    Ok(v)
}

/// `nvidia-smi`'s list of compute processes (pid, used MiB), or `None` without it.
fn nvidia_smi_apps() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The MiB `pid` holds in `nvidia-smi --query-compute-apps=pid,used_memory` CSV (summed over
/// GPUs). Inside a container the driver may list host PIDs only: then `None`, "not measured".
pub(crate) fn process_memory_mib(csv: &str, pid: u32) -> Option<u64> {
    let mut total = None;
    for line in csv.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(p), Some(m)) = (fields.next(), fields.next()) else {
            continue;
        };
        if p.parse::<u32>().ok() == Some(pid) {
            if let Ok(mib) = m.parse::<u64>() {
                total = Some(total.unwrap_or(0) + mib);
            }
        }
    }
    total
}

/// How one workload is compared.
pub(crate) struct Comparison<'a> {
    pub rounds: usize,
    pub threads: usize,
    pub device: &'a str,
    pub amp: bool,
    pub python: &'a Path,
    /// Where the workload's spec file goes.
    pub tmp: &'a Path,
}

/// Ours against the peer on workload `w`, alternating `rounds` times: the report row.
pub(crate) fn compare(w: &str, c: &Comparison) -> Result<Value> {
    let spec_out = Command::new(baddiff())
        .args(["bench", w, "--spec"])
        .current_dir(project_root())
        .output()?;
    anyhow::ensure!(
        spec_out.status.success(),
        "baddiff bench {w} --spec failed: {}",
        String::from_utf8_lossy(&spec_out.stderr)
    );
    let spec_path = c.tmp.join(format!("{w}.json"));
    std::fs::write(&spec_path, &spec_out.stdout)?;
    let threads_arg = c.threads.to_string();
    let cuda = c.device.starts_with("cuda");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..c.rounds {
        eprintln!("bench {w}: round {}/{}", round + 1, c.rounds);
        let mut cmd = Command::new(baddiff());
        cmd.args(["bench", w, "--json", "--threads", threads_arg.as_str()])
            .args(["--device", c.device]);
        if c.amp {
            cmd.arg("--amp");
        }
        ours.push(measure(
            &mut cmd,
            c.threads,
            &format!("baddiff bench {w}"),
            cuda,
        )?);
        let mut cmd = Command::new(c.python);
        cmd.arg(project_root().join("python/bench/peer.py"))
            .arg(&spec_path)
            .args(["--threads", threads_arg.as_str(), "--device", c.device])
            .args(["--reps", peer_reps(&ours[0]).to_string().as_str()]);
        if c.amp {
            cmd.arg("--amp");
        }
        if round == 0 {
            cmd.arg("--count-flops");
        }
        peer.push(measure(
            &mut cmd,
            c.threads,
            &format!("python/bench/peer.py {w}"),
            cuda,
        )?);
    }
    report::combine(w, &ours, &peer)
}

pub fn run(a: Args) -> Result<()> {
    for w in &a.only {
        anyhow::ensure!(
            WORKLOADS.contains(&w.as_str()),
            "unknown workload `{w}` in --only: use one of {}",
            WORKLOADS.join(", ")
        );
    }
    anyhow::ensure!(a.reps > 0, "--reps must be at least 1");
    anyhow::ensure!(
        (0.0..1.0).contains(&a.threshold),
        "--threshold is a fraction in [0, 1), got {}",
        a.threshold
    );
    if a.kernels {
        let compare = a
            .compare
            .as_ref()
            .map(|p| p.to_str().context("--compare NAME is not UTF-8"))
            .transpose()?;
        return kernels::run(kernels::KernelArgs {
            save_baseline: a.save_baseline.as_deref(),
            compare,
            threshold: a.threshold,
        });
    }
    if a.scaling {
        crate::binaries::build()?;
        let started = Instant::now();
        let mut doc = scaling::run(a.reps, 2)?;
        doc["meta"] = run_meta();
        doc["meta"]["wall_s"] = json!(started.elapsed().as_secs_f64());
        let stamp = doc["meta"]["stamp"].as_str().unwrap_or("run").to_string();
        let md = format!(
            "# Scaling {stamp}\n\n`{}` at commit {} on {} ({} cores), {} rounds.\n\n{}",
            doc["meta"]["command"].as_str().unwrap_or(""),
            doc["meta"]["git_commit"].as_str().unwrap_or("?"),
            doc["meta"]["host_cpu"].as_str().unwrap_or("?"),
            doc["meta"]["host_cores"],
            a.reps,
            scaling::markdown(&doc)
        );
        let dir = project_root().join("results/bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(format!("{stamp}-scaling.json")),
            serde_json::to_string_pretty(&doc)?,
        )?;
        std::fs::write(dir.join(format!("{stamp}-scaling.md")), &md)?;
        println!("{md}");
        return Ok(());
    }
    let base = match &a.compare {
        Some(p) => Some(report::load(p)?),
        None => None,
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let py = python()?;
    // The binaries the reproduction runs are the ones measured.
    crate::binaries::build()?;
    let started = Instant::now();
    let tmp = std::env::temp_dir().join(format!("baddiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;

    let selected: Vec<&str> = WORKLOADS
        .into_iter()
        .filter(|w| a.only.is_empty() || a.only.iter().any(|o| o == w))
        .collect();
    let mut results = Vec::new();
    let comparison = Comparison {
        rounds: a.reps,
        threads,
        device: &a.device,
        amp: a.amp,
        python: &py,
        tmp: &tmp,
    };
    for &w in &selected {
        results.push(compare(w, &comparison)?);
    }
    let _ = std::fs::remove_dir_all(&tmp);

    let e2e = if a.e2e { Some(end_to_end(&a)?) } else { None };
    let mut meta = run_meta();
    for (k, v) in [
        ("threads", json!(threads)),
        ("device", json!(a.device)),
        ("rounds", json!(a.reps)),
        ("wall_s", json!(started.elapsed().as_secs_f64())),
    ] {
        meta[k] = v;
    }
    let doc = report::document(meta, results, e2e);
    let md = report::markdown(&doc);
    let dir = project_root().join("results/bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = doc["meta"]["stamp"].as_str().unwrap_or("run").to_string();
    let text = serde_json::to_string_pretty(&doc)?;
    for name in [stamp.as_str(), "latest"] {
        std::fs::write(dir.join(format!("{name}.json")), &text)?;
        std::fs::write(dir.join(format!("{name}.md")), &md)?;
    }
    println!("{md}");
    println!(
        "written: {} and latest.{{md,json}}",
        dir.join(format!("{stamp}.{{md,json}}")).display()
    );
    if let Some(base) = base {
        let slow = report::regressions(&base, &doc, a.threshold);
        if !slow.is_empty() {
            for s in &slow {
                eprintln!("SLOWER: {s}");
            }
            bail!(
                "{} workload(s) lost more than {:.0} % of their speed ratio against {}",
                slow.len(),
                a.threshold * 100.0,
                a.compare
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        println!(
            "no workload's ratio fell by more than {:.0} % against the base",
            a.threshold * 100.0
        );
    }
    Ok(())
}

/// The peer runs as many timed repetitions as our side did.
fn peer_reps(ours: &Value) -> usize {
    ours["times_s"].as_array().map_or(1, |t| t.len().max(1))
}

/// `cargo xtask reproduce` on the smoke profile with an empty cache (cold), then again (warm).
/// Both runs write to a temporary runs folder and do not republish `paper/`, so timing leaves
/// the repository as it was.
fn end_to_end(a: &Args) -> Result<Value> {
    let cache = std::env::temp_dir().join(format!("baddiff-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)?;
    let mut times = serde_json::Map::new();
    for phase in ["cold", "warm"] {
        eprintln!(
            "bench e2e: smoke profile, {phase} cache ({})",
            cache.display()
        );
        let mut args: Vec<OsString> = vec![
            "reproduce".into(),
            "--profile".into(),
            "smoke".into(),
            "--run-id".into(),
            format!("bench-e2e-{phase}-{}", crate::reproduce::utc_stamp()).into(),
            "--runs-dir".into(),
            cache.join("runs").into(),
            "--no-publish".into(),
        ];
        for m in &a.mirrors {
            args.extend(["--mirror".into(), m.into()]);
        }
        let start = Instant::now();
        // This same xtask, so the run builds exactly what `reproduce` builds.
        let status = Command::new(std::env::current_exe()?)
            .current_dir(project_root())
            .args(&args)
            .env("BADDIFF_CACHE", &cache)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "the {phase} end-to-end run failed ({status}); its cache is {}",
            cache.display()
        );
        times.insert(format!("{phase}_s"), json!(start.elapsed().as_secs_f64()));
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(Value::Object(times))
}

/// What produced a results file: when, by which command, at which commit, on which machine.
fn run_meta() -> Value {
    json!({
        "stamp": crate::reproduce::utc_stamp(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "host_cpu": host_cpu(),
        "host_cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
    })
}

fn host_cpu() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::process_memory_mib;

    #[test]
    fn a_process_gpu_memory_is_read_from_nvidia_smi_csv() {
        let csv = "1234, 5120\n999, 100\n1234, 2048\n";
        // Summed over the GPUs that list it; absent (a container's PID namespace) is None.
        assert_eq!(process_memory_mib(csv, 1234), Some(7168));
        assert_eq!(process_memory_mib(csv, 999), Some(100));
        assert_eq!(process_memory_mib(csv, 42), None);
        assert_eq!(process_memory_mib("No running processes found", 1), None);
    }
}
