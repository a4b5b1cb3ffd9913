//! The paper's ANP probe (paper §4.6.1; official `anp_defense.py`): a per-output-channel affine
//! `y = conv(x)·γ + β` after every convolution (γ = 1, β = 0 at first), the model's weights
//! frozen, and Adam *ascending* the clean DDPM loss in γ and β, each clamped to
//! [−budget, budget] after every step. After each epoch the perturbed model samples from clean
//! noise; a low MSE (high SSIM) to the backdoor target means the perturbation reveals the
//! backdoor. It detects; it does not prune (see [`super::prune`] for that).
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{
    clock, defense_rows, measure, perturbable_convs, set_clip, value_of, with_frozen_model,
    Backdoor, CleanLoss, Cost, DefenseRow, MeasureOptions,
};
use crate::datasets::Dataset;
use crate::pipeline::Pipeline;
use crate::rng::{derive_seed, Rng};
use crate::scheduler::Clip;
use crate::training::adam::{clip_grad_norm, Adam};
use crate::unet::ChannelAffine;

/// The probe's settings; [`Default`] is the official code's.
#[derive(Clone, Debug, Serialize)]
pub struct AnpConfig {
    /// Adam's learning rate on γ, β (official 1e-4; the paper finds 2e-4 already explodes).
    pub lr: f64,
    /// γ and β are clamped to [−budget, budget] (an absolute bound, not a band around 1).
    pub budget: f64,
    pub epochs: u64,
    /// Caps an epoch at this many steps (scale models); `None` = a full pass over the data.
    pub steps_per_epoch: Option<u64>,
    pub batch: usize,
    /// Gradient-norm clip on γ, β.
    pub grad_clip: f64,
    /// Clipping while sampling the measurements (official: `clip=True`, i.e. x̂₀ clamp).
    #[serde(serialize_with = "super::clip_name")]
    pub sample_clip: Clip,
    /// Seed of the data order, noise and timesteps.
    pub seed: u64,
}

impl Default for AnpConfig {
    fn default() -> Self {
        AnpConfig {
            lr: 1e-4,
            budget: 4.0,
            epochs: 10,
            steps_per_epoch: None,
            batch: 128,
            grad_clip: 1.0,
            sample_clip: Clip::X0,
            seed: 0,
        }
    }
}

impl AnpConfig {
    /// The `defense_param` of its rows.
    pub fn param(&self) -> String {
        format!("lr={},budget={}", self.lr, self.budget)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.budget.is_finite() && self.budget > 0.0,
            "the ANP perturbation budget must be a positive number, got {} (--budget; the official default is 4)",
            self.budget
        );
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "the ANP learning rate must be positive, got {} (--lr; the official default is 1e-4)",
            self.lr
        );
        ensure!(self.epochs > 0, "ANP needs at least one epoch (--epochs)");
        ensure!(self.batch > 0, "the ANP batch must be positive (--batch)");
        ensure!(
            self.steps_per_epoch != Some(0),
            "--steps-per-epoch must be positive (leave it out for full epochs)"
        );
        ensure!(self.grad_clip > 0.0, "the gradient clip must be positive");
        Ok(())
    }
}

/// One epoch of the probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u64,
    pub steps: u64,
    /// Mean clean DDPM loss over the epoch's steps (the quantity ascended).
    pub clean_loss: f64,
    /// MSE and SSIM of clean-noise samples of the perturbed model to the backdoor target.
    pub mse: f64,
    pub ssim: f64,
    /// Range of all γ and of all β after the epoch.
    pub gamma_min: f64,
    pub gamma_max: f64,
    pub beta_min: f64,
    pub beta_max: f64,
    pub seconds: f64,
}

/// The probe's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct AnpResult {
    pub config: AnpConfig,
    /// Number of perturbed convolutions and output channels.
    pub convs: usize,
    pub channels: i64,
    pub trace: Vec<EpochRecord>,
    /// min MSE and max SSIM over the epochs (`MSE_best`, `SSIM_best` of the official log).
    pub mse_best: f64,
    pub ssim_best: f64,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
}

/// The γ, β leaves of every conv.
struct Perturbation {
    gammas: Vec<Tensor>,
    betas: Vec<Tensor>,
}

impl Perturbation {
    fn params(&self) -> Vec<Tensor> {
        self.gammas
            .iter()
            .chain(&self.betas)
            .map(|t| t.shallow_clone())
            .collect()
    }

    fn clamp(&mut self, budget: f64) {
        let _g = tch::no_grad_guard();
        for t in self.gammas.iter_mut().chain(&mut self.betas) {
            let _ = t.clamp_(-budget, budget);
        }
    }

    fn range(ts: &[Tensor]) -> (f64, f64) {
        let all = Tensor::cat(&ts.iter().map(|t| t.detach()).collect::<Vec<_>>(), 0);
        (
            all.min().to_kind(Kind::Double).double_value(&[]),
            all.max().to_kind(Kind::Double).double_value(&[]),
        )
    }
}

/// Runs the probe on a loaded (backdoored) model with clean `data` at the model's image shape.
/// The model's weights are untouched and its perturbations removed when it returns.
pub fn anp_probe(
    pipeline: &mut Pipeline,
    data: &Dataset,
    backdoor: &Backdoor,
    cfg: &AnpConfig,
    measure_opts: &MeasureOptions,
) -> Result<AnpResult> {
    cfg.validate()?;
    measure_opts.validate()?;
    set_clip(pipeline, cfg.sample_clip)?;
    let started = clock();
    let param = cfg.param();
    with_frozen_model(pipeline, |pipeline| {
        let device = measure_opts.device;
        // γ = 1, β = 0 on every conv: the model is unchanged until the first step.
        let mut p = {
            let convs = perturbable_convs(&pipeline.checkpoint.model)?;
            let mut p = Perturbation {
                gammas: vec![],
                betas: vec![],
            };
            for c in &convs {
                let n = c.out_channels();
                let g = Tensor::ones([n], (Kind::Float, device)).set_requires_grad(true);
                let b = Tensor::zeros([n], (Kind::Float, device)).set_requires_grad(true);
                c.set_affine(Some(ChannelAffine {
                    scale: g.shallow_clone(),
                    shift: b.shallow_clone(),
                }));
                p.gammas.push(g);
                p.betas.push(b);
            }
            p
        };
        let channels: i64 = p.gammas.iter().map(|g| g.size()[0]).sum();
        let mut adam = Adam::new(p.params());
        let mut trace = Vec::new();
        let mut rows = Vec::new();
        let mut steps_total = 0;
        for epoch in 1..=cfg.epochs {
            let epoch_started = clock();
            let (loss_sum, steps) = {
                let loss = CleanLoss::new(pipeline, data, device)?;
                let mut rng = Rng::seeded(derive_seed(cfg.seed, epoch));
                let mut sum = 0.0;
                let batches = loss.epoch(cfg.batch, cfg.steps_per_epoch, &mut rng);
                for idx in &batches {
                    let b = loss.draw(idx, &mut rng);
                    let l = loss.loss(&b)?;
                    sum += l.double_value(&[]);
                    adam.zero_grad();
                    // Gradient ascent on the clean loss.
                    (-l).backward();
                    clip_grad_norm(&p.params(), cfg.grad_clip);
                    adam.step(cfg.lr);
                    p.clamp(cfg.budget);
                }
                (sum, batches.len() as u64)
            };
            steps_total += steps;
            let (metrics, _) = measure(pipeline, measure_opts, None, backdoor)?;
            let (gamma_min, gamma_max) = Perturbation::range(&p.gammas);
            let (beta_min, beta_max) = Perturbation::range(&p.betas);
            trace.push(EpochRecord {
                epoch,
                steps,
                clean_loss: loss_sum / steps.max(1) as f64,
                mse: value_of(&metrics, "MSE").unwrap_or(f64::NAN),
                ssim: value_of(&metrics, "SSIM").unwrap_or(f64::NAN),
                gamma_min,
                gamma_max,
                beta_min,
                beta_max,
                seconds: epoch_started.elapsed().as_secs_f64(),
            });
            rows.extend(defense_rows(metrics, "anp", &param, Some(epoch), "clean"));
        }
        let mse_best = trace.iter().map(|e| e.mse).fold(f64::INFINITY, f64::min);
        // SSIM is NaN where the images are too small for its window.
        let ssims: Vec<f64> = trace
            .iter()
            .map(|e| e.ssim)
            .filter(|v| v.is_finite())
            .collect();
        let ssim_best = ssims.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
        let template = rows
            .iter()
            .find(|r| r.row.metric == "MSE")
            .cloned()
            .expect("at least one epoch was measured");
        for (metric, value) in [("MSE_best", mse_best), ("SSIM_best", ssim_best)] {
            if value.is_nan() {
                continue;
            }
            let mut r = template.clone();
            r.defense_epoch = None;
            r.row.metric = metric.into();
            r.row.value = value;
            r.row.protocol.implementation = format!("best over {} ANP epochs", cfg.epochs);
            rows.push(r);
        }
        let cost = Cost {
            seconds: started.elapsed().as_secs_f64(),
            optimiser_steps: steps_total,
            sampled_images: cfg.epochs * measure_opts.n as u64,
        };
        rows.extend(cost.rows("anp", &param, device));
        Ok(AnpResult {
            config: cfg.clone(),
            convs: p.gammas.len(),
            channels,
            trace,
            mse_best,
            ssim_best,
            cost,
            rows,
        })
    })
}
