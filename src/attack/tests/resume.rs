//! A run killed at any point of its checkpoint sequence resumes to the uninterrupted run's
//! weights, never reports a stale model, and never continues another cell's checkpoint.
use super::*;
use crate::files::{arm_failpoint, OutputLock};

/// Two epochs with a checkpoint after each: the sequence is written twice, once as final.
fn two_epochs() -> AttackConfig {
    let mut c = cell();
    c.train.epochs = 2;
    c
}

fn run(cfg: &AttackConfig, out: &Path) -> Result<TrainSummary> {
    train(cfg, out, Device::Cpu, false)
}

/// The sha256 of the weights actually in `out/model`.
fn model_sha(out: &Path) -> String {
    checkpoint::load(&out.join("model"), Device::Cpu)
        .unwrap()
        .weights
        .safetensors
        .sha256
}

#[test]
fn a_run_killed_anywhere_in_its_checkpoint_sequence_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_epochs();
    let straight = run(&cfg, &dir.path().join("straight")).unwrap();
    assert_eq!(straight.iterations, 8);
    // (point, which hit): 0 = the first epoch's checkpoint, 1 = the final one.
    let kills = [
        ("checkpoint.state", 0),
        ("checkpoint.weights", 1),
        ("checkpoint.optimizer", 1),
        ("checkpoint.state", 1),
        ("checkpoint.pruned", 1),
        ("model.weights", 1),
        ("replace_dir.moved_aside", 0),
        ("checkpoint.model", 1),
        ("summary", 0),
    ];
    for (point, nth) in kills {
        let out = dir.path().join(format!("{point}-{nth}"));
        arm_failpoint(Some((point, nth)));
        let killed = run(&cfg, &out);
        arm_failpoint(None);
        let e = format!("{:#}", killed.unwrap_err());
        assert!(e.contains(&format!("failpoint {point}")), "{point}: {e}");
        assert!(
            !out.join("train.json").exists(),
            "{point}/{nth}: a killed run looks finished"
        );
        let resumed = run(&cfg, &out)
            .unwrap_or_else(|e| panic!("resuming after a kill at {point} (hit {nth}): {e:#}"));
        assert_eq!(
            (resumed.weights_sha256.as_str(), resumed.iterations),
            (straight.weights_sha256.as_str(), 8),
            "killed at {point} (hit {nth}), the resumed run reports other weights"
        );
        assert_eq!(model_sha(&out), straight.weights_sha256, "{point}/{nth}");
        let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 8, "{point}/{nth}");
    }
}

#[test]
fn a_finished_run_whose_model_no_longer_matches_is_exported_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cell();
    let out = dir.path().join("run");
    let done = run(&cfg, &out).unwrap();
    // The model folder of an earlier checkpoint (or any other bytes) under a finished record.
    let weights = out.join("model/unet").join(checkpoint::WEIGHTS_SAFETENSORS);
    let mut other = cell();
    other.train.seed += 1;
    let stale = run(&other, &dir.path().join("other")).unwrap();
    std::fs::copy(
        dir.path()
            .join("other/model/unet")
            .join(checkpoint::WEIGHTS_SAFETENSORS),
        &weights,
    )
    .unwrap();
    assert_ne!(stale.weights_sha256, done.weights_sha256);
    let again = run(&cfg, &out).unwrap();
    assert_eq!(again.weights_sha256, done.weights_sha256);
    assert_eq!(model_sha(&out), done.weights_sha256);
}

#[test]
fn a_checkpoint_of_another_cell_is_refused_not_continued() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_epochs();
    let out = dir.path().join("run");
    arm_failpoint(Some(("checkpoint.pruned", 0)));
    assert!(run(&cfg, &out).is_err());
    arm_failpoint(None);
    let log = std::fs::read(out.join("train_log.jsonl")).unwrap();
    let mut other = cfg.clone();
    other.backdoor.trigger = "STOP_SIGN_14".into();
    let e = format!("{:#}", run(&other, &out).unwrap_err());
    assert_eq!(
        std::fs::read(out.join("train_log.jsonl")).unwrap(),
        log,
        "the refused cell touched the other cell's loss log"
    );
    assert!(
        e.contains("another cell") && e.contains(&out.display().to_string()) && e.contains("--out"),
        "{e}"
    );
    assert!(!out.join("train.json").exists());
    // The rightful cell still resumes.
    assert_eq!(run(&cfg, &out).unwrap().iterations, 8);
}

#[test]
fn a_second_writer_of_one_run_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let held = OutputLock::acquire(&out).unwrap();
    let e = format!("{:#}", run(&cell(), &out).unwrap_err());
    assert!(
        e.contains(&out.display().to_string()) && e.contains("another process"),
        "{e}"
    );
    assert!(
        !out.exists(),
        "the refused writer wrote into {}",
        out.display()
    );
    drop(held);
    run(&cell(), &out).unwrap();
}
