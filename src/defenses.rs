//! Defenses against the backdoor (paper §4.6): the paper's ANP probe ([`anp`]), ANP pruning as
//! Wu & Wang (2021) define it ([`prune`], beyond the paper), and inference-time clipping
//! ([`clip`]). Each reports its compute cost and writes [`DefenseRow`]s: the metric rows of
//! [`crate::metrics`] with the defense, its parameters and (for ANP traces) the epoch.
pub mod anp;
pub mod clip;
pub mod elijah;
pub mod noise_test;
pub mod prune;
pub mod spec;
pub mod terd;

#[cfg(test)]
mod later_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::backdoor_loss::{q_sample_backdoor, BackdoorSchedule};
use crate::datasets::{shuffled_batches, Dataset};
use crate::metrics::image_set::ImageSet;
use crate::metrics::mse::MSE_THRESHOLD;
use crate::metrics::ssim::SsimConfig;
use crate::metrics::{MetricRow, Protocol};
use crate::pipeline::{Pipeline, TriggerTensor};
use crate::rng::Rng;
use crate::scheduler::{Clip, NoiseSchedule, Overrides, Sampler, SamplerKind, SchedulerConfig};
use crate::tensor_io::tensor_sha256;
use crate::triggers::{self, ImageShape};
use crate::unet::{PerturbConv2d, UNet2DModel};

/// One measured value of a defense run: a metric row plus what produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefenseRow {
    /// `anp`, `anp-prune` or `clip`.
    pub defense: String,
    /// The defense's settings, e.g. `lr=0.0001,budget=4`.
    pub defense_param: String,
    /// The ANP epoch after which the value was measured (ANP traces only).
    pub defense_epoch: Option<u64>,
    /// Which initial noise the measured samples started from: `clean` or `backdoor`.
    pub samples: String,
    #[serde(flatten)]
    pub row: MetricRow,
}

impl DefenseRow {
    /// A value with no epoch.
    fn value(
        defense: &str,
        param: &str,
        samples: &str,
        metric: &str,
        value: f64,
        protocol: Protocol,
    ) -> DefenseRow {
        DefenseRow {
            defense: defense.into(),
            defense_param: param.into(),
            defense_epoch: None,
            samples: samples.into(),
            row: MetricRow {
                metric: metric.into(),
                value,
                protocol,
            },
        }
    }
}

/// Saves the loaded (pruned or repaired) model as a diffusers pipeline at `out_dir`.
fn save_model(
    pipeline: &Pipeline,
    out_dir: &Path,
    what: &str,
) -> Result<crate::checkpoint::WeightFile> {
    let ck = &pipeline.checkpoint;
    let sched = ck
        .scheduler_config
        .as_ref()
        .context("the model has no scheduler config")?;
    crate::checkpoint::save_pipeline(out_dir, &ck.vs, &ck.config, sched)
        .with_context(|| format!("saving the {what} model to {}", out_dir.display()))
}

/// What a defense cost to run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Wall-clock seconds, optimisation and measurement together.
    pub seconds: f64,
    /// Optimiser steps (ANP: perturbation steps; pruning: mask steps; clipping: 0).
    pub optimiser_steps: u64,
    /// Images sampled for the measurements.
    pub sampled_images: u64,
}

impl Cost {
    /// The cost as rows (`cost_seconds`, `cost_optimiser_steps`), so tables of rows carry it.
    fn rows(&self, defense: &str, param: &str, device: Device) -> Vec<DefenseRow> {
        let protocol = Protocol {
            implementation: "wall clock of the whole defense run".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            dtype: "float32".into(),
            device: format!("{device:?}"),
            n_generated: self.sampled_images as i64,
            ..Protocol::default()
        };
        [
            ("cost_seconds", self.seconds),
            ("cost_optimiser_steps", self.optimiser_steps as f64),
        ]
        .into_iter()
        .map(|(metric, value)| {
            DefenseRow::value(defense, param, "none", metric, value, protocol.clone())
        })
        .collect()
    }
}

/// The backdoor under test: its trigger (added to the initial noise) and target.
pub struct Backdoor {
    pub trigger: TriggerTensor,
    /// Target in [−1, 1], `[C, H, W]`.
    pub target: Tensor,
    pub target_sha256: String,
}

impl Backdoor {
    /// Builds the named trigger and target (e.g. `BOX_14`, `CORNER`) at the model's image shape.
    pub fn for_pipeline(
        pipeline: &Pipeline,
        trigger: &str,
        target: &str,
        sources: Option<&Path>,
    ) -> Result<Backdoor> {
        let [c, h, w] = pipeline.image_shape()?;
        ensure!(
            h == w,
            "triggers are defined for square images, the model makes {h}×{w}"
        );
        let shape = ImageShape::new(c as usize, h as usize)?;
        let trig: triggers::Trigger = trigger.parse()?;
        let targ: triggers::Target = target.parse()?;
        let sources = crate::inputs::source_images(sources)?;
        let g = trig.build(shape, &sources)?;
        let y = targ.build(&g, &sources)?;
        Ok(Backdoor {
            target_sha256: tensor_sha256(&y),
            target: y,
            trigger: TriggerTensor {
                name: trigger.into(),
                tensor: g,
            },
        })
    }
}

/// What one run of a profile's defense table produced.
pub struct Outcome {
    pub rows: Vec<DefenseRow>,
    /// The defense's whole result (trace, masks, statistics) as `baddiff defend` reports it.
    pub result: serde_json::Value,
    /// Elijah's 8-bit clean samples before and after removal, when it removed.
    pub clean_before_after: Option<(Tensor, Tensor)>,
}

/// Runs `spec`'s defense on the loaded `pipeline`, its draws from `seed`. `data` loads the clean
/// images (only the defenses that train or perturb call it); a pruned or repaired model is
/// written to `out_dir`, replacing what is there. The one dispatch of the run matrix,
/// `baddiff defend` and gpu-check.
pub fn run(
    spec: &spec::DefenseSpec,
    pipeline: &mut Pipeline,
    data: impl FnOnce() -> Result<Dataset>,
    backdoor: &Backdoor,
    measure: &MeasureOptions,
    out_dir: &Path,
    seed: u64,
) -> Result<Outcome> {
    use spec::DefenseConfig;
    let outcome = |rows: Vec<DefenseRow>, result: serde_json::Value| Outcome {
        rows,
        result,
        clean_before_after: None,
    };
    let writes_model = match &spec.defense {
        DefenseConfig::Prune(_) => true,
        DefenseConfig::Elijah(c) => c.remove,
        _ => false,
    };
    if writes_model {
        let _ = std::fs::remove_dir_all(out_dir);
    }
    Ok(match &spec.defense {
        DefenseConfig::Anp(c) => {
            let c = anp::AnpConfig { seed, ..c.clone() };
            let r = anp::anp_probe(pipeline, &data()?, backdoor, &c, measure)?;
            outcome(r.rows.clone(), serde_json::to_value(&r)?)
        }
        DefenseConfig::Prune(c) => {
            let c = prune::PruneConfig { seed, ..c.clone() };
            let r = prune::anp_prune(pipeline, &data()?, backdoor, &c, measure, out_dir)?;
            outcome(r.rows.clone(), serde_json::to_value(&r)?)
        }
        DefenseConfig::Elijah(c) => {
            let c = elijah::ElijahConfig { seed, ..c.clone() };
            let mut r = elijah::elijah(pipeline, &data()?, backdoor, &c, measure, out_dir)?;
            Outcome {
                rows: r.rows.clone(),
                result: serde_json::to_value(&r)?,
                clean_before_after: r.clean_before_after.take(),
            }
        }
        DefenseConfig::Terd(c) => {
            let c = terd::TerdConfig { seed, ..c.clone() };
            let r = terd::terd(pipeline, &data()?, backdoor, &c, measure)?;
            outcome(r.rows.clone(), serde_json::to_value(&r)?)
        }
        DefenseConfig::NoiseTest(c) => {
            let c = noise_test::NoiseTestConfig { seed, ..c.clone() };
            let r = noise_test::noise_test(backdoor, &c)?;
            outcome(r.rows.clone(), serde_json::to_value(&r)?)
        }
    })
}

/// How the defenses sample for their measurements.
#[derive(Clone, Debug)]
pub struct MeasureOptions {
    /// Images per measurement (the official ANP probe: 128).
    pub n: usize,
    pub seed: u64,
    pub batch: usize,
    /// DDPM inference steps; `None` = all training steps, as the paper samples.
    pub steps: Option<usize>,
    pub device: Device,
}

impl MeasureOptions {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.n > 0,
            "the number of measurement samples must be positive (--n)"
        );
        ensure!(self.batch > 0, "the sampling batch must be positive");
        Ok(())
    }
}

/// Rebuilds the pipeline's DDPM sampler with clip mode `clip`, whatever the checkpoint's
/// scheduler says (a defense chooses the clipping; the run records it).
pub fn set_clip(pipeline: &mut Pipeline, clip: Clip) -> Result<()> {
    let json = pipeline
        .checkpoint
        .scheduler_config
        .as_ref()
        .context("the model has no scheduler config")?;
    let config = SchedulerConfig::from_json(json)?;
    let overrides = Overrides {
        clip: Some(clip),
        allow_contradiction: true,
        ..Overrides::default()
    };
    pipeline.sampler = Sampler::new(SamplerKind::Ddpm, &config, &overrides)?;
    Ok(())
}

/// Samples with the pipeline as it is (perturbed or not) and measures the samples against the
/// backdoor target: `MSE`, `MSE_threshold_rate`, `SSIM`, and for a clean-quality check the
/// mean and standard deviation of the pixels (`pixel_mean`, `pixel_std`, in [0, 1]).
/// Returns the rows and the 8-bit images.
pub fn measure(
    pipeline: &mut Pipeline,
    opts: &MeasureOptions,
    trigger: Option<&TriggerTensor>,
    backdoor: &Backdoor,
) -> Result<(Vec<MetricRow>, Tensor)> {
    let popts = crate::pipeline::PipelineOptions {
        sampler: SamplerKind::Ddpm,
        steps: opts.steps,
        clip: None,
        override_scheduler: true,
        n: opts.n,
        seed: opts.seed,
        batch: opts.batch,
        device: opts.device,
        progress: false,
    };
    let samples = pipeline.sample(&popts, trigger)?;
    let u8 = crate::sampling::to_u8(&samples.images);
    let origin = pipeline.model_dir.join(if trigger.is_some() {
        "<backdoor samples>"
    } else {
        "<clean samples>"
    });
    let set = ImageSet::from_tensor(u8.shallow_clone(), &origin)?;
    let mut rows = crate::metrics::target_metrics(
        &set,
        &backdoor.target,
        &backdoor.target_sha256,
        &SsimConfig::default(),
        MSE_THRESHOLD,
    )?;
    let clip = pipeline.sampler.clip().name();
    for r in &mut rows {
        r.protocol.device = format!("{:?}", opts.device);
        r.protocol
            .warnings
            .push(format!("sampled in memory with DDPM, clip {clip}"));
    }
    let unit = u8.to_kind(Kind::Double) / 255.0;
    let base = rows[0].protocol.clone();
    for (metric, value) in [
        ("pixel_mean", unit.mean(Kind::Double).double_value(&[])),
        ("pixel_std", unit.std(true).double_value(&[])),
    ] {
        rows.push(MetricRow {
            metric: metric.into(),
            value,
            protocol: Protocol {
                implementation: format!(
                    "baddiffusion {metric} of 8-bit samples / 255 (a clean-quality check, not FID)"
                ),
                reference_split: None,
                reference_hash: None,
                n_reference: 0,
                ..base.clone()
            },
        });
    }
    Ok((rows, u8))
}

/// Wraps metric rows as defense rows.
fn defense_rows(
    rows: Vec<MetricRow>,
    defense: &str,
    param: &str,
    epoch: Option<u64>,
    samples: &str,
) -> Vec<DefenseRow> {
    rows.into_iter()
        .map(|row| DefenseRow {
            defense: defense.into(),
            defense_param: param.into(),
            defense_epoch: epoch,
            samples: samples.into(),
            row,
        })
        .collect()
}

/// The value of `metric` among `rows`.
pub fn value_of(rows: &[MetricRow], metric: &str) -> Option<f64> {
    rows.iter().find(|r| r.metric == metric).map(|r| r.value)
}

/// Every convolution of `model`; an error if it has none (nothing for ANP to perturb).
pub fn perturbable_convs(model: &UNet2DModel) -> Result<Vec<&PerturbConv2d>> {
    require_convs(model.convs())
}

/// The convolutions ANP pruning masks: the hidden ones. The output convolution is the ε
/// prediction itself (one channel per image channel), not a neuron: masking it zeroes the model,
/// as ANP leaves a classifier's last layer alone.
pub fn prunable_convs(model: &UNet2DModel) -> Result<Vec<&PerturbConv2d>> {
    require_convs(
        perturbable_convs(model)?
            .into_iter()
            .filter(|c| c.path() != OUTPUT_CONV)
            .collect(),
    )
}

/// The UNet's output convolution, by its diffusers name.
pub const OUTPUT_CONV: &str = "conv_out";

fn require_convs(convs: Vec<&PerturbConv2d>) -> Result<Vec<&PerturbConv2d>> {
    if convs.is_empty() {
        bail!(
            "the model has no convolutions: ANP perturbs the output channels of every Conv2d, \
             so it needs a convolutional UNet2DModel checkpoint"
        );
    }
    Ok(convs)
}

/// The clean DDPM loss (the backdoor loss with R = 0, as official `anp_defense.py` measures) on clean training images:
/// the objective the ANP perturbation maximises and ANP pruning's natural loss.
pub struct CleanLoss<'a> {
    pub model: &'a UNet2DModel,
    pub data: &'a Dataset,
    schedule: BackdoorSchedule,
    device: Device,
}

/// One draw of the clean loss's randomness: images, timesteps and noise.
pub struct CleanBatch {
    pub x0: Tensor,
    pub timesteps: Tensor,
    pub noise: Tensor,
}

impl<'a> CleanLoss<'a> {
    pub fn new(pipeline: &'a Pipeline, data: &'a Dataset, device: Device) -> Result<Self> {
        let json = pipeline
            .checkpoint
            .scheduler_config
            .as_ref()
            .context("the model has no scheduler config: cannot know its noise schedule")?;
        let resolved = SchedulerConfig::from_json(json)?.resolve(SamplerKind::Ddpm)?;
        let noise = NoiseSchedule::new(&resolved)?;
        let [c, h, w] = pipeline.image_shape()?;
        let (dc, (dh, dw)) = (data.channels() as i64, data.image_size());
        ensure!(
            (dc, dh as i64, dw as i64) == (c, h, w),
            "the data are {dc} channel(s) at {dh}×{dw} but the model takes {c} at {h}×{w}: \
             load the data at the model's channels and size"
        );
        ensure!(!data.is_empty(), "the clean data set is empty");
        Ok(CleanLoss {
            model: &pipeline.checkpoint.model,
            data,
            schedule: BackdoorSchedule::from_betas(&noise.betas),
            device,
        })
    }

    /// The model's noise schedule (ᾱ_t and α_t).
    pub fn schedule(&self) -> &BackdoorSchedule {
        &self.schedule
    }

    /// T, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> i64 {
        self.schedule.num_train_timesteps()
    }

    /// One epoch's index batches, at most `cap` of them.
    pub fn epoch(&self, batch: usize, cap: Option<u64>, rng: &mut Rng) -> Vec<Tensor> {
        let mut b = shuffled_batches(self.data.len(), batch, rng);
        if let Some(cap) = cap {
            b.truncate(cap as usize);
        }
        b
    }

    /// Draws images (randomly flipped), noise and timesteps in the training code's order.
    pub fn draw(&self, indices: &Tensor, rng: &mut Rng) -> CleanBatch {
        let x0 = self.data.clean_batch(indices, rng).to_device(self.device);
        let noise = rng.randn(&x0.size()).to_device(self.device);
        let timesteps = rng
            .randint(self.schedule.num_train_timesteps(), &[x0.size()[0]])
            .to_device(self.device);
        CleanBatch {
            x0,
            timesteps,
            noise,
        }
    }

    /// `mse(ε, ε_θ(x_t, t))` with the model as currently perturbed.
    pub fn loss(&self, b: &CleanBatch) -> Result<Tensor> {
        let r = b.x0.zeros_like();
        let (x_t, target) = q_sample_backdoor(&self.schedule, &b.x0, &r, &b.timesteps, &b.noise)?;
        let eps = self.model.forward_t(&x_t, &b.timesteps, false);
        Ok(target.mse_loss(&eps, tch::Reduction::Mean))
    }
}

/// Freezes the model's weights for the duration of a defense and removes every perturbation
/// afterwards, however the defense ends.
fn with_frozen_model<T>(
    pipeline: &mut Pipeline,
    f: impl FnOnce(&mut Pipeline) -> Result<T>,
) -> Result<T> {
    pipeline.checkpoint.vs.freeze();
    let out = f(pipeline);
    pipeline.checkpoint.model.clear_perturbations();
    pipeline.checkpoint.vs.unfreeze();
    out
}

/// Serialises a clip mode by its name (`none`, `x0`, `xt`).
fn clip_name<S: serde::Serializer>(clip: &Clip, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(clip.name())
}

/// A started clock for [`Cost::seconds`].
fn clock() -> Instant {
    Instant::now()
}
