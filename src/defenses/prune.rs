//! ANP pruning (Wu & Wang 2021, "Adversarial Neuron Pruning Purifies Backdoored Deep Models";
//! beyond the BadDiffusion paper, whose code only runs the perturbation probe).
//!
//! Each output channel of every convolution gets a mask m ∈ [0, 1] (start 1) and, per batch,
//! an adversarial multiplicative and additive perturbation δ, ξ ∈ [−ε, ε]:
//! `y = conv(x)·(m + δ) + ξ`. Per batch, δ and ξ start uniform in [−ε, ε] and take
//! `pgd_steps` gradient-ascent steps (learning rate ε/pgd_steps) on the clean loss, as ANP's SGD
//! on −loss does, then the masks take one SGD step (momentum 0.9) on
//! `α·L(m) + (1−α)·L(m + δ, ξ)` and are clipped to [0, 1]. Channels with the smallest masks are
//! then pruned: their weights and bias are set to 0, so the pruned model is an ordinary
//! diffusers checkpoint.
use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{
    clock, defense_rows, measure, prunable_convs, save_model, set_clip, with_frozen_model,
    Backdoor, CleanLoss, Cost, DefenseRow, MeasureOptions,
};
use crate::datasets::Dataset;
use crate::pipeline::Pipeline;
use crate::rng::{derive_seed, Rng};
use crate::scheduler::Clip;
use crate::unet::{ChannelAffine, PerturbConv2d};

/// Which channels to prune once the masks are optimised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "by", content = "value")]
pub enum PruneBy {
    /// Every channel whose mask is below this value (ANP's default: 0.2).
    Threshold(f64),
    /// This fraction of all channels, smallest masks first (rounded to a whole channel count).
    Fraction(f64),
}

impl PruneBy {
    fn validate(self) -> Result<()> {
        match self {
            PruneBy::Threshold(t) => ensure!(
                (0.0..=1.0).contains(&t),
                "the pruning threshold must lie in [0, 1] (masks do), got {t}"
            ),
            PruneBy::Fraction(f) => ensure!(
                (0.0..=1.0).contains(&f),
                "the pruning fraction must lie in [0, 1], got {f}"
            ),
        }
        Ok(())
    }

    fn describe(self) -> String {
        match self {
            PruneBy::Threshold(t) => format!("threshold={t}"),
            PruneBy::Fraction(f) => format!("fraction={f}"),
        }
    }
}

/// ANP pruning's settings; [`Default`] follows Wu & Wang's released defaults.
#[derive(Clone, Debug, Serialize)]
pub struct PruneConfig {
    /// Perturbation bound ε (ANP's `anp_eps`, 0.4).
    pub eps: f64,
    /// Ascent steps on the perturbation per batch (`anp_steps`, 1).
    pub pgd_steps: u32,
    /// Weight of the natural loss (`anp_alpha`, 0.2).
    pub alpha: f64,
    /// SGD learning rate of the masks (`lr`, 0.2; momentum 0.9).
    pub mask_lr: f64,
    /// Mask updates (`nb_iter`, 2000).
    pub iterations: u64,
    pub batch: usize,
    pub by: PruneBy,
    /// Clipping while sampling the measurements of the pruned model.
    #[serde(serialize_with = "super::clip_name")]
    pub sample_clip: Clip,
    pub seed: u64,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            eps: 0.4,
            pgd_steps: 1,
            alpha: 0.2,
            mask_lr: 0.2,
            iterations: 2000,
            batch: 128,
            by: PruneBy::Threshold(0.2),
            sample_clip: Clip::None,
            seed: 0,
        }
    }
}

impl PruneConfig {
    pub fn param(&self) -> String {
        format!(
            "eps={},alpha={},mask_lr={},iterations={},{}",
            self.eps,
            self.alpha,
            self.mask_lr,
            self.iterations,
            self.by.describe()
        )
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.eps.is_finite() && self.eps >= 0.0,
            "the ANP perturbation bound ε must be ≥ 0, got {} (--eps; ANP's default is 0.4)",
            self.eps
        );
        ensure!(
            (0.0..=1.0).contains(&self.alpha),
            "ANP's trade-off α must lie in [0, 1], got {} (--alpha)",
            self.alpha
        );
        ensure!(
            self.mask_lr.is_finite() && self.mask_lr > 0.0,
            "the mask learning rate must be positive, got {}",
            self.mask_lr
        );
        ensure!(self.pgd_steps > 0, "--pgd-steps must be positive");
        ensure!(
            self.iterations > 0,
            "ANP pruning needs at least one mask update (--iterations)"
        );
        ensure!(self.batch > 0, "the batch must be positive (--batch)");
        self.by.validate()
    }
}

/// One conv's optimised masks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvMasks {
    /// State-dict prefix of the conv, e.g. `mid_block.resnets.0.conv1`.
    pub conv: String,
    pub masks: Vec<f64>,
}

/// A channel chosen for pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrunedChannel {
    pub conv: String,
    pub channel: i64,
    pub mask: f64,
}

/// Optimises ANP's masks on the clean loss; returns them per conv with the number of steps.
/// The model is left unperturbed.
pub fn optimise_masks(
    pipeline: &mut Pipeline,
    data: &Dataset,
    cfg: &PruneConfig,
    device: tch::Device,
) -> Result<Vec<ConvMasks>> {
    cfg.validate()?;
    with_frozen_model(pipeline, |pipeline| {
        let convs = prunable_convs(&pipeline.checkpoint.model)?;
        let leaf =
            |v: f64, n: i64| Tensor::full([n], v, (Kind::Float, device)).set_requires_grad(true);
        let masks: Vec<Tensor> = convs.iter().map(|c| leaf(1.0, c.out_channels())).collect();
        let deltas: Vec<Tensor> = convs.iter().map(|c| leaf(0.0, c.out_channels())).collect();
        let xis: Vec<Tensor> = convs.iter().map(|c| leaf(0.0, c.out_channels())).collect();
        let mut momentum: Vec<Tensor> = masks.iter().map(|m| m.zeros_like()).collect();
        let loss = CleanLoss::new(pipeline, data, device)?;
        let mut done = 0u64;
        let mut epoch = 0u64;
        while done < cfg.iterations {
            let mut rng = Rng::seeded(derive_seed(cfg.seed, epoch));
            epoch += 1;
            for idx in loss.epoch(cfg.batch, Some(cfg.iterations - done), &mut rng) {
                let b = loss.draw(&idx, &mut rng);
                let perturbed = |on: bool| {
                    for (i, c) in convs.iter().enumerate() {
                        let affine = if on {
                            ChannelAffine {
                                scale: &masks[i] + &deltas[i],
                                shift: xis[i].shallow_clone(),
                            }
                        } else {
                            ChannelAffine {
                                scale: masks[i].shallow_clone(),
                                shift: xis[i].zeros_like(),
                            }
                        };
                        c.set_affine(Some(affine));
                    }
                };
                let noise: Vec<&Tensor> = deltas.iter().chain(&xis).collect();
                if cfg.eps > 0.0 {
                    // Random start in [−ε, ε], then ascent on the clean loss.
                    tch::no_grad(|| {
                        for t in &noise {
                            let u =
                                rng.rand(&t.size()).to_device(device) * (2.0 * cfg.eps) - cfg.eps;
                            t.shallow_clone().copy_(&u);
                        }
                    });
                    for _ in 0..cfg.pgd_steps {
                        perturbed(true);
                        let l = loss.loss(&b)?;
                        let grads = Tensor::run_backward(&[l], &noise, false, false);
                        tch::no_grad(|| {
                            for (t, g) in noise.iter().zip(&grads) {
                                let step = g * (cfg.eps / cfg.pgd_steps as f64);
                                let _ = t.shallow_clone().g_add_(&step).clamp_(-cfg.eps, cfg.eps);
                            }
                        });
                    }
                }
                // Mask step on α·natural + (1−α)·robust.
                perturbed(false);
                let mut total = loss.loss(&b)? * cfg.alpha;
                if cfg.eps > 0.0 {
                    perturbed(true);
                    total = total + loss.loss(&b)? * (1.0 - cfg.alpha);
                }
                let mask_refs: Vec<&Tensor> = masks.iter().collect();
                let grads = Tensor::run_backward(&[total], &mask_refs, false, false);
                tch::no_grad(|| {
                    for ((m, buf), g) in masks.iter().zip(&mut momentum).zip(&grads) {
                        let _ = buf.g_mul_scalar_(0.9).g_add_(g);
                        let _ = m
                            .shallow_clone()
                            .g_add_(&(&*buf * -cfg.mask_lr))
                            .clamp_(0.0, 1.0);
                    }
                });
                done += 1;
            }
        }
        Ok(convs
            .iter()
            .zip(&masks)
            .map(|(c, m)| ConvMasks {
                conv: c.path().to_string(),
                masks: Vec::<f64>::try_from(
                    m.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu),
                )
                .expect("a 1-d float64 CPU tensor converts to Vec<f64>"),
            })
            .collect())
    })
}

/// The channels to prune: all masks below the threshold, or the given fraction of all
/// channels with the smallest masks (ties broken by conv order, then channel).
pub fn select_channels(masks: &[ConvMasks], by: PruneBy) -> Result<Vec<PrunedChannel>> {
    by.validate()?;
    let mut all: Vec<PrunedChannel> = masks
        .iter()
        .flat_map(|c| {
            c.masks.iter().enumerate().map(|(i, &m)| PrunedChannel {
                conv: c.conv.clone(),
                channel: i as i64,
                mask: m,
            })
        })
        .collect();
    // Stable sort keeps conv order among equal masks.
    all.sort_by(|a, b| a.mask.total_cmp(&b.mask));
    let k = match by {
        PruneBy::Threshold(t) => all.iter().take_while(|c| c.mask < t).count(),
        PruneBy::Fraction(f) => (f * all.len() as f64).round() as usize,
    };
    all.truncate(k);
    Ok(all)
}

/// Sets the weights and bias of each chosen output channel to 0 (in place).
pub fn prune_channels(convs: &[&PerturbConv2d], chosen: &[PrunedChannel]) -> Result<()> {
    tch::no_grad(|| {
        for ch in chosen {
            let conv = convs
                .iter()
                .find(|c| c.path() == ch.conv)
                .with_context(|| format!("the model has no convolution `{}`", ch.conv))?;
            ensure!(
                (0..conv.out_channels()).contains(&ch.channel),
                "`{}` has {} output channels, no channel {}",
                ch.conv,
                conv.out_channels(),
                ch.channel
            );
            let _ = conv.conv.ws.narrow(0, ch.channel, 1).zero_();
            if let Some(b) = &conv.conv.bs {
                let _ = b.narrow(0, ch.channel, 1).zero_();
            }
        }
        Ok(())
    })
}

/// The outcome of ANP pruning.
#[derive(Clone, Debug, Serialize)]
pub struct PruneResult {
    pub config: PruneConfig,
    pub total_channels: usize,
    pub pruned: Vec<PrunedChannel>,
    pub masks: Vec<ConvMasks>,
    /// The pruned model (a diffusers pipeline folder) and its weights' sha256.
    pub model_dir: std::path::PathBuf,
    pub weights_sha256: String,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
}

/// Optimises the masks, prunes the chosen channels of the loaded model in place, saves it to
/// `out_dir` as a diffusers pipeline, and measures the pruned model: backdoor samples (trigger
/// noise) and clean samples against the target.
pub fn anp_prune(
    pipeline: &mut Pipeline,
    data: &Dataset,
    backdoor: &Backdoor,
    cfg: &PruneConfig,
    measure_opts: &MeasureOptions,
    out_dir: &Path,
) -> Result<PruneResult> {
    cfg.validate()?;
    measure_opts.validate()?;
    let started = clock();
    let masks = optimise_masks(pipeline, data, cfg, measure_opts.device)?;
    let pruned = select_channels(&masks, cfg.by)?;
    prune_channels(&prunable_convs(&pipeline.checkpoint.model)?, &pruned)?;
    let saved = save_model(pipeline, out_dir, "pruned")?;
    set_clip(pipeline, cfg.sample_clip)?;
    let param = format!("{},pruned={}", cfg.param(), pruned.len());
    let mut rows = Vec::new();
    let (bd, _) = measure(pipeline, measure_opts, Some(&backdoor.trigger), backdoor)?;
    rows.extend(defense_rows(bd, "anp-prune", &param, None, "backdoor"));
    let (clean, _) = measure(pipeline, measure_opts, None, backdoor)?;
    rows.extend(defense_rows(clean, "anp-prune", &param, None, "clean"));
    let cost = Cost {
        seconds: started.elapsed().as_secs_f64(),
        optimiser_steps: cfg.iterations,
        sampled_images: 2 * measure_opts.n as u64,
    };
    rows.extend(cost.rows("anp-prune", &param, measure_opts.device));
    Ok(PruneResult {
        config: cfg.clone(),
        total_channels: masks.iter().map(|m| m.masks.len()).sum(),
        pruned,
        masks,
        model_dir: out_dir.to_path_buf(),
        weights_sha256: saved.sha256,
        cost,
        rows,
    })
}
