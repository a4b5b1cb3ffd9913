//! The project's pinned Python environment (`.venv`, made by `cargo xtask setup`), seen from the
//! library. Rust never executes pickles: where a file exists only as a PyTorch pickle (`.bin`,
//! `.pth`), this environment converts it once with `torch.load(weights_only=True)`. The parity
//! tests run their oracles (diffusers, pytorch-fid, torchmetrics, scipy) through it too.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The repository root this binary was built from.
pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter: `BADDIFF_PYTHON` if set, else the project's `.venv/bin/python`.
pub fn interpreter() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BADDIFF_PYTHON") {
        return Ok(p.into());
    }
    let venv = project_root().join(".venv/bin/python");
    if venv.exists() {
        Ok(venv)
    } else {
        bail!("the project's Python environment is missing ({}): run `cargo xtask setup`", venv.display())
    }
}

/// A script shipped in `python/` (oracles and converters).
pub fn script(name: &str) -> PathBuf {
    project_root().join("python").join(name)
}

/// Runs `python/<script> args...` and returns its stdout; on failure the error carries stderr's tail.
pub fn run(script_name: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let py = interpreter()?;
    let path = script(script_name);
    let out = Command::new(&py)
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("starting {} {}", py.display(), path.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("python/{script_name} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
