//! Our side of the side-by-side performance benchmarks (`baddiff bench`, `cargo xtask bench`).
//!
//! Each [`Workload`] is one unit of work the reproduction repeats many times: a training step of
//! the backdoor loss, a sampling run, Inception feature extraction for FID, and a large matmul as
//! the machine's ceiling. Its [`WorkloadSpec`] (shapes, model and scheduler configs) is printed as
//! JSON and read by the peer script `python/bench/peer.py`, so both sides run the same shapes by
//! construction. Both print one [`Measurement`] with the same fields; the xtask alternates them
//! and compares medians (absolute times on a shared machine are noise, ratios are not).
mod workloads;

pub use workloads::random_poison_batch;
pub(crate) use workloads::TrainStep;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::matrix::profile::{Base, Profile};
use crate::stats::median;
use crate::unet::UNet2DConfig;

/// What one benchmark repetition does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One optimizer step (backdoor loss, backward, grad clipping, Adam) of the CIFAR-10 UNet.
    TrainStepCifar10,
    /// The same step for the smoke profile's scale UNet.
    TrainStepScale,
    /// DDPM sampling with the smoke profile's model, scheduler, sample count and batch.
    SampleScale,
    /// pytorch-fid's Inception pool3 features of CIFAR-sized images.
    FidFeatures,
    /// A square float32 matmul: the FLOP/s ceiling the other workloads are compared with.
    Matmul,
    /// The same matmul at a size that keeps a GPU busy for milliseconds (its ceiling).
    MatmulGpu,
    /// The CIFAR-10 training step at the GPU profiles' batch (`kick-the-tires`' 128).
    TrainStepCifar10Gpu,
    /// DDPM sampling with the CIFAR-10 UNet at the `kick-the-tires` profile's sampling batch.
    SampleCifar10,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::Matmul,
        Workload::TrainStepCifar10,
        Workload::TrainStepScale,
        Workload::SampleScale,
        Workload::FidFeatures,
        Workload::MatmulGpu,
        Workload::TrainStepCifar10Gpu,
        Workload::SampleCifar10,
    ];

    /// The GPU-sized workloads `cargo xtask gpu-check` runs (fid-features keeps its shapes).
    pub const GPU: [Workload; 4] = [
        Workload::MatmulGpu,
        Workload::TrainStepCifar10Gpu,
        Workload::SampleCifar10,
        Workload::FidFeatures,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::TrainStepCifar10 => "train-step-cifar10",
            Workload::TrainStepScale => "train-step-scale",
            Workload::SampleScale => "sample-scale",
            Workload::FidFeatures => "fid-features",
            Workload::Matmul => "matmul",
            Workload::MatmulGpu => "matmul-gpu",
            Workload::TrainStepCifar10Gpu => "train-step-cifar10-gpu",
            Workload::SampleCifar10 => "sample-cifar10",
        }
    }

    /// Timed repetitions per process that keep one process's measurement at about a second or
    /// more (a single 0.1 s step is at the mercy of one scheduler tick).
    pub fn default_reps(self) -> usize {
        match self {
            Workload::Matmul | Workload::TrainStepScale | Workload::MatmulGpu => 5,
            Workload::TrainStepCifar10 => 2,
            // About 0.1 s a step on a current GPU: 10 steps are a second.
            Workload::TrainStepCifar10Gpu => 10,
            Workload::SampleScale | Workload::FidFeatures | Workload::SampleCifar10 => 1,
        }
    }

    /// The shapes and configs of this workload (the smoke profile's for the scale workloads).
    pub fn spec(self) -> Result<WorkloadSpec> {
        let smoke = || -> Result<(Profile, UNet2DConfig, serde_json::Value)> {
            let profile = Profile::load(crate::python::project_root(), "smoke")?;
            let Base::Pretrain {
                unet, scheduler, ..
            } = &profile.base
            else {
                bail!("the smoke profile's base is not a pre-trained scale model");
            };
            anyhow::ensure!(
                unet == "scale",
                "the smoke profile's base UNet is `{unet}`, the benchmark expects `scale`"
            );
            let config =
                UNet2DConfig::scale(profile.data.size as i64, profile.data.channels as i64);
            let scheduler = scheduler.clone();
            Ok((profile, config, scheduler))
        };
        let mut spec = WorkloadSpec {
            workload: self.name().into(),
            dtype: "float32".into(),
            seed: 0,
            ..WorkloadSpec::default()
        };
        match self {
            Workload::TrainStepCifar10 | Workload::TrainStepCifar10Gpu => {
                let unet = UNet2DConfig::cifar10_32();
                spec.batch = if self == Workload::TrainStepCifar10 {
                    16
                } else {
                    gpu_profile()?
                        .finetune
                        .context("the kick-the-tires profile has no [finetune] settings")?
                        .batch
                };
                spec.what = format!("one optimizer step of the backdoor loss: google/ddpm-cifar10-32's UNet (random init), batch {}, Adam, grad clip 1.0", spec.batch);
                spec.image_shape = Some([3, 32, 32]);
                spec.unet = Some(unet.to_json_value());
                spec.scheduler = Some(cifar10_scheduler());
                spec.train = Some(TrainSpec {
                    learning_rate: 2e-4,
                    warmup_steps: 500,
                    grad_clip: 1.0,
                    poison_rate: 0.1,
                });
            }
            Workload::TrainStepScale => {
                let (profile, unet, scheduler) = smoke()?;
                let t = profile
                    .finetune
                    .as_ref()
                    .context("the smoke profile has no [finetune] settings")?;
                spec.what = format!(
                    "one optimizer step of the backdoor loss: the smoke profile's scale UNet, batch {}, Adam, grad clip {}",
                    t.batch, t.grad_clip
                );
                spec.batch = t.batch;
                spec.image_shape = Some(image_shape(&unet)?);
                spec.unet = Some(unet.to_json_value());
                spec.scheduler = Some(scheduler);
                spec.train = Some(TrainSpec {
                    learning_rate: t.learning_rate,
                    warmup_steps: t.warmup_steps,
                    grad_clip: t.grad_clip,
                    poison_rate: 0.1,
                });
            }
            Workload::SampleScale => {
                let (profile, unet, scheduler) = smoke()?;
                let steps = scheduler["num_train_timesteps"].as_i64().with_context(|| {
                    "the smoke profile's scheduler has no num_train_timesteps".to_string()
                })?;
                spec.what = format!(
                    "DDPM sampling of {} images over {steps} steps with the smoke profile's scale UNet, batch {}",
                    profile.measure.n, profile.measure.batch
                );
                spec.batch = profile.measure.batch as i64;
                spec.n = Some(profile.measure.n as i64);
                spec.steps = Some(steps);
                spec.image_shape = Some(image_shape(&unet)?);
                spec.unet = Some(unet.to_json_value());
                spec.scheduler = Some(scheduler);
            }
            Workload::FidFeatures => {
                spec.what = "pytorch-fid InceptionV3 pool3 features (random weights) of 256 images of 3x32x32, batch 50".into();
                spec.batch = 50;
                spec.n = Some(256);
                spec.image_shape = Some([3, 32, 32]);
            }
            Workload::Matmul | Workload::MatmulGpu => {
                let n = if self == Workload::Matmul { 2048 } else { 8192 };
                spec.what = format!("float32 matmul of two {n}x{n} matrices");
                spec.batch = 1;
                spec.matmul_n = Some(n);
            }
            Workload::SampleCifar10 => {
                let batch = gpu_sampling_batch()?;
                spec.what = format!(
                    "DDPM sampling of {batch} images (one batch, the kick-the-tires profile's) over {SAMPLE_CIFAR10_STEPS} of the 1000 steps with google/ddpm-cifar10-32's UNet (random init)"
                );
                spec.batch = batch;
                spec.n = Some(batch);
                spec.steps = Some(SAMPLE_CIFAR10_STEPS);
                spec.image_shape = Some([3, 32, 32]);
                spec.unet = Some(UNet2DConfig::cifar10_32().to_json_value());
                spec.scheduler = Some(cifar10_scheduler());
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .with_context(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload `{s}`: use one of {}", names.join(", "))
            })
    }
}

/// Inference steps of `sample-cifar10`: a step costs the same at every t, so 10 of the 1000 give
/// the per-step time in seconds rather than minutes.
pub const SAMPLE_CIFAR10_STEPS: i64 = 10;

/// The GPU profile whose shapes the GPU-sized workloads take.
fn gpu_profile() -> Result<Profile> {
    Profile::load(crate::python::project_root(), "kick-the-tires")
}

/// The sampling batch of the GPU profiles (`kick-the-tires`' `[measure] batch`).
pub fn gpu_sampling_batch() -> Result<i64> {
    Ok(gpu_profile()?.measure.batch as i64)
}

/// google/ddpm-cifar10-32's scheduler (its `scheduler_config.json`): T = 1000, linear betas 1e-4 … 0.02.
pub(crate) fn cifar10_scheduler() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "variance_type": "fixed_large",
        "clip_sample": true
    })
}

fn image_shape(unet: &UNet2DConfig) -> Result<[i64; 3]> {
    let (h, w) = unet
        .sample_size
        .map(|s| s.hw())
        .context("the benchmark UNet config has no sample_size")?;
    Ok([unet.in_channels, h, w])
}

/// Everything both sides need to run the same work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub workload: String,
    /// One line saying what a repetition does.
    pub what: String,
    pub dtype: String,
    /// Images per forward pass.
    pub batch: i64,
    /// Seed of inputs and initial weights (each side draws with its own generator).
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<[i64; 3]>,
    /// Images per repetition (sampling, features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Inference steps per sampling run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<i64>,
    /// diffusers `UNet2DModel` config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unet: Option<serde_json::Value>,
    /// diffusers `DDPMScheduler` config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSpec>,
    /// Side of the square matrices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matmul_n: Option<i64>,
}

/// The optimizer settings of a training-step workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub learning_rate: f64,
    pub warmup_steps: u64,
    pub grad_clip: f64,
    /// Fraction of the batch that is poisoned (trigger-stamped input, backdoor target).
    pub poison_rate: f64,
}

/// How to run a workload.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed repetitions (after one untimed warm-up).
    pub reps: usize,
    /// Intra-op threads (`tch::set_num_threads`); `None` keeps libtorch's default.
    pub threads: Option<i32>,
    pub device: Device,
    /// Mixed precision (autocast) on CUDA; ignored on the CPU.
    pub amp: bool,
    /// Activations channels-last (UNet, Inception); `None`: what the reproduction does on this
    /// device ([`crate::unet::channels_last_default`], [`crate::metrics::inception::FidInceptionV3::new`]).
    pub channels_last: Option<bool>,
}

/// One side's result: the JSON object `baddiff bench --json` and `python/bench/peer.py` print.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub workload: String,
    /// `ours` or `peer`.
    pub side: String,
    pub implementation: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub threads: i64,
    pub dtype: String,
    pub batch: i64,
    /// Untimed repetitions before the timed ones.
    pub warmup: usize,
    /// Seconds per timed repetition, in order.
    pub times_s: Vec<f64>,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Floating-point operations per repetition, when known.
    pub flops: Option<f64>,
    /// How `flops` was obtained.
    pub flops_source: Option<String>,
    /// The libtorch (torch) release that ran the work.
    pub libtorch: String,
    /// Mixed precision on.
    pub amp: bool,
    /// Activations in channels-last layout (ours only; the peer runs its library's default).
    #[serde(default)]
    pub channels_last: bool,
    pub spec: WorkloadSpec,
}

/// `cpu` / `cuda:N`, the spelling both sides use.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for queued GPU work, so a repetition's time includes it.
pub(crate) fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `spec` once untimed (warm-up: allocator, kernel selection, lazy optimizer state) and
/// `opts.reps` times timed.
pub fn run(spec: &WorkloadSpec, opts: &BenchOptions) -> Result<Measurement> {
    anyhow::ensure!(opts.reps > 0, "--reps must be at least 1");
    anyhow::ensure!(
        spec.dtype == "float32",
        "workload {} asks for dtype {}: only float32 is implemented",
        spec.workload,
        spec.dtype
    );
    if let Some(t) = opts.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1, got {t}");
        tch::set_num_threads(t);
    }
    if let Device::Cuda(_) = opts.device {
        anyhow::ensure!(
            tch::Cuda::is_available(),
            "device {} asked for but CUDA is not available: use --device cpu",
            device_name(opts.device)
        );
    }
    let workload: Workload = spec.workload.parse()?;
    let mut runner = workloads::build(workload, spec, opts)?;
    runner.warmup()?;
    synchronize(opts.device);
    let mut times = Vec::with_capacity(opts.reps);
    for _ in 0..opts.reps {
        let start = Instant::now();
        runner.rep()?;
        synchronize(opts.device);
        times.push(start.elapsed().as_secs_f64());
    }
    let (flops, flops_source) = match runner.flops() {
        Some((f, s)) => (Some(f), Some(s)),
        None => (None, None),
    };
    Ok(Measurement {
        workload: spec.workload.clone(),
        side: "ours".into(),
        implementation: format!(
            "baddiffusion {} (tch 0.26, Rust)",
            env!("CARGO_PKG_VERSION")
        ),
        device: device_name(opts.device),
        threads: tch::get_num_threads() as i64,
        dtype: spec.dtype.clone(),
        batch: spec.batch,
        warmup: 1,
        median_s: median(&times).unwrap_or(f64::NAN),
        min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        max_s: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        times_s: times,
        flops,
        flops_source,
        libtorch: crate::LIBTORCH_VERSION.into(),
        amp: opts.amp && opts.device.is_cuda(),
        channels_last: runner.channels_last(),
        spec: spec.clone(),
    })
}
