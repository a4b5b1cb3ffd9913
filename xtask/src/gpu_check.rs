//! `cargo xtask gpu-check`: the one command to run the day a GPU is at hand (under 8 minutes on
//! one GPU). It runs `baddiff gpu-check parity|fp16|sampling-sweep|defenses` and `cargo xtask bench`'s
//! side-by-side harness on the GPU-sized workloads, then prints one table and writes
//! `results/gpu-check/<stamp>.{md,json}` and `latest.{md,json}`, whose `plan_rates` the GPU
//! profiles' plan then uses instead of its guesses. The report is built in [`report`].
mod report;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{compare, python, Comparison};
use crate::binaries::baddiff;
use crate::{git, project_root};

/// The GPU-sized workloads of the throughput part and whether each runs under autocast: the
/// training step as the GPU profiles train (fp16), the rest in float32 as the reproduction runs
/// them. Order: the ceiling first.
const WORKLOADS: [(&str, bool); 4] = [
    ("matmul-gpu", false),
    ("train-step-cifar10-gpu", true),
    ("sample-cifar10", false),
    ("fid-features", false),
];

/// What `baddiff gpu-check` says when it refuses (no usable GPU).
const REFUSAL: &str = "gpu-check measures a CUDA GPU";

#[derive(clap::Args)]
pub struct Args {
    /// Rounds of alternation (ours, peer) per throughput workload; each process times the
    /// workload's default repetitions after a warm-up. 2 keeps the whole check near 6 minutes.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Float16 training steps of the backdoor loss.
    #[arg(long, default_value_t = 200)]
    fp16_steps: u64,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(a.fp16_steps >= 2, "--fp16-steps must be at least 2");
    crate::binaries::build()?;
    let started = Instant::now();
    // Parity first: it refuses on a machine without a usable GPU before anything else runs,
    // and nothing is written then.
    let parity = parity(&baddiff())?;
    let fp16 = settle(part(
        &baddiff(),
        &["fp16", "--steps", &a.fp16_steps.to_string()],
    ));
    let throughput = settle(throughput(a.rounds));
    let sampling = settle(part(&baddiff(), &["sampling-sweep"]));
    let defenses = settle(part(&baddiff(), &["defenses"]));
    let meta = json!({
        "stamp": crate::reproduce::utc_stamp(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "gpu": gpu_info(),
        "rounds": a.rounds,
        "wall_s": started.elapsed().as_secs_f64(),
        "budget_s": report::BUDGET_S,
    });
    let doc = report::with_defenses(
        report::document(meta, parity, fp16, throughput, sampling),
        defenses,
    );
    let md = report::markdown(&doc);
    let dir = project_root().join("results/gpu-check");
    std::fs::create_dir_all(&dir)?;
    let stamp = doc["meta"]["stamp"].as_str().unwrap_or("run").to_string();
    let text = serde_json::to_string_pretty(&doc)?;
    // Each file whole or absent: written aside, then renamed over (latest last), so a killed
    // run never leaves a half report that the plan would read.
    for name in [stamp.as_str(), "latest"] {
        for (ext, body) in [("json", &text), ("md", &md)] {
            let tmp = dir.join(format!(".{name}.{ext}.partial"));
            std::fs::write(&tmp, body)?;
            std::fs::rename(&tmp, dir.join(format!("{name}.{ext}")))?;
        }
    }
    println!("{md}");
    println!(
        "written: {} and latest.{{md,json}}",
        dir.join(format!("{stamp}.{{md,json}}")).display()
    );
    if doc["pass"] != true {
        bail!(
            "gpu-check found problems: {}",
            doc["failures"]
                .as_array()
                .map(|f| f
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// A part's JSON, or `{"error": ...}`: one failing part still leaves the others' results.
fn settle(r: Result<Value>) -> Value {
    r.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
}

/// The parity part, with TF32 off (cuBLAS and cuDNN read NVIDIA_TF32_OVERRIDE when they start;
/// TF32's 10-bit mantissa would fail float32 parity by design). A refusal (no usable GPU) is
/// this command's error; any other failure is recorded in the report.
pub(crate) fn parity(baddiff: &Path) -> Result<Value> {
    match run_part(baddiff, &["parity"], &[("NVIDIA_TF32_OVERRIDE", "0")]) {
        Err(e) if format!("{e:#}").contains(REFUSAL) => Err(e),
        other => Ok(settle(other)),
    }
}

fn part(baddiff: &Path, args: &[&str]) -> Result<Value> {
    run_part(baddiff, args, &[])
}

/// `baddiff gpu-check ARGS`: the one JSON object it prints, or its error.
fn run_part(baddiff: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Value> {
    eprintln!("gpu-check: {}", args[0]);
    let out = Command::new(baddiff)
        .arg("gpu-check")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(project_root())
        .output()
        .with_context(|| format!("starting {}", baddiff.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().trim_start_matches("error: ");
        bail!("baddiff gpu-check {} failed: {err}", args[0]);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("baddiff gpu-check {} printed no JSON", args[0]))?;
    Ok(serde_json::from_str(line)?)
}

/// Ours against the peers on the GPU-sized workloads, with the matmul ceiling.
fn throughput(rounds: usize) -> Result<Value> {
    let py = python()?;
    let tmp = std::env::temp_dir().join(format!("baddiff-gpu-check-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut rows = Vec::new();
    for (w, amp) in WORKLOADS {
        let c = Comparison {
            rounds,
            // Host threads hardly matter on a GPU; both sides get the same.
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            device: "cuda",
            amp,
            python: &py,
            tmp: &tmp,
        };
        rows.push(settle(compare(w, &c)));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(crate::bench::report::document(json!({}), rows, None))
}

/// The first GPU's name, memory and driver, from `nvidia-smi` (null without it).
fn gpu_info() -> Value {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader,nounits",
        ])
        .output();
    let Ok(out) = out else { return Value::Null };
    let text = String::from_utf8_lossy(&out.stdout);
    report::parse_gpu(text.lines().next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real command path on a machine without a usable GPU: the xtask's first step refuses
    /// with `baddiff`'s reason and fix, and writes nothing.
    #[test]
    fn refuses_on_a_machine_without_cuda() {
        crate::binaries::build().unwrap();
        let env = Command::new(baddiff()).arg("env").output().unwrap();
        let env: Value = serde_json::from_slice(&env.stdout).unwrap();
        if env["cuda_backend_loaded"] == true && env["cuda_devices"].as_u64() > Some(0) {
            eprintln!("a GPU is usable here: nothing to refuse");
            return;
        }
        let e = format!("{:#}", parity(&baddiff()).unwrap_err());
        assert!(e.contains(REFUSAL), "{e}");
        assert!(
            e.contains("CUDA backend not loaded") || e.contains("0 GPUs visible"),
            "{e}"
        );
        assert!(e.contains("Fix:"), "{e}");
    }
}
