//! The `baddiff-report` binary end to end: render a run directory, and diff runs.
mod common;

use std::path::Path;
use std::process::Command;

use report::{fixture, schema};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_baddiff-report"))
}

fn write_run(dir: &Path, rows: &[schema::Row]) {
    std::fs::create_dir_all(dir).unwrap();
    schema::write_rows(&dir.join(schema::FRAME_FILE), rows).unwrap();
}

fn run_diff(a: &Path, b: &Path) -> (i32, String) {
    let out = bin().arg("diff").arg(a).arg(b).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn render_writes_a_self_contained_report() {
    if report::plot::Font::load().is_err() {
        eprintln!("skipping: no PNG font (install fonts-dejavu-core)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    common::run_dir(&run);
    let paper = dir.path().join("paper");
    let out = bin()
        .arg("render")
        .arg(&run)
        .arg("--publish")
        .arg(&paper)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fig4a") && stderr.contains("fig4b"),
        "CelebA-HQ did not run: {stderr}"
    );
    let html = std::fs::read_to_string(run.join("report/report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        12,
        "every plotted figure inline"
    );
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        3,
        "Tab. 1, Tab. 2, Fig. 4b"
    );
    assert!(html.contains("not run: no E3 (CelebA-HQ) cells"));
    assert!(
        !html.contains("src=\"figures/"),
        "nothing loaded from files"
    );
    for f in ["fig2a.svg", "fig2a.png", "anp.png", "tab1.png", "tab2.png"] {
        assert!(run.join("report/figures").join(f).exists(), "{f}");
        assert!(paper.join("figures").join(f).exists(), "published {f}");
    }
    for t in ["fig2a.md", "fig2a.tex", "samplers.tex", "claims.md"] {
        assert!(run.join("report/tables").join(t).exists(), "{t}");
    }
    assert!(paper.join("report.md").exists());
}

#[test]
fn identical_runs_diff_clean() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture::rows();
    write_run(&dir.path().join("a"), &rows);
    write_run(&dir.path().join("b"), &rows);
    let (code, text) = run_diff(&dir.path().join("a"), &dir.path().join("b"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No compared metric"), "{text}");
}

#[test]
fn a_metric_beyond_tolerance_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture::rows();
    let mut worse = rows.clone();
    let i = worse
        .iter()
        .position(|r| {
            r.metric == "MSE" && r.poison_rate == 0.5 && r.clip == "none" && r.defense == "none"
        })
        .unwrap();
    worse[i].value += 0.05;
    write_run(&dir.path().join("a"), &rows);
    write_run(&dir.path().join("b"), &worse);
    let (code, text) = run_diff(&dir.path().join("a"), &dir.path().join("b"));
    assert_eq!(code, 1, "{text}");
    let regressions = text
        .split("**Regressions beyond tolerance**")
        .nth(1)
        .expect("a regressions section");
    assert!(regressions.contains(&worse[i].cell), "{text}");
    assert!(text.contains("1 regressed"), "{text}");

    let out = bin()
        .arg("diff")
        .arg(dir.path().join("a"))
        .arg(dir.path().join("b"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["counts"]["regressed"], 1);
    assert_eq!(json["rows"][0]["status"], "regressed");
}

#[test]
fn a_bad_frame_names_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut df = schema::frame_from_rows(&fixture::rows())
        .unwrap()
        .drop("samples")
        .unwrap();
    let a = dir.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    let f = std::fs::File::create(a.join(schema::FRAME_FILE)).unwrap();
    polars::prelude::ParquetWriter::new(f)
        .finish(&mut df)
        .unwrap();
    let (code, text) = run_diff(&a, &a);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("samples"), "{text}");
}

/// `baddiff-report claims RUN` judges a frame without the heavy binary: it writes claims.json and
/// prints each verdict with what it rests on; a claims file with a moved bound is refused.
#[test]
fn claims_judges_a_frame_and_labels_each_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    common::run_dir(&run);
    std::fs::remove_file(run.join("claims.json")).unwrap();
    let claims = dir.path().join("claims.toml");
    std::fs::write(&claims, fixture::CLAIMS).unwrap();
    let judge = || {
        bin()
            .arg("claims")
            .arg(&run)
            .arg("--claims")
            .arg(&claims)
            .output()
            .unwrap()
    };
    let out = judge();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("C1: ✓ holds (scale-model verdict, 2 seeds, min–max)"),
        "{text}"
    );
    assert!(
        text.contains("C6: ∅ not run (scale-model verdict)"),
        "{text}"
    );
    let written = report::claims::read(&run.join("claims.json")).unwrap();
    assert_eq!(written, fixture::verdicts());

    let moved = fixture::CLAIMS.replacen("holds = \"<= 1.5\"", "holds = \"<= 2\"", 1);
    std::fs::write(&claims, moved).unwrap();
    let out = judge();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("history"), "{err}");
}

/// A changed protocol fails `diff` (exit 1) unless `--allow-protocol-change` accepts it.
#[test]
fn a_protocol_change_fails_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture::rows();
    let mut other = rows.clone();
    for r in &mut other {
        r.n_generated = 10_000;
    }
    write_run(&dir.path().join("a"), &rows);
    write_run(&dir.path().join("b"), &other);
    let (code, text) = run_diff(&dir.path().join("a"), &dir.path().join("b"));
    assert_eq!(code, 1, "{text}");
    let out = bin()
        .arg("diff")
        .arg(dir.path().join("a"))
        .arg(dir.path().join("b"))
        .arg("--allow-protocol-change")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No measurement was compared"), "{text}");
}
