//! BadDiffusion itself (paper §3–4; official `baddiffusion.py`, `dataset.py`, `loss.py`): one cell's backdoor fine-tuning (or training from
//! scratch) — load the data, poison int(N·p) samples with the trigger and target, train with the
//! backdoor loss, and save the result as a diffusers pipeline that Python's diffusers loads.
//!
//! A clean model is the same run with `poison_rate = 0`.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::backdoor_loss::{backdoor_loss, BackdoorSchedule};
use crate::checkpoint;
use crate::datasets::named::Selection;
use crate::datasets::Dataset;
use crate::poison::PoisonedDataset;
use crate::rng::Rng;
use crate::scheduler::{NoiseSchedule, SamplerKind, SchedulerConfig};
use crate::training::trainer::{self, Objective, Observer, StepRecord, TrainSettings};
use crate::triggers::{ImageShape, Target, Trigger};
use crate::unet::{UNet2DConfig, UNet2DModel};

/// One cell of the experiment matrix, as `baddiff train --config cell.toml` reads it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    pub data: DataConfig,
    pub backdoor: BackdoorConfig,
    pub model: ModelConfig,
    pub train: TrainSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist`, `mnist`, `cifar10`, or `celeba-hq` / `image-folder` (a folder of PNGs).
    pub dataset: String,
    /// Where the files are; default: the cached artifact (Fashion-MNIST: Debian's copy).
    pub dir: Option<PathBuf>,
    /// `train`, `test` or `train+test` (the official CIFAR-10 runs train on train+test).
    #[serde(default = "default_split")]
    pub split: String,
    pub channels: usize,
    pub size: usize,
    /// Use only the first `limit` images (scale models).
    pub limit: Option<usize>,
}

fn default_split() -> String {
    "train".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackdoorConfig {
    pub trigger: String,
    pub target: String,
    pub poison_rate: f64,
    /// The official source images (default: the cached `baddiffusion-static` artifact).
    pub sources: Option<PathBuf>,
}

/// Where the weights start: a diffusers checkpoint to fine-tune, or a fresh model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "init", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelConfig {
    /// Fine-tune every layer of a diffusers model directory (the paper's main setting).
    Finetune { checkpoint: PathBuf },
    /// Fresh initialisation of `unet` (`scale`, `cifar10_32`, `celebahq_256`, or a config.json
    /// path) with `scheduler` (a diffusers scheduler config), as the paper's from-scratch runs.
    Scratch {
        unet: String,
        scheduler: serde_json::Value,
    },
}

/// What a finished (or resumed-and-finished) training run reports, also written as `train.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub config: AttackConfig,
    /// [`cell_key`] of the run (empty in records that predate it).
    #[serde(default)]
    pub cell_key: String,
    pub n_samples: usize,
    pub n_poisoned: usize,
    pub trigger_sha256: String,
    pub target_sha256: String,
    pub model_dir: PathBuf,
    pub weights_sha256: String,
    pub iterations: u64,
    /// The models kept after the epochs of `keep_epochs` (E6), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptModel>,
    /// Optimizer steps skipped on a float16 overflow (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: u64,
    pub final_loss: Option<f64>,
    pub seconds: f64,
    pub runtime: serde_json::Value,
}

/// A model kept after an intermediate epoch: a diffusers pipeline folder of its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeptModel {
    pub epoch: u64,
    pub model_dir: PathBuf,
    pub weights_sha256: String,
}

/// Where the model after `epoch` is kept within a run's output folder.
fn kept_dir(out: &Path, epoch: u64) -> PathBuf {
    out.join("checkpoints").join(format!("epoch-{epoch:06}"))
}

/// The kept models of `epochs`, each checked to be on disk; a missing one names the fix.
fn kept_models(out: &Path, epochs: &[u64]) -> Result<Vec<KeptModel>> {
    let mut epochs = epochs.to_vec();
    epochs.sort_unstable();
    epochs
        .into_iter()
        .map(|epoch| {
            let model_dir = kept_dir(out, epoch);
            let weights = model_dir.join("unet").join(checkpoint::WEIGHTS_SAFETENSORS);
            let weights_sha256 = checkpoint::sha256_file(&weights).with_context(|| {
                format!(
                    "the model kept after epoch {epoch} is missing ({}): delete {} to train this cell again",
                    weights.display(),
                    out.display()
                )
            })?;
            Ok(KeptModel {
                epoch,
                model_dir,
                weights_sha256,
            })
        })
        .collect()
}

impl AttackConfig {
    pub fn from_toml_file(path: &Path) -> Result<AttackConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: AttackConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid cell config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{} is not a valid cell config", path.display()))?;
        Ok(cfg)
    }
}

/// Loads a dataset as the config names it, prepared to its channels and size: the same
/// dataset selection as FID references (`datasets::named`), so training data and reference
/// sets are found and preprocessed one way.
pub fn load_dataset(cfg: &DataConfig) -> Result<Dataset> {
    let name = if cfg.dataset == "image-folder" {
        "celeba-hq"
    } else {
        cfg.dataset.as_str()
    };
    let mut spec = Selection::parse(&format!("{name}:{}@{}", cfg.split, cfg.size))?;
    spec.n = cfg.limit;
    spec.dir = cfg.dir.clone();
    spec.load(Some(cfg.channels))
}

/// The loss of one micro-batch: the official `p_losses_diffuser` on a poisoned batch.
struct BackdoorObjective<'a> {
    model: &'a UNet2DModel,
    data: &'a PoisonedDataset,
    schedule: BackdoorSchedule,
    device: Device,
}

impl Objective for BackdoorObjective<'_> {
    fn loss(&mut self, indices: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let batch = self.data.batch(indices, rng)?.to_device(self.device);
        // The official order of draws: the noise, then the timesteps.
        let noise = rng.randn(&batch.target.size()).to_device(self.device);
        let t = rng
            .randint(self.schedule.num_train_timesteps(), &[batch.len() as i64])
            .to_device(self.device);
        backdoor_loss(
            &self.schedule,
            &|x, t| self.model.forward_t(x, t, true),
            &batch,
            &t,
            &noise,
        )
    }
}

/// Exports the diffusers pipeline at each intermediate checkpoint (so a long run can be looked
/// at) and appends the loss log. The final model is exported by [`train`] itself, from the
/// final state, once that state is on disk.
struct RunObserver<'a> {
    vs: &'a nn::VarStore,
    config: &'a UNet2DConfig,
    scheduler_json: &'a serde_json::Value,
    model_dir: PathBuf,
    /// The run's output folder (kept models go under it).
    out: PathBuf,
    log: std::io::BufWriter<std::fs::File>,
    bar: indicatif::ProgressBar,
    last_loss: Option<f64>,
    /// Iterations done so far and in the whole run.
    done: u64,
    total: u64,
}

impl Observer for RunObserver<'_> {
    fn iteration(&mut self, r: &StepRecord) {
        if let Err(e) = serde_json::to_writer(&mut self.log, r)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(self.log))
        {
            self.bar
                .println(format!("warning: the loss log could not be written: {e}"));
        }
        self.last_loss = Some(r.loss);
        self.done = r.iteration + 1;
        self.bar.set_message(format!(
            "epoch {} loss {:.4} lr {:.2e}",
            r.epoch, r.loss, r.lr
        ));
        self.bar.inc(1);
    }

    fn checkpoint(&mut self, epoch: u64, _dir: &Path) -> Result<()> {
        self.log.flush().context("writing the loss log")?;
        if self.done < self.total {
            export_model(&self.model_dir, self.vs, self.config, self.scheduler_json)
                .with_context(|| format!("saving the model after epoch {epoch}"))?;
        }
        crate::files::failpoint("checkpoint.model")
    }

    fn keep(&mut self, epoch: u64) -> Result<()> {
        export_model(
            &kept_dir(&self.out, epoch),
            self.vs,
            self.config,
            self.scheduler_json,
        )
        .with_context(|| format!("keeping the model after epoch {epoch}"))?;
        Ok(())
    }
}

/// Writes the pipeline of `vs` to `model_dir` as a whole: into a fresh folder beside it, then
/// renamed into place, so `model_dir` never mixes two checkpoints' files.
fn export_model(
    model_dir: &Path,
    vs: &nn::VarStore,
    config: &UNet2DConfig,
    scheduler_json: &serde_json::Value,
) -> Result<checkpoint::WeightFile> {
    crate::files::remove_stale_temps(model_dir);
    let tmp = crate::files::temp_path(model_dir);
    let result = checkpoint::save_pipeline(&tmp, vs, config, scheduler_json)
        .and_then(|_| crate::files::replace_dir(&tmp, model_dir));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    let weights = model_dir.join("unet").join(checkpoint::WEIGHTS_SAFETENSORS);
    Ok(checkpoint::WeightFile {
        sha256: checkpoint::sha256_file(&weights)?,
        path: weights,
    })
}

/// The hash of everything that determines a cell's weights: its config (data, trigger, target,
/// poison rate, model, train settings and seed), the trigger, target and initial weights
/// actually used, and the code version. Only a run with the same key resumes a checkpoint or
/// reuses a finished result.
pub fn cell_key(
    cfg: &AttackConfig,
    trigger_sha256: &str,
    target_sha256: &str,
    init_sha256: Option<&str>,
) -> Result<String> {
    let v = serde_json::json!({
        "code_version": env!("CARGO_PKG_VERSION"),
        "config": cfg,
        "trigger_sha256": trigger_sha256,
        "target_sha256": target_sha256,
        "init_sha256": init_sha256,
    });
    Ok(crate::files::sha256_hex(
        serde_json::to_string(&v)?.as_bytes(),
    ))
}

/// A finished run in `out` for this cell, if its record is there and the model folder holds the
/// weights it names; a record of another cell is an error.
fn finished(out: &Path, cfg: &AttackConfig, key: &str) -> Result<Option<TrainSummary>> {
    let summary_path = out.join("train.json");
    let Ok(text) = std::fs::read_to_string(&summary_path) else {
        return Ok(None);
    };
    let Ok(done) = serde_json::from_str::<TrainSummary>(&text) else {
        return Ok(None);
    };
    // A record without a key predates keys: its config is all there is to compare.
    if &done.config != cfg || !(done.cell_key.is_empty() || done.cell_key == key) {
        bail!(
            "{} holds a finished run of another cell (other settings: its key {}, this run's {key}): \
             choose another --out, or delete {} to run this cell there",
            out.display(),
            if done.cell_key.is_empty() { "none recorded" } else { &done.cell_key },
            out.display()
        );
    }
    let weights = out.join("model/unet").join(checkpoint::WEIGHTS_SAFETENSORS);
    let kept_intact = kept_models(out, &cfg.train.keep_epochs)
        .map(|k| k == done.kept)
        .unwrap_or(false);
    if kept_intact
        && checkpoint::sha256_file(&weights).ok().as_deref() == Some(done.weights_sha256.as_str())
    {
        return Ok(Some(done));
    }
    // The model is not the one recorded: drop the record and export again from the state.
    std::fs::remove_file(&summary_path)
        .with_context(|| format!("removing {}", summary_path.display()))?;
    Ok(None)
}

/// Opens the loss log for appending, first dropping records at or after `from` (left by a run
/// that was killed after its last checkpoint), so a resumed log has each iteration once.
fn open_log(path: &Path, from: u64) -> Result<std::io::BufWriter<std::fs::File>> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<StepRecord>(l)
                    .map(|r| r.iteration < from)
                    .unwrap_or(false)
            })
            .collect();
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        std::fs::write(path, body)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(std::io::BufWriter::new(file))
}

/// Runs one cell into `out`: `out/model` (diffusers pipeline), `out/state` (resume state, removed
/// once the run is finished), `out/train_log.jsonl` (loss per iteration), `out/train.json`
/// (summary). Rerunning on the same `out` resumes from the last checkpoint; a finished run
/// returns its summary at once.
///
/// The write order makes the finished model a function of the final state: the state is saved,
/// then the model is exported from it (as a whole), then `train.json` is written. A rerun after
/// a kill anywhere in that sequence loads the final state and exports again; a `train.json`
/// whose model does not match is not reported. `out` is locked for the whole run.
pub fn train(
    cfg: &AttackConfig,
    out: &Path,
    device: Device,
    progress: bool,
) -> Result<TrainSummary> {
    let started = std::time::Instant::now();
    let _lock = crate::files::OutputLock::acquire(out)?;
    let shape = ImageShape::new(cfg.data.channels, cfg.data.size)?;
    let trigger: Trigger = cfg.backdoor.trigger.parse()?;
    let target: Target = cfg.backdoor.target.parse()?;
    let sources = crate::inputs::source_images(cfg.backdoor.sources.as_deref())?;
    let g = trigger.build(shape, &sources)?;
    let y = target.build(&g, &sources)?;
    let trigger_sha256 = crate::tensor_io::tensor_sha256(&g);
    let target_sha256 = crate::tensor_io::tensor_sha256(&y);

    // Model and its noise schedule.
    let (vs, model, unet_config, scheduler_json, init_sha256) = match &cfg.model {
        ModelConfig::Finetune { checkpoint: dir } => {
            let ck = checkpoint::load(dir, device)?;
            let sched = ck.scheduler_config.clone().with_context(|| {
                format!(
                    "{} has no scheduler config: cannot know the noise schedule to fine-tune with",
                    dir.display()
                )
            })?;
            let sha = ck.weights.safetensors.sha256.clone();
            (ck.vs, ck.model, ck.config, sched, Some(sha))
        }
        ModelConfig::Scratch { unet, scheduler } => {
            let config = unet_config(unet, &cfg.data)?;
            let vs = nn::VarStore::new(device);
            let mut rng = Rng::seeded(crate::rng::derive_seed(cfg.train.seed, u64::MAX / 2));
            let model = rng.with(|| UNet2DModel::new(vs.root(), &config))?;
            (vs, model, config, scheduler.clone(), None)
        }
    };
    check_model_fits(&unet_config, &cfg.data)?;
    let key = cell_key(cfg, &trigger_sha256, &target_sha256, init_sha256.as_deref())?;
    if let Some(done) = finished(out, cfg, &key)? {
        return Ok(done);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    checkpoint::write_atomic(
        &out.join("config.toml"),
        toml::to_string_pretty(cfg)?.as_bytes(),
    )?;

    let data = load_dataset(&cfg.data)?;
    let resolved = SchedulerConfig::from_json(&scheduler_json)?.resolve(SamplerKind::Ddpm)?;
    let noise = NoiseSchedule::new(&resolved)?;
    let schedule = BackdoorSchedule::from_betas(&noise.betas);

    let mut rng = Rng::seeded(crate::rng::derive_seed(cfg.train.seed, u64::MAX / 3));
    let poisoned = PoisonedDataset::new(
        data,
        g.shallow_clone(),
        y.shallow_clone(),
        cfg.backdoor.poison_rate,
        &mut rng,
    )?;
    drop(rng);

    let n = poisoned.len();
    let per_epoch = n.div_ceil(cfg.train.batch as usize) as u64;
    let total = cfg.train.total_iterations(per_epoch);
    cfg.train.validate()?;
    // A run cut short by `steps` ends before some epochs it was to keep.
    if let Some(&e) = cfg
        .train
        .keep_epochs
        .iter()
        .find(|&&e| e * per_epoch >= total)
    {
        bail!(
            "keep_epochs: epoch {e} ends after iteration {}, but the run stops after {total} (steps = {:?}): \
             keep only epochs the run finishes before its last",
            e * per_epoch,
            cfg.train.steps
        );
    }
    let bar = crate::progress::bar(
        total,
        "train {bar:30} {pos}/{len} it [{elapsed} < {eta}, {per_sec}] {msg}",
        progress,
    );
    let state_dir = out.join("state");
    let resume_from = trainer::iterations_done(&state_dir, &key)?;
    bar.set_position(resume_from);
    let log_path = out.join("train_log.jsonl");
    let log = open_log(&log_path, resume_from)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let model_dir = out.join("model");
    let mut observer = RunObserver {
        vs: &vs,
        config: &unet_config,
        scheduler_json: &scheduler_json,
        model_dir: model_dir.clone(),
        out: out.to_path_buf(),
        log,
        bar,
        last_loss: None,
        done: resume_from,
        total,
    };
    let mut objective = BackdoorObjective {
        model: &model,
        data: &poisoned,
        schedule,
        device,
    };
    let state = trainer::train(
        &vs,
        &mut objective,
        n as i64,
        &cfg.train,
        &key,
        &state_dir,
        &mut observer,
    )?;
    observer.bar.finish_and_clear();

    // `vs` now holds the final state's weights, trained here or loaded from its checkpoint.
    let weights = export_model(&model_dir, &vs, &unet_config, &scheduler_json)
        .context("saving the final model")?;
    let kept = kept_models(out, &cfg.train.keep_epochs)?;
    let summary = TrainSummary {
        config: cfg.clone(),
        cell_key: key,
        n_samples: n,
        n_poisoned: poisoned.num_poisoned(),
        trigger_sha256,
        target_sha256,
        model_dir,
        weights_sha256: weights.sha256,
        iterations: state.iterations_done,
        kept,
        skipped_steps: state.skipped_steps,
        final_loss: observer.last_loss,
        seconds: started.elapsed().as_secs_f64(),
        runtime: crate::runtime_info(),
    };
    crate::files::failpoint("summary")?;
    checkpoint::write_atomic(
        &out.join("train.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    // The resume state (weights and Adam's two moments: three times the model) serves only an
    // unfinished run; a matrix keeps hundreds of finished ones. A finished model found damaged
    // later is trained again from the start. Renamed first, so no half-deleted state is read.
    let doomed = out.join("state.finished");
    if state_dir.exists() || doomed.exists() {
        let removed = match state_dir.exists() {
            true => std::fs::rename(&state_dir, &doomed),
            false => Ok(()),
        }
        .and_then(|()| std::fs::remove_dir_all(&doomed));
        if let Err(e) = removed {
            eprintln!("warning: could not remove {}: {e}", state_dir.display());
        }
    }
    Ok(summary)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn check_model_fits(unet: &UNet2DConfig, data: &DataConfig) -> Result<()> {
    let (h, w) = unet.sample_size.map(|s| s.hw()).unwrap_or((0, 0));
    if unet.in_channels != data.channels as i64 || h != data.size as i64 || w != data.size as i64 {
        bail!(
            "the model takes {} channel(s) at {h}×{w}, the data are {} channel(s) at {}×{}: set data.channels/size to the model's",
            unet.in_channels,
            data.channels,
            data.size,
            data.size
        );
    }
    Ok(())
}

/// A UNet configuration by name (`scale`, `cifar10_32`, `celebahq_256`) or a `config.json` path.
pub fn unet_config(name: &str, data: &DataConfig) -> Result<UNet2DConfig> {
    Ok(match name {
        "scale" => UNet2DConfig::scale(data.size as i64, data.channels as i64),
        "cifar10_32" => UNet2DConfig::cifar10_32(),
        "celebahq_256" => UNet2DConfig::celebahq_256(),
        path if Path::new(path).is_file() => UNet2DConfig::from_file(Path::new(path))?,
        other => bail!(
            "unet `{other}` is neither a known UNet (scale, cifar10_32, celebahq_256) nor a \
             config.json file"
        ),
    })
}

mod validate;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod tests;
