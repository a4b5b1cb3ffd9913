//! `cargo xtask reproduce --executor slurm` against a real Slurm cluster: the frames equal the
//! local executor's for the same seeds, and a task cancelled mid-training is rerun by the next
//! `reproduce`, which resumes it and still ends with complete, equal frames.
//!
//! These need a running cluster whose `SLURM_CONF` is in the environment: `cargo xtask test`
//! starts the local one (`cargo xtask cluster up`), runs them, and stops it.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The profile the resume test runs too: two fine-tunes and two cells on the clean base.
const PROFILE: &str = include_str!("../../tests/data/tiny-profile.toml");

/// One test at a time on the one-node cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The official images from the default cache (`cargo xtask test` fetched them), served to each
/// scene's own empty cache as a mirror.
fn static_mirror() -> PathBuf {
    fetch::path_of("baddiffusion-static")
        .expect("the official images are not cached: `cargo xtask test` fetches them first")
}

struct Scene {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    profile: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        // Under the project (not /tmp) so a multi-node cluster could share it; one node here.
        // A space and a quote in the path: the batch script must quote every path it names.
        std::fs::create_dir_all(root().join("target/slurm-tests")).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("run dir's ")
            .tempdir_in(root().join("target/slurm-tests"))
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let profile = dir.join("tiny.toml");
        std::fs::write(&profile, PROFILE).unwrap();
        Scene {
            _tmp: tmp,
            dir,
            profile,
        }
    }

    /// `cargo xtask reproduce` of the tiny profile into run `id` with the cache `cache`.
    fn reproduce(&self, id: &str, cache: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(root())
            .env("BADDIFF_CACHE", self.dir.join(cache))
            .arg("reproduce")
            .arg("--profile")
            .arg(&self.profile)
            .arg("--runs-dir")
            .arg(self.dir.join("runs"))
            .args(["--run-id", id, "--no-publish", "--mirror"])
            .arg(static_mirror())
            .args(extra);
        c
    }

    fn run(&self, id: &str) -> PathBuf {
        self.dir.join("runs").join(id)
    }
}

fn check(out: &Output) {
    assert!(
        out.status.success(),
        "reproduce failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The run's frame without its run id, as sorted CSV lines.
fn frame(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.split_once(',').map_or(l, |(_, rest)| rest).to_string())
        .collect();
    assert!(
        lines[0].starts_with("cell,"),
        "first column is no longer run_id: {}",
        lines[0]
    );
    lines.sort();
    lines
}

fn slurm(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The local executor's frame of the tiny profile (the reference both tests compare with).
fn local_frame(scene: &Scene) -> Vec<String> {
    check(
        &scene
            .reproduce("local", "cache-local", &[])
            .output()
            .unwrap(),
    );
    let f = frame(&scene.run("local"));
    // Four cells, each with clean and backdoor MSE, SSIM, hit rate and FD rows.
    assert!(f.len() > 4 * 2 * 3, "{f:?}");
    f
}

#[test]
#[ignore = "needs a Slurm cluster: `cargo xtask test` starts one and runs this"]
fn slurm_runs_the_matrix_as_a_job_array_with_the_local_frames() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let scene = Scene::new();
    let expected = local_frame(&scene);

    // A partition the cluster lacks is named with the ones it has, before anything runs.
    let out = scene
        .reproduce(
            "nopart",
            "cache-slurm",
            &["--executor", "slurm", "--partition", "nope"],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partition `nope` is unknown; this cluster has: debug"),
        "{stderr}"
    );

    // A dry run writes and prints the script, and submits nothing.
    let out = scene
        .reproduce("dry", "cache-slurm", &["--executor", "slurm", "--dry-run"])
        .output()
        .unwrap();
    check(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("#SBATCH --array=0-3\n"), "{stdout}");
    assert!(scene.run("dry").join("slurm/cells.sh").is_file());
    assert_eq!(slurm(&["squeue", "-h", "-n", "baddiff-dry"]).trim(), "");

    let out = scene
        .reproduce("slurm", "cache-slurm", &["--executor", "slurm"])
        .output()
        .unwrap();
    check(&out);
    assert_eq!(frame(&scene.run("slurm")), expected);

    // sacct's accounting of every task is in the manifest.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scene.run("slurm").join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["executor"], "slurm");
    let tasks = manifest["slurm"]["tasks"].as_array().expect("accounting");
    assert_eq!(tasks.len(), 1 + 4, "the base job and four cells: {tasks:?}");
    for t in tasks {
        assert_eq!(t["state"], "COMPLETED", "{t}");
        assert_eq!(t["exit_code"], "0:0", "{t}");
        assert!(
            !t["node"].as_str().unwrap().is_empty() && !t["elapsed"].as_str().unwrap().is_empty()
        );
        assert!(t["cell"].is_string(), "{t}");
    }
    assert!(tasks
        .iter()
        .any(|t| !t["max_rss"].as_str().unwrap().is_empty()));

    // Run again unchanged: everything is cached, nothing is submitted.
    let out = scene
        .reproduce("slurm", "cache-slurm", &["--executor", "slurm"])
        .output()
        .unwrap();
    check(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("slurm: 0 of 4 cells have work left"),
        "{stdout}"
    );
    assert!(!stdout.contains("submitted"), "{stdout}");
    assert_eq!(frame(&scene.run("slurm")), expected);
}

/// The training stage folders holding a checkpoint but no finished record.
fn interrupted_trainings(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("stages/train"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("state").is_dir() && !p.join("stage.json").exists())
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "needs a Slurm cluster: `cargo xtask test` starts one and runs this"]
fn a_task_cancelled_mid_training_is_rerun_and_resumes() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let scene = Scene::new();
    let expected = local_frame(&scene);

    let cache = scene.dir.join("cache-kill");
    let child = scene
        .reproduce("kill", "cache-kill", &["--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Cancel every running task of the array once a fine-tune has written a checkpoint.
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no checkpoint in 15 minutes"
        );
        if interrupted_trainings(&cache) > 0 {
            let running = slurm(&[
                "squeue",
                "-h",
                "-r",
                "-n",
                "baddiff-kill",
                "-t",
                "RUNNING",
                "-o",
                "%i",
            ]);
            let tasks: Vec<&str> = running.split_whitespace().collect();
            if !tasks.is_empty() {
                let mut args = vec!["scancel"];
                args.extend(&tasks);
                slurm(&args);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "reproduce ignored the cancelled task:\n{stdout}"
    );
    assert!(
        stdout.contains("FAILED on Slurm") && stdout.contains("CANCELLED"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rerun `cargo xtask reproduce`"), "{stderr}");

    // The next reproduce submits only what is left, resumes the training, and completes.
    let out = scene
        .reproduce("kill", "cache-kill", &["--executor", "slurm"])
        .output()
        .unwrap();
    check(&out);
    let logs = std::fs::read_dir(scene.run("kill").join("logs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    assert!(logs.contains("resuming an interrupted run"), "{logs}");
    assert_eq!(interrupted_trainings(&cache), 0);
    assert_eq!(frame(&scene.run("kill")), expected);
}

#[test]
fn without_sbatch_the_slurm_executor_says_what_to_install() {
    let scene = Scene::new();
    let out = scene
        .reproduce("nosbatch", "cache", &["--executor", "slurm"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no sbatch on PATH"), "{stderr}");
    assert!(!scene.run("nosbatch").exists(), "nothing was started");

    // A dry run needs no Slurm: the batch script can be reviewed before going to the cluster.
    let out = scene
        .reproduce(
            "dry-nosbatch",
            "cache",
            &["--executor", "slurm", "--dry-run"],
        )
        .env("PATH", path_without_slurm(&scene.dir.join("bin")))
        .output()
        .unwrap();
    check(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("#SBATCH --array=0-3\n"), "{stdout}");
}

/// A PATH with every command of this one but Slurm's, as links in `bin`.
fn path_without_slurm(bin: &Path) -> PathBuf {
    std::fs::create_dir_all(bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let slurm = [
                "sbatch", "sinfo", "squeue", "sacct", "scancel", "srun", "scontrol",
            ];
            let link = bin.join(&name);
            if !slurm.contains(&name.to_string_lossy().as_ref()) && !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    bin.to_path_buf()
}
