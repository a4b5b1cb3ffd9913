//! The measurements behind `cargo xtask gpu-check`, the one command to run the day a GPU is at
//! hand: does CUDA compute what the CPU computes (parity), does float16 training survive 200
//! steps, and which sampling batch is fastest. `baddiff gpu-check PART --json` prints each part;
//! the xtask adds the peer comparison (`cargo xtask bench`'s harness) and writes the report.
//!
//! Every function takes the device to check, so the tests run them CPU against CPU: everything
//! but the CUDA calls is exercised on a machine without a GPU.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::backdoor_loss::{backdoor_loss, BackdoorSchedule};
use crate::bench::{self, BenchOptions, TrainStep, Workload, WorkloadSpec};
use crate::device::CudaState;
use crate::metrics::inception::FidInceptionV3;
use crate::rng::Rng;
use crate::scheduler::{NoiseSchedule, Overrides, Sampler, SamplerKind, SchedulerConfig};
use crate::training::adam::clip_grad_norm;
use crate::training::update::Step;
use crate::unet::{UNet2DConfig, UNet2DModel};

pub mod defenses;
#[cfg(test)]
mod tests;

/// The device `gpu-check` measures, or why there is none: it only means something on a GPU.
pub fn require_cuda(cuda: CudaState) -> Result<Device> {
    if cuda.backend_loaded && cuda.gpus > 0 {
        return Ok(Device::Cuda(0));
    }
    let fix = if !cuda.backend_loaded {
        "this `baddiff` runs without libtorch's CUDA backend: run it on a machine with an NVIDIA \
         GPU and a CUDA build of libtorch (`cargo xtask doctor` says whether this libtorch has \
         CUDA and what to install)"
    } else {
        "the CUDA backend is loaded but sees no GPU: check `nvidia-smi` and CUDA_VISIBLE_DEVICES"
    };
    bail!(
        "gpu-check measures a CUDA GPU, and none is usable here ({}). Fix: {fix}.",
        cuda.describe()
    )
}

/// One comparison of CUDA against the CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// What `value` is.
    pub metric: String,
    pub value: f64,
    /// `value` must not exceed it.
    pub bound: f64,
    /// Why the bound is what it is.
    pub why: String,
    pub pass: bool,
}

impl Check {
    fn new(name: &str, value: f64, bound: f64, why: &str) -> Check {
        Check {
            name: name.into(),
            metric: RELATIVE.into(),
            value,
            bound,
            why: why.into(),
            pass: value <= bound,
        }
    }
}

const RELATIVE: &str = "max |other - cpu| / max |cpu|";

/// max |a − b| / max |b|, both moved to the CPU in float64 (NaN anywhere gives NaN, a failure).
pub fn relative_difference(other: &Tensor, cpu: &Tensor) -> f64 {
    let a = other.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = cpu.to_device(Device::Cpu).to_kind(Kind::Double);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]);
    if a.isfinite().all().int64_value(&[]) == 0 || !diff.is_finite() {
        return f64::NAN;
    }
    diff / scale.max(f64::MIN_POSITIVE)
}

// The bounds. float32 keeps 24 bits (ε ≈ 6e-8); a sum of K products rounded in a different order
// (cuDNN's and oneDNN's convolutions, cuBLAS's and MKL's matmuls) differs by about √K·ε relative
// to its magnitude, and the UNet chains ~70 convolutions (K up to 3·3·512 = 4608, √K·ε ≈ 4e-6),
// renormalised by GroupNorm after each. TF32 (10-bit mantissa) would add ~1e-3 per layer, so the
// parity process runs with NVIDIA_TF32_OVERRIDE=0 (see `cargo xtask gpu-check`).

/// The UNet forward: ~70 layers of ≤ 4e-6 each, summed linearly as a worst case: 3e-4, with
/// room for cuDNN's Winograd and FFT algorithms (a few ulps more per layer).
pub const FORWARD_BOUND: f64 = 1e-3;
/// The loss is a mean over the batch of squared errors: the forward's error averages down.
pub const LOSS_BOUND: f64 = 1e-4;
/// Gradients pass the layers twice (forward activations, then backward) and atomics-based
/// reductions of cuDNN's weight gradients add order noise; relative to the largest gradient.
pub const GRAD_BOUND: f64 = 1e-2;
/// The gradient norm sums 36M squares: the elementwise noise averages down.
pub const GRAD_NORM_BOUND: f64 = 1e-3;
/// One DDPM step is a few elementwise float32 operations on the same inputs and scalars; at
/// t = 999 it divides by √ᾱ ≈ 6e-3 before clipping, which turns one ulp of x_t into ~1e-5 of
/// the x₀ estimate, damped again by its coefficient (~1e-4). 1e-5 leaves 20 ulps at |x| ≈ 4.
pub const DDPM_STEP_BOUND: f64 = 1e-5;
/// InceptionV3 chains ~95 convolutions (BatchNorm folded) plus a bilinear resize to 299².
pub const INCEPTION_BOUND: f64 = 1e-3;

/// What the parity part runs.
#[derive(Clone, Debug)]
pub struct ParityOptions {
    pub unet: UNet2DConfig,
    /// Images in the UNet's forward and training step.
    pub batch: i64,
    /// Images through Inception.
    pub inception_images: i64,
    pub seed: u64,
}

impl Default for ParityOptions {
    /// The CIFAR-10 UNet on 4 images: seconds on the CPU side.
    fn default() -> Self {
        ParityOptions {
            unet: UNet2DConfig::cifar10_32(),
            batch: 4,
            inception_images: 4,
            seed: 0,
        }
    }
}

/// A model on the CPU and the same weights on `device`, each in the layout the reproduction uses
/// on its device.
fn unet_pair(
    config: &UNet2DConfig,
    device: Device,
    seed: u64,
) -> Result<[(nn::VarStore, UNet2DModel); 2]> {
    let cpu_vs = nn::VarStore::new(Device::Cpu);
    let mut cpu = Rng::seeded(seed).with(|| UNet2DModel::new(cpu_vs.root(), config))?;
    cpu.set_channels_last(crate::unet::channels_last_default(Device::Cpu));
    let mut other_vs = nn::VarStore::new(device);
    let mut other = UNet2DModel::new(other_vs.root(), config)?;
    other_vs
        .copy(&cpu_vs)
        .context("copying the CPU weights to the other device")?;
    other.set_channels_last(crate::unet::channels_last_default(device));
    Ok([(cpu_vs, cpu), (other_vs, other)])
}

/// CUDA (`device`) against the CPU on random weights and inputs: the UNet forward, one fp32
/// training step (loss, gradients, gradient norm), one DDPM step, Inception pool3 features.
///
/// Parameters after the Adam step are not compared: Adam's first step moves each weight by
/// lr·g/(|g| + ε) ≈ ±lr, so a gradient within rounding of zero flips a whole ±lr; the gradients
/// carry the information.
pub fn parity(device: Device, opts: &ParityOptions) -> Result<Vec<Check>> {
    let mut config = opts.unet.clone();
    // Dropout draws from each device's own generator: the two sides would differ by design.
    config.dropout = 0.0;
    let [(cpu_vs, cpu), (other_vs, other)] = unet_pair(&config, device, opts.seed)?;
    let [c, h, w] = image_shape(&config)?;
    let mut rng = Rng::seeded(opts.seed + 1);
    let b = opts.batch;
    let x = rng.randn(&[b, c, h, w]);
    let t = rng.randint(1000, &[b]);
    let mut checks = Vec::new();

    let (fc, fo) = tch::no_grad(|| {
        (
            cpu.forward_t(&x, &t, false),
            other.forward_t(&x.to_device(device), &t.to_device(device), false),
        )
    });
    checks.push(Check::new(
        "unet forward",
        relative_difference(&fo, &fc),
        FORWARD_BOUND,
        "float32 convolutions summed in another order, ~70 layers",
    ));

    // One training step of the backdoor loss, as the trainer computes it in float32.
    let sched_cfg = SchedulerConfig::from_json(&bench::cifar10_scheduler())?;
    let resolved = sched_cfg.resolve(SamplerKind::Ddpm)?;
    let betas = NoiseSchedule::new(&resolved)?.betas;
    let batch = bench::random_poison_batch(&mut rng, b, [c, h, w], 0.5);
    let noise = rng.randn(&[b, c, h, w]);
    let step =
        |model: &UNet2DModel, vs: &nn::VarStore, dev: Device| -> Result<(f64, Vec<Tensor>, f64)> {
            let sched = BackdoorSchedule::from_betas(&betas.to_device(dev));
            let loss = backdoor_loss(
                &sched,
                &|x, t| model.forward_t(x, t, true),
                &batch.to_device(dev),
                &t.to_device(dev),
                &noise.to_device(dev),
            )?;
            loss.backward();
            let params = vs.trainable_variables();
            let grads: Vec<Tensor> = params
                .iter()
                .map(|p| p.grad().to_device(Device::Cpu).flatten(0, -1))
                .collect();
            let norm = clip_grad_norm(&params, 1.0);
            Ok((loss.double_value(&[]), grads, norm))
        };
    let (loss_c, grads_c, norm_c) = step(&cpu, &cpu_vs, Device::Cpu)?;
    let (loss_o, grads_o, norm_o) = step(&other, &other_vs, device)?;
    let scalar = |a: f64, b: f64| (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
    checks.push(Check {
        metric: "|other - cpu| / |cpu|".into(),
        ..Check::new(
            "training step: loss",
            scalar(loss_o, loss_c),
            LOSS_BOUND,
            "a mean of squared errors: the forward's rounding averages down",
        )
    });
    checks.push(Check::new(
        "training step: gradients",
        relative_difference(&Tensor::cat(&grads_o, 0), &Tensor::cat(&grads_c, 0)),
        GRAD_BOUND,
        "forward and backward rounding plus unordered weight-gradient reductions",
    ));
    checks.push(Check {
        metric: "|other - cpu| / |cpu|".into(),
        ..Check::new(
            "training step: gradient norm",
            scalar(norm_o, norm_c),
            GRAD_NORM_BOUND,
            "a sum of 36M squares: elementwise noise averages down",
        )
    });

    // One DDPM step (the sampler's, variance noise from the same CPU generator) at three t.
    let mut worst = 0f64;
    for t in [999, 500, 1] {
        let model_output = rng.randn(&[b, c, h, w]);
        let sample = rng.randn(&[b, c, h, w]);
        let mut run = |dev: Device| -> Result<Tensor> {
            let mut s = Sampler::new(SamplerKind::Ddpm, &sched_cfg, &Overrides::default())?;
            s.set_timesteps(1000)?;
            let (mo, x) = (model_output.to_device(dev), sample.to_device(dev));
            // The variance noise is drawn on the CPU: the same draws on both sides.
            rng.reseed(opts.seed + t as u64);
            s.step(&mo, t, &x, &mut rng)
        };
        let (on_other, on_cpu) = (run(device)?, run(Device::Cpu)?);
        let d = relative_difference(&on_other, &on_cpu);
        // f64::max would drop a NaN, which must fail the check.
        worst = if d.is_nan() || worst.is_nan() {
            f64::NAN
        } else {
            worst.max(d)
        };
    }
    checks.push(Check::new(
        "ddpm step (t = 999, 500, 1)",
        worst,
        DDPM_STEP_BOUND,
        "a few elementwise float32 operations; 1/sqrt(abar) ~ 156 at t = 999",
    ));

    // Inception pool3 features, the same random weights on both sides.
    let images = rng.rand(&[opts.inception_images, 3, 32, 32]);
    let mut features = |dev: Device| {
        let mut net = FidInceptionV3::new(dev);
        rng.reseed(opts.seed);
        net.randomize(&mut rng);
        tch::no_grad(|| net.pool3(&images.to_device(dev)))
    };
    let (on_other, on_cpu) = (features(device), features(Device::Cpu));
    checks.push(Check::new(
        "inception pool3 features",
        relative_difference(&on_other, &on_cpu),
        INCEPTION_BOUND,
        "~95 float32 convolutions and a bilinear resize to 299x299",
    ));
    Ok(checks)
}

fn image_shape(config: &UNet2DConfig) -> Result<[i64; 3]> {
    let (h, w) = config
        .sample_size
        .map(|s| s.hw())
        .context("the UNet config has no sample_size")?;
    Ok([config.in_channels, h, w])
}

/// What the float16 training part found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fp16Report {
    pub steps: u64,
    pub batch: i64,
    /// Optimizer steps skipped by the loss scaler (overflowed gradients).
    pub skipped: u64,
    /// Losses that were inf or NaN (each such step must be one of the skipped).
    pub non_finite_losses: u64,
    /// The loss scale after the last step.
    pub final_scale: Option<f64>,
    /// Mean finite loss of the first and of the last `window` steps.
    pub first_mean_loss: f64,
    pub last_mean_loss: f64,
    pub window: u64,
    /// The last window's mean loss is below the first's.
    pub loss_fell: bool,
    /// Median seconds per step (the first step, with its kernel selection, excluded).
    pub median_step_s: f64,
    pub losses: Vec<f64>,
}

impl Fp16Report {
    /// The run completed, every non-finite loss was a skipped step, and the loss fell.
    pub fn pass(&self) -> bool {
        self.loss_fell && self.non_finite_losses <= self.skipped
    }
}

/// `steps` iterations of the trainer's float16 step (autocast, loss scaling, skip on overflow,
/// the schedule held after a skip) on the CIFAR-10 UNet at `batch`, with the GPU profiles'
/// optimizer settings and a fresh random CIFAR-shaped batch each step.
pub fn fp16_training(device: Device, steps: u64, batch: i64) -> Result<Fp16Report> {
    let mut spec = Workload::TrainStepCifar10Gpu.spec()?;
    spec.batch = batch;
    fp16_run(&spec, device, steps, false)
}

/// [`fp16_training`] on any training workload spec; `force_scaling` turns the loss scaler on
/// on the CPU, for tests (autocast is CUDA-only, so there the step runs in float32).
fn fp16_run(
    spec: &WorkloadSpec,
    device: Device,
    steps: u64,
    force_scaling: bool,
) -> Result<Fp16Report> {
    anyhow::ensure!(
        steps >= 2,
        "fp16 training needs at least 2 steps, got {steps}"
    );
    let poison_rate = spec.train.as_ref().map_or(0.1, |t| t.poison_rate);
    let opts = BenchOptions {
        reps: 1,
        threads: None,
        device,
        amp: true,
        channels_last: None,
    };
    let mut runner = TrainStep::new(spec, &opts)?;
    if force_scaling {
        runner = runner.with_loss_scaling();
    }
    anyhow::ensure!(
        runner.scaler().is_some(),
        "fp16 training needs a CUDA device (libtorch autocasts on CUDA only), not {device:?}"
    );
    let (mut losses, mut times) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for i in 0..steps {
        if i > 0 {
            runner.redraw_batch(poison_rate);
        }
        let start = Instant::now();
        let (loss, step) = runner.step()?;
        bench::synchronize(device);
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
        skipped += u64::from(step == Step::Skipped);
        losses.push(loss);
    }
    Ok(Fp16Report::new(
        spec.batch,
        losses,
        skipped,
        runner.scaler().map(|s| s.scale),
        crate::stats::median(&times).unwrap_or(f64::NAN),
    ))
}

impl Fp16Report {
    /// The report of a run's per-step losses: the loss fell when the mean finite loss of the
    /// last `window` steps (a quarter of the run, at most 20) is below the first window's.
    pub fn new(
        batch: i64,
        losses: Vec<f64>,
        skipped: u64,
        final_scale: Option<f64>,
        median_step_s: f64,
    ) -> Fp16Report {
        let steps = losses.len() as u64;
        let window = (steps / 4).clamp(1, 20) as usize;
        let mean = |xs: &[f64]| {
            let f: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
            f.iter().sum::<f64>() / f.len() as f64
        };
        let first = mean(&losses[..window.min(losses.len())]);
        let last = mean(&losses[losses.len().saturating_sub(window)..]);
        Fp16Report {
            steps,
            batch,
            skipped,
            non_finite_losses: losses.iter().filter(|l| !l.is_finite()).count() as u64,
            final_scale,
            first_mean_loss: first,
            last_mean_loss: last,
            window: window as u64,
            // NaN (no finite loss in a window) compares false: not fallen.
            loss_fell: last < first,
            median_step_s,
            losses,
        }
    }
}

/// Sampling at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchTiming {
    pub batch: i64,
    /// Seconds per denoising step of the whole batch (one UNet forward and one DDPM step).
    pub seconds_per_step: Option<f64>,
    /// Images per second of full 1000-step DDPM sampling at this batch.
    pub images_per_s: Option<f64>,
    /// Why it was not timed (out of memory ends the sweep).
    pub error: Option<String>,
}

/// The fastest batch (most images per second) of a sweep.
pub fn best_batch(sweep: &[BatchTiming]) -> Option<&BatchTiming> {
    sweep
        .iter()
        .filter(|t| t.images_per_s.is_some_and(f64::is_finite))
        .max_by(|a, b| a.images_per_s.unwrap().total_cmp(&b.images_per_s.unwrap()))
}

/// The doubling batch sizes from `from` to at most `to`.
pub fn doubling(from: i64, to: i64) -> Vec<i64> {
    std::iter::successors(Some(from.max(1)), |b| Some(b * 2))
        .take_while(|b| *b <= to)
        .collect()
}

/// Times `sample-cifar10` (our sampling loop over the CIFAR-10 UNet, fp32, as the sample stage
/// runs) over `steps` steps at each batch size, one batch per size; stops at the first size that
/// fails (out of memory), recording why.
pub fn sampling_sweep(device: Device, batches: &[i64], steps: i64) -> Result<Vec<BatchTiming>> {
    let base = Workload::SampleCifar10.spec()?;
    let opts = BenchOptions {
        reps: 1,
        threads: None,
        device,
        amp: false,
        channels_last: None,
    };
    let mut out = Vec::new();
    for &batch in batches {
        let mut spec = base.clone();
        spec.batch = batch;
        spec.n = Some(batch);
        spec.steps = Some(steps);
        // libtorch's errors (CUDA out of memory) surface as panics through tch's plain calls.
        let result = catch_unwind(AssertUnwindSafe(|| bench::run(&spec, &opts)));
        let timing = match result {
            Ok(Ok(m)) => {
                let per_step = m.median_s / steps as f64;
                BatchTiming {
                    batch,
                    seconds_per_step: Some(per_step),
                    images_per_s: Some(batch as f64 / (per_step * 1000.0)),
                    error: None,
                }
            }
            Ok(Err(e)) => failed(batch, format!("{e:#}")),
            Err(panic) => failed(batch, panic_message(&panic)),
        };
        let stop = timing.error.is_some();
        out.push(timing);
        if stop {
            break;
        }
    }
    Ok(out)
}

fn failed(batch: i64, error: String) -> BatchTiming {
    let first = error.lines().next().unwrap_or("").to_string();
    BatchTiming {
        batch,
        seconds_per_step: None,
        images_per_s: None,
        error: Some(first),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
