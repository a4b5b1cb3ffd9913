//! `cargo xtask reproduce`: the main job. Prepares the environment and inputs, asks `baddiff plan`
//! for the cells, runs the base model then every cell as a `baddiff cell` process (`--jobs` at
//! once; all caching lives in the stage cache, so an interrupted run resumes where it stopped),
//! then judges the claims, writes the frame and the run manifest, and renders the report.
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bars::Bars;
use crate::binaries::{baddiff, build};
use crate::project_root;

#[derive(clap::Args)]
pub struct Args {
    /// smoke (default; CPU, offline), kick-the-tires, paper, or a profile TOML path.
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// Only what these claims need (ids from paper/claims.toml); repeatable.
    #[arg(long)]
    claim: Vec<String>,
    /// Only cells matching (a part of the cell id, or KEY=VALUE); repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Print the cells, the inputs needed and the estimated time; run nothing.
    #[arg(long)]
    plan: bool,
    /// Cells run at once (each a process; one per GPU on multi-GPU hosts) [default: the
    /// profile's `jobs`, else 1].
    #[arg(long)]
    jobs: Option<usize>,
    /// Copies of the inputs for machines without network access (a directory or URL; repeatable).
    #[arg(long = "mirror", value_name = "DIR|URL")]
    mirrors: Vec<String>,
    /// Run id [default: PROFILE-<UTC time>]; reusing one re-collects that run.
    #[arg(long)]
    run_id: Option<String>,
    /// Device passed to every cell (cpu, cuda, cuda:N) [default: the profile's].
    #[arg(long)]
    device: Option<String>,
    /// Where cells run: here (`local`, `--jobs` at once) or as a Slurm job array (`slurm`).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    #[command(flatten)]
    slurm: crate::slurm::SlurmArgs,
    /// Parent of the run directory.
    #[arg(long, default_value = "results/runs")]
    runs_dir: PathBuf,
    /// Leave paper/ alone (the report stays in the run directory).
    #[arg(long)]
    no_publish: bool,
    /// Pre-train the clean base model even where the profile ships it (`[base] shipped`); the
    /// run then uses the model it trained.
    #[arg(long)]
    retrain_base: bool,
    /// Dress rehearsal: run the profile shrunk to a few training steps and samples per cell, its
    /// first trigger, target and seed at its lowest and highest rate (`baddiff shrink`), to check
    /// that every stage runs at the real shapes. Its numbers are not results; nothing is published.
    #[arg(long)]
    shrink: bool,
    /// The artifact manifest [default: artifacts/manifest.toml]; `cargo xtask rehearse` passes its
    /// stand-ins' manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Local,
    Slurm,
}

/// Writes the shrunk profile (`baddiff shrink`) under target/shrunk/ and returns its path.
fn shrink(profile: &str, cpu: bool) -> Result<String> {
    let stem = Path::new(profile)
        .file_stem()
        .map_or(profile.into(), |s| s.to_string_lossy().into_owned());
    let out = crate::target_dir().join(format!("shrunk/{stem}.toml"));
    let mut cmd = baddiff_cmd();
    cmd.args(["shrink", "--profile", profile, "--out"])
        .arg(&out);
    if cpu {
        cmd.arg("--cpu");
    }
    let status = cmd.status()?;
    anyhow::ensure!(
        status.success(),
        "baddiff shrink --profile {profile} failed"
    );
    Ok(out.to_string_lossy().into_owned())
}

/// Fetches a profile's inputs: `names`, or a committed profile's manifest list when empty.
fn fetch_inputs(a: &Args, names: Vec<String>) -> Result<()> {
    let committed = !a.profile.ends_with(".toml");
    crate::artifacts::fetch(crate::artifacts::FetchArgs {
        names,
        profile: committed.then(|| a.profile.clone()),
        manifest: a.manifest.clone(),
        mirrors: a.mirrors.clone(),
        offline: false,
        jobs: 4,
    })
    .with_context(|| format!("the inputs of profile {} are not all available", a.profile))
}

/// Whether the run is on the CPU: `--device cpu`, or a committed profile that says `device = "cpu"`.
fn runs_on_cpu(a: &Args) -> Result<bool> {
    if let Some(d) = &a.device {
        return Ok(d == "cpu");
    }
    let path = project_root().join(format!("paper/profiles/{}.toml", a.profile));
    // An unknown name is for `baddiff plan` to refuse, listing the known ones.
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(table.get("device").and_then(|d| d.as_str()) == Some("cpu"))
}

fn baddiff_cmd() -> Command {
    let mut c = Command::new(baddiff());
    c.current_dir(project_root());
    c
}

pub fn run(mut a: Args) -> Result<()> {
    let started = Instant::now();
    let root = project_root();
    if a.executor == Executor::Slurm {
        crate::slurm::preflight(&a.slurm)?;
    }
    crate::ensure_debian_packages(&["dataset-fashion-mnist", "fonts-dejavu-core"])?;
    // A committed CPU profile's inputs (the manifest lists them) are fetched before the Python
    // environment and the build, which take many minutes on a fresh machine: a missing mirror
    // fails in seconds. A GPU
    // profile first checks for a GPU (with the built binary), so nothing is downloaded for a
    // run that would refuse. A shrunk run fetches only what its shrunk plan names.
    let fetched_early = !a.plan && !a.shrink && !a.profile.ends_with(".toml") && runs_on_cpu(&a)?;
    if fetched_early {
        fetch_inputs(&a, vec![])?;
    }
    crate::pyenv::setup(false)?;
    println!(
        "building baddiff and baddiff-report (minutes on a first build: cargo shows its progress)"
    );
    build()?;
    if a.shrink {
        a.profile = shrink(&a.profile, a.device.as_deref() == Some("cpu"))?;
        a.no_publish = true;
    }

    let mut plan_args: Vec<OsString> = vec!["plan".into(), "--profile".into(), (&a.profile).into()];
    for c in &a.claim {
        plan_args.extend(["--claim".into(), c.into()]);
    }
    for o in &a.only {
        plan_args.extend(["--only".into(), o.into()]);
    }
    if a.plan {
        let status = baddiff_cmd().args(&plan_args).status()?;
        anyhow::ensure!(status.success(), "baddiff plan failed");
        println!("inputs (artifacts/manifest.toml, profile {}):", a.profile);
        return crate::artifacts::fetch(crate::artifacts::FetchArgs {
            names: vec![],
            profile: Some(a.profile.clone()),
            manifest: a.manifest.clone(),
            mirrors: a.mirrors.clone(),
            offline: true,
            jobs: 1,
        })
        .or_else(|e| {
            println!(
                "  ({e:#}; `cargo xtask fetch --profile {}` gets them)",
                a.profile
            );
            Ok(())
        });
    }
    // A GPU profile refuses at once where no GPU is usable, before fetching its inputs (on a
    // Slurm cluster each cell checks on its node).
    if a.executor == Executor::Local {
        let mut check = baddiff_cmd();
        check.args(["env", "--profile", &a.profile]);
        if let Some(d) = &a.device {
            check.args(["--device", d]);
        }
        let out = check.output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("{}", err.trim().trim_start_matches("error: "));
        }
    }
    let out = baddiff_cmd().args(&plan_args).arg("--json").output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let plan: Value = serde_json::from_slice(&out.stdout).context("reading baddiff plan --json")?;
    let jobs = a
        .jobs
        .or_else(|| plan["jobs"].as_u64().map(|j| j as usize))
        .unwrap_or(1)
        .max(1);
    let cells: Vec<String> = plan["cells"]
        .as_array()
        .context("plan has no cells")?
        .iter()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();

    // Inputs: the profile's pinned artifacts (a mirror serves machines without network). A
    // committed profile's are listed in the manifest; a profile given as a file names its own.
    if !fetched_early {
        let names = match a.profile.ends_with(".toml") {
            true => plan["artifacts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            false => vec![],
        };
        fetch_inputs(&a, names)?;
    }

    let run_id = a
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", a.profile, utc_stamp()));
    let run_dir = root.join(&a.runs_dir).join(&run_id);
    std::fs::create_dir_all(run_dir.join("logs"))?;
    println!(
        "run {run_id}: {} cells -> {}",
        cells.len(),
        run_dir.display()
    );
    // A Slurm dry run only writes batch scripts: it leaves an earlier run's outputs alone.
    let dry_run = a.executor == Executor::Slurm && a.slurm.dry_run;
    let stale = match dry_run {
        true => 0,
        false => clear_run_outputs(&run_dir, &cells)?,
    };
    if stale > 0 {
        println!("  removed {stale} result(s) of cells not in this run's plan (an earlier run under this id)");
    }

    // With several GPUs and no --device, job slot k runs on GPU k (one cell per GPU).
    let gpus = if a.device.is_none() { gpu_count() } else { 0 };
    let cell_args = |cells: &[&str], slot: usize| -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "cell".into(),
            "--profile".into(),
            (&a.profile).into(),
            "--run-dir".into(),
            run_dir.clone().into(),
        ];
        for c in cells {
            v.extend(["--cell".into(), c.into()]);
        }
        if a.retrain_base {
            v.push("--retrain-base".into());
        }
        if let Some(d) = &a.device {
            v.extend(["--device".into(), d.into()]);
        } else if gpus > 1 {
            v.extend(["--device".into(), format!("cuda:{}", slot % gpus).into()]);
        }
        v
    };
    let failed = match a.executor {
        Executor::Local => {
            // The base model first: every cell needs it.
            let status = baddiff_cmd()
                .args(cell_args(&["base"], 0))
                .arg("--progress")
                .status()?;
            anyhow::ensure!(status.success(), "the clean base model failed");
            run_cells(&cells, jobs, &run_dir, &cell_args)?
        }
        Executor::Slurm => {
            let job = crate::slurm::Job {
                run_dir: &run_dir,
                profile: &a.profile,
                device: a.device.as_deref(),
                cells: &cells,
                plan: &plan,
                baddiff: baddiff(),
                cell_args: &|cs: &[&str]| cell_args(cs, 0),
            };
            match crate::slurm::run(&a.slurm, &job)? {
                Some(failed) => failed,
                None => return Ok(()),
            }
        }
    };
    if failed.iter().any(|c| c == "base") {
        bail!(
            "the clean base model failed (log: {}); rerun `cargo xtask reproduce` to retry it",
            run_dir.join("logs/base.log").display()
        );
    }

    write_manifest(&run_dir, &a, &plan, started.elapsed().as_secs_f64())?;
    let report = |args: &[OsString]| -> Result<()> {
        let status = Command::new(crate::binaries::baddiff_report())
            .current_dir(&root)
            .args(args)
            .status()?;
        anyhow::ensure!(status.success(), "baddiff-report {:?} failed", args.first());
        Ok(())
    };
    report(&["frame".into(), run_dir.clone().into()])?;
    // The verdicts, each labelled with what it rests on (scale, seeds, N, FID or proxy).
    report(&["claims".into(), run_dir.clone().into()])?;
    let status = baddiff_cmd()
        .args(["gallery", "--profile", &a.profile, "--out"])
        .arg(run_dir.join("gallery"))
        .status()?;
    anyhow::ensure!(
        status.success(),
        "writing the trigger and target gallery failed"
    );
    let mut render: Vec<OsString> = vec!["render".into(), run_dir.clone().into()];
    // A run with failed cells, or of some cells only (--only, --claim), is not the profile's
    // report: it stays in the run directory.
    let partial = !a.only.is_empty() || !a.claim.is_empty();
    let publish = !a.no_publish && failed.is_empty() && !partial;
    if publish {
        render.extend(["--publish".into(), root.join("paper").into()]);
    } else if !a.no_publish && partial {
        println!("not published to paper/: the run has only the cells --only or --claim chose");
    } else if !a.no_publish {
        println!("not published to paper/: {} cell(s) failed", failed.len());
    }
    report(&render)?;
    println!(
        "results: {}\n  frame: metrics.parquet, metrics.csv; claims: claims.json; manifest.json\nreport: {}{}\ntook {:.1} min",
        run_dir.display(),
        run_dir.join("report/report.html").display(),
        if publish { "\n  (also published to paper/report.md and paper/report.html)" } else { "" },
        started.elapsed().as_secs_f64() / 60.0
    );
    if !failed.is_empty() {
        bail!(
            "{} cell(s) failed: {} (logs in {}; rerun `cargo xtask reproduce` to retry them: finished stages are cached)",
            failed.len(),
            failed.join(", "),
            run_dir.join("logs").display()
        );
    }
    Ok(())
}

/// What a run directory holds from an earlier run under the same id, before this one starts: the
/// frame, verdicts, manifest and report go (a run killed now must not leave the old ones looking
/// like its own); so do the results and samples of cells outside the plan, and the previous
/// results of the planned ones (a cell that fails now must not show its old rows; finished
/// stages are cached, so a rerun cell is quick). Returns how many cells outside the plan had results.
fn clear_run_outputs(run_dir: &std::path::Path, planned: &[String]) -> Result<usize> {
    for file in [
        "metrics.parquet",
        "metrics.csv",
        "claims.json",
        "manifest.json",
    ] {
        let path = run_dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the old {}", path.display()))?;
        }
    }
    let report = run_dir.join("report");
    if report.exists() {
        std::fs::remove_dir_all(&report)
            .with_context(|| format!("removing the old {}", report.display()))?;
    }
    let mut stale = 0;
    let Ok(dir) = std::fs::read_dir(run_dir.join("cells")) else {
        return Ok(0);
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if planned.contains(&name) {
            let result = e.path().join("result.json");
            if result.exists() {
                std::fs::remove_file(&result)
                    .with_context(|| format!("removing the old {}", result.display()))?;
            }
        } else {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
            let samples = run_dir.join("samples").join(&name);
            if samples.exists() {
                std::fs::remove_dir_all(&samples)
                    .with_context(|| format!("removing {}", samples.display()))?;
            }
            stale += 1;
        }
    }
    Ok(stale)
}

/// Runs the cells `jobs` at a time with the progress bars; returns the failed ones.
fn run_cells(
    cells: &[String],
    jobs: usize,
    run_dir: &Path,
    cell_args: &dyn Fn(&[&str], usize) -> Vec<OsString>,
) -> Result<Vec<String>> {
    let mut bars = Bars::new(cells.len(), &run_dir.join("logs"));
    let mut queue: VecDeque<&String> = cells.iter().collect();
    let mut running: Vec<(String, usize, Child)> = Vec::new();
    let mut failed = Vec::new();
    // Each process gets its share of the cores, so `--jobs 2` on 2 cores does not oversubscribe.
    let threads = (std::thread::available_parallelism().map_or(1, |n| n.get()) / jobs).max(1);
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some(cell) = queue.pop_front() else { break };
            let slot = (0..jobs)
                .find(|k| running.iter().all(|(_, s, _)| s != k))
                .unwrap_or(0);
            let log = std::fs::File::create(run_dir.join("logs").join(format!("{cell}.log")))?;
            let child = baddiff_cmd()
                .args(cell_args(&[cell], slot))
                .env("OMP_NUM_THREADS", threads.to_string())
                .env("BADDIFF_PROGRESS", bars.status_file(cell))
                .stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .context("starting baddiff cell")?;
            running.push((cell.clone(), slot, child));
        }
        let names: Vec<&str> = running.iter().map(|(c, _, _)| c.as_str()).collect();
        bars.show(&names);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].2.try_wait()? {
                let (cell, _, _) = running.remove(i);
                if !status.success() {
                    let log = run_dir.join("logs").join(format!("{cell}.log"));
                    bars.println(format!(
                        "cell {cell} FAILED ({status}); {}:\n  {}",
                        log.display(),
                        crate::log_tail(&log, 5)
                    ));
                    failed.push(cell);
                }
                bars.overall.inc(1);
            } else {
                i += 1;
            }
        }
    }
    bars.finish();
    Ok(failed)
}

/// GPUs `nvidia-smi -L` lists (0 without a driver).
fn gpu_count() -> usize {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU"))
                .count()
        })
        .unwrap_or(0)
}

/// `manifest.json`: what produced the run (commit, toolchain, hardware, seeds) and what it cost
/// (wall time, disk and peak memory per stage, from the cells' stage records).
fn write_manifest(run_dir: &Path, a: &Args, plan: &Value, wall_s: f64) -> Result<()> {
    let root = project_root();
    let git = crate::git;
    let tool = |cmd: &str, args: &[&str]| -> Option<String> {
        let o = Command::new(cmd).args(args).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let env: Value = Command::new(baddiff())
        .arg("env")
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null);
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    });
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .next()
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string() + " kB")
    });
    let mut stages = Vec::new();
    let mut artifacts = serde_json::Map::new();
    if let Ok(dir) = std::fs::read_dir(run_dir.join("cells")) {
        let mut dirs: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for d in dirs {
            let Ok(text) = std::fs::read_to_string(d.join("result.json")) else {
                continue;
            };
            let Ok(r) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let cell = r["cell"]["id"].clone();
            let experiment = r["cell"]["experiment"].clone();
            for s in r["stages"].as_array().into_iter().flatten() {
                stages.push(json!({
                    "stage": s["kind"], "cell": cell, "experiment": experiment, "label": s["label"],
                    "key": s["key"], "ran_in_this_run": s["ran"], "wall_s": s["wall_s"],
                    "disk_bytes": s["disk_bytes"], "peak_rss_bytes": s["peak_rss_bytes"],
                }));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("artifacts/manifest.lock")) {
        artifacts.insert("manifest.lock".into(), json!(text));
    }
    let cargo_lock = std::fs::read(root.join("Cargo.lock")).unwrap_or_default();
    let manifest = json!({
        "run_id": run_dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "profile": a.profile,
        // What the profile's runs are (baddiff plan): labels every verdict of the run.
        "scale": plan["scale"],
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "cargo_lock_sha256": crate::sha256_hex(&cargo_lock),
        "rustc": tool("rustc", &["--version"]),
        "tch": crate::pyenv::tch_and_torch().ok().map(|(tch, _)| tch),
        // torch version, CUDA build and GPU names, as the project's Python sees them.
        "torch": crate::doctor::torch_probe().ok(),
        "runtime": env,
        "host_cpu": cpu,
        "host_cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "host_memory": mem,
        "jobs": a.jobs.or_else(|| plan["jobs"].as_u64().map(|j| j as usize)).unwrap_or(1),
        "executor": format!("{:?}", a.executor).to_lowercase(),
        // sacct's accounting of every Slurm task (elapsed, max RSS, node, exit code).
        "slurm": std::fs::read_to_string(run_dir.join("slurm/accounting.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
        "seeds": plan["cells"].as_array().map(|c| {
            let mut s: Vec<i64> = c.iter().filter_map(|c| c["seed"].as_i64()).collect();
            s.sort(); s.dedup(); s
        }),
        "cells": plan["cells"].as_array().map(|c| c.len()),
        "wall_s": wall_s,
        "stages": stages,
        "artifacts": artifacts,
    });
    std::fs::write(
        run_dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC, without a date crate.
pub(crate) fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_starts_without_an_earlier_runs_outputs() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let cells = run.join("cells");
        for c in ["a", "b", "old"] {
            std::fs::create_dir_all(cells.join(c)).unwrap();
            std::fs::write(cells.join(c).join("result.json"), "{}").unwrap();
            std::fs::create_dir_all(run.join("samples").join(c)).unwrap();
        }
        for f in [
            "metrics.parquet",
            "metrics.csv",
            "claims.json",
            "manifest.json",
        ] {
            std::fs::write(run.join(f), "old").unwrap();
        }
        std::fs::create_dir_all(run.join("report")).unwrap();
        std::fs::create_dir_all(run.join("logs")).unwrap();
        let planned = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(super::clear_run_outputs(run, &planned).unwrap(), 1);
        assert!(!cells.join("old").exists() && !run.join("samples/old").exists());
        assert!(!cells.join("a/result.json").exists() && !cells.join("b/result.json").exists());
        assert!(cells.join("a").is_dir() && run.join("samples/a").is_dir());
        for f in [
            "metrics.parquet",
            "metrics.csv",
            "claims.json",
            "manifest.json",
            "report",
        ] {
            assert!(!run.join(f).exists(), "{f}");
        }
        assert!(run.join("logs").is_dir());
        // A run directory without cells yet.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(super::clear_run_outputs(empty.path(), &planned).unwrap(), 0);
    }
}
