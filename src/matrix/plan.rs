//! What a profile will run and roughly how long it takes: cells, distinct trainings, model
//! forward passes, and time from throughput measured by earlier stages on this machine (else the
//! profile's stated assumption, labelled as such).
use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use super::profile::{Base, Profile};
use super::{Cell, StageStore};
use crate::bench::median;

#[derive(Debug, Serialize)]
pub struct Plan {
    pub profile: String,
    /// The profile's device (cpu, cuda), where it names one.
    pub device: Option<String>,
    /// libtorch threads per cell on the CPU, where the profile fixes them.
    pub threads: Option<usize>,
    pub cells: Vec<Cell>,
    /// Distinct models trained here (cells sharing one are counted once), a pre-trained base
    /// included; released checkpoints are not.
    pub trainings: usize,
    pub train_iterations: u64,
    /// Sampling: model forward passes over batches, summed over distinct sample sets.
    pub sampling_steps: u64,
    pub seconds_per_train_iteration: Option<(f64, String)>,
    pub seconds_per_sampling_step: Option<(f64, String)>,
    pub estimated_seconds: Option<f64>,
    /// Each cell alone (its own training and sample sets, nothing shared), for a cluster's
    /// per-task time limit.
    pub cell_estimated_seconds: Vec<Option<f64>>,
    /// The clean base model(s) alone.
    pub base_estimated_seconds: Option<f64>,
    /// Artifact names the profile reads (for fetching a profile given as a path).
    pub artifacts: Vec<String>,
    /// What the profile's runs are (recorded in the run manifest; labels every verdict).
    pub scale: frame::claims::Scale,
    /// Per claim of `paper/claims.toml`: `None` when the cells can judge it, else why not
    /// (filled by `baddiff plan`, which reads the claims file).
    pub claims: Vec<(String, Option<String>)>,
}

/// Images in a dataset split, for planning (the loaders check the real counts).
fn dataset_size(dataset: &str, split: &str) -> u64 {
    let (train, test) = match dataset {
        "cifar10" => (50_000, 10_000),
        "fashion-mnist" | "mnist" => (60_000, 10_000),
        _ => (30_000, 0),
    };
    match split {
        "train" => train,
        "test" => test,
        _ => train + test,
    }
}

pub fn plan(profile: &Profile, cells: Vec<Cell>, store: &StageStore) -> Result<Plan> {
    let images = |p: &Profile| {
        let d = &p.data;
        d.limit
            .map(|l| l as u64)
            .unwrap_or_else(|| dataset_size(&d.dataset, &d.split))
    };
    let iterations = |p: &Profile, t: &crate::training::trainer::TrainSettings| {
        t.total_iterations(images(p).div_ceil(t.batch.max(1) as u64))
    };
    let mut train_iterations = 0;
    let mut trainings = 0;
    let mut seen = BTreeSet::new();
    let mut bases = BTreeSet::new();
    let mut base_iterations = 0;
    let mut sampling_steps = 0u64;
    let mut seen_samples = BTreeSet::new();
    // (train iterations, sampling steps) of each cell on its own.
    let mut alone = Vec::with_capacity(cells.len());
    for c in &cells {
        let p = profile.for_experiment(&c.experiment);
        let base_id = serde_json::to_string(&(&p.base, &p.data))?;
        if bases.insert(base_id.clone()) {
            if let Base::Pretrain { train, .. } = &p.base {
                trainings += 1;
                base_iterations += iterations(&p, train);
                train_iterations += iterations(&p, train);
            }
        }
        let timesteps = timesteps_of(&p);
        let batches = (p.measure.n as u64).div_ceil(p.measure.batch.max(1) as u64);
        let own_train = p.train_settings(c).map_or(0, |t| iterations(&p, &t));
        let mut own_steps = 0;
        if c.training.trains()
            && seen.insert((
                base_id.clone(),
                &c.trigger,
                &c.target,
                c.poison_rate.to_bits(),
                c.training,
                c.seed,
            ))
        {
            if let Some(t) = p.train_settings(c) {
                train_iterations += iterations(&p, &t);
                trainings += 1;
            }
        }
        let model = if !c.training.trains() {
            base_id.clone()
        } else {
            format!(
                "{base_id}/{}/{}/{}/{:?}/{}",
                c.trigger, c.target, c.poison_rate, c.training, c.seed
            )
        };
        for e in &c.evals {
            // Sample sets shared between cells come from the stage cache once.
            let clean = seen_samples.insert(format!("{model} {e:?}"));
            let backdoor = seen_samples.insert(format!("{model} {e:?} {}", c.trigger));
            let sets = clean as u64 + backdoor as u64;
            let steps = e
                .steps
                .map(|s| s as u64)
                .unwrap_or(match e.sampler.as_str() {
                    "ddim" => 50,
                    "dpm-solver" => 20,
                    _ => timesteps,
                });
            sampling_steps += sets * batches * steps;
            own_steps += 2 * batches * steps;
        }
        alone.push((own_train, own_steps));
    }
    let records = Measured::read(profile, store);
    let measured = records.train_rate();
    let assumed = profile.assumed.as_ref();
    let train_rate = measured.or_else(|| {
        assumed.map(|a| {
            (
                a.seconds_per_train_iteration,
                format!("assumed: {}", a.hardware),
            )
        })
    });
    let sample_rate = records.sample_rate(timesteps_of(profile)).or_else(|| {
        assumed.map(|a| {
            (
                a.seconds_per_sampling_step,
                format!("assumed: {}", a.hardware),
            )
        })
    });
    let estimated_seconds = match (&train_rate, &sample_rate) {
        (Some((t, _)), Some((s, _))) => {
            Some(t * train_iterations as f64 + s * sampling_steps as f64)
        }
        _ => None,
    };
    let cell_estimated_seconds = alone
        .iter()
        .map(|&(t, s)| match (&train_rate, &sample_rate) {
            (Some((tr, _)), Some((sr, _))) => Some(tr * t as f64 + sr * s as f64),
            _ => None,
        })
        .collect();
    let base_estimated_seconds = train_rate.as_ref().map(|(t, _)| t * base_iterations as f64);
    Ok(Plan {
        scale: super::scale::scale(profile)?,
        claims: Vec::new(),
        profile: profile.name.clone(),
        device: profile.device.clone(),
        threads: profile.threads,
        cells,
        trainings,
        train_iterations,
        sampling_steps,
        seconds_per_train_iteration: train_rate,
        seconds_per_sampling_step: sample_rate,
        estimated_seconds,
        cell_estimated_seconds,
        base_estimated_seconds,
        artifacts: profile.artifacts(),
    })
}

/// The DDPM steps of the profile's base model (1000 for a released checkpoint).
fn timesteps_of(p: &Profile) -> u64 {
    match &p.base {
        Base::Pretrain { scheduler, .. } => scheduler
            .get("num_train_timesteps")
            .and_then(|v| v.as_u64())
            .unwrap_or(1000),
        Base::Checkpoint { .. } => 1000,
    }
}

/// Finished stages on this machine that ran this profile's data (and batch), for throughput.
struct Measured {
    /// Seconds per iteration of each training stage.
    train: Vec<f64>,
    /// Sample stages of those trainings' models: (seconds, batches, steps or None for all).
    sample: Vec<(f64, u64, Option<u64>)>,
}

fn records(store: &StageStore, kind: &str) -> Vec<super::StageRecord> {
    let Ok(dir) = std::fs::read_dir(store.root.join(kind)) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stage.json")).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}

impl Measured {
    fn read(profile: &Profile, store: &StageStore) -> Measured {
        let data = serde_json::to_value(&profile.data).unwrap_or_default();
        let batch = profile.finetune.as_ref().map(|f| f.batch);
        let mut train = Vec::new();
        let mut models = BTreeSet::new();
        for rec in records(store, "base")
            .into_iter()
            .chain(records(store, "train"))
        {
            let out = &rec.output;
            if out["config"]["data"] != data {
                continue;
            }
            if let Some(sha) = out["weights_sha256"].as_str() {
                models.insert(sha.to_string());
            }
            let (Some(it), Some(s)) = (out["iterations"].as_f64(), out["seconds"].as_f64()) else {
                continue;
            };
            if out["config"]["train"]["batch"].as_i64() == batch && it > 0.0 {
                train.push(s / it);
            }
        }
        let m = &profile.measure;
        let sample = records(store, "sample")
            .into_iter()
            .filter(|r| {
                r.inputs["model"]
                    .as_str()
                    .is_some_and(|s| models.contains(s))
                    && r.inputs["batch"].as_u64() == Some(m.batch as u64)
            })
            .filter_map(|r| {
                let n = r.inputs["n"].as_u64()?;
                let seconds = r.output["seconds"].as_f64()?;
                Some((
                    seconds,
                    n.div_ceil(m.batch.max(1) as u64),
                    r.inputs["eval"]["steps"].as_u64(),
                ))
            })
            .collect();
        Measured { train, sample }
    }

    /// Median seconds per iteration of finished training stages of this profile's model and batch.
    fn train_rate(&self) -> Option<(f64, String)> {
        let n = self.train.len();
        median(&self.train).map(|r| {
            (
                r,
                format!("measured: median of {n} training stage(s) on this machine"),
            )
        })
    }

    /// Median seconds per model forward pass (one batch, one step) of finished sample stages.
    fn sample_rate(&self, timesteps: u64) -> Option<(f64, String)> {
        let rates: Vec<f64> = self
            .sample
            .iter()
            .filter(|(s, b, _)| *s > 0.0 && *b > 0)
            .map(|&(s, b, steps)| s / (b * steps.unwrap_or(timesteps)) as f64)
            .collect();
        let n = rates.len();
        median(&rates).map(|r| {
            (
                r,
                format!("measured: median of {n} sample stage(s) on this machine"),
            )
        })
    }
}

impl Plan {
    pub fn text(&self) -> String {
        let mut s = format!(
            "profile {}: {}\nscale: {}\n",
            self.profile,
            super::scale::fidelity_text(self.scale.fidelity),
            self.scale.summary()
        );
        if !self.claims.is_empty() {
            let can: Vec<&str> = self
                .claims
                .iter()
                .filter(|(_, why)| why.is_none())
                .map(|(id, _)| id.as_str())
                .collect();
            s += &format!(
                "claims it can judge: {}\n",
                if can.is_empty() {
                    "none".to_string()
                } else {
                    can.join(", ")
                }
            );
            for (id, why) in &self.claims {
                if let Some(why) = why {
                    s += &format!("  cannot judge {id}: {why}\n");
                }
            }
        }
        s += &format!(
            "{} cells, {} trained models, {} training iterations, {} sampling steps\n",
            self.cells.len(),
            self.trainings,
            self.train_iterations,
            self.sampling_steps
        );
        for c in &self.cells {
            let evals: Vec<String> = c
                .evals
                .iter()
                .map(|e| format!("{}/{}", e.sampler, e.clip))
                .collect();
            s += &format!(
                "  {:<48} evals {}{}\n",
                c.id,
                evals.join(","),
                if c.defenses.is_empty() {
                    String::new()
                } else {
                    format!(", {} defense run(s)", c.defenses.len())
                }
            );
        }
        if let Some((r, why)) = &self.seconds_per_train_iteration {
            s += &format!(
                "training: {r:.3} s/iteration ({why}): {:.0} min\n",
                r * self.train_iterations as f64 / 60.0
            );
        }
        if let Some((r, why)) = &self.seconds_per_sampling_step {
            s += &format!(
                "sampling: {r:.4} s/step ({why}): {:.0} min\n",
                r * self.sampling_steps as f64 / 60.0
            );
        }
        // What an hour here is an hour of: one CPU process or one GPU.
        let on = match self.device.as_deref() {
            Some("cpu") => "CPU",
            _ => "GPU",
        };
        match self.estimated_seconds {
            Some(t) => {
                s += &format!(
                    "estimated: {:.1} {on} hours ({:.0} min), before defenses\n",
                    t / 3600.0,
                    t / 60.0
                )
            }
            None => s += "estimated: unknown (no measured or assumed throughput)\n",
        }
        s
    }
}
