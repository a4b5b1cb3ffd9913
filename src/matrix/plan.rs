//! What a profile will run and roughly how long it takes: cells, distinct trainings, model
//! forward passes, and time from throughput measured by earlier stages on this machine, else (a
//! GPU profile) by `cargo xtask gpu-check` on this machine's GPU, else the profile's stated
//! assumption, labelled as such (a GPU profile's as a guess).
use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use super::profile::{Base, Profile};
use super::{Cell, StageKind, StageStore};
use crate::stats::median;

#[derive(Debug, Serialize)]
pub struct Plan {
    pub profile: String,
    /// The profile's device (cpu, cuda), where it names one.
    pub device: Option<String>,
    /// libtorch threads per cell on the CPU, where the profile fixes them.
    pub threads: Option<usize>,
    /// Cells run at once (the profile's `jobs`, default 1).
    pub jobs: usize,
    pub cells: Vec<Cell>,
    /// Distinct models trained here (cells sharing one are counted once), a pre-trained base
    /// included; released checkpoints are not.
    pub trainings: usize,
    pub train_iterations: u64,
    /// Sampling: model forward passes over batches, summed over distinct sample sets, and the
    /// defenses' work in the same unit.
    pub sampling_steps: u64,
    /// The defenses' share of `sampling_steps`: their single-image passes (a backward pass
    /// counted as two forwards) over the measurement batch.
    pub defense_steps: u64,
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

/// What `cargo xtask gpu-check` measured (results/gpu-check/latest.json's `plan_rates`) and the
/// GPUs of this machine: its rates apply where the GPU it measured is one of these.
#[derive(Clone, Debug, Default)]
pub struct GpuEvidence {
    rates: Option<GpuCheckRates>,
    gpus_here: Vec<String>,
}

/// `plan_rates` of a gpu-check result.
#[derive(Clone, Debug, serde::Deserialize)]
struct GpuCheckRates {
    device: String,
    seconds_per_train_iteration: f64,
    train_batch: Option<i64>,
    train_source: Option<String>,
    sampling_batch: i64,
    seconds_per_sampling_step: f64,
}

impl GpuEvidence {
    /// `root`/results/gpu-check/latest.json, matched against `gpus_here`; a missing or
    /// unreadable file is no evidence (the profile's guesses stay, labelled as such).
    pub fn load(root: &std::path::Path, gpus_here: Vec<String>) -> GpuEvidence {
        let doc = std::fs::read_to_string(root.join("results/gpu-check/latest.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        GpuEvidence::from_doc(&doc, gpus_here)
    }

    /// From a gpu-check result document.
    pub fn from_doc(doc: &serde_json::Value, gpus_here: Vec<String>) -> GpuEvidence {
        GpuEvidence {
            rates: serde_json::from_value(doc["plan_rates"].clone()).ok(),
            gpus_here,
        }
    }

    /// This project's latest gpu-check against this machine's GPUs (`nvidia-smi`'s names;
    /// none without it).
    pub fn here() -> GpuEvidence {
        let names = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        GpuEvidence::load(crate::python::project_root(), names)
    }

    /// The rates, when measured on a GPU of this machine.
    fn matching(&self) -> Option<&GpuCheckRates> {
        self.rates
            .as_ref()
            .filter(|r| self.gpus_here.iter().any(|g| g == &r.device))
    }
}

impl GpuCheckRates {
    /// Seconds per training iteration at the profile's batch: as measured at the same batch,
    /// else scaled per image.
    fn train_rate(&self, profile: &Profile) -> (f64, String) {
        let source = self.train_source.as_deref().unwrap_or("training step");
        let at = format!(
            "measured by `cargo xtask gpu-check` on {} ({source})",
            self.device
        );
        match (self.train_batch, profile.finetune.as_ref().map(|f| f.batch)) {
            (Some(m), Some(p)) if m != p && m > 0 => (
                self.seconds_per_train_iteration * p as f64 / m as f64,
                format!("{at}, batch {m} scaled per image to batch {p}"),
            ),
            _ => (self.seconds_per_train_iteration, at),
        }
    }

    /// Seconds per sampling step of the profile's batch at the fastest batch's rate per image
    /// (gpu-check's sweep: sampling at that batch maximises images/s).
    fn sample_rate(&self, profile: &Profile) -> (f64, String) {
        let b = self.sampling_batch.max(1) as f64;
        let p = profile.measure.batch.max(1) as f64;
        (
            self.seconds_per_sampling_step * p / b,
            format!(
                "measured by `cargo xtask gpu-check` on {}: {:.4} s/step at its fastest batch {}, per image",
                self.device, self.seconds_per_sampling_step, self.sampling_batch
            ),
        )
    }
}

/// [`plan_with`] this machine's [`GpuEvidence::here`].
pub fn plan(profile: &Profile, cells: Vec<Cell>, store: &StageStore) -> Result<Plan> {
    plan_with(profile, cells, store, &GpuEvidence::here())
}

/// The plan, its rates from (first found) this machine's finished stages, `gpu`'s gpu-check
/// measurement for a GPU profile, or the profile's `[assumed]` rates: a GPU profile's are
/// labelled guesses, as nothing measured them on this machine.
pub fn plan_with(
    profile: &Profile,
    cells: Vec<Cell>,
    store: &StageStore,
    gpu: &GpuEvidence,
) -> Result<Plan> {
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
    let mut defense_steps = 0u64;
    let mut seen_samples = BTreeSet::new();
    // (train iterations, sampling steps) of each cell on its own.
    let mut alone = Vec::with_capacity(cells.len());
    for c in &cells {
        let p = profile.for_experiment(&c.experiment);
        let base_id = serde_json::to_string(&(&p.base, &p.data))?;
        if bases.insert(base_id.clone()) {
            // A shipped base costs nothing (unless `--retrain-base`, which the plan ignores).
            if let Base::Pretrain {
                train,
                shipped: None,
                ..
            } = &p.base
            {
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
                .unwrap_or(e.sampler.default_steps(timesteps as usize) as u64);
            sampling_steps += sets * batches * steps;
            own_steps += 2 * batches * steps;
        }
        // E6: the kept models, sampled with the first evaluation.
        if let Some(e) = c.evals.first() {
            let steps = e
                .steps
                .map(|s| s as u64)
                .unwrap_or(e.sampler.default_steps(timesteps as usize) as u64);
            for epoch in &c.checkpoints {
                let at = format!("{model} epoch {epoch} {e:?}");
                let sets = seen_samples.insert(at.clone()) as u64
                    + seen_samples.insert(format!("{at} {}", c.trigger)) as u64;
                sampling_steps += sets * batches * steps;
                own_steps += 2 * batches * steps;
            }
        }
        // Defenses, as sampling steps of the profile's measurement batch.
        let data = images(&p);
        for d in &c.defenses {
            let passes = d.image_passes(timesteps, data, p.measure.n.min(128));
            let units = passes.div_ceil(p.measure.batch.max(1) as u64);
            defense_steps += units;
            sampling_steps += units;
            own_steps += units;
        }
        alone.push((own_train, own_steps));
    }
    let records = Measured::read(profile, store);
    let on_gpu = profile.device.as_deref() != Some("cpu");
    let checked = gpu.matching().filter(|_| on_gpu);
    let assumed = |rate: fn(&super::profile::Throughput) -> f64| {
        profile.assumed.as_ref().map(|a| {
            let why = if on_gpu {
                format!(
                    "guess: {} (not measured on this machine; run `cargo xtask gpu-check`)",
                    a.hardware
                )
            } else {
                format!("assumed: {}", a.hardware)
            };
            (rate(a), why)
        })
    };
    let train_rate = records
        .train_rate()
        .or_else(|| checked.map(|r| r.train_rate(profile)))
        .or_else(|| assumed(|a| a.seconds_per_train_iteration));
    let sample_rate = records
        .sample_rate(timesteps_of(profile))
        .or_else(|| checked.map(|r| r.sample_rate(profile)))
        .or_else(|| assumed(|a| a.seconds_per_sampling_step));
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
        jobs: profile.jobs.unwrap_or(1),
        cells,
        trainings,
        train_iterations,
        sampling_steps,
        defense_steps,
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

fn records(store: &StageStore, kind: StageKind) -> Vec<super::StageRecord> {
    let Ok(dir) = std::fs::read_dir(store.root.join(kind.name())) else {
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
        for rec in records(store, StageKind::Base)
            .into_iter()
            .chain(records(store, StageKind::Train))
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
        let sample = records(store, StageKind::Sample)
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
            "{} cells, {} trained models, {} training iterations, {} sampling steps ({} of them the defenses' work: model passes over the sampling batch, a backward pass counted as two forwards)\n",
            self.cells.len(),
            self.trainings,
            self.train_iterations,
            self.sampling_steps,
            self.defense_steps
        );
        for c in &self.cells {
            let evals: Vec<String> = c
                .evals
                .iter()
                .map(|e| match e.corruption {
                    None => format!("{}/{}", e.sampler, e.clip),
                    Some(c) => format!("{}/{} from {c}", e.sampler, e.clip),
                })
                .collect();
            s += &format!(
                "  {:<48} evals {}{}{}\n",
                c.id,
                evals.join(","),
                if c.checkpoints.is_empty() {
                    String::new()
                } else {
                    format!(", and after epochs {:?}", c.checkpoints)
                },
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
                    "estimated: {:.1} {on} hours ({:.0} min), defenses included\n",
                    t / 3600.0,
                    t / 60.0
                );
                // The base runs alone first; the cells then share the machine `jobs` at a time.
                if self.jobs > 1 {
                    let base = self.base_estimated_seconds.unwrap_or(0.0);
                    s += &format!(
                        "  with {} cells at once: about {:.0} min of wall-clock\n",
                        self.jobs,
                        (base + (t - base) / self.jobs as f64) / 60.0
                    );
                }
            }
            None => s += "estimated: unknown (no measured or assumed throughput)\n",
        }
        s
    }
}
