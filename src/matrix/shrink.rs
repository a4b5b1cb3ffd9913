//! The dress rehearsal's shrink: a profile cut to the least work that still runs every code path
//! it has at its real shapes. The data, image size, channels, UNet configs, schedulers, FID
//! network, samplers, clipping and defenses stay; what shrinks is how much of each is done:
//! training iterations and batch, samples per set, sampling steps, reference images, defense
//! steps, and each experiment to its first trigger, target and seed at its lowest and highest
//! poison rate. `cargo xtask reproduce --shrink` runs a profile so on any machine (with the
//! stand-in inputs, `cargo xtask rehearse` does it on a CPU); its numbers are not results, and
//! its verdicts say so ([`frame::claims::Fidelity::Rehearsal`]).
use anyhow::{Context, Result};

use super::profile::{Base, Experiment, MeasureSettings, Profile, ScratchSettings};
use crate::training::trainer::TrainSettings;

/// How far a rehearsal shrinks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shrink {
    /// Optimizer steps of every training (`steps`, which stops mid-epoch).
    pub train_steps: u64,
    /// Micro-batch of every training; the effective batch is twice it where the profile
    /// accumulates gradients, so that path runs too.
    pub batch: i64,
    /// At most this many training images.
    pub data_limit: usize,
    /// Samples per measured set (one sampling batch).
    pub n: usize,
    /// FID reference images.
    pub reference_n: usize,
    /// Inference steps of every sampler, DDPM included (strided as diffusers' `set_timesteps`).
    pub sampling_steps: usize,
    /// Per defense kind, the settings that count its work and the value each is set to (set
    /// whether or not the profile gives them: its defaults are the paper's full amounts). Every
    /// defense also samples with `sampling_steps`.
    pub defense: &'static [(&'static str, &'static [(&'static str, u64)])],
    /// Float32 everywhere: fp16 autocast runs only on CUDA, so a CPU rehearsal drops it.
    pub no_mixed_precision: bool,
}

impl Shrink {
    /// The rehearsal's: about a minute of CPU per 32 px cell, a few per 256 px one.
    pub const REHEARSAL: Shrink = Shrink {
        train_steps: 2,
        batch: 2,
        data_limit: 64,
        n: 4,
        reference_n: 16,
        sampling_steps: 2,
        defense: &[
            (
                "anp",
                &[
                    ("epochs", 1),
                    ("steps_per_epoch", 2),
                    ("batch", 2),
                    ("n", 4),
                ],
            ),
            ("anp-prune", &[("iterations", 2), ("batch", 2), ("n", 4)]),
            (
                "elijah",
                &[
                    ("inversion_steps", 2),
                    ("noises", 2),
                    ("samples", 9),
                    ("removal_epochs", 1),
                    ("removal_batch", 2),
                    ("n", 4),
                ],
            ),
            (
                "terd",
                &[
                    ("iterations", 2),
                    ("refine_iterations", 1),
                    ("batch", 2),
                    ("inputs", 16),
                ],
            ),
            ("noise-test", &[("calibration", 1000), ("inputs", 16)]),
        ],
        no_mixed_precision: false,
    };
}

impl Profile {
    /// This profile shrunk by `s`, named `<name>-shrunk` and labelled a rehearsal.
    pub fn shrunk(&self, s: &Shrink) -> Result<Profile> {
        let mut p = self.clone();
        p.name = format!("{}-shrunk", self.name);
        p.description = format!(
            "Dress rehearsal of `{}`, shrunk to {} training steps at batch {}, {} samples per set, {} sampling steps: not results. {}",
            self.name, s.train_steps, s.batch, s.n, s.sampling_steps, self.description
        );
        p.fidelity = frame::claims::Fidelity::Rehearsal;
        p.data.limit = Some(p.data.limit.map_or(s.data_limit, |l| l.min(s.data_limit)));
        p.base = shrink_base(&p.base, s);
        p.finetune = p.finetune.as_ref().map(|t| shrink_train(t, s));
        p.scratch = p.scratch.as_ref().map(|sc| ScratchSettings {
            train: shrink_train(&sc.train, s),
            ..sc.clone()
        });
        p.measure = shrink_measure(&p.measure, s);
        p.experiments = p
            .experiments
            .iter()
            .map(|e| shrink_experiment(e, s))
            .collect::<Result<_>>()?;
        Ok(p)
    }
}

fn shrink_train(t: &TrainSettings, s: &Shrink) -> TrainSettings {
    let accumulates = t.effective_batch > t.batch;
    TrainSettings {
        steps: Some(s.train_steps),
        batch: s.batch,
        effective_batch: if accumulates { 2 * s.batch } else { s.batch },
        mixed_precision: t.mixed_precision.filter(|_| !s.no_mixed_precision),
        // A shrunk run stops after a few steps, before any epoch worth keeping.
        keep_epochs: vec![],
        ..t.clone()
    }
}

fn shrink_base(b: &Base, s: &Shrink) -> Base {
    match b {
        Base::Pretrain {
            unet,
            scheduler,
            train,
            threads,
            ..
        } => Base::Pretrain {
            unet: unet.clone(),
            scheduler: scheduler.clone(),
            train: shrink_train(train, s),
            // A shipped base is the full pre-training's: the shrunk one trains its own.
            shipped: None,
            threads: *threads,
        },
        Base::Checkpoint { .. } => b.clone(),
    }
}

fn shrink_measure(m: &MeasureSettings, s: &Shrink) -> MeasureSettings {
    MeasureSettings {
        n: s.n,
        batch: s.n,
        reference_n: Some(
            m.reference_n
                .map_or(s.reference_n, |r| r.min(s.reference_n)),
        ),
        keep_samples: m.keep_samples.min(s.n),
        ..m.clone()
    }
}

fn shrink_experiment(e: &Experiment, s: &Shrink) -> Result<Experiment> {
    let first = |v: &[String]| v.iter().take(1).cloned().collect::<Vec<_>>();
    let lo = e.poison_rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = e
        .poison_rates
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut rates = vec![lo];
    if hi > lo {
        rates.push(hi);
    }
    let defenses = e
        .defenses
        .iter()
        .map(|d| {
            let kind = d.kind();
            let amounts = s.defense.iter().find(|(k, _)| *k == kind);
            let mut settings: Vec<(&str, serde_json::Value)> = amounts
                .map_or(&[][..], |(_, v)| v)
                .iter()
                .map(|(k, v)| (*k, (*v).into()))
                .collect();
            settings.push(("steps", s.sampling_steps.into()));
            d.with(&settings)
                .with_context(|| format!("shrinking experiment {}'s {kind} table", e.id))
        })
        .collect::<Result<_>>()?;
    Ok(Experiment {
        triggers: first(&e.triggers),
        targets: first(&e.targets),
        poison_rates: if e.poison_rates.is_empty() {
            vec![]
        } else {
            rates
        },
        seeds: e.seeds.iter().take(1).copied().collect(),
        evals: e
            .evals
            .iter()
            .map(|ev| super::Eval {
                steps: Some(s.sampling_steps),
                ..ev.clone()
            })
            .collect(),
        defenses,
        // A shrunk run keeps no intermediate model (see `shrink_train`).
        checkpoints: vec![],
        data: e.data.as_ref().map(|d| crate::attack::DataConfig {
            limit: Some(d.limit.map_or(s.data_limit, |l| l.min(s.data_limit))),
            ..d.clone()
        }),
        base: e.base.as_ref().map(|b| shrink_base(b, s)),
        finetune: e.finetune.as_ref().map(|t| shrink_train(t, s)),
        measure: e.measure.as_ref().map(|m| shrink_measure(m, s)),
        ..e.clone()
    })
}

#[cfg(test)]
mod tests;
