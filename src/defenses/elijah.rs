//! Elijah (An et al., AAAI 2024, "Elijah: Eliminating Backdoors Injected in Diffusion Models via
//! Distribution Shift"; code `njuaplusplus/Elijah` a8b3422, `BadDiffusion/`). Beyond the paper.
//!
//! - **Inversion** (`elijah_helper.py:159-187`): a shift τ, initialised −U[0, 1) at the image's
//!   shape, optimised with Adam (lr 0.1, 100 full-batch steps) on one fixed batch of 100 noises
//!   x ~ N(0, I), so that the batch mean of ε_θ(x + τ, T−1) matches λτ (λ = 0.5) under an L1
//!   loss (`trigger_loss`, L136-143).
//! - **Detection** (L35-133, L207-235): 16 DDPM samples from x + τ; their uniformity is the
//!   twice-trimmed mean (drop 4 of 16 at each end, per row then over rows) of the pairwise
//!   distance matrix. Elijah's distance is LPIPS, whose weights cannot be fetched offline: here it
//!   is the per-pixel mean squared difference in [0, 1] (a named deviation, `paper/deviations.md`).
//!   The code's alternative score, torchmetrics' total variation (`--compute_tvloss`), is
//!   reported too. Low scores mean uniform samples, i.e. a backdoor. The code has no threshold;
//!   the report states its rule (calibrated on the run's clean models).
//! - **Removal** (`baddiffusion.py:645-662, 732-749`): fine-tune on a random 10 % of the clean
//!   data with L_DM + ‖ε_θ(ε + τ, T−1) − ε_θ₀(ε, T−1)‖² + ‖ε_θ(ε, T−1) − ε_θ₀(ε, T−1)‖², one ε
//!   for all three terms, θ₀ the frozen backdoored model; Adam lr 2e-4, cosine schedule with 500
//!   warm-up steps, gradient clip 1.0, 11 epochs at batch 128 (`run_example.sh`), dropout off
//!   (the model stays in eval mode).
use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use super::{
    clock, defense_rows, measure, set_clip, Backdoor, CleanLoss, Cost, DefenseRow, MeasureOptions,
};
use crate::checkpoint;
use crate::datasets::{shuffled_batches, Dataset};
use crate::pipeline::{Pipeline, TriggerTensor};
use crate::rng::{derive_seed, Rng};
use crate::scheduler::Clip;
use crate::training::adam::{clip_grad_norm, Adam};
use crate::training::lr_schedule::CosineWithWarmup;

/// Elijah's settings; [`Default`] is its BadDiffusion code's (CIFAR-10).
#[derive(Clone, Debug, Serialize)]
pub struct ElijahConfig {
    /// λ: the inverted trigger's target shift of the mean ε prediction (`R_coef_T`, 0.5).
    pub lambda: f64,
    /// Adam's learning rate on τ (0.1).
    pub lr: f64,
    /// Inversion steps (`num_epochs`, 100).
    pub steps: u64,
    /// Noises of the inversion batch (100 at 32 px).
    pub noises: usize,
    /// Samples from x + τ scored for uniformity (16).
    pub samples: usize,
    /// Pairwise distances dropped at each end of the trimmed means (`skip_cnt`, 4).
    pub trim: usize,
    /// Whether to run the removal fine-tune after detection.
    pub remove: bool,
    pub removal: RemovalConfig,
    /// Clipping while sampling (Elijah's pipeline: `clip_sample=False`).
    #[serde(serialize_with = "super::clip_name")]
    pub sample_clip: Clip,
    pub seed: u64,
}

/// Elijah's removal fine-tune.
#[derive(Clone, Debug, Serialize)]
pub struct RemovalConfig {
    /// Share of the clean data it fine-tunes on (`--clean_rate 0.1`).
    pub clean_fraction: f64,
    pub epochs: u64,
    pub batch: usize,
    /// Peak learning rate (2e-4, BadDiffusion's own fine-tuning rate).
    pub lr: f64,
    /// Linear warm-up steps of the cosine schedule (500; at 11 epochs of 40 batches the schedule
    /// never leaves its warm-up).
    pub warmup: u64,
    pub grad_clip: f64,
}

impl Default for ElijahConfig {
    fn default() -> Self {
        ElijahConfig {
            lambda: 0.5,
            lr: 0.1,
            steps: 100,
            noises: 100,
            samples: 16,
            trim: 4,
            remove: true,
            removal: RemovalConfig {
                clean_fraction: 0.1,
                epochs: 11,
                batch: 128,
                lr: 2e-4,
                warmup: 500,
                grad_clip: 1.0,
            },
            sample_clip: Clip::None,
            seed: 0,
        }
    }
}

impl ElijahConfig {
    pub fn param(&self) -> String {
        let r = &self.removal;
        let mut p = format!(
            "lambda={},lr={},steps={},noises={}",
            self.lambda, self.lr, self.steps, self.noises
        );
        if self.remove {
            p += &format!(
                ",removal=epochs:{}/batch:{}/lr:{}/warmup:{}",
                r.epochs, r.batch, r.lr, r.warmup
            );
        }
        p
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.lambda.is_finite() && self.lambda > 0.0 && self.lambda < 1.0,
            "Elijah's λ must lie in (0, 1), got {} (lambda; Elijah uses 0.5)",
            self.lambda
        );
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "Elijah's inversion learning rate must be positive, got {} (lr; Elijah uses 0.1)",
            self.lr
        );
        ensure!(
            self.steps > 0,
            "Elijah needs at least one inversion step (steps)"
        );
        ensure!(
            self.noises > 0,
            "Elijah needs at least one noise per step (noises)"
        );
        ensure!(
            self.samples > 2 * self.trim,
            "Elijah's uniformity drops {} distances at each end: it needs more than {} samples, got {} (samples)",
            self.trim,
            2 * self.trim,
            self.samples
        );
        let r = &self.removal;
        ensure!(
            r.clean_fraction > 0.0 && r.clean_fraction <= 1.0,
            "Elijah's removal data share must lie in (0, 1], got {} (clean_fraction; Elijah uses 0.1)",
            r.clean_fraction
        );
        ensure!(
            r.epochs > 0,
            "Elijah's removal needs at least one epoch (removal_epochs)"
        );
        ensure!(
            r.batch > 0,
            "Elijah's removal batch must be positive (removal_batch)"
        );
        ensure!(
            r.lr.is_finite() && r.lr > 0.0,
            "Elijah's removal learning rate must be positive, got {} (removal_lr)",
            r.lr
        );
        ensure!(r.grad_clip > 0.0, "the gradient clip must be positive");
        Ok(())
    }
}

/// An ε-predictor at one integer timestep: the UNet, or a synthetic denoiser in tests.
pub type Denoiser<'a> = dyn Fn(&Tensor, i64) -> Tensor + 'a;

/// Elijah's inversion: τ (`[C, H, W]`, returned on the CPU) minimising
/// |λτ − mean_batch ε(x + τ, t)|₁ over one fixed batch of noises, computed on `device` (the
/// draws are made on the CPU, so a seed gives the same τ on any device up to rounding). Returns
/// τ and the last step's loss.
pub fn invert(
    eps: &Denoiser,
    shape: [i64; 3],
    t: i64,
    cfg: &ElijahConfig,
    rng: &mut Rng,
    device: tch::Device,
) -> (Tensor, f64) {
    let [c, h, w] = shape;
    let noise = rng.randn(&[cfg.noises as i64, c, h, w]).to_device(device);
    let tau = (-rng.rand(&[1, c, h, w]))
        .to_device(device)
        .set_requires_grad(true);
    let mut adam = Adam::new(vec![tau.shallow_clone()]);
    let mut last = f64::NAN;
    for _ in 0..cfg.steps {
        adam.zero_grad();
        let out = eps(&(&noise + &tau), t).mean_dim(0, true, Kind::Float);
        let loss = (&tau * cfg.lambda).l1_loss(&out, tch::Reduction::Mean);
        last = loss.double_value(&[]);
        loss.backward();
        adam.step(cfg.lr);
    }
    (
        tau.detach().squeeze_dim(0).to_device(tch::Device::Cpu),
        last,
    )
}

/// Elijah's uniformity of `images` (`[N, C, H, W]` in [0, 1]): the pairwise distance matrix
/// (self-distances included), each row sorted and trimmed by `trim` at both ends and averaged,
/// then the row means sorted, trimmed and averaged. Distance: mean squared pixel difference.
pub fn uniformity(images: &Tensor, trim: usize) -> Result<f64> {
    let n = images.size()[0];
    ensure!(
        n > 2 * trim as i64,
        "uniformity of {n} images with {trim} trimmed at each end"
    );
    let flat = images.to_kind(Kind::Double).reshape([n, -1]);
    let d = flat.size()[1] as f64;
    let dist = (flat.unsqueeze(1) - flat.unsqueeze(0))
        .square()
        .sum_dim_intlist([2i64].as_slice(), false, Kind::Double)
        / d;
    let keep = n - 2 * trim as i64;
    let rows = dist
        .sort(1, false)
        .0
        .narrow(1, trim as i64, keep)
        .mean_dim(1, false, Kind::Double);
    Ok(rows
        .sort(0, false)
        .0
        .narrow(0, trim as i64, keep)
        .mean(Kind::Double)
        .double_value(&[]))
}

/// torchmetrics' `TotalVariation(reduction="mean")` of `images` (`[N, C, H, W]` in [0, 1]): the
/// per-image sum of absolute differences between vertical and horizontal neighbours, averaged.
pub fn total_variation(images: &Tensor) -> f64 {
    let x = images.to_kind(Kind::Double);
    let (h, w) = (x.size()[2], x.size()[3]);
    let dy = (x.narrow(2, 1, h - 1) - x.narrow(2, 0, h - 1)).abs();
    let dx = (x.narrow(3, 1, w - 1) - x.narrow(3, 0, w - 1)).abs();
    let per_image = dy.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double)
        + dx.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double);
    per_image.mean(Kind::Double).double_value(&[])
}

/// Elijah's outcome on one model.
#[derive(Debug, Serialize)]
pub struct ElijahResult {
    pub config: ElijahConfig,
    pub inversion_loss: f64,
    /// Uniformity of the samples from x + τ (low: uniform, a backdoor).
    pub uniformity: f64,
    pub total_variation: f64,
    /// The removal's fine-tuned model, if it ran. Its rows carry `defense_epoch` 0 (measured
    /// before removal) and `removal.epochs` (after).
    pub repaired_dir: Option<std::path::PathBuf>,
    pub repaired_sha256: Option<String>,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
    /// 8-bit clean samples before and after removal (for a Fréchet distance by the caller).
    #[serde(skip)]
    pub clean_before_after: Option<(Tensor, Tensor)>,
}

/// Runs Elijah on a loaded model: inversion, detection and (if `cfg.remove`) removal, whose
/// model is written to `out_dir`. The loaded pipeline is the repaired model afterwards.
pub fn elijah(
    pipeline: &mut Pipeline,
    data: &Dataset,
    backdoor: &Backdoor,
    cfg: &ElijahConfig,
    measure_opts: &MeasureOptions,
    out_dir: &Path,
) -> Result<ElijahResult> {
    cfg.validate()?;
    measure_opts.validate()?;
    set_clip(pipeline, cfg.sample_clip)?;
    let started = clock();
    let param = cfg.param();
    let device = measure_opts.device;
    let shape = pipeline.image_shape()?;
    let last_t = CleanLoss::new(pipeline, data, device)?.num_train_timesteps() - 1;

    pipeline.checkpoint.vs.freeze();
    let (tau, inversion_loss) = {
        // Dropped before sampling, which draws through its own generator.
        let mut rng = Rng::seeded(derive_seed(cfg.seed, 1));
        let model = &pipeline.checkpoint.model;
        let eps = |x: &Tensor, t: i64| model.forward_at(x, t, false);
        invert(&eps, shape, last_t, cfg, &mut rng, device)
    };
    pipeline.checkpoint.vs.unfreeze();
    let inverted = TriggerTensor {
        name: "elijah-inverted".into(),
        tensor: tau.shallow_clone(),
    };
    let detect_opts = MeasureOptions {
        n: cfg.samples,
        batch: cfg.samples,
        ..measure_opts.clone()
    };
    let (inv_rows, images) = measure(pipeline, &detect_opts, Some(&inverted), backdoor)?;
    let unit = images.to_kind(Kind::Double) / 255.0;
    let uniformity = uniformity(&unit, cfg.trim)?;
    let total_variation = total_variation(&unit);
    let mut rows = defense_rows(inv_rows, "elijah", &param, None, "inverted");
    let template = rows[0].clone();
    for (metric, value, how) in [
        (
            "elijah_uniformity",
            uniformity,
            "Elijah's uniformity: trimmed mean pairwise pixel MSE in [0,1] of samples from x+tau (LPIPS in Elijah)",
        ),
        (
            "elijah_tv",
            total_variation,
            "torchmetrics TotalVariation(reduction=mean) of samples from x+tau in [0,1]",
        ),
        (
            "elijah_trigger_mse",
            (&tau - &backdoor.trigger.tensor.to_device(tau.device()))
                .square()
                .mean(Kind::Double)
                .double_value(&[]),
            "mean squared difference of the inverted tau and the true trigger (a diagnostic)",
        ),
    ] {
        let mut r = template.clone();
        r.row.metric = metric.into();
        r.row.value = value;
        r.row.protocol.implementation = how.into();
        r.row.protocol.reference_hash = None;
        rows.push(r);
    }
    let mut optimiser_steps = cfg.steps;
    let mut sampled = cfg.samples as u64;
    let (mut repaired_dir, mut repaired_sha256, mut clean_before_after) = (None, None, None);
    if cfg.remove {
        let (bd, _) = measure(pipeline, measure_opts, Some(&backdoor.trigger), backdoor)?;
        rows.extend(defense_rows(bd, "elijah", &param, Some(0), "backdoor"));
        let (before, before_u8) = measure(pipeline, measure_opts, None, backdoor)?;
        rows.extend(defense_rows(before, "elijah", &param, Some(0), "clean"));
        let steps = remove(pipeline, data, &tau, cfg, device, last_t)?;
        optimiser_steps += steps;
        let saved = super::save_model(pipeline, out_dir, "repaired")?;
        let (bd, _) = measure(pipeline, measure_opts, Some(&backdoor.trigger), backdoor)?;
        let end = Some(cfg.removal.epochs);
        rows.extend(defense_rows(bd, "elijah", &param, end, "backdoor"));
        let (clean, after_u8) = measure(pipeline, measure_opts, None, backdoor)?;
        rows.extend(defense_rows(clean, "elijah", &param, end, "clean"));
        sampled += 4 * measure_opts.n as u64;
        repaired_dir = Some(out_dir.to_path_buf());
        repaired_sha256 = Some(saved.sha256);
        clean_before_after = Some((before_u8, after_u8));
    }
    let cost = Cost {
        seconds: started.elapsed().as_secs_f64(),
        optimiser_steps,
        sampled_images: sampled,
    };
    rows.extend(cost.rows("elijah", &param, device));
    Ok(ElijahResult {
        config: cfg.clone(),
        inversion_loss,
        uniformity,
        total_variation,
        repaired_dir,
        repaired_sha256,
        cost,
        rows,
        clean_before_after,
    })
}

/// Elijah's removal fine-tune of the loaded model against a frozen copy of itself. Returns the
/// optimiser steps taken.
fn remove(
    pipeline: &Pipeline,
    data: &Dataset,
    tau: &Tensor,
    cfg: &ElijahConfig,
    device: tch::Device,
    last_t: i64,
) -> Result<u64> {
    let r = &cfg.removal;
    // θ₀: a second copy of the model's weights, only ever run without gradients.
    let frozen = checkpoint::load(&pipeline.model_dir, device)
        .with_context(|| format!("loading a frozen copy of {}", pipeline.model_dir.display()))?;
    let loss = CleanLoss::new(pipeline, data, device)?;
    let mut rng = Rng::seeded(derive_seed(cfg.seed, 2));
    let k = ((data.len() as f64 * r.clean_fraction).round() as i64).max(1);
    let subset = rng
        .with(|| Tensor::randperm(data.len() as i64, (Kind::Int64, tch::Device::Cpu)))
        .narrow(0, 0, k);
    let per_epoch = (k as u64).div_ceil(r.batch as u64);
    let schedule = CosineWithWarmup {
        base_lr: r.lr,
        warmup: r.warmup,
        total: per_epoch * r.epochs,
    };
    let params = pipeline.checkpoint.vs.trainable_variables();
    let mut adam = Adam::new(params.iter().map(|p| p.shallow_clone()).collect());
    let tau = tau.to_device(device).unsqueeze(0);
    let mut step = 0;
    for _ in 0..r.epochs {
        for b in shuffled_batches(k as usize, r.batch, &mut rng) {
            let batch = loss.draw(&subset.index_select(0, &b), &mut rng);
            let t = Tensor::scalar_tensor(last_t, (Kind::Int64, tch::Device::Cpu));
            let reference = tch::no_grad(|| frozen.model.forward_t(&batch.noise, &t, false));
            let model = &pipeline.checkpoint.model;
            let shifted = model.forward_t(&(&batch.noise + &tau), &t, false);
            let plain = model.forward_t(&batch.noise, &t, false);
            let total = loss.loss(&batch)?
                + shifted.mse_loss(&reference, tch::Reduction::Mean)
                + plain.mse_loss(&reference, tch::Reduction::Mean);
            ensure!(
                total.double_value(&[]).is_finite(),
                "Elijah's removal loss is not finite at step {step}: lower removal_lr"
            );
            adam.zero_grad();
            total.backward();
            clip_grad_norm(&params, r.grad_clip);
            adam.step(schedule.lr(step));
            step += 1;
        }
    }
    Ok(step)
}
