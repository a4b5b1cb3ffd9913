//! What a profile will run and roughly how long it takes: cells, distinct trainings, model
//! forward passes, and time from throughput measured by earlier stages on this machine (else the
//! profile's stated assumption, labelled as such).
use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use super::profile::{Base, Profile};
use super::{Cell, StageStore};

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
        let timesteps = match &p.base {
            Base::Pretrain { scheduler, .. } => scheduler
                .get("num_train_timesteps")
                .and_then(|v| v.as_u64())
                .unwrap_or(1000),
            Base::Checkpoint { .. } => 1000,
        };
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
    let measured = measured_train_rate(profile, store);
    let assumed = profile.assumed.as_ref();
    let train_rate = measured.or_else(|| {
        assumed.map(|a| {
            (
                a.seconds_per_train_iteration,
                format!("assumed: {}", a.hardware),
            )
        })
    });
    let sample_rate = assumed.map(|a| {
        (
            a.seconds_per_sampling_step,
            format!("assumed: {}", a.hardware),
        )
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

/// Median seconds per iteration of finished training stages of this profile's model and batch.
fn measured_train_rate(profile: &Profile, store: &StageStore) -> Option<(f64, String)> {
    let mut rates = Vec::new();
    for kind in ["base", "train"] {
        let Ok(dir) = std::fs::read_dir(store.root.join(kind)) else {
            continue;
        };
        for e in dir.filter_map(|e| e.ok()) {
            let Ok(text) = std::fs::read_to_string(e.path().join("stage.json")) else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<super::StageRecord>(&text) else {
                continue;
            };
            let out = &rec.output;
            let cfg = &out["config"];
            let same = cfg["data"] == serde_json::to_value(&profile.data).unwrap_or_default()
                && cfg["train"]["batch"].as_i64() == profile.finetune.as_ref().map(|f| f.batch);
            let (Some(it), Some(s)) = (out["iterations"].as_f64(), out["seconds"].as_f64()) else {
                continue;
            };
            if same && it > 0.0 {
                rates.push(s / it);
            }
        }
    }
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    Some((
        rates[n / 2],
        format!("measured: median of {n} training stage(s) on this machine"),
    ))
}

impl Plan {
    pub fn text(&self) -> String {
        let mut s = format!(
            "profile {}: {} cells, {} trained models, {} training iterations, {} sampling steps\n",
            self.profile,
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
            s += &format!("training: {r:.3} s/iteration ({why})\n");
        }
        if let Some((r, why)) = &self.seconds_per_sampling_step {
            s += &format!("sampling: {r:.4} s/step ({why})\n");
        }
        match self.estimated_seconds {
            Some(t) => {
                s += &format!(
                    "estimated: {:.1} h ({:.0} min) of compute, before defenses\n",
                    t / 3600.0,
                    t / 60.0
                )
            }
            None => s += "estimated: unknown (no measured or assumed throughput)\n",
        }
        s
    }
}
