//! The sampling loop of diffusers' `DDPMPipeline` / `DDIMPipeline`, over any denoiser.
//!
//! Per batch: draw the initial noise x_T ~ N(0, I) of shape (B, C, H, W) on the CPU, add the
//! optional offset (the backdoor sampler starts from noise + trigger, official `baddiffusion.py:417`), then for each
//! inference timestep call the denoiser and the scheduler's step, which draws its variance noise
//! from the same generator. That is exactly diffusers' order of random draws, so a batch equals
//! `Pipeline(unet, scheduler)(batch_size=B, generator=torch.Generator().manual_seed(seed_k))`
//! before its final `(x/2+0.5).clamp(0,1)` mapping.
//!
//! **Seeding rule.** Batch k (images `k·B .. k·B+B−1`) is seeded with [`batch_seed`]`(seed, k)`:
//! `seed` itself for k = 0 and [`crate::rng::derive_seed`]`(seed, k)` after. So a one-batch run is
//! bit-for-bit diffusers' pipeline with `manual_seed(seed)`, every batch can be reproduced (or
//! resumed) on its own, and the images *do* depend on the batch size: diffusers draws a whole
//! batch's noise in one call, so no per-image stream could match it for B > 1. Record the batch
//! size with the seed (the [`SampleRecord`] does).
mod png;
#[cfg(test)]
mod tests;

pub use png::{load_pngs, load_pngs_u8, png_name, save_pngs, to_png_bytes, to_u8};

use anyhow::{bail, ensure, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::rng::{derive_seed, Rng};
use crate::scheduler::{Sampler, SamplerKind};

/// What to sample.
#[derive(Debug)]
pub struct SampleOptions {
    /// Number of images.
    pub n: usize,
    /// (C, H, W) of one image.
    pub image_shape: [i64; 3],
    pub seed: u64,
    /// Images per denoiser call; the last batch may be smaller.
    pub batch_size: usize,
    pub num_inference_steps: usize,
    /// Where the denoiser and the scheduler arithmetic run; noise is drawn on the CPU regardless.
    pub device: Device,
    /// Added to the initial noise: (C, H, W) or (1, C, H, W) for all images, or (n, C, H, W).
    pub offset: Option<Tensor>,
    /// x_T itself, (n, C, H, W), instead of drawn noise: the corrupted inputs of E7
    /// ([`crate::inpainting`]), as the follow-up code's pipeline takes `init`. The generator
    /// still draws each DDPM step's noise from the batch's seed.
    pub start: Option<Tensor>,
    /// Show a progress bar on stderr (over all denoiser calls).
    pub progress: bool,
}

impl SampleOptions {
    /// `n` images of `image_shape`, one batch of `n`, on the default device, no offset.
    pub fn new(n: usize, image_shape: [i64; 3], seed: u64, num_inference_steps: usize) -> Self {
        SampleOptions {
            n,
            image_shape,
            seed,
            batch_size: n.max(1),
            num_inference_steps,
            device: crate::default_device(),
            offset: None,
            start: None,
            progress: false,
        }
    }
}

/// The seed of batch `k` (see the module's seeding rule).
pub fn batch_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        derive_seed(seed, k as u64)
    }
}

/// Everything that determined a sampling run, for its JSON record.
#[derive(Clone, Debug, Serialize)]
pub struct SampleRecord {
    /// `ddpm`, `ddim` or `dpm-solver`.
    pub sampler: &'static str,
    /// DDIM's η (absent for the other samplers).
    pub eta: Option<f64>,
    /// `none`, `x0` or `xt`.
    pub clip: &'static str,
    /// The resolved scheduler config in diffusers' spelling (overrides applied).
    pub scheduler_config: serde_json::Value,
    pub num_inference_steps: usize,
    pub timesteps: Vec<i64>,
    pub seed: u64,
    pub batch_size: usize,
    /// The seed each batch's generator started from.
    pub batch_seeds: Vec<u64>,
    pub seeding: &'static str,
    pub n: usize,
    pub image_shape: [i64; 3],
    /// Whether an offset was added to the initial noise.
    pub offset: bool,
    /// Whether x_T was given (E7's corrupted inputs) instead of drawn.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub given_start: bool,
    pub device: String,
}

const SEEDING: &str = "batch k of batch_size images is diffusers' pipeline with generator manual_seed(batch_seeds[k]); \
    batch_seeds[0] = seed, batch_seeds[k] = derive_seed(seed, k) (SplitMix64)";

/// Images in [−1, 1] (not clamped unless the clip mode is `xt`), (n, C, H, W) float32 on the CPU,
/// and the record of how they were made.
#[derive(Debug)]
pub struct Samples {
    pub images: Tensor,
    pub record: SampleRecord,
}

/// A denoiser: (x_t of shape (B, C, H, W), timesteps as int64 of shape (B), on the device) →
/// the model output (ε for ε-prediction) shaped like x_t. It must not draw random numbers: the
/// generator is busy with the scheduler's stream.
pub type Denoiser<'a> = dyn FnMut(&Tensor, &Tensor) -> Tensor + 'a;

/// Samples `opts.n` images and keeps them all in memory; see [`sample_batches`] for large runs.
pub fn sample(
    denoiser: &mut Denoiser,
    sampler: &mut Sampler,
    opts: &SampleOptions,
) -> Result<Samples> {
    let mut batches = Vec::new();
    let record = sample_batches(denoiser, sampler, opts, &mut |_, images| {
        batches.push(images);
        Ok(())
    })?;
    Ok(Samples {
        images: Tensor::cat(&batches, 0),
        record,
    })
}

/// Samples batch by batch, handing each batch (first image index, images in [−1, 1] on the CPU)
/// to `on_batch`, e.g. to write PNGs without holding every image.
pub fn sample_batches(
    denoiser: &mut Denoiser,
    sampler: &mut Sampler,
    opts: &SampleOptions,
    on_batch: &mut dyn FnMut(usize, Tensor) -> Result<()>,
) -> Result<SampleRecord> {
    let mut rng = Rng::seeded(opts.seed);
    sample_batches_with(&mut rng, denoiser, sampler, opts, on_batch)
}

/// [`sample_batches`] with the caller's generator, for code that already holds the thread's
/// [`Rng`] (e.g. sampling during training). It is reseeded per batch by the seeding rule, so the
/// output does not depend on its state, and it is left wherever the last batch ended.
pub fn sample_batches_with(
    rng: &mut Rng,
    denoiser: &mut Denoiser,
    sampler: &mut Sampler,
    opts: &SampleOptions,
    on_batch: &mut dyn FnMut(usize, Tensor) -> Result<()>,
) -> Result<SampleRecord> {
    ensure!(opts.n > 0, "asked for 0 images: n must be at least 1");
    ensure!(opts.batch_size > 0, "batch size must be at least 1");
    let [c, h, w] = opts.image_shape;
    ensure!(
        c > 0 && h > 0 && w > 0,
        "image shape {:?} must be positive (C, H, W)",
        opts.image_shape
    );
    let offset = opts
        .offset
        .as_ref()
        .map(|o| offset_per_image(o, opts))
        .transpose()?;
    ensure!(
        opts.offset.is_none() || opts.start.is_none(),
        "an offset and a given start exclude each other: an offset is added to drawn noise"
    );
    if let Some(s) = &opts.start {
        ensure!(
            s.size() == [opts.n as i64, c, h, w],
            "the start images are {:?}, expected [{}, {c}, {h}, {w}] (n, C, H, W)",
            s.size(),
            opts.n
        );
    }
    sampler.set_timesteps(opts.num_inference_steps)?;
    let timesteps = sampler.timesteps().to_vec();

    let n_batches = opts.n.div_ceil(opts.batch_size);
    let bar = crate::progress::bar(
        (n_batches * timesteps.len()) as u64,
        "sampling {bar:30} {pos}/{len} steps [{elapsed} < {eta}]",
        opts.progress,
    );

    let _no_grad = tch::no_grad_guard();
    let mut batch_seeds = Vec::with_capacity(n_batches);
    for k in 0..n_batches {
        let start = k * opts.batch_size;
        let b = opts.batch_size.min(opts.n - start) as i64;
        let seed = batch_seed(opts.seed, k);
        batch_seeds.push(seed);
        rng.reseed(seed);
        // diffusers re-runs set_timesteps on every pipeline call, which also resets DPM-Solver.
        sampler.set_timesteps(opts.num_inference_steps)?;
        let mut x = match &opts.start {
            Some(s) => s
                .narrow(0, start as i64, b)
                .to_kind(Kind::Float)
                .to_device(opts.device),
            None => rng.randn(&[b, c, h, w]).to_device(opts.device),
        };
        if let Some(o) = &offset {
            let part = if o.size()[0] == 1 {
                o.shallow_clone()
            } else {
                o.narrow(0, start as i64, b)
            };
            x = x + part.to_device(opts.device);
        }
        for &t in &timesteps {
            let t_batch = Tensor::full([b], t, (Kind::Int64, opts.device));
            let model_output = denoiser(&x, &t_batch);
            x = sampler.step(&model_output, t, &x, rng)?;
            bar.inc(1);
        }
        on_batch(start, x.to_device(Device::Cpu))?;
    }
    bar.finish_and_clear();

    let eta = match sampler.kind() {
        SamplerKind::Ddim { eta } => Some(eta),
        _ => None,
    };
    Ok(SampleRecord {
        sampler: sampler.kind().name(),
        eta,
        clip: sampler.clip().name(),
        scheduler_config: sampler.config().to_json(),
        num_inference_steps: opts.num_inference_steps,
        timesteps,
        seed: opts.seed,
        batch_size: opts.batch_size,
        batch_seeds,
        seeding: SEEDING,
        n: opts.n,
        image_shape: opts.image_shape,
        offset: offset.is_some(),
        given_start: opts.start.is_some(),
        device: format!("{:?}", opts.device),
    })
}

/// The offset as (1 or n, C, H, W) float32, or an error saying which shapes are accepted.
fn offset_per_image(offset: &Tensor, opts: &SampleOptions) -> Result<Tensor> {
    let [c, h, w] = opts.image_shape;
    let size = offset.size();
    let o = match size.as_slice() {
        [oc, oh, ow] if [*oc, *oh, *ow] == opts.image_shape => offset.unsqueeze(0),
        [1, oc, oh, ow] if [*oc, *oh, *ow] == opts.image_shape => offset.shallow_clone(),
        [on, oc, oh, ow] if [*oc, *oh, *ow] == opts.image_shape && *on == opts.n as i64 => offset.shallow_clone(),
        _ => bail!(
            "offset shape {size:?} does not fit images of shape ({c}, {h}, {w}): give ({c}, {h}, {w}), \
             (1, {c}, {h}, {w}) or ({}, {c}, {h}, {w})",
            opts.n
        ),
    };
    Ok(o.to_kind(Kind::Float))
}
