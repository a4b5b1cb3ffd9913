//! `baddiff bench`: the smallest workload runs end to end through the program and prints the
//! JSON object `cargo xtask bench` reads; `--spec` prints what the peer script reads.
use std::process::Command;

use baddiffusion::bench::{Measurement, WorkloadSpec};

fn baddiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_baddiff"))
}

#[test]
fn bench_matmul_prints_one_measurement() {
    let out = baddiff()
        .args(["bench", "matmul", "--reps", "1", "--json", "--threads", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Measurement = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((m.workload.as_str(), m.side.as_str()), ("matmul", "ours"));
    assert_eq!((m.times_s.len(), m.threads), (1, 1));
    assert_eq!(m.flops, Some(2.0 * 2048f64.powi(3)));
    assert_eq!(m.spec.matmul_n, Some(2048));
}

#[test]
fn bench_spec_is_the_workload_spec_and_unknown_names_fail_clearly() {
    let out = baddiff()
        .args(["bench", "sample-scale", "--spec"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec: WorkloadSpec = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec.workload, "sample-scale");
    assert!(spec.unet.is_some() && spec.scheduler.is_some());

    let out = baddiff()
        .args(["bench", "nope", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope") && err.contains("fid-features"),
        "{err}"
    );
}
