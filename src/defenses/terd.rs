//! TERD (Mo et al., ICML 2024, "TERD: A Unified Framework for Safeguarding Diffusion Models
//! Against Backdoors"; code `PKU-ML/TERD` d1f0911, `BadDiffusion/`). Beyond the paper.
//!
//! - **Stage 1** (`reverse.py:386-416`, `reverse_loss.py:5-26`): a trigger estimate μ,
//!   initialised −U[0, 1), optimised by SGD (lr 0.5, cosine annealing, 3,000 iterations, batch
//!   16) on the difference-of-noise loss ½‖(ε₁ − ε_θ(x₁, t)) − (ε₂ − ε_θ(x₂, t))‖² (summed over
//!   pixels, mean over the batch), x_i = √ᾱ_t x₀ + √(1−ᾱ_t) ε_i + μ with x₀ ~ N(0, I) and t drawn
//!   from the last 10 of 1,000 timesteps, *minus* λ‖μ‖₁ (λ = 5e-5: the term rewards a larger μ,
//!   keeping it off the trivial μ = 0).
//! - **Stage 2** (`reverse.py:419-460`): 1,000 more iterations (a fresh SGD, cosine) in which
//!   ε + μ is sampled through a 10-step deterministic DDIM (x̂₀ clipped, gradients through every
//!   step) and the loss is the mean of stage 1's loss on the generated images at the last
//!   timesteps (μ added) and at the first 10 (μ not added), minus λ‖μ‖₁, gradient norm clipped
//!   to 0.01.
//! - **Model detection** (`model_detection.py:10-21`): per-pixel KL(N(μ_i, 1) ‖ N(0, 1)) = μ_i²/2,
//!   its mean and variance. The code prints them and decides nothing; the report states the rule.
//! - **Input detection** (`input_detection.py:309-332`): an input is flagged when it is likelier
//!   under N(μ, I) than under N(0, I), i.e. when 2⟨x, μ⟩ > ‖μ‖². (At d1f0911 the script's
//!   poisoned-input loop stops on an undefined `true_gamma`; the test itself is this one.)
use anyhow::{ensure, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{clock, with_frozen_model, Backdoor, CleanLoss, Cost, DefenseRow, MeasureOptions};
use crate::backdoor_loss::BackdoorSchedule;
use crate::datasets::Dataset;
use crate::metrics::Protocol;
use crate::pipeline::Pipeline;
use crate::rng::{derive_seed, Rng};

/// TERD's settings; [`Default`] is its BadDiffusion code's (CIFAR-10, T = 1000).
#[derive(Clone, Debug, Serialize)]
pub struct TerdConfig {
    /// SGD learning rate of both stages (0.5).
    pub lr: f64,
    /// Stage 1 iterations (3,000).
    pub iterations: u64,
    /// Stage 2 iterations (`iterations // 3` = 1,000).
    pub refine_iterations: u64,
    /// Noises per iteration (16).
    pub batch: usize,
    /// λ of the subtracted ‖μ‖₁ term (`--weight_decay` 5e-5).
    pub weight: f64,
    /// Stage 1 and 2 draw t from the last this-many timesteps (10 of 1,000).
    pub last_steps: i64,
    /// Stage 2's second term draws t from the first this-many timesteps (10).
    pub first_steps: i64,
    /// DDIM steps of stage 2's sampler (10).
    pub sampler_steps: usize,
    /// Stage 2's gradient-norm clip on μ (0.01).
    pub clip_norm: f64,
    /// Inputs tested on each side by input detection (`--num_detect` 1,000).
    pub inputs: usize,
    pub seed: u64,
}

impl Default for TerdConfig {
    fn default() -> Self {
        TerdConfig {
            lr: 0.5,
            iterations: 3000,
            refine_iterations: 1000,
            batch: 16,
            weight: 5e-5,
            last_steps: 10,
            first_steps: 10,
            sampler_steps: 10,
            clip_norm: 0.01,
            inputs: 1000,
            seed: 0,
        }
    }
}

impl TerdConfig {
    pub fn param(&self) -> String {
        format!(
            "lr={},iterations={}+{},batch={},weight={}",
            self.lr, self.iterations, self.refine_iterations, self.batch, self.weight
        )
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "TERD's learning rate must be positive, got {} (lr; TERD uses 0.5)",
            self.lr
        );
        ensure!(
            self.iterations > 0,
            "TERD needs at least one stage-1 iteration (iterations)"
        );
        ensure!(self.batch > 0, "TERD's batch must be positive (batch)");
        ensure!(
            self.weight.is_finite() && self.weight >= 0.0,
            "TERD's L1 weight must be ≥ 0, got {} (weight; TERD uses 5e-5)",
            self.weight
        );
        ensure!(
            self.last_steps > 0 && self.first_steps > 0,
            "TERD's timestep windows (last_steps, first_steps) must be positive"
        );
        ensure!(
            self.sampler_steps > 0,
            "TERD's refinement sampler needs at least one step (sampler_steps)"
        );
        ensure!(
            self.clip_norm > 0.0,
            "TERD's gradient clip must be positive (clip_norm)"
        );
        ensure!(
            self.inputs > 0,
            "TERD's input detection needs at least one input (inputs)"
        );
        Ok(())
    }
}

/// `CosineAnnealingLR(T_max = total)` with η_min = 0, at 0-based step `k`.
fn cosine(lr: f64, k: u64, total: u64) -> f64 {
    lr * 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / total.max(1) as f64).cos())
}

/// TERD's difference-of-noise loss at timesteps `t` (`[B]`), with `r` added after noising.
fn diff_loss(
    eps: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    ac: &Tensor,
    x0: &Tensor,
    r: &Tensor,
    t: &Tensor,
    rng: &mut Rng,
) -> Tensor {
    let b = x0.size()[0];
    let a = ac.index_select(0, t).reshape([b, 1, 1, 1]);
    let dev = x0.device();
    let (e1, e2) = (
        rng.randn(&x0.size()).to_device(dev),
        rng.randn(&x0.size()).to_device(dev),
    );
    let s = (a.ones_like() - &a).sqrt();
    let noisy = |e: &Tensor| -> Tensor { x0 * a.sqrt() + e * &s + r };
    let d1 = &e1 - eps(&noisy(&e1), t);
    let d2 = &e2 - eps(&noisy(&e2), t);
    (d1 - d2)
        .square()
        .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)
        .mean(Kind::Float)
        * 0.5
}

/// Timesteps drawn uniformly from `[lo, hi)`, one per sample, on `dev`.
fn timesteps(lo: i64, hi: i64, b: i64, rng: &mut Rng, dev: Device) -> Tensor {
    (rng.randint(hi - lo, &[b]) + lo).to_device(dev)
}

/// A deterministic DDIM pass (η = 0, x̂₀ clipped to [−1, 1], ᾱ after the last step = 1) from `x`
/// taken as x at the first of `steps` evenly spaced timesteps ("leading": T/steps·k), with
/// gradients.
fn ddim(eps: &dyn Fn(&Tensor, &Tensor) -> Tensor, ac: &Tensor, x: &Tensor, steps: usize) -> Tensor {
    let t_max = ac.size()[0];
    let stride = (t_max / steps as i64).max(1);
    let ts: Vec<i64> = (0..steps as i64).map(|k| k * stride).rev().collect();
    let b = x.size()[0];
    let mut x = x.shallow_clone();
    for (i, &t) in ts.iter().enumerate() {
        let a = ac.double_value(&[t]);
        let a_prev = ts.get(i + 1).map_or(1.0, |&p| ac.double_value(&[p]));
        let tt = Tensor::full([b], t, (Kind::Int64, x.device()));
        let e = eps(&x, &tt);
        let x0 = ((&x - &e * (1.0 - a).sqrt()) / a.sqrt()).clamp(-1.0, 1.0);
        x = x0 * a_prev.sqrt() + e * (1.0 - a_prev).sqrt();
    }
    x
}

/// TERD's two-stage reversion on an ε-predictor (`eps(x, t)`, t one per sample) with noise
/// schedule ᾱ (`ac`) at image `shape`, computed on `ac`'s device (draws are made on the CPU, so
/// a seed gives the same μ on any device up to rounding). Returns μ (`[C, H, W]`).
pub fn reverse(
    eps: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    ac: &Tensor,
    shape: [i64; 3],
    cfg: &TerdConfig,
    rng: &mut Rng,
) -> Tensor {
    let [c, h, w] = shape;
    let t_max = ac.size()[0];
    let b = cfg.batch as i64;
    let dev = ac.device();
    let mu = (-rng.rand(&[c, h, w]))
        .to_device(dev)
        .set_requires_grad(true);
    let step = |mu: &Tensor, loss: Tensor, lr: f64, clip: Option<f64>| {
        let total = loss - mu.abs().sum(Kind::Float) * cfg.weight;
        let mut grad = Tensor::run_backward(&[&total], &[mu], false, false).remove(0);
        let _g = tch::no_grad_guard();
        if let Some(max) = clip {
            let norm = grad.norm().double_value(&[]);
            if norm > max {
                grad *= max / (norm + 1e-6);
            }
        }
        let mut m = mu.shallow_clone();
        let _ = m.f_sub_(&(grad * lr)).expect("an SGD step on μ");
    };
    for k in 0..cfg.iterations {
        let x0 = rng.randn(&[b, c, h, w]).to_device(dev);
        let t = timesteps(t_max - cfg.last_steps, t_max, b, rng, dev);
        let loss = diff_loss(eps, ac, &x0, &mu, &t, rng);
        step(&mu, loss, cosine(cfg.lr, k, cfg.iterations), None);
    }
    for k in 0..cfg.refine_iterations {
        let x = rng.randn(&[b, c, h, w]).to_device(dev) + &mu;
        let generated = ddim(eps, ac, &x, cfg.sampler_steps);
        let t_last = timesteps(t_max - cfg.last_steps, t_max, b, rng, dev);
        let l1 = diff_loss(eps, ac, &generated, &mu, &t_last, rng);
        let t_first = timesteps(0, cfg.first_steps.min(t_max), b, rng, dev);
        let l2 = diff_loss(eps, ac, &generated, &mu.zeros_like(), &t_first, rng);
        step(
            &mu,
            (l1 + l2) * 0.5,
            cosine(cfg.lr, k, cfg.refine_iterations),
            Some(cfg.clip_norm),
        );
    }
    mu.detach()
}

/// TERD's model statistics of μ: the mean and (population) variance of μ_i²/2.
pub fn kl_stats(mu: &Tensor) -> (f64, f64) {
    let kl = mu.to_kind(Kind::Double).square() / 2.0;
    let mean = kl.mean(Kind::Double);
    let var = (&kl - &mean).square().mean(Kind::Double);
    (mean.double_value(&[]), var.double_value(&[]))
}

/// The share of `x` (`[N, C, H, W]`) TERD's input test flags: 2⟨x, μ⟩ > ‖μ‖².
pub fn flagged_rate(x: &Tensor, mu: &Tensor) -> f64 {
    let n = x.size()[0];
    let x = x.to_kind(Kind::Double).reshape([n, -1]);
    let mu = mu.to_kind(Kind::Double).reshape([1, -1]);
    let dot = (&x * &mu).sum_dim_intlist([1i64].as_slice(), false, Kind::Double) * 2.0;
    dot.gt_tensor(&mu.square().sum(Kind::Double))
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[])
}

/// TERD's outcome on one model.
#[derive(Clone, Debug, Serialize)]
pub struct TerdResult {
    pub config: TerdConfig,
    pub kl_mean: f64,
    pub kl_var: f64,
    /// Shares of triggered (ε + g) and clean inputs flagged.
    pub trigger_flagged: f64,
    pub clean_flagged: f64,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
}

/// Runs TERD's reversion, model statistics and input detection on a loaded model; its weights
/// are untouched.
pub fn terd(
    pipeline: &mut Pipeline,
    data: &Dataset,
    backdoor: &Backdoor,
    cfg: &TerdConfig,
    measure_opts: &MeasureOptions,
) -> Result<TerdResult> {
    cfg.validate()?;
    let started = clock();
    let device = measure_opts.device;
    let shape = pipeline.image_shape()?;
    let ac = {
        let loss = CleanLoss::new(pipeline, data, device)?;
        let s: &BackdoorSchedule = loss.schedule();
        s.alphas_cumprod.to_device(device)
    };
    ensure!(
        cfg.last_steps <= ac.size()[0],
        "TERD's last_steps ({}) exceeds the model's {} timesteps",
        cfg.last_steps,
        ac.size()[0]
    );
    let mu = with_frozen_model(pipeline, |p| {
        let model = &p.checkpoint.model;
        let eps = |x: &Tensor, t: &Tensor| model.forward_t(x, t, false);
        let mut rng = Rng::seeded(derive_seed(cfg.seed, 1));
        Ok(reverse(&eps, &ac, shape, cfg, &mut rng))
    })?
    .to_device(Device::Cpu);
    let (kl_mean, kl_var) = kl_stats(&mu);
    let g = backdoor.trigger.tensor.to_device(Device::Cpu);
    let mut rng = Rng::seeded(derive_seed(cfg.seed, 2));
    let [c, h, w] = shape;
    let n = cfg.inputs as i64;
    let trigger_flagged = flagged_rate(&(rng.randn(&[n, c, h, w]) + &g), &mu);
    let clean_flagged = flagged_rate(&rng.randn(&[n, c, h, w]), &mu);
    let trigger_mse = (&mu - &g).square().mean(Kind::Double).double_value(&[]);
    let param = cfg.param();
    let protocol = Protocol {
        implementation: "TERD (Mo et al. 2024) reversed trigger mu".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        dtype: "float32".into(),
        device: format!("{device:?}"),
        n_generated: n,
        ..Protocol::default()
    };
    let row = |metric: &str, value: f64, samples: &str, how: &str| {
        let protocol = Protocol {
            implementation: how.into(),
            ..protocol.clone()
        };
        DefenseRow::value("terd", &param, samples, metric, value, protocol)
    };
    let mut rows = vec![
        row(
            "terd_kl_mean",
            kl_mean,
            "none",
            "mean over pixels of KL(N(mu_i,1)||N(0,1)) = mu_i^2/2",
        ),
        row(
            "terd_kl_var",
            kl_var,
            "none",
            "population variance over pixels of mu_i^2/2",
        ),
        row(
            "terd_trigger_mse",
            trigger_mse,
            "none",
            "mean squared difference of mu and the true trigger (a diagnostic)",
        ),
        row(
            "input_flagged_rate",
            trigger_flagged,
            "backdoor",
            "share of eps+trigger inputs with 2<x,mu> > |mu|^2",
        ),
        row(
            "input_flagged_rate",
            clean_flagged,
            "clean",
            "share of clean inputs with 2<x,mu> > |mu|^2",
        ),
    ];
    let cost = Cost {
        seconds: started.elapsed().as_secs_f64(),
        optimiser_steps: cfg.iterations + cfg.refine_iterations,
        sampled_images: (cfg.refine_iterations * cfg.batch as u64),
    };
    rows.extend(cost.rows("terd", &param, device));
    Ok(TerdResult {
        config: cfg.clone(),
        kl_mean,
        kl_var,
        trigger_flagged,
        clean_flagged,
        cost,
        rows,
    })
}
