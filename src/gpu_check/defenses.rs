//! gpu-check's defenses part: every defense kind a profile can run (ANP, ANP pruning, Elijah,
//! TERD, the input-noise test) runs once at toy amounts on the device, on a randomly initialised
//! model of the GPU profiles' CIFAR-10 architecture (T = 1000), with random data and a synthetic
//! trigger and target. What it catches is a tensor left on the wrong device or a shape that only
//! the real architecture has: in seconds here instead of hours into a `paper` run. The numbers
//! themselves mean nothing.
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::datasets::Dataset;
use crate::defenses::spec::DefenseSpec;
use crate::defenses::{Backdoor, MeasureOptions};
use crate::pipeline::{Pipeline, PipelineOptions, TriggerTensor};
use crate::rng::Rng;
use crate::unet::{UNet2DConfig, UNet2DModel};

/// One defense's run.
#[derive(Clone, Debug, Serialize)]
pub struct DefenseRun {
    pub defense: String,
    pub ok: bool,
    pub seconds: f64,
    /// Rows it wrote (a defense that returns without rows did not measure).
    pub rows: usize,
    pub error: Option<String>,
}

/// The toy tables: each defense's amounts cut to a step or two, measured on 2 samples of 2
/// DDPM steps.
pub fn toy_tables() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!({"kind": "anp", "epochs": 1, "steps_per_epoch": 1, "batch": 2, "n": 2, "steps": 2}),
        json!({"kind": "anp-prune", "iterations": 1, "batch": 2, "n": 2, "steps": 2}),
        json!({"kind": "elijah", "inversion_steps": 2, "noises": 2, "samples": 9,
               "removal_epochs": 1, "removal_batch": 2, "n": 2, "steps": 2}),
        json!({"kind": "terd", "iterations": 2, "refine_iterations": 1, "batch": 2,
               "sampler_steps": 2, "inputs": 8}),
        json!({"kind": "noise-test", "calibration": 1000, "inputs": 8}),
    ]
}

/// Writes the random CIFAR-10-architecture pipeline under `dir`.
fn toy_model(dir: &Path, seed: u64) -> Result<()> {
    let config = UNet2DConfig::cifar10_32();
    let vs = nn::VarStore::new(Device::Cpu);
    Rng::seeded(seed).with(|| UNet2DModel::new(vs.root(), &config))?;
    let scheduler = serde_json::json!({
        "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": "linear", "variance_type": "fixed_small",
        "clip_sample": true,
    });
    crate::checkpoint::save_pipeline(dir, &vs, &config, &scheduler)?;
    Ok(())
}

/// 16 random CIFAR-10-sized images.
fn toy_data() -> Result<Dataset> {
    let images = (Rng::seeded(2).rand(&[16, 3, 32, 32]) * 255.0).to_kind(Kind::Uint8);
    Dataset::new(
        "random",
        images,
        Tensor::zeros([16], (Kind::Int64, Device::Cpu)),
    )
}

/// Runs every toy table on `device`; a failing defense is recorded, not fatal.
pub fn defenses(device: Device, dir: &Path) -> Result<Vec<DefenseRun>> {
    let model_dir = dir.join("model");
    toy_model(&model_dir, 0).context("writing the toy model")?;
    let opts = PipelineOptions {
        sampler: crate::scheduler::SamplerKind::Ddpm,
        steps: None,
        clip: None,
        override_scheduler: false,
        n: 2,
        seed: 0,
        batch: 2,
        device,
        progress: false,
    };
    let shape = [3i64, 32, 32];
    let mut rng = Rng::seeded(1);
    let trigger = rng.rand(&shape) * 2.0 - 1.0;
    let target = rng.rand(&shape) * 2.0 - 1.0;
    drop(rng);
    let backdoor = Backdoor {
        target_sha256: crate::tensor_io::tensor_sha256(&target),
        target,
        trigger: TriggerTensor {
            name: "random".into(),
            tensor: trigger,
        },
    };
    let mut out = Vec::new();
    for table in toy_tables() {
        let spec = DefenseSpec::parse(&table)?;
        let started = Instant::now();
        let result = (|| -> Result<usize> {
            let mut pipe = Pipeline::load(&model_dir, &opts)?;
            let m = MeasureOptions {
                n: spec.n.unwrap_or(2),
                seed: 0,
                batch: 2,
                steps: spec.steps,
                device,
            };
            let out = dir.join(format!("{}-out", spec.kind()));
            let outcome = crate::defenses::run(&spec, &mut pipe, toy_data, &backdoor, &m, &out, 0)?;
            Ok(outcome.rows.len())
        })();
        out.push(DefenseRun {
            defense: spec.kind().into(),
            ok: matches!(result, Ok(n) if n > 0),
            seconds: started.elapsed().as_secs_f64(),
            rows: *result.as_ref().unwrap_or(&0),
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    Ok(out)
}
