//! The sbatch script of a job array: one task per cell, its resources in `#SBATCH` lines.
use std::path::{Path, PathBuf};

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

/// Double-quoted for an `#SBATCH` line, which sbatch splits at spaces and cuts at an unquoted `#`;
/// inside the quotes a backslash escapes the next character.
fn sbatch_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', r"\\").replace('"', r#"\""#))
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
        format!("--job-name={}", sbatch_quote(&s.job_name)),
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
        format!(
            "--output={}",
            sbatch_quote(&format!("{}/slurm/%A_%a.out", s.run_dir.display()))
        ),
        format!("--chdir={}", sbatch_quote(&s.root.to_string_lossy())),
    ];
    if let Some(p) = &s.partition {
        directives.push(format!("--partition={}", sbatch_quote(p)));
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

#[cfg(test)]
mod tests {
    use std::process::Command;

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
            "#SBATCH --partition=\"gpu\"",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --requeue",
            "#SBATCH --output=\"/repo/results/runs/r1/slurm/%A_%a.out\"",
            "#SBATCH --chdir=\"/repo\"",
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
    fn time_limits_round_up_to_minutes() {
        assert_eq!(time_limit(59.0), "0:01:00");
        assert_eq!(time_limit(3601.0), "1:01:00");
        assert_eq!(default_time(Some(1800.0)), "1:10:00");
        assert_eq!(default_time(None), "1:00:00");
    }
}
