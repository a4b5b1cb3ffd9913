//! `baddiff sample` processes run side by side: sibling outputs (`runs/s0.1`, `runs/s0.5`) both
//! complete with their own images, and a process aimed at an output another one holds is
//! refused, naming the folder and the holder, without touching it.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baddiffusion::checkpoint::save_pipeline;
use baddiffusion::rng::Rng;
use baddiffusion::unet::{UNet2DConfig, UNet2DModel};

const N: usize = 64;

/// A random scale model (8×8 RGB) saved as a pipeline with a short schedule.
fn model(dir: &Path) -> PathBuf {
    let cfg = UNet2DConfig::scale(8, 3);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    Rng::seeded(21).with(|| UNet2DModel::new(vs.root(), &cfg).unwrap());
    let sched = serde_json::json!({
        "_class_name": "DDPMScheduler", "num_train_timesteps": 20, "beta_start": 0.001,
        "beta_end": 0.2, "beta_schedule": "linear", "variance_type": "fixed_large", "clip_sample": true
    });
    let model = dir.join("model");
    save_pipeline(&model, &vs, &cfg, &sched).unwrap();
    model
}

fn sample(model: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baddiff"));
    c.env("OMP_NUM_THREADS", "1")
        .args(["sample", "--steps", "20", "--batch", "1", "--n"])
        .arg(N.to_string())
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out);
    c
}

fn pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sibling_outputs_sampled_by_two_processes_both_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let outs = [tmp.path().join("runs/s0.1"), tmp.path().join("runs/s0.5")];
    let children: Vec<_> = outs
        .iter()
        .map(|o| sample(&model, o).spawn().unwrap())
        .collect();
    for (out, child) in outs.iter().zip(children) {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}: {}", out.display(), stderr(&o));
        assert_eq!(pngs(out), N, "{}", out.display());
        assert!(out.join("sample.json").is_file());
    }
    let mut left: Vec<String> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    left.sort();
    assert_eq!(left, ["s0.1", "s0.5"], "no scratch space left behind");
}

#[test]
fn a_second_process_writing_a_held_output_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let out = tmp.path().join("runs/s0.1");
    // This test process is the first writer.
    let held = baddiffusion::files::OutputLock::acquire(&out).unwrap();
    let o = sample(&model, &out).output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&out.display().to_string())
            && e.contains("being written by another process")
            && e.contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    assert!(!out.exists());
    drop(held);
    let o = sample(&model, &out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pngs(&out), N);
}
