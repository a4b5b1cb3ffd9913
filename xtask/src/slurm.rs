//! `cargo xtask reproduce --executor slurm`: the same cells, run as one Slurm job array (one task
//! per cell) against the shared stage cache. The cluster schedules; we write the batch script,
//! submit it, follow the queue, and read `sacct`'s accounting into the run manifest. Every task
//! is a plain `baddiff cell`, so atomic stage records, lock files and checkpoint resume work
//! across nodes exactly as across local processes.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bars::Bars;

mod parse;
mod script;

use parse::is_final;
pub use parse::{parse_not_cached, parse_sacct, parse_squeue, TaskAccounting, SACCT_FORMAT};
pub use script::{batch_script, default_time, ScriptSpec};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct SlurmArgs {
    /// Slurm partition [default: the cluster's default].
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per array task [default: 1 for a CUDA profile, 0 for a CPU one].
    #[arg(long)]
    pub gpus_per_cell: Option<u32>,
    /// CPU cores per array task [default: the profile's `threads` for a CPU profile, else 1;
    /// 4 for a CUDA one].
    #[arg(long)]
    pub cpus_per_cell: Option<u32>,
    /// Memory per array task, in sbatch's syntax [default: 4G for a CPU profile, 32G for CUDA].
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit per task, H:M:S [default: twice the plan's estimate of the longest cell plus
    /// 10 minutes; 1 hour when the profile states no throughput].
    #[arg(long)]
    pub time: Option<String>,
    /// Tasks running at once (sbatch's `--array=...%K`).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Print the batch script (also saved with the run); submit nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn tool(name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(name)
        .args(args)
        .output()
        .with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the run needs from the reproduce command.
pub struct Job<'a> {
    pub run_dir: &'a Path,
    pub profile: &'a str,
    pub device: Option<&'a str>,
    pub cells: &'a [String],
    pub plan: &'a Value,
    pub baddiff: PathBuf,
    /// `baddiff cell` arguments of some cells (for the local cached-only check).
    pub cell_args: &'a dyn Fn(&[&str]) -> Vec<OsString>,
}

/// Checks, before anything is built or run, that the cluster's commands answer and know the
/// partition.
pub fn preflight(args: &SlurmArgs) -> Result<()> {
    // A dry run only writes the batch scripts, so they can be reviewed before going to the
    // cluster: it needs no Slurm here.
    if args.dry_run {
        return Ok(());
    }
    let sbatch = Command::new("sbatch").arg("--version").output();
    if !matches!(&sbatch, Ok(o) if o.status.success()) {
        bail!(
            "no sbatch on PATH: install Slurm's client commands (and point SLURM_CONF at the cluster's slurm.conf), or run without --executor slurm"
        );
    }
    if let Some(p) = &args.partition {
        let known = tool("sinfo", &["-h", "-o", "%R"])?;
        let known: Vec<&str> = known.split_whitespace().collect();
        if !known.contains(&p.as_str()) {
            bail!(
                "Slurm partition `{p}` is unknown; this cluster has: {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// The outcome: failed cells, or `None` after a dry run.
pub fn run(args: &SlurmArgs, job: &Job) -> Result<Option<Vec<String>>> {
    let slurm_dir = job.run_dir.join("slurm");
    std::fs::create_dir_all(&slurm_dir)?;
    std::fs::create_dir_all(job.run_dir.join("logs"))?;

    // Work left: a cell whose stages are all cached finishes here in seconds (and writes its
    // result); the others go to the cluster.
    let base_todo = !not_cached(job, &["base"])?.is_empty();
    let todo: Vec<String> = if base_todo {
        job.cells.to_vec()
    } else {
        let cells: Vec<&str> = job.cells.iter().map(String::as_str).collect();
        not_cached(job, &cells)?
    };
    println!(
        "slurm: {} of {} cells have work left{}",
        todo.len(),
        job.cells.len(),
        if base_todo {
            " (and the clean base model)"
        } else {
            ""
        }
    );
    let device = job
        .device
        .map(String::from)
        .or_else(|| job.plan["device"].as_str().map(String::from));
    // `auto` (or no setting) is a GPU profile: its cells refuse to run without one.
    let cuda = device.as_deref() != Some("cpu");
    let estimates: Vec<f64> = job.plan["cell_estimated_seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_f64())
        .collect();
    let spec = |name: &str, cells: Vec<String>, estimate: Option<f64>| ScriptSpec {
        job_name: format!("baddiff-{name}"),
        cells,
        partition: args.partition.clone(),
        gpus: args.gpus_per_cell.unwrap_or(u32::from(cuda)),
        cpus: args.cpus_per_cell.unwrap_or(if cuda {
            4
        } else {
            job.plan["threads"].as_u64().unwrap_or(1) as u32
        }),
        mem: args
            .mem
            .clone()
            .unwrap_or_else(|| if cuda { "32G" } else { "4G" }.into()),
        time: args.time.clone().unwrap_or_else(|| default_time(estimate)),
        max_parallel: args.max_parallel,
        root: crate::project_root(),
        run_dir: job.run_dir.to_path_buf(),
        cache: fetch::Cache::default_root(),
        baddiff: job.baddiff.clone(),
        profile: job.profile.to_string(),
        device: job.device.map(String::from),
    };
    let run_id = job
        .run_dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut scripts = Vec::new();
    if base_todo {
        let base = spec(
            &format!("{run_id}-base"),
            vec!["base".into()],
            job.plan["base_estimated_seconds"].as_f64(),
        );
        scripts.push(("base", batch_script(&base)));
    }
    if !todo.is_empty() {
        let longest = estimates
            .iter()
            .cloned()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        scripts.push(("cells", batch_script(&spec(&run_id, todo.clone(), longest))));
    }
    for (name, text) in &scripts {
        let path = slurm_dir.join(format!("{name}.sh"));
        std::fs::write(&path, text)?;
        if args.dry_run {
            println!("# {}\n{text}", path.display());
        }
    }
    if args.dry_run {
        return Ok(None);
    }
    if scripts.is_empty() {
        return Ok(Some(Vec::new()));
    }

    // Submit: the cells wait for the base model (and are dropped if it fails).
    let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
    let mut dependency: Option<String> = None;
    for (name, _) in &scripts {
        let path = slurm_dir.join(format!("{name}.sh"));
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(d) = &dependency {
            cmd.args([
                format!("--dependency=afterok:{d}"),
                "--kill-on-invalid-dep=yes".into(),
            ]);
        }
        let out = cmd.arg(&path).output().context("running sbatch")?;
        if !out.status.success() {
            bail!(
                "sbatch {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        println!("slurm: submitted {} as job {id}", path.display());
        jobs.push((
            id.clone(),
            if *name == "base" {
                vec!["base".into()]
            } else {
                todo.clone()
            },
        ));
        dependency = Some(id);
    }
    follow(job, &jobs)?;
    let accounting = account(&jobs)?;
    std::fs::write(
        slurm_dir.join("accounting.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "jobs": jobs.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "tasks": accounting,
        }))?,
    )?;
    let mut failed = Vec::new();
    for t in &accounting {
        let ok = t.state == "COMPLETED";
        let Some(cell) = &t.cell else { continue };
        let done = cell == "base"
            || job
                .run_dir
                .join("cells")
                .join(cell)
                .join("result.json")
                .is_file();
        if !ok || !done {
            let log = job.run_dir.join("logs").join(format!("{cell}.log"));
            println!(
                "cell {cell} FAILED on Slurm (task {}: {}, exit {}); {}:\n  {}",
                t.job_id,
                t.state,
                t.exit_code,
                log.display(),
                crate::log_tail(&log, 5)
            );
            failed.push(cell.clone());
        }
    }
    Ok(Some(failed))
}

/// The cells with stages left to compute. The others finish here from the stage cache (their
/// results are then in the run directory). One `baddiff cell --cached-only` process checks them
/// all: a process per cell would spend minutes starting libtorch for the paper profile's cells.
fn not_cached(job: &Job, cells: &[&str]) -> Result<Vec<String>> {
    if cells.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new(&job.baddiff)
        .current_dir(crate::project_root())
        .args((job.cell_args)(cells))
        .arg("--cached-only")
        .output()
        .context("running baddiff cell --cached-only")?;
    match out.status.code() {
        Some(0) => Ok(Vec::new()),
        Some(3) => Ok(parse_not_cached(&String::from_utf8_lossy(&out.stdout))),
        _ => bail!(
            "checking the cells against the stage cache failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Follows the queue until no task of `jobs` is pending or running, with the progress bars.
fn follow(job: &Job, jobs: &[(String, Vec<String>)]) -> Result<()> {
    let total: usize = jobs.iter().map(|(_, c)| c.len()).sum();
    let mut bars = Bars::new(total, &job.run_dir.join("logs"));
    let ids = jobs
        .iter()
        .map(|(id, _)| id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut failures = 0;
    loop {
        let queue = match tool("squeue", &["-h", "-r", "-j", &ids, "-o", "%i|%T"]) {
            Ok(q) => {
                failures = 0;
                parse_squeue(&q)
            }
            // Finished jobs leave the controller's memory after a while.
            Err(e) if format!("{e:#}").contains("Invalid job id") => Vec::new(),
            // The controller can be briefly unreachable; give up only if it stays so.
            Err(e) if failures < 30 => {
                failures += 1;
                bars.println(format!("slurm: {e:#} (retrying)"));
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(e),
        };
        let cell_of = |job_id: &str, task: Option<usize>| -> Option<&str> {
            let (_, cells) = jobs.iter().find(|(id, _)| id == job_id)?;
            cells.get(task.unwrap_or(0)).map(String::as_str)
        };
        let running: Vec<&str> = queue
            .iter()
            .filter(|(_, _, s)| s == "RUNNING")
            .filter_map(|(j, t, _)| cell_of(j, *t))
            .collect();
        bars.overall
            .set_position((total - queue.len().min(total)) as u64);
        bars.show(&running);
        if queue.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bars.finish();
    Ok(())
}

/// sacct's record of every task (waiting briefly: the accounting daemon learns of a task's end
/// a moment after the controller does).
fn account(jobs: &[(String, Vec<String>)]) -> Result<Vec<TaskAccounting>> {
    let ids = jobs
        .iter()
        .map(|(id, _)| id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let total: usize = jobs.iter().map(|(_, c)| c.len()).sum();
    let started = Instant::now();
    loop {
        let text = match tool("sacct", &["-n", "-P", "-j", &ids, "-o", SACCT_FORMAT]) {
            Ok(t) => t,
            Err(e) => {
                println!("slurm: no accounting ({e:#}); the manifest will lack it");
                return Ok(Vec::new());
            }
        };
        let mut tasks = parse_sacct(&text);
        for t in &mut tasks {
            let job_id = t.job_id.split('_').next().unwrap_or("");
            t.cell = jobs
                .iter()
                .find(|(id, _)| id == job_id)
                .and_then(|(_, cells)| cells.get(t.task.unwrap_or(0)).cloned());
        }
        let complete = tasks.len() >= total && tasks.iter().all(|t| is_final(&t.state));
        if complete || started.elapsed() > Duration::from_secs(60) {
            return Ok(tasks);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
