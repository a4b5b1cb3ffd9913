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
use serde::Serialize;
use serde_json::Value;

use crate::reproduce::Bars;

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

/// What one batch script runs: `cells[i]` is array task `i`.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    pub job_name: String,
    pub cells: Vec<String>,
    pub partition: Option<String>,
    pub gpus: u32,
    pub cpus: u32,
    pub mem: String,
    pub time: String,
    pub max_parallel: Option<usize>,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub cache: PathBuf,
    pub baddiff: PathBuf,
    pub profile: String,
    pub device: Option<String>,
}

/// Single-quoted for bash (a quote inside becomes '\'').
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// The sbatch script of a job array: resources in `#SBATCH` lines, then the cell of this task.
pub fn batch_script(s: &ScriptSpec) -> String {
    let mut out = String::from("#!/bin/bash\n");
    out += &format!(
        "# Written by `cargo xtask reproduce --executor slurm` for run {}: one array task per cell.\n",
        s.run_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let last = s.cells.len().saturating_sub(1);
    let mut directives = vec![
        format!("--job-name={}", s.job_name),
        match s.max_parallel {
            Some(k) => format!("--array=0-{last}%{k}"),
            None => format!("--array=0-{last}"),
        },
        format!("--cpus-per-task={}", s.cpus),
        format!("--mem={}", s.mem),
        format!("--time={}", s.time),
        // A preempted task or a failed node puts the task back in the queue; it resumes from
        // its last checkpoint through the stage cache.
        "--requeue".into(),
        "--open-mode=append".into(),
        format!("--output={}/slurm/%A_%a.out", s.run_dir.display()),
        format!("--chdir={}", s.root.display()),
    ];
    if let Some(p) = &s.partition {
        directives.push(format!("--partition={p}"));
    }
    if s.gpus > 0 {
        directives.push(format!("--gpus-per-task={}", s.gpus));
    }
    for d in directives {
        out += &format!("#SBATCH {d}\n");
    }
    out += "set -euo pipefail\ncells=(\n";
    for c in &s.cells {
        out += &format!("  {}\n", quote(c));
    }
    out += ")\ncell=${cells[$SLURM_ARRAY_TASK_ID]}\n";
    out += &format!("run_dir={}\n", q(&s.run_dir));
    out += &format!("export BADDIFF_CACHE={}\n", q(&s.cache));
    out += "export BADDIFF_PROGRESS=\"$run_dir/logs/$cell.progress\"\n";
    out += "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n";
    out += "exec >>\"$run_dir/logs/$cell.log\" 2>&1\n";
    out += "echo \"slurm task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}\"\n";
    out += &format!(
        "exec {} cell --profile {} --cell \"$cell\" --run-dir \"$run_dir\"",
        q(&s.baddiff),
        quote(&s.profile)
    );
    if let Some(d) = &s.device {
        out += &format!(" --device {}", quote(d));
    } else if s.gpus > 0 {
        // Slurm exposes the task's GPUs as CUDA_VISIBLE_DEVICES; the first is cuda:0.
        out += " --device cuda";
    }
    out += "\n";
    out
}

/// `H:MM:SS`, rounded up to whole minutes.
pub fn time_limit(seconds: f64) -> String {
    let minutes = (seconds / 60.0).ceil().max(1.0) as u64;
    format!("{}:{:02}:00", minutes / 60, minutes % 60)
}

/// The time limit of tasks whose longest estimate is `estimate`: twice it plus 10 minutes.
pub fn default_time(estimate: Option<f64>) -> String {
    match estimate {
        Some(s) => time_limit(2.0 * s + 600.0),
        None => "1:00:00".into(),
    }
}

/// One array task as `sacct` accounts it (its `.batch` step carries the peak memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskAccounting {
    pub job_id: String,
    pub task: Option<usize>,
    pub cell: Option<String>,
    pub state: String,
    pub elapsed: String,
    pub max_rss: String,
    pub node: String,
    pub exit_code: String,
}

pub const SACCT_FORMAT: &str = "JobID,State,Elapsed,MaxRSS,NodeList,ExitCode";

/// Parses `sacct -n -P -o SACCT_FORMAT`: one record per array task, steps folded in.
pub fn parse_sacct(text: &str) -> Vec<TaskAccounting> {
    let mut tasks: Vec<TaskAccounting> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 6 {
            continue;
        }
        let (id, step) = match f[0].split_once('.') {
            Some((id, step)) => (id, Some(step)),
            None => (f[0], None),
        };
        let task = id.split_once('_').and_then(|(_, t)| t.parse().ok());
        let i = match tasks.iter().position(|t| t.job_id == id) {
            Some(i) => i,
            None => {
                tasks.push(TaskAccounting {
                    job_id: id.into(),
                    task,
                    ..Default::default()
                });
                tasks.len() - 1
            }
        };
        let t = &mut tasks[i];
        if step.is_none() {
            // "CANCELLED by 0" -> "CANCELLED".
            t.state = f[1].split_whitespace().next().unwrap_or("").into();
            t.elapsed = f[2].into();
            t.node = f[4].into();
            t.exit_code = f[5].into();
        }
        if !f[3].is_empty() && (t.max_rss.is_empty() || rss_kib(f[3]) > rss_kib(&t.max_rss)) {
            t.max_rss = f[3].into();
        }
    }
    tasks
}

/// `123456K` / `1.5G` in KiB, for comparing sacct's MaxRSS values.
fn rss_kib(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: f64 = num.parse().unwrap_or(0.0);
    n * match unit {
        "M" => 1024.0,
        "G" => 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0,
        "K" => 1.0,
        _ => 1.0 / 1024.0,
    }
}

/// States after which a task will not run again by itself.
fn is_final(state: &str) -> bool {
    !matches!(
        state,
        "" | "PENDING" | "RUNNING" | "REQUEUED" | "RESIZING" | "SUSPENDED" | "COMPLETING"
    )
}

/// `squeue -h -r -o %i|%T` lines: (job id, array task, state) of queued or running tasks.
pub fn parse_squeue(text: &str) -> Vec<(String, Option<usize>, String)> {
    text.lines()
        .filter_map(|l| {
            let (id, state) = l.trim().split_once('|')?;
            let task = id.split_once('_').and_then(|(_, t)| t.parse().ok());
            let job = id.split('_').next().unwrap_or(id).to_string();
            Some((job, task, state.to_string()))
        })
        .collect()
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
    /// `baddiff cell` arguments of a cell (for the local cached-only check).
    pub cell_args: &'a dyn Fn(&str) -> Vec<OsString>,
}

/// Checks, before anything is built or run, that the cluster's commands answer and know the
/// partition.
pub fn preflight(args: &SlurmArgs) -> Result<()> {
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
    let base_todo = !cached(job, "base")?;
    let todo: Vec<String> = if base_todo {
        job.cells.to_vec()
    } else {
        let mut v = Vec::new();
        for c in job.cells {
            if !cached(job, c)? {
                v.push(c.clone());
            }
        }
        v
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
    let cuda = device.as_deref().is_some_and(|d| d.starts_with("cuda"));
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

/// Whether every stage of `cell` is cached (then its result is now in the run directory).
fn cached(job: &Job, cell: &str) -> Result<bool> {
    let out = Command::new(&job.baddiff)
        .current_dir(crate::project_root())
        .args((job.cell_args)(cell))
        .arg("--cached-only")
        .output()
        .context("running baddiff cell --cached-only")?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        _ => bail!(
            "checking cell {cell} against the stage cache failed: {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScriptSpec {
        ScriptSpec {
            job_name: "baddiff-r1".into(),
            cells: vec!["E1.BOX_14.CORNER.p0.50.finetune.s0".into(), "it's".into()],
            partition: Some("gpu".into()),
            gpus: 1,
            cpus: 4,
            mem: "32G".into(),
            time: "2:10:00".into(),
            max_parallel: Some(3),
            root: "/repo".into(),
            run_dir: "/repo/results/runs/r1".into(),
            cache: "/shared/cache".into(),
            baddiff: "/repo/target/debug/baddiff".into(),
            profile: "paper".into(),
            device: None,
        }
    }

    #[test]
    fn the_batch_script_requests_the_resources_and_runs_one_cell_per_task() {
        let s = batch_script(&spec());
        for line in [
            "#SBATCH --array=0-1%3",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=32G",
            "#SBATCH --time=2:10:00",
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --requeue",
            "#SBATCH --output=/repo/results/runs/r1/slurm/%A_%a.out",
            "  'E1.BOX_14.CORNER.p0.50.finetune.s0'",
            r"  'it'\''s'",
            "export BADDIFF_CACHE='/shared/cache'",
        ] {
            assert!(s.lines().any(|l| l == line), "missing `{line}` in\n{s}");
        }
        assert!(s.ends_with(
            "exec '/repo/target/debug/baddiff' cell --profile 'paper' --cell \"$cell\" --run-dir \"$run_dir\" --device cuda\n"
        ));
        let cpu = batch_script(&ScriptSpec {
            gpus: 0,
            partition: None,
            max_parallel: None,
            ..spec()
        });
        assert!(cpu.contains("#SBATCH --array=0-1\n"));
        assert!(!cpu.contains("gpus") && !cpu.contains("--partition") && !cpu.contains("--device"));
    }

    #[test]
    fn bash_runs_the_script_up_to_the_cell_it_picks() {
        // Everything before the final exec, with a stand-in for it, through real bash: task 1
        // picks the second cell and writes into that cell's log.
        let s = batch_script(&spec());
        let body: Vec<&str> = s.lines().filter(|l| !l.starts_with("exec '")).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let script = format!(
            "{}\necho \"$cell|$BADDIFF_CACHE|$BADDIFF_PROGRESS\"\n",
            body.join("\n")
                .replace("/repo/results/runs/r1", &dir.path().to_string_lossy())
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", "1")
            .env("SLURM_ARRAY_JOB_ID", "9")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(dir.path().join("logs/it's.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with("slurm task 9_1 on "), "{log}");
        assert_eq!(
            lines[1],
            format!(
                "it's|/shared/cache|{}/logs/it's.progress",
                dir.path().display()
            )
        );
    }

    #[test]
    fn sacct_lines_fold_into_one_record_per_task() {
        let text = "7_0|COMPLETED|00:00:06||vm|0:0\n7_0.batch|COMPLETED|00:00:06|114144K|vm|0:0\n\
                    7_0.extern|COMPLETED|00:00:06|1.2M|vm|0:0\n7_1|CANCELLED by 0|00:00:03||vm|0:15\n\
                    8|FAILED|00:01:00||vm|1:0\n8.batch|FAILED|00:01:00|2G|vm|1:0\n";
        let t = parse_sacct(text);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            TaskAccounting {
                job_id: "7_0".into(),
                task: Some(0),
                cell: None,
                state: "COMPLETED".into(),
                elapsed: "00:00:06".into(),
                max_rss: "114144K".into(),
                node: "vm".into(),
                exit_code: "0:0".into(),
            }
        );
        assert_eq!((t[1].state.as_str(), t[1].task), ("CANCELLED", Some(1)));
        assert_eq!((t[2].task, t[2].max_rss.as_str()), (None, "2G"));
        assert!(is_final("CANCELLED") && is_final("TIMEOUT") && !is_final("REQUEUED"));
    }

    #[test]
    fn squeue_lines_name_job_task_and_state() {
        assert_eq!(
            parse_squeue("12_3|RUNNING\n13|PENDING\n"),
            vec![
                ("12".into(), Some(3), "RUNNING".into()),
                ("13".into(), None, "PENDING".into())
            ]
        );
    }

    #[test]
    fn time_limits_round_up_to_minutes() {
        assert_eq!(time_limit(59.0), "0:01:00");
        assert_eq!(time_limit(3601.0), "1:01:00");
        assert_eq!(default_time(Some(1800.0)), "1:10:00");
        assert_eq!(default_time(None), "1:00:00");
    }
}
