//! A cell killed with SIGKILL in the middle of training resumes on the next run and ends with
//! the same rows as a run that was never interrupted (the reproduce issue's resume promise),
//! exercised through the real `baddiff cell` program on a tiny profile.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Shared with the Slurm executor's tests; this test runs one of its cells.
const PROFILE: &str = include_str!("data/tiny-profile.toml");

const CELL: &str = "E1.BOX_14.CORNER.p0.50.finetune.s0";

/// A private artifact cache holding the official source images, filled offline from the default
/// cache's copy, so the test never touches the network.
fn cache(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo xtask test` fetched them into the default cache before the tests.
    let shared = fetch::path_of("baddiffusion-static").unwrap_or_else(|e| {
        panic!("{e}: `cargo xtask test` fetches the tests' inputs first (offline: `--mirror DIR`)")
    });
    let manifest = fetch::Manifest::load(&root.join("artifacts/manifest.toml")).unwrap();
    let cache = fetch::Cache::open(dir).unwrap();
    let opts = fetch::FetchOptions {
        mirrors: vec![fetch::Mirror::parse(shared.to_str().unwrap())],
        offline: true,
        ..Default::default()
    };
    let report = fetch::fetch(
        &manifest,
        &cache,
        &["baddiffusion-static".into()],
        None,
        &opts,
    )
    .unwrap();
    assert!(report.is_complete(), "{report}");
    dir.to_path_buf()
}

fn baddiff(profile: &Path, stages: &Path, run: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baddiff"));
    let cache_dir = profile.parent().unwrap().join("cache");
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMP_NUM_THREADS", "1")
        .env("BADDIFF_CACHE", cache_dir)
        .args(["cell", "--cell", CELL, "--profile"])
        .arg(profile)
        .arg("--stages")
        .arg(stages)
        .arg("--run-dir")
        .arg(run);
    c
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("cells").join(CELL).join("result.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["rows"].as_array().unwrap().clone()
}

/// The training stage folders with a checkpoint in them.
fn checkpoints(stages: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(stages.join("train"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("state").is_dir())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_cell_resumes_to_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("tiny.toml");
    std::fs::write(&profile, PROFILE).unwrap();
    cache(&tmp.path().join("cache"));

    // Uninterrupted.
    let (stages_a, run_a) = (tmp.path().join("stages-a"), tmp.path().join("run-a"));
    let out = baddiff(&profile, &stages_a, &run_a).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Killed once training has written a checkpoint, then rerun.
    let (stages_b, run_b) = (tmp.path().join("stages-b"), tmp.path().join("run-b"));
    let mut child = baddiff(&profile, &stages_b, &run_b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while checkpoints(&stages_b).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the cell finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!run_b.join("cells").join(CELL).join("result.json").exists());

    let out = baddiff(&profile, &stages_b, &run_b).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming an interrupted run"), "{log}");
    let (a, b) = (rows(&run_a), rows(&run_b));
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x["metric"], &x["samples"], &x["value"]),
            (&y["metric"], &y["samples"], &y["value"]),
            "rows differ after the resume"
        );
    }
    assert_eq!(a.len(), b.len());

    // A second run of the finished cell computes nothing.
    let out = baddiff(&profile, &stages_b, &run_b).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains(" runs: "), "a cached stage ran again:\n{log}");
}

/// How many stages of each kind the last run of the cell computed (not read from the cache).
fn ran(run: &Path) -> std::collections::BTreeMap<String, usize> {
    let text = std::fs::read_to_string(run.join("cells").join(CELL).join("result.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for s in v["stages"].as_array().unwrap() {
        if s["ran"].as_bool().unwrap() {
            *out.entry(s["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    out
}

#[test]
fn a_changed_setting_reruns_exactly_the_stages_that_depend_on_it() {
    let tmp = tempfile::tempdir().unwrap();
    cache(&tmp.path().join("cache"));
    let stages = tmp.path().join("stages");
    let run = |name: &str, text: &str| {
        let profile = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&profile, text).unwrap();
        let dir = tmp.path().join(name);
        let out = baddiff(&profile, &stages, &dir).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran(&dir)
    };
    let counts = |pairs: &[(&str, usize)]| -> std::collections::BTreeMap<String, usize> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    // One evaluation: clean and backdoor samples, each measured.
    let all = run("first", PROFILE);
    assert_eq!(
        all,
        counts(&[("base", 1), ("train", 1), ("sample", 2), ("measure", 2)])
    );
    // A measuring setting: the samples are reused, only the measurements rerun.
    let threshold = PROFILE.replacen(
        "fid = \"proxy-fmnist\"",
        "fid = \"proxy-fmnist\"\nthreshold = 0.05",
        1,
    );
    assert_eq!(run("threshold", &threshold), counts(&[("measure", 2)]));
    // A fine-tuning setting: the clean base is reused; the backdoored model and all after it rerun.
    let lr = PROFILE.replacen(
        "learning_rate = 1e-3\nwarmup_steps = 2\nsave_every_epochs = 5",
        "learning_rate = 5e-4\nwarmup_steps = 2\nsave_every_epochs = 5",
        1,
    );
    assert_ne!(lr, PROFILE);
    assert_eq!(
        run("lr", &lr),
        counts(&[("train", 1), ("sample", 2), ("measure", 2)])
    );
    // Back to the first settings: everything is cached.
    assert_eq!(run("again", PROFILE), counts(&[]));
}
