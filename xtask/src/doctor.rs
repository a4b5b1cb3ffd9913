//! `cargo xtask doctor`: one look at everything a run depends on, with the command that fixes
//! each problem. A libtorch/tch mismatch is caught here, not in a C++ compile error.
use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::{project_root, pyenv};

const PROBE: &str = "import torch, json
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),
  'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}))";

/// The project's torch as its Python sees it: version, CUDA build, GPU names (for `doctor` and
/// the run manifest).
pub fn torch_probe() -> Result<serde_json::Value> {
    let sh = Shell::new()?;
    let py = pyenv::venv_python();
    let out = cmd!(sh, "{py} -c {PROBE}").quiet().ignore_stderr().read()?;
    Ok(serde_json::from_str(out.trim())?)
}

pub fn run() -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let mut problems: Vec<(String, String)> = Vec::new();
    let line = |k: &str, v: &str| println!("{k:<14} {v}");

    line(
        "rustc",
        cmd!(sh, "rustc --version")
            .quiet()
            .read()
            .unwrap_or_else(|_| "not found".into())
            .trim(),
    );
    let (tch, want) = pyenv::tch_and_torch()?;
    line(
        "tch",
        &format!("{tch} (needs torch {})", want.unwrap_or("unknown")),
    );
    let locked = pyenv::locked_version("torch")?.unwrap_or_else(|| "none".into());
    line("locked torch", &locked);
    if want.is_some_and(|w| w != locked) {
        problems.push((
            format!(
                "python/requirements.lock pins torch {locked}, tch {tch} needs {}",
                want.unwrap()
            ),
            "edit python/requirements.in, then `cargo xtask setup --relock`".into(),
        ));
    }

    let py = pyenv::venv_python();
    if !py.exists() {
        line("python env", "missing (.venv)");
        problems.push((
            "the project's Python environment .venv is missing".into(),
            "cargo xtask setup".into(),
        ));
    } else {
        let current = pyenv::is_current()?;
        line(
            "python env",
            if current {
                "current with python/requirements.lock"
            } else {
                "STALE: lock changed or setup unfinished"
            },
        );
        if !current {
            problems.push((
                ".venv does not match python/requirements.lock".into(),
                "cargo xtask setup".into(),
            ));
        }
        match torch_probe() {
            Ok(v) => {
                let torch = v["torch"].as_str().unwrap_or("?");
                line("libtorch", &format!("{torch} at .venv/libtorch"));
                line(
                    "CUDA (python)",
                    &format!("{} (build), available: {}", v["cuda"], v["cuda_available"]),
                );
                let gpus = v["gpus"].as_array().map(|g| g.len()).unwrap_or(0);
                line(
                    "GPUs (python)",
                    &if gpus == 0 {
                        "none visible: CPU profiles only".to_string()
                    } else {
                        v["gpus"].to_string()
                    },
                );
                if want.is_some_and(|w| torch.split('+').next() != Some(w)) {
                    problems.push((
                        format!(
                            ".venv holds torch {torch}, tch {tch} needs {}",
                            want.unwrap()
                        ),
                        "cargo xtask setup   (rebuilds .venv from the lock)".into(),
                    ));
                }
            }
            Err(_) => problems.push((
                "torch does not import in .venv".into(),
                "cargo xtask setup".into(),
            )),
        }
    }

    baddiff_cuda(&mut problems);

    let cache = cache_dir();
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    line(
        "cache",
        &format!(
            "{} ({entries} entries; BADDIFF_CACHE overrides)",
            cache.display()
        ),
    );
    let fmnist = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    line(
        "fashion-mnist",
        if fmnist.is_dir() {
            "system copy present"
        } else {
            "no system copy (Debian: dataset-fashion-mnist)"
        },
    );
    let df = cmd!(sh, "df -Pk .").quiet().read().unwrap_or_default();
    if let Some(avail) = df
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|k| k.parse::<u64>().ok())
    {
        let gib = avail as f64 / (1024.0 * 1024.0);
        line("free disk", &format!("{gib:.1} GiB"));
        if gib < 8.0 {
            problems.push((
                format!("only {gib:.1} GiB free here"),
                "free disk space: setup needs ~5 GiB, builds ~3 GiB".into(),
            ));
        }
    }

    if problems.is_empty() {
        println!("\ndoctor: all good");
        return Ok(());
    }
    println!();
    for (what, fix) in &problems {
        println!("problem: {what}\n    fix: {fix}");
    }
    bail!("doctor found {} problem(s)", problems.len())
}

/// What `baddiff` itself loads, apart from what Python's torch sees above: whether libtorch's
/// CUDA backend is in the process (a binary linked without libtorch_cuda.so sees no GPU on any
/// machine) and how many GPUs it sees. Runs the built binary; builds nothing.
fn baddiff_cuda(problems: &mut Vec<(String, String)>) {
    let line = |k: &str, v: &str| println!("{k:<14} {v}");
    let bin = crate::binaries::baddiff();
    let env: Option<serde_json::Value> = std::process::Command::new(&bin)
        .arg("env")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    let Some(env) = env else {
        line(
            "baddiff",
            &format!(
                "not built at {} (`cargo build`; then this checks its CUDA backend)",
                bin.display()
            ),
        );
        return;
    };
    let gpus = env["cuda_devices"].as_u64().unwrap_or(0);
    let has_cuda = env["libtorch_has_cuda"].as_bool();
    let backend = match (env["cuda_backend_loaded"].as_bool(), has_cuda) {
        (Some(true), _) => "loaded by baddiff (libtorch_cuda.so)".to_string(),
        (Some(false), Some(false)) => {
            "not loaded: the libtorch baddiff links is a CPU-only build".to_string()
        }
        (Some(false), _) => {
            problems.push((
                "baddiff does not load libtorch's CUDA library although its libtorch has \
                 libtorch_cuda.so: it sees no GPU, and GPU profiles refuse to run"
                    .into(),
                "cargo build -p baddiffusion   (build.rs links libtorch_cuda.so; an older \
                 binary needs the rebuild)"
                    .into(),
            ));
            "NOT loaded by baddiff, although its libtorch has one".to_string()
        }
        (None, _) => {
            problems.push((
                format!("{} predates the CUDA backend check", bin.display()),
                "cargo build -p baddiffusion".into(),
            ));
            "unknown (baddiff predates this check)".to_string()
        }
    };
    line("CUDA backend", &backend);
    line(
        "GPUs (baddiff)",
        &if gpus == 0 {
            "none visible: GPU profiles refuse to run (`--device cpu` forces the CPU)".to_string()
        } else {
            format!("{gpus} visible")
        },
    );
}

/// The content-addressed cache of fetched inputs (the fetch crate decides where it lives).
pub fn cache_dir() -> std::path::PathBuf {
    fetch::Cache::default_root()
}
