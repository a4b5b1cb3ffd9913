//! Numeric command-line settings out of range are refused before any work, naming the option
//! and the range allowed (a zero batch divided by zero; a negative threshold or learning rate
//! ran to the end and exited 0 with meaningless numbers).
use std::process::Command;

fn refused(args: &[&str], named: &str, range: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_baddiff"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(named) && err.contains(range),
        "{args:?}: {err}"
    );
}

const COUNT: &str = "a whole number ≥ 1";
const POSITIVE: &str = "a finite number > 0";

#[test]
fn out_of_range_numbers_on_the_command_line_are_refused_by_name() {
    let measure = [
        "measure",
        "--samples",
        "s",
        "--target",
        "t.npy",
        "--out",
        "o",
    ];
    for (extra, named, range) in [
        (["--n", "0"], "--n", COUNT),
        (
            ["--threshold=-0.1", "--ssim-border=cropped"],
            "--threshold",
            POSITIVE,
        ),
        (["--threshold", "NaN"], "--threshold", POSITIVE),
        (["--threshold", "inf"], "--threshold", POSITIVE),
    ] {
        refused(&[&measure[..], &extra[..]].concat(), named, range);
    }
    let sample = ["sample", "--model", "m", "--out", "o"];
    for (extra, named) in [
        (["--n", "0"], "--n"),
        (["--batch", "0"], "--batch"),
        (["--steps", "0"], "--steps"),
    ] {
        let n: &[&str] = if named == "--n" { &[] } else { &["--n", "4"] };
        refused(&[&sample[..], n, &extra[..]].concat(), named, COUNT);
    }
    for (extra, named) in [
        (["--batch", "0"], "--batch"),
        (["--n", "0"], "--n"),
        (["--reference-n", "0"], "--reference-n"),
        (["--proxy-size", "0"], "--proxy-size"),
    ] {
        refused(&[&["fid", "a", "b"][..], &extra[..]].concat(), named, COUNT);
    }
    let defend = [
        "defend",
        "clip",
        "--model",
        "m",
        "--trigger",
        "BOX_14",
        "--target",
        "CORNER",
        "--out",
        "o",
    ];
    for (extra, named) in [
        (["--n", "0"], "--n"),
        (["--sample-batch", "0"], "--sample-batch"),
        (["--steps", "0"], "--steps"),
    ] {
        refused(&[&defend[..], &extra[..]].concat(), named, COUNT);
    }
}

/// The cell config's command-line overrides are checked with the config.
#[test]
fn train_overrides_are_checked_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cell = dir.path().join("cell.toml");
    std::fs::write(
        &cell,
        "[data]\ndataset = \"fashion-mnist\"\nchannels = 1\nsize = 16\n\
         [backdoor]\ntrigger = \"BOX_14\"\ntarget = \"CORNER\"\npoison_rate = 0.5\n\
         [model]\ninit = \"scratch\"\nunet = \"scale\"\nscheduler = {}\n\
         [train]\nepochs = 1\nbatch = 8\neffective_batch = 8\nlearning_rate = 1e-3\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let base = [
        "train",
        "--config",
        cell.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for (extra, named) in [
        (["--lr=-1e-3", "--seed=0"], "learning_rate = -0.001"),
        (["--batch", "0"], "batch = 0"),
        (["--epochs", "0"], "epochs = 0"),
        (["--poison-rate", "2"], "poison_rate = 2"),
    ] {
        refused(&[&base[..], &extra[..]].concat(), named, "out of range");
    }
    assert!(!out.exists(), "nothing is written for a refused setting");
}

/// The later defenses read `--set KEY=VALUE` through the profiles' parser: a bad value or an
/// unknown key is refused by name before any model is loaded, and `--set` on a defense that takes
/// flags is refused too.
#[test]
fn later_defense_settings_are_checked_before_loading() {
    let run = |args: &[&str]| {
        let mut all = vec![
            "defend",
            "--model",
            "no-such-model",
            "--trigger",
            "BOX_14",
            "--target",
            "HAT",
            "--out",
            "o",
        ];
        all.extend_from_slice(args);
        let out = Command::new(env!("CARGO_BIN_EXE_baddiff"))
            .args(&all)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["terd", "--set", "iterations=0"]);
    assert!(err.contains("iterations = 0 is out of range"), "{err}");
    let err = run(&["elijah", "--set", "lambda=2"]);
    assert!(err.contains("λ must lie in (0, 1)"), "{err}");
    let err = run(&["noise-test", "--set", "alpha=0.1"]);
    assert!(err.contains("`alpha` is unknown"), "{err}");
    let err = run(&["elijah", "--set", "remove=true"]);
    assert!(err.contains("--repaired-out"), "{err}");
    let err = run(&["clip", "--set", "lr=0.1"]);
    assert!(
        err.contains("--set is for elijah, terd and noise-test"),
        "{err}"
    );
}
