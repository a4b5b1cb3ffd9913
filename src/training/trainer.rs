//! The training loop of the official code (official `baddiffusion.py`, `train_loop`), generic over what is trained and on what.
//!
//! Per micro-batch iteration: draw (from a seed derived from the run seed and the iteration) the
//! batch's randomness, compute the loss, backpropagate loss / accumulation; every
//! `accumulation` iterations (and at the end of each epoch, as accelerate does) clip the
//! gradient norm to `grad_clip` and take an Adam step. The learning-rate schedule counts
//! iterations, as the official code's `lr_sched.step()` runs on every iteration.
//!
//! Deviation (documented): the official code draws from an unseeded global generator that its
//! sampling calls reseed to 0 mid-training; we seed every iteration from (seed, iteration) so
//! that a resumed run equals an uninterrupted one.
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::adam::Adam;
use super::grad_scaler::GradScaler;
use super::lr_schedule::CosineWithWarmup;
use super::update::{Step, Update};
use crate::rng::{derive_seed, Rng};

/// How one cell trains: the official code's settings (`baddiffusion.py`), in the units the official code uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub epochs: u64,
    /// Micro-batch size; gradients accumulate to `effective_batch` (128 at 32 px, 64 at 256 px).
    pub batch: i64,
    pub effective_batch: i64,
    pub learning_rate: f64,
    #[serde(default = "default_warmup")]
    pub warmup_steps: u64,
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Write a resumable checkpoint every this many epochs (and after the last).
    #[serde(default = "default_save_every")]
    pub save_every_epochs: u64,
    /// Epochs after which the model is also kept as a pipeline of its own
    /// (`checkpoints/epoch-NNNNNN`), for measuring the epochs a backdoor needs (E6; the official
    /// code saves every `save_model_epochs = 5` and scores intermediate epochs as `*_ep{n}`).
    /// Each must be below `epochs`: the last epoch is the model itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_epochs: Vec<u64>,
    /// Default 0; a profile's cells set it from their seed.
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many iterations even mid-epoch (a run's length given in steps rather than
    /// epochs); the learning-rate schedule then spans these steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// `fp16`: float16 autocast with loss scaling, on CUDA (the official code's accelerate
    /// setting); unset: float32 everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<MixedPrecision>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    Fp16,
    Bf16,
}

fn default_warmup() -> u64 {
    500
}
fn default_clip() -> f64 {
    1.0
}
fn default_save_every() -> u64 {
    5
}

impl TrainSettings {
    /// Iterations of the whole run: `epochs` full passes, or `steps` if that is fewer.
    pub fn total_iterations(&self, batches_per_epoch: u64) -> u64 {
        let full = batches_per_epoch * self.epochs;
        self.steps.map_or(full, |s| s.min(full))
    }

    /// Checks every number before a run starts: a zero batch divides by zero, a zero or negative
    /// learning rate, effective batch or clip trains backwards or learns nothing without a word,
    /// and `epochs = 0` trains nothing (and would later look for a model that was never written).
    pub fn validate(&self) -> Result<()> {
        use crate::validate::{at_least_one, positive};
        at_least_one("epochs", self.epochs)?;
        at_least_one("batch", self.batch)?;
        at_least_one("effective_batch", self.effective_batch)?;
        positive("learning_rate", self.learning_rate)?;
        positive("grad_clip", self.grad_clip)?;
        at_least_one("save_every_epochs", self.save_every_epochs)?;
        if let Some(steps) = self.steps {
            at_least_one("steps", steps)?;
        }
        for &e in &self.keep_epochs {
            ensure!(
                (1..self.epochs).contains(&e),
                "keep_epochs: epoch {e} is not between 1 and {} (epochs - 1): the last epoch is the finished model itself",
                self.epochs - 1
            );
        }
        Ok(())
    }

    pub fn accumulation(&self) -> Result<i64> {
        self.validate()?;
        ensure!(
            self.effective_batch % self.batch == 0,
            "batch {} does not divide the effective batch {}: pick a batch that divides it",
            self.batch,
            self.effective_batch
        );
        Ok(self.effective_batch / self.batch)
    }
}

/// What is trained: the loss of one micro-batch, with all its randomness from `rng`.
pub trait Objective {
    fn loss(&mut self, indices: &Tensor, rng: &mut Rng) -> Result<Tensor>;
}

/// Progress and the loss log: one call per iteration.
pub trait Observer {
    fn iteration(&mut self, _record: &StepRecord) {}
    fn checkpoint(&mut self, _epoch: u64, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// The end of an epoch listed in `keep_epochs`, before any resume state of it is saved (a
    /// run killed in between redoes the epoch and keeps it again).
    fn keep(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub iteration: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    /// Gradient norm before clipping, on iterations that took an optimizer step.
    pub grad_norm: Option<f64>,
    /// The optimizer step of this iteration was skipped (float16 overflow).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// The counters a resumed run continues from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// The caller's hash of everything that determines the result (for a cell: data, trigger,
    /// target, poison rate, seed, settings, code version): a checkpoint is continued only by
    /// the run with the same key, never by another cell aimed at the same directory.
    #[serde(default)]
    pub cell_key: String,
    pub epochs_done: u64,
    pub iterations_done: u64,
    pub settings: TrainSettings,
    /// The loss scale of a float16 run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<GradScaler>,
    /// Optimizer steps skipped because loss scaling found an overflow (float16 only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: u64,
    /// Iterations at which the learning-rate schedule did not advance: the schedule's position
    /// is `iterations_done - schedule_held`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schedule_held: u64,
    /// Whether the most recent optimizer step was skipped; accelerate holds the schedule until a
    /// step is taken again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_step_skipped: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

const STATE_JSON: &str = "train_state.json";
const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";

/// Trains the variables of `vs` on `n_samples` samples; checkpoints go to `state_dir`, and if a
/// checkpoint of the same `cell_key` is already there, training resumes from it (a finished one
/// only loads its weights into `vs`, so the caller can export them again).
pub fn train(
    vs: &nn::VarStore,
    objective: &mut dyn Objective,
    n_samples: i64,
    settings: &TrainSettings,
    cell_key: &str,
    state_dir: &Path,
    observer: &mut dyn Observer,
) -> Result<TrainState> {
    ensure!(n_samples > 0, "the training set is empty");
    match settings.mixed_precision {
        None => {}
        Some(MixedPrecision::Bf16) => bail!(
            "mixed_precision = \"bf16\": tch exposes CUDA autocast only with its float16 default; use \"fp16\", or remove the setting to train in float32"
        ),
        Some(MixedPrecision::Fp16) => ensure!(
            vs.device().is_cuda(),
            "mixed_precision = \"fp16\" needs a CUDA device (libtorch autocasts on CUDA only) but this run is on {:?}: remove the setting to train in float32",
            vs.device()
        ),
    }
    let loss_scaling = settings.mixed_precision.is_some();
    train_loop(
        vs,
        objective,
        n_samples,
        settings,
        cell_key,
        state_dir,
        observer,
        loss_scaling,
    )
}

/// [`train`] after its device checks; `loss_scaling` runs the float16 step logic (on the CPU only
/// in tests, where autocast does nothing but the scaler's skips and back-offs are the same).
fn train_loop(
    vs: &nn::VarStore,
    objective: &mut dyn Objective,
    n_samples: i64,
    settings: &TrainSettings,
    cell_key: &str,
    state_dir: &Path,
    observer: &mut dyn Observer,
    loss_scaling: bool,
) -> Result<TrainState> {
    let accumulation = settings.accumulation()?;
    let batches_per_epoch = (n_samples + settings.batch - 1) / settings.batch;
    let schedule = CosineWithWarmup {
        base_lr: settings.learning_rate,
        warmup: settings.warmup_steps,
        total: settings.total_iterations(batches_per_epoch as u64),
    };
    let total = schedule.total;
    let mut update = Update::new(vs, settings.grad_clip, accumulation);
    let mut state = TrainState {
        cell_key: cell_key.to_string(),
        epochs_done: 0,
        iterations_done: 0,
        settings: settings.clone(),
        scaler: loss_scaling.then(GradScaler::default),
        skipped_steps: 0,
        schedule_held: 0,
        last_step_skipped: false,
    };
    if state_dir.join(STATE_JSON).exists() {
        state = load_state(vs, &mut update.adam, state_dir, settings, cell_key)?;
    }
    let mut rng = Rng::seeded(settings.seed);
    while state.epochs_done < settings.epochs && state.iterations_done < total {
        let epoch = state.epochs_done;
        rng.reseed(derive_seed(settings.seed, u64::MAX - epoch));
        let order = Tensor::randperm(n_samples, (Kind::Int64, tch::Device::Cpu));
        update.zero_grad();
        for b in 0..batches_per_epoch {
            if state.iterations_done == total {
                break;
            }
            let iteration = state.iterations_done;
            rng.reseed(derive_seed(settings.seed, iteration));
            let indices = order.narrow(
                0,
                b * settings.batch,
                settings.batch.min(n_samples - b * settings.batch),
            );
            let loss = match state.scaler {
                Some(_) => tch::autocast(true, || objective.loss(&indices, &mut rng))?,
                None => objective.loss(&indices, &mut rng)?,
            };
            let loss_value = loss.double_value(&[]);
            // In float32 a non-finite loss is a diverged run. Under loss scaling it is what an
            // overflow looks like: its gradients are not finite, so the step is skipped.
            if !loss_value.is_finite() && state.scaler.is_none() {
                bail!("the loss is {loss_value} at iteration {iteration} (epoch {epoch}): lower the learning rate or check the data");
            }
            let lr = schedule.lr(iteration - state.schedule_held);
            let sync = (b + 1) % accumulation == 0
                || b + 1 == batches_per_epoch
                || state.iterations_done + 1 == total;
            let step = update.apply(&loss, lr, sync, state.scaler.as_mut());
            match step {
                Step::Skipped => {
                    state.skipped_steps += 1;
                    state.last_step_skipped = true;
                }
                Step::Taken { .. } => state.last_step_skipped = false,
                Step::Accumulated => {}
            }
            // accelerate 0.11.0 (the official code's pin), AcceleratedScheduler.step: the
            // schedule does not advance while the optimizer's last step was skipped, including
            // the accumulation iterations after it.
            if state.last_step_skipped {
                state.schedule_held += 1;
            }
            state.iterations_done += 1;
            observer.iteration(&StepRecord {
                iteration,
                epoch,
                loss: loss_value,
                lr,
                grad_norm: step.grad_norm(),
                skipped: step == Step::Skipped,
            });
        }
        state.epochs_done += 1;
        let last = state.epochs_done == settings.epochs || state.iterations_done == total;
        if !last && settings.keep_epochs.contains(&state.epochs_done) {
            observer.keep(state.epochs_done)?;
        }
        if last || state.epochs_done % settings.save_every_epochs.max(1) == 0 {
            save_state(vs, &update.adam, &state, state_dir)?;
            observer.checkpoint(state.epochs_done, state_dir)?;
        }
    }
    Ok(state)
}

/// The checkpoint record in `dir` (`None` when there is none) and the state inside it.
fn read_state(dir: &Path) -> Result<Option<(serde_json::Value, TrainState)>> {
    let path = dir.join(STATE_JSON);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is corrupt: delete {} to train from the start",
            path.display(),
            dir.display()
        )
    })?;
    let state: TrainState = serde_json::from_value(json["state"].clone())
        .with_context(|| format!("{} is not a training state", path.display()))?;
    Ok(Some((json, state)))
}

/// How many iterations the checkpoint in `state_dir` has done for the run `cell_key` (0 when
/// there is none): where a resumed run continues. A checkpoint of another cell is an error here,
/// before the caller touches anything of the other run (its loss log, say).
pub fn iterations_done(state_dir: &Path, cell_key: &str) -> Result<u64> {
    match read_state(state_dir)? {
        Some((_, s)) => {
            check_key(state_dir, &s, cell_key)?;
            Ok(s.iterations_done)
        }
        None => Ok(0),
    }
}

/// Refuses a checkpoint that another cell wrote.
fn check_key(dir: &Path, state: &TrainState, cell_key: &str) -> Result<()> {
    if state.cell_key != cell_key {
        let theirs = match state.cell_key.as_str() {
            "" => "none recorded",
            k => k,
        };
        bail!(
            "{} holds a checkpoint of another cell (its key {theirs}, this run's {cell_key}): \
             choose another --out, or delete {} to start this cell over",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes weights, optimizer moments and counters; the JSON is written last and atomically, so
/// a run killed mid-write resumes from the previous complete checkpoint.
fn save_state(vs: &nn::VarStore, adam: &Adam, state: &TrainState, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tag = format!("{:06}", state.epochs_done);
    let weights = dir.join(format!("{tag}.{WEIGHTS}"));
    vs.save(&weights)
        .with_context(|| format!("writing {}", weights.display()))?;
    crate::files::failpoint("checkpoint.weights")?;
    let optimizer = dir.join(format!("{tag}.{OPTIMIZER}"));
    Tensor::write_safetensors(&adam.state(), &optimizer)
        .with_context(|| format!("writing {}", optimizer.display()))?;
    crate::files::failpoint("checkpoint.optimizer")?;
    let json = serde_json::json!({ "state": state, "weights": weights.file_name().unwrap().to_string_lossy(),
        "optimizer": optimizer.file_name().unwrap().to_string_lossy() });
    crate::checkpoint::write_atomic(
        &dir.join(STATE_JSON),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    crate::files::failpoint("checkpoint.state")?;
    // Older checkpoints are no longer needed once the new one is recorded.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if (name.ends_with(WEIGHTS) || name.ends_with(OPTIMIZER)) && !name.starts_with(&tag) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    crate::files::failpoint("checkpoint.pruned")
}

fn load_state(
    vs: &nn::VarStore,
    adam: &mut Adam,
    dir: &Path,
    settings: &TrainSettings,
    cell_key: &str,
) -> Result<TrainState> {
    let path = dir.join(STATE_JSON);
    let (json, state) =
        read_state(dir)?.with_context(|| format!("{} is missing", path.display()))?;
    check_key(dir, &state, cell_key)?;
    if &state.settings != settings {
        bail!(
            "{} holds a run with other settings ({:?}); use another output directory or delete it to start over",
            dir.display(),
            state.settings
        );
    }
    let file = |k: &str| -> Result<PathBuf> {
        Ok(dir.join(
            json[k]
                .as_str()
                .with_context(|| format!("{} names no {k} file", path.display()))?,
        ))
    };
    crate::checkpoint::load_weights(vs, &file("weights")?)
        .with_context(|| format!("loading the checkpoint in {}", dir.display()))?;
    let opt = Tensor::read_safetensors(file("optimizer")?)
        .with_context(|| format!("reading the optimizer state in {}", dir.display()))?;
    adam.load_state(&opt)?;
    Ok(state)
}

#[cfg(test)]
mod tests;
