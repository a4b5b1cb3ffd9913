//! The project's own Python environment: the libtorch that tch links against, and the oracle
//! packages (diffusers, pytorch-fid, torchmetrics, scipy) that parity tests compare against.
//! Every package is pinned by version and hash in python/requirements.lock.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::project_root;

/// The PyTorch release each tch release is built for (torch-sys's build.rs, TORCH_VERSION).
pub const TORCH_FOR_TCH: &[(&str, &str)] = &[("0.26.0", "2.13.0")];
/// Where the lock file's hash is recorded once the environment matches it.
const STAMP: &str = ".venv/.requirements.lock.sha256";
/// The resolver used only by `setup --relock`.
const UV: &str = "uv==0.13.9";

pub fn venv_python() -> PathBuf {
    project_root().join(".venv/bin/python")
}

pub fn lock_path() -> PathBuf {
    project_root().join("python/requirements.lock")
}

/// accelerate 0.11.0 for its one oracle, installed apart from the environment's site-packages
/// (diffusers would import it and fail).
const ACCELERATE_LOCK: &str = "python/accelerate-0.11.0.lock";
const ACCELERATE_DIR: &str = ".venv/accelerate-0.11.0";

pub fn lock_sha256() -> Result<String> {
    let mut bytes = std::fs::read(lock_path()).with_context(|| {
        format!(
            "cannot read {}: restore it with `git checkout python/requirements.lock`",
            lock_path().display()
        )
    })?;
    // The environment is current only if the oracle's separate lock is unchanged too.
    let extra = project_root().join(ACCELERATE_LOCK);
    bytes.extend(std::fs::read(&extra).with_context(|| {
        format!(
            "cannot read {}: restore it with `git checkout {ACCELERATE_LOCK}`",
            extra.display()
        )
    })?);
    Ok(crate::sha256_hex(&bytes))
}

/// True when .venv was built from the current lock file, its libtorch link resolves, and the
/// torch in it is the one the lock pins (read from torch/version.py: no import, so this stays
/// instant).
pub fn is_current() -> Result<bool> {
    let root = project_root();
    let stamp = std::fs::read_to_string(root.join(STAMP)).unwrap_or_default();
    if stamp.trim() != lock_sha256()? || !venv_python().exists() {
        return Ok(false);
    }
    let installed = installed_torch_version().unwrap_or_default();
    let locked = locked_version("torch")?.unwrap_or_default();
    Ok(installed.split('+').next() == Some(locked.as_str()))
}

/// The torch version installed in .venv, from .venv/libtorch/version.py.
pub fn installed_torch_version() -> Option<String> {
    let text = std::fs::read_to_string(project_root().join(".venv/libtorch/version.py")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("__version__ = ")
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
    })
}

/// The tch version in Cargo.lock and the torch version it needs.
pub fn tch_and_torch() -> Result<(String, Option<&'static str>)> {
    let lock =
        std::fs::read_to_string(project_root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let tch = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tch\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .context("Cargo.lock names no tch package")?;
    let torch = TORCH_FOR_TCH
        .iter()
        .find(|(t, _)| *t == tch)
        .map(|(_, p)| *p);
    Ok((tch, torch))
}

/// The `name==version` pin of a package in the lock file.
pub fn locked_version(package: &str) -> Result<Option<String>> {
    let lock = std::fs::read_to_string(lock_path())?;
    Ok(lock.lines().find_map(|l| {
        let (name, rest) = l.split_once("==")?;
        (name.trim() == package).then(|| rest.split_whitespace().next().unwrap_or("").to_string())
    }))
}

pub fn setup(relock: bool) -> Result<()> {
    let sh = Shell::new()?;
    let root = project_root();
    sh.change_dir(&root);
    if relock {
        relock_requirements(&sh)?;
    }
    check_lock_against_tch()?;
    if is_current()? {
        println!(
            "setup: .venv is up to date with python/requirements.lock ({})",
            &lock_sha256()?[..12]
        );
        return Ok(());
    }
    let python3 = base_python(&sh)?;
    println!("setup: creating .venv from python/requirements.lock (torch is a large download; a few minutes)");
    // The previous environment is moved aside, not deleted, and comes back if this attempt fails.
    let (venv, aside) = (root.join(".venv"), root.join(".venv.previous"));
    let _ = std::fs::remove_dir_all(&aside);
    if venv.exists() {
        std::fs::rename(&venv, &aside).context("moving the previous .venv aside")?;
    }
    match build_venv(&sh, &python3) {
        Ok(torch) => {
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::write(root.join(STAMP), lock_sha256()?)?;
            println!("setup: .venv ready (torch {torch}); libtorch at .venv/libtorch");
            Ok(())
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(&venv);
            if aside.exists() {
                std::fs::rename(&aside, &venv).context("restoring the previous .venv")?;
                eprintln!("setup: failed; the previous .venv was restored unchanged");
            }
            Err(err)
        }
    }
}

/// Creates .venv and installs the lock into it; returns the torch version it holds.
fn build_venv(sh: &Shell, python3: &str) -> Result<String> {
    cmd!(sh, "{python3} -m venv .venv").quiet().run().context(
        "`python3 -m venv` failed: install the venv module (Debian: `apt-get install python3-venv`) and retry",
    )?;
    let py = venv_python();
    let lock = lock_path();
    let install = cmd!(
        sh,
        "{py} -m pip install --disable-pip-version-check --no-input --no-cache-dir --no-deps --require-hashes -r {lock}"
    )
    .quiet()
    .ignore_status()
    .output()?;
    if !install.status.success() {
        let err = String::from_utf8_lossy(&install.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if err.contains("No space left on device") {
            bail!(
                "pip ran out of disk space installing python/requirements.lock:\n{}\n\nfix: the environment needs about \
                 10 GB free while it installs (torch's wheel is unpacked under $TMPDIR, then into .venv, 5 GB): free \
                 space there, or point TMPDIR at a disk that has it, and rerun `cargo xtask setup`",
                tail.join("\n")
            );
        }
        bail!(
            "pip could not install python/requirements.lock:\n{}\n\nfix: if pip reports hashes that do not match, the lock \
             file was changed: restore it (`git checkout python/requirements.lock`) or regenerate it \
             (`cargo xtask setup --relock`); if it cannot reach the package index, check the network and \
             rerun `cargo xtask setup`",
            tail.join("\n")
        );
    }
    cmd!(sh, "{py} -m pip check --disable-pip-version-check").quiet().run().context(
        "the locked packages are inconsistent: regenerate the lock with `cargo xtask setup --relock`",
    )?;
    cmd!(
        sh,
        "{py} -m pip install --disable-pip-version-check --no-input --no-cache-dir --no-deps --require-hashes --target {ACCELERATE_DIR} -r {ACCELERATE_LOCK}"
    )
    .quiet()
    .run()
    .with_context(|| format!("pip could not install {ACCELERATE_LOCK} into {ACCELERATE_DIR}"))?;
    link_libtorch(sh)?;
    let torch = torch_version(sh)?;
    let (tch, want) = tch_and_torch()?;
    if let Some(want) = want {
        if torch.split('+').next() != Some(want) {
            bail!("the environment holds torch {torch} but tch {tch} needs {want}: pin torch=={want} in python/requirements.in and run `cargo xtask setup --relock`");
        }
    }
    Ok(torch)
}

/// The interpreter that makes the venv: BADDIFF_PYTHON3, else python3 on PATH.
fn base_python(sh: &Shell) -> Result<String> {
    let python3 = std::env::var("BADDIFF_PYTHON3").unwrap_or_else(|_| "python3".into());
    let out = cmd!(
        sh,
        "{python3} -c 'import sys, venv; print(sys.version_info[0] * 100 + sys.version_info[1])'"
    )
    .quiet()
    .ignore_status()
    .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
            if v < 310 {
                bail!("{python3} is Python {}.{}; the locked packages need Python >= 3.10: install a newer python3 or point BADDIFF_PYTHON3 at one", v / 100, v % 100);
            }
            Ok(python3)
        }
        _ => bail!(
            "no usable `{python3}` (Python 3.10+ with the venv module): install it (Debian: `apt-get install python3 python3-venv`) or set BADDIFF_PYTHON3 to its path"
        ),
    }
}

/// .venv/libtorch -> site-packages/torch: a stable path for .cargo/config.toml's LIBTORCH.
fn link_libtorch(sh: &Shell) -> Result<()> {
    let py = venv_python();
    let purelib = cmd!(
        sh,
        "{py} -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'"
    )
    .quiet()
    .read()?;
    let torch_dir = PathBuf::from(purelib.trim()).join("torch");
    if !torch_dir.join("lib").is_dir() {
        bail!(
            "torch is not installed in .venv ({} missing): rerun `cargo xtask setup`",
            torch_dir.display()
        );
    }
    let link = project_root().join(".venv/libtorch");
    let _ = std::fs::remove_file(&link);
    let rel = torch_dir
        .strip_prefix(project_root().join(".venv"))
        .unwrap_or(&torch_dir);
    std::os::unix::fs::symlink(rel, &link).with_context(|| format!("linking {}", link.display()))
}

pub fn torch_version(sh: &Shell) -> Result<String> {
    let py = venv_python();
    Ok(cmd!(sh, "{py} -c 'import torch; print(torch.__version__)'")
        .quiet()
        .read()?
        .trim()
        .to_string())
}

fn check_lock_against_tch() -> Result<()> {
    let (tch, want) = tch_and_torch()?;
    let locked = locked_version("torch")?.context("python/requirements.lock pins no torch")?;
    match want {
        Some(want) if want != locked => bail!(
            "python/requirements.lock pins torch {locked} but tch {tch} needs torch {want}: set torch=={want} in \
             python/requirements.in and run `cargo xtask setup --relock`"
        ),
        None => eprintln!("warning: tch {tch} is not in xtask's TORCH_FOR_TCH table; add the torch version it expects"),
        _ => {}
    }
    Ok(())
}

/// Re-resolves requirements.in with a pinned uv in a throwaway venv under target/.
fn relock_requirements(sh: &Shell) -> Result<()> {
    let python3 = base_python(sh)?;
    let tool: &Path = Path::new("target/relock-venv");
    cmd!(sh, "{python3} -m venv --clear {tool}").quiet().run()?;
    let py = tool.join("bin/python");
    cmd!(
        sh,
        "{py} -m pip install --quiet --disable-pip-version-check {UV}"
    )
    .run()?;
    let uv = tool.join("bin/uv");
    cmd!(
        sh,
        "{uv} pip compile python/requirements.in --generate-hashes --quiet --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --custom-compile-command 'cargo xtask setup --relock' -o python/requirements.lock"
    )
    .run()?;
    println!("setup: python/requirements.lock regenerated; review and commit it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed lock must pin the torch that the committed tch needs: a mismatch here is the
    /// C++ compile error users would otherwise meet.
    #[test]
    fn lock_pins_the_torch_that_tch_needs() {
        let (tch, want) = tch_and_torch().unwrap();
        let want = want.unwrap_or_else(|| panic!("tch {tch} is missing from TORCH_FOR_TCH"));
        assert_eq!(locked_version("torch").unwrap().as_deref(), Some(want));
        check_lock_against_tch().unwrap();
    }

    #[test]
    fn every_locked_package_is_pinned_with_a_hash() {
        let lock = std::fs::read_to_string(lock_path()).unwrap();
        let blocks: Vec<&str> = lock
            .split("\n")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.is_empty())
            .collect();
        assert!(blocks.len() > 20, "suspiciously short lock: {blocks:?}");
        for line in lock
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                line.contains("==") && line.ends_with('\\'),
                "not pinned with hashes: {line}"
            );
        }
        assert!(locked_version("pytorch-fid").unwrap().is_some());
        assert!(locked_version("no-such-package").unwrap().is_none());
    }
}
