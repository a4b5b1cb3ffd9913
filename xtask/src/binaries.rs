//! The two programs every xtask command runs, `baddiff` and `baddiff-report`, built by one
//! `cargo build` with one package and feature selection; and the downloader `baddiff-fetch`,
//! built alone (no libtorch, no polars) only when a download is due.
//!
//! Cargo resolves features per command line: `cargo run -p report` alone unifies the features of
//! polars' dependencies differently from a build that also selects `baddiffusion`, and compiles
//! polars a second time (measured: 9 minutes on 2 cores). So no command here uses `cargo run`;
//! each builds through [`build`] and runs the files it produced.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use anyhow::Result;

use crate::{project_root, target_dir};

/// The one selection every command builds (tests: `cargo xtask test` builds the workspace).
pub const BUILD_ARGS: &[&str] = &[
    "build",
    "--locked",
    "-p",
    "baddiffusion",
    "--bin",
    "baddiff",
    "-p",
    "report",
    "--bin",
    "baddiff-report",
];

/// `cargo build` of both programs; cargo's own progress shows, so a cold build is not silent.
pub fn build() -> Result<()> {
    cargo(BUILD_ARGS, "baddiff and baddiff-report")
}

/// Runs `cargo ARGS` in the project root, cargo's progress showing.
fn cargo(args: &[&str], what: &str) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(project_root())
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "building {what} failed");
    Ok(())
}

/// The compiled `baddiff` (after [`build`]).
pub fn baddiff() -> PathBuf {
    target_dir().join("debug/baddiff")
}

/// The compiled `baddiff-report` (after [`build`]).
pub fn baddiff_report() -> PathBuf {
    target_dir().join("debug/baddiff-report")
}

/// The downloader's build: the `fetch` crate with its HTTP client, which `cargo xtask` itself is
/// built without. It needs neither libtorch nor polars, so it runs before the Python environment
/// and the long build.
pub const FETCHER_BUILD_ARGS: &[&str] =
    &["build", "--locked", "-p", "fetch", "--bin", "baddiff-fetch"];

/// `cargo build` of `baddiff-fetch` (about two minutes the first time on 2 cores).
pub fn build_fetcher() -> Result<()> {
    cargo(FETCHER_BUILD_ARGS, "baddiff-fetch")
}

/// The compiled `baddiff-fetch` (after [`build_fetcher`]).
pub fn fetcher() -> PathBuf {
    target_dir().join("debug/baddiff-fetch")
}

/// Builds, then runs `baddiff-report ARGS` in the project root; its exit status.
pub fn report(args: &[OsString]) -> Result<ExitStatus> {
    build()?;
    Ok(Command::new(baddiff_report())
        .current_dir(project_root())
        .args(args)
        .status()?)
}

#[cfg(test)]
mod tests {
    /// Every xtask command that compiles goes through `binaries::build`: no `cargo run` and no
    /// other `"build"` invocation elsewhere, which would resolve another feature set.
    #[test]
    fn no_command_builds_the_binaries_another_way() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("binaries.rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        let l = line.trim();
                        if l.starts_with("//") {
                            continue;
                        }
                        if l.contains("\"run\",") || l.contains("\"build\",") {
                            offenders.push(format!("{}:{}: {l}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "builds outside binaries::build:\n{}",
            offenders.join("\n")
        );
    }
}
