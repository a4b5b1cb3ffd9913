//! `cargo xtask bench --kernels`: the criterion benchmarks of the inner kernels (UNet forward,
//! backdoor loss, training step, Inception, SSIM, Fréchet distance) against a saved criterion
//! baseline on the same machine. Absolute times only compare within one machine, so the
//! baseline lives in the target directory, not in the repository:
//!
//! - `--save-baseline NAME` runs the benches and stores their times as criterion baseline NAME;
//! - `--compare NAME` runs them against baseline NAME (which criterion leaves unchanged) and
//!   fails when a kernel's mean time grew by more than `--threshold` and criterion's 95 %
//!   confidence interval of the change lies wholly above zero (a real slowdown, not noise).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::project_root;

/// The criterion bench targets of the library.
const BENCHES: [&str; 2] = ["unet", "metrics"];

pub struct KernelArgs<'a> {
    pub save_baseline: Option<&'a str>,
    pub compare: Option<&'a str>,
    pub threshold: f64,
}

pub fn run(a: KernelArgs) -> Result<()> {
    for name in a.save_baseline.iter().chain(a.compare.iter()) {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "criterion baseline name `{name}` must be letters, digits, `-`, `_` or `.`"
        );
    }
    if let Some(base) = a.compare {
        let dir = criterion_dir();
        anyhow::ensure!(
            has_baseline(&dir, base),
            "no criterion baseline `{base}` under {}: save one first with \
             `cargo xtask bench --kernels --save-baseline {base}` (on the code to compare against)",
            dir.display()
        );
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(project_root())
        .args(["bench", "--locked", "-p", "baddiffusion"]);
    for b in BENCHES {
        cmd.args(["--bench", b]);
    }
    cmd.arg("--");
    if let Some(name) = a.save_baseline {
        cmd.args(["--save-baseline", name]);
    }
    if let Some(name) = a.compare {
        cmd.args(["--baseline", name]);
    }
    let status = cmd.status().context("starting cargo bench")?;
    anyhow::ensure!(status.success(), "cargo bench failed ({status})");

    if let Some(base) = a.compare {
        let changes = read_changes(&criterion_dir())?;
        anyhow::ensure!(
            !changes.is_empty(),
            "criterion wrote no comparison against `{base}` under {}",
            criterion_dir().display()
        );
        for c in &changes {
            println!("{:<60} {:+6.1} %", c.id, c.mean * 100.0);
        }
        let slow = slowdowns(&changes, a.threshold);
        if !slow.is_empty() {
            for s in &slow {
                eprintln!("SLOWER: {s}");
            }
            bail!(
                "{} kernel(s) slowed down by more than {:.0} % against criterion baseline `{base}`",
                slow.len(),
                a.threshold * 100.0
            );
        }
        println!(
            "no kernel slowed down by more than {:.0} % against `{base}`",
            a.threshold * 100.0
        );
    }
    Ok(())
}

/// Criterion's output folder: `<target dir>/criterion`.
fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
        .join("criterion")
}

/// Whether any benchmark under `dir` has a saved baseline `name`.
fn has_baseline(dir: &Path, name: &str) -> bool {
    let mut found = false;
    visit(dir, &mut |d| {
        found |= d.file_name().is_some_and(|f| f == name) && d.join("estimates.json").is_file()
    });
    found
}

/// One kernel's relative change of its mean time against the baseline (0.05 = 5 % slower).
#[derive(Debug, PartialEq)]
pub struct Change {
    pub id: String,
    pub mean: f64,
    /// Lower bound of criterion's confidence interval of the change.
    pub lower: f64,
}

/// Every `change/estimates.json` criterion wrote under `dir`, named by the benchmark's id.
pub fn read_changes(dir: &Path) -> Result<Vec<Change>> {
    let mut files = Vec::new();
    visit(dir, &mut |d| {
        if d.file_name().is_some_and(|f| f == "change") && d.join("estimates.json").is_file() {
            files.push(d.to_path_buf());
        }
    });
    files.sort();
    let mut out = Vec::new();
    for change in files {
        let bench = change.parent().unwrap_or(&change);
        let est: Value =
            serde_json::from_str(&std::fs::read_to_string(change.join("estimates.json"))?)
                .with_context(|| {
                    format!("{} is not JSON", change.join("estimates.json").display())
                })?;
        let id = std::fs::read_to_string(bench.join("new/benchmark.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["full_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                bench
                    .strip_prefix(dir)
                    .unwrap_or(bench)
                    .display()
                    .to_string()
            });
        let mean = &est["mean"];
        let (Some(point), Some(lower)) = (
            mean["point_estimate"].as_f64(),
            mean["confidence_interval"]["lower_bound"].as_f64(),
        ) else {
            bail!("{} has no mean change estimate", change.display());
        };
        out.push(Change {
            id,
            mean: point,
            lower,
        });
    }
    Ok(out)
}

/// The kernels slower by more than `threshold` with the whole confidence interval above zero.
pub fn slowdowns(changes: &[Change], threshold: f64) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.mean > threshold && c.lower > 0.0)
        .map(|c| {
            format!(
                "{}: mean time {:+.1} % (95 % CI from {:+.1} %)",
                c.id,
                c.mean * 100.0,
                c.lower * 100.0
            )
        })
        .collect()
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            f(&p);
            visit(&p, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_change(root: &Path, bench: &str, full_id: &str, mean: f64, lower: f64) {
        let b = root.join(bench);
        std::fs::create_dir_all(b.join("change")).unwrap();
        std::fs::create_dir_all(b.join("new")).unwrap();
        std::fs::create_dir_all(b.join("main")).unwrap();
        std::fs::write(b.join("main/estimates.json"), "{}").unwrap();
        std::fs::write(
            b.join("change/estimates.json"),
            format!(r#"{{"mean":{{"point_estimate":{mean},"confidence_interval":{{"lower_bound":{lower},"upper_bound":1.0}}}}}}"#),
        )
        .unwrap();
        std::fs::write(
            b.join("new/benchmark.json"),
            format!(r#"{{"full_id":"{full_id}"}}"#),
        )
        .unwrap();
    }

    #[test]
    fn a_significant_slowdown_beyond_the_threshold_is_flagged_and_noise_is_not() {
        let root = std::env::temp_dir().join(format!("xtask-kernels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_change(&root, "unet/forward", "unet/forward", 0.25, 0.20);
        write_change(&root, "ssim/64", "ssim/64", 0.30, -0.05);
        write_change(&root, "frechet/d256", "frechet/d256", 0.04, 0.01);
        assert!(has_baseline(&root, "main"));
        assert!(!has_baseline(&root, "other"));
        let changes = read_changes(&root).unwrap();
        assert_eq!(changes.len(), 3);
        let slow = slowdowns(&changes, 0.10);
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(
            slow[0].starts_with("unet/forward: mean time +25.0 %"),
            "{}",
            slow[0]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
