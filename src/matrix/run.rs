//! Runs a cell as stages through the stage cache: base (once per profile) → train → sample
//! (clean and backdoor, per evaluation) → measure → defend, and turns the measurements into
//! frame rows. Each stage's key holds the keys or hashes of its inputs, so a changed setting
//! reruns exactly the stages downstream of it.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Device, Tensor};

use super::profile::FidNetwork;
use super::stage::{StageKey, StageKind, StageRecord, StageStore};
use super::{Cell, Eval, FrameRow, Profile, Training};
use crate::attack::{self, AttackConfig, BackdoorConfig, ModelConfig, TrainSummary};
use crate::metrics::fid::{self, FeatureCache, FeatureNet, FidInput, FidOptions};
use crate::metrics::image_set::{Channels, ImageSet};
use crate::metrics::protocol::MetricRow;
use crate::metrics::ssim::SsimConfig;
use crate::pipeline::{self, Pipeline, PipelineOptions};
use crate::triggers::{ImageShape, Target, Trigger};

/// Everything a cell needs besides its own settings.
pub struct Cells {
    pub profile: Profile,
    pub store: StageStore,
    pub device: Device,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub progress: bool,
    /// Pre-train the clean base even where the profile ships its result.
    pub retrain_base: bool,
}

/// The clean model every fine-tune starts from and every 0 % cell measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaseModel {
    pub model_dir: PathBuf,
    pub weights_sha256: String,
}

/// A trigger as a sample stage's key names it: its name and its tensor's hash.
fn trigger_id(trigger: Option<(&str, &Tensor)>) -> serde_json::Value {
    json!(trigger.map(|(name, t)| json!([name, crate::tensor_io::tensor_sha256(t)])))
}

/// A cell's model and the intermediate models its training kept (E6).
struct Trained {
    model: BaseModel,
    kept: Vec<attack::KeptModel>,
}

/// Where a stage's samples are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleOutput {
    pub dir: PathBuf,
    pub n: usize,
    pub seconds: f64,
}

/// What one cell produced.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: Cell,
    pub rows: Vec<FrameRow>,
    pub stages: Vec<StageRecord>,
}

impl Cells {
    fn shape(&self) -> Result<ImageShape> {
        ImageShape::new(self.profile.data.channels, self.profile.data.size)
    }

    /// The base stage: pre-train the clean model (or use the shipped result of that very
    /// pre-training), or locate the released checkpoint.
    pub fn base(&self) -> Result<(BaseModel, StageRecord)> {
        match &self.profile.base {
            super::profile::Base::Pretrain {
                unet,
                scheduler,
                train,
                shipped,
                ..
            } => {
                let cfg = pretrain_config(&self.profile.data, unet, scheduler, train);
                if let (Some(artifact), false) = (shipped, self.retrain_base) {
                    let dir = crate::inputs::artifact_dir(artifact)?;
                    check_shipped_base(&dir, artifact, &cfg)?;
                    return self.checkpoint_base(artifact, dir);
                }
                let key = StageKey::new(StageKind::Base, json!({ "config": cfg }));
                let (summary, rec) = self.store.run(&key, "clean base model", |dir| {
                    let cell_threads = tch::get_num_threads();
                    if let (Device::Cpu, Some(n)) = (self.device, self.profile.base_threads()) {
                        tch::set_num_threads(n as i32);
                    }
                    let trained = attack::train(&cfg, dir, self.device, self.progress);
                    tch::set_num_threads(cell_threads);
                    trained
                })?;
                Ok((
                    BaseModel {
                        model_dir: summary.model_dir,
                        weights_sha256: summary.weights_sha256,
                    },
                    rec,
                ))
            }
            super::profile::Base::Checkpoint { artifact } => {
                self.checkpoint_base(artifact, crate::inputs::artifact_dir(artifact)?)
            }
        }
    }

    /// A base model that is a diffusers folder in the artifact cache. The stage key holds the
    /// weights' sha256, not only the artifact's name: a new version of the artifact (a retrained
    /// shipped base, say) is a new base, and every stage after it runs again.
    pub(crate) fn checkpoint_base(
        &self,
        artifact: &str,
        dir: PathBuf,
    ) -> Result<(BaseModel, StageRecord)> {
        let unet_dir = crate::checkpoint::locate(&dir)?.unet_dir;
        let weights_sha256 =
            crate::checkpoint::sha256_file(&unet_dir.join(crate::checkpoint::WEIGHTS_SAFETENSORS))
                .or_else(|_| {
                    crate::checkpoint::sha256_file(&unet_dir.join(crate::checkpoint::WEIGHTS_BIN))
                })?;
        let key = StageKey::new(
            StageKind::Base,
            json!({ "artifact": artifact, "weights_sha256": weights_sha256 }),
        );
        self.store.run(&key, artifact, |_| {
            Ok(BaseModel {
                weights_sha256: weights_sha256.clone(),
                model_dir: dir.clone(),
            })
        })
    }

    /// The cell's model: the base itself (0 %), a fine-tune of it, or a from-scratch run.
    fn model(&self, cell: &Cell, base: &BaseModel) -> Result<(Trained, Option<StageRecord>)> {
        let Some(train) = self.profile.train_settings(cell) else {
            return Ok((
                Trained {
                    model: base.clone(),
                    kept: vec![],
                },
                None,
            ));
        };
        let backdoor = BackdoorConfig {
            trigger: cell.trigger.clone(),
            target: cell.target.clone(),
            poison_rate: cell.poison_rate,
            sources: None,
        };
        let (model, inputs) = match cell.training {
            Training::Scratch => {
                let s = self
                    .profile
                    .scratch
                    .as_ref()
                    .context("the profile has no [scratch] table")?;
                let scheduler = match &s.scheduler {
                    Some(v) => v.clone(),
                    // The cell's config is written as TOML, which has no null: a checkpoint's
                    // `"trained_betas": null` goes, as diffusers reads a missing field as null.
                    None => without_nulls(
                        crate::checkpoint::load(&base.model_dir, Device::Cpu)?
                            .scheduler_config
                            .context("the base model has no scheduler config")?,
                    ),
                };
                let model = ModelConfig::Scratch {
                    unet: s.unet.clone(),
                    scheduler,
                };
                (model.clone(), json!(model))
            }
            _ => (
                ModelConfig::Finetune {
                    checkpoint: base.model_dir.clone(),
                },
                json!({ "finetune": base.weights_sha256 }),
            ),
        };
        let cfg = AttackConfig {
            data: self.profile.data.clone(),
            backdoor,
            model,
            train,
        };
        let key = StageKey::new(
            StageKind::Train,
            json!({ "data": cfg.data, "backdoor": cfg.backdoor, "model": inputs, "train": cfg.train }),
        );
        let (summary, rec): (TrainSummary, _) = self.store.run(&key, &cell.id, |dir| {
            attack::train(&cfg, dir, self.device, self.progress)
        })?;
        Ok((
            Trained {
                model: BaseModel {
                    model_dir: summary.model_dir,
                    weights_sha256: summary.weights_sha256,
                },
                kept: summary.kept,
            },
            Some(rec),
        ))
    }

    fn sample(
        &self,
        model: &BaseModel,
        eval: &Eval,
        trigger: Option<(&str, &Tensor)>,
        seed: u64,
        label: &str,
    ) -> Result<(SampleOutput, StageKey, StageRecord)> {
        let key = self.sample_key(model, eval, seed, ("trigger", trigger_id(trigger)));
        let (out, rec) = self.store.run(&key, label, |dir| {
            let opts = self.pipeline_options(eval, seed);
            let mut pipe = Pipeline::load(&model.model_dir, &opts)?;
            let trig = trigger.map(|(name, t)| pipeline::TriggerTensor {
                name: name.into(),
                tensor: t.shallow_clone(),
            });
            let png = dir.join("png");
            let _ = std::fs::remove_dir_all(&png);
            let run = pipe.sample_to_dir(&opts, trig.as_ref(), &png)?;
            Ok(SampleOutput {
                dir: png,
                n: run.png_files,
                seconds: run.seconds,
            })
        })?;
        Ok((out, key, rec))
    }

    /// A sample stage's key: the model, the evaluation, the profile's N and batch, the seed, and
    /// `start` (where x_T comes from: the trigger added to noise, or E7's corrupted images).
    fn sample_key(
        &self,
        model: &BaseModel,
        eval: &Eval,
        seed: u64,
        (name, start): (&str, serde_json::Value),
    ) -> StageKey {
        let m = &self.profile.measure;
        let mut inputs = json!({
            "model": model.weights_sha256,
            "eval": eval,
            "n": m.n,
            "batch": m.batch,
            "seed": seed,
        });
        inputs[name] = start;
        StageKey::new(StageKind::Sample, inputs)
    }

    /// How every sample set of this profile is drawn with `eval`.
    fn pipeline_options(&self, eval: &Eval, seed: u64) -> PipelineOptions {
        let m = &self.profile.measure;
        PipelineOptions {
            sampler: eval.sampler,
            steps: eval.steps,
            clip: Some(eval.clip),
            override_scheduler: true,
            n: m.n,
            seed,
            batch: m.batch,
            device: self.device,
            progress: self.progress,
        }
    }

    /// MSE, MSE-threshold rate and SSIM to the target, plus FID (or its proxy) for clean samples.
    fn measure(
        &self,
        samples: &SampleOutput,
        sample_key: &StageKey,
        target: &Tensor,
        with_fid: bool,
        label: &str,
    ) -> Result<(Vec<MetricRow>, StageRecord)> {
        let m = &self.profile.measure;
        let target_sha = crate::tensor_io::tensor_sha256(target);
        let key = StageKey::new(
            StageKind::Measure,
            json!({
                "samples": sample_key.key,
                "target": target_sha,
                "threshold": m.threshold,
                "fid": with_fid.then(|| json!([m.fid, m.reference, m.reference_n])),
            }),
        );
        self.store.run(&key, label, |_| {
            let set = ImageSet::read_png_dir(&samples.dir, None, Channels::Native)?;
            let mut rows = crate::metrics::target_metrics(
                &set,
                target,
                &target_sha,
                &SsimConfig::default(),
                m.threshold,
            )?;
            if with_fid {
                rows.push(self.fid(&samples.dir)?);
            }
            Ok(rows)
        })
    }

    /// E7: samples from corrupted dataset images (poisoned with the trigger when `trigger` is
    /// given) and their metrics: poisoned inputs against the target `y`, unpoisoned ones against
    /// their own uncorrupted image (`crate::inpainting`).
    #[allow(clippy::too_many_arguments)]
    fn corrupted(
        &self,
        model: &BaseModel,
        eval: &Eval,
        corruption: crate::inpainting::Corruption,
        trigger: Option<(&str, &Tensor)>,
        y: &Tensor,
        seed: u64,
        label: &str,
    ) -> Result<(Vec<MetricRow>, Vec<StageRecord>)> {
        let m = &self.profile.measure;
        let data = &self.profile.data;
        // Loaded once, and only when sampling runs or the unpoisoned set is scored.
        let loaded = std::cell::OnceCell::new();
        let images = || -> Result<Tensor> {
            if let Some(x) = loaded.get() {
                return Ok(Tensor::shallow_clone(x));
            }
            let set = attack::load_dataset(data)?;
            let have = set.images.size()[0];
            anyhow::ensure!(
                have >= m.n as i64,
                "E7 corrupts the first {} images of {} but it has {have}: lower [measure] n or raise [data] limit",
                m.n,
                data.dataset
            );
            let x = crate::pil::normalize_u8(&set.images.narrow(0, 0, m.n as i64));
            Ok(Tensor::shallow_clone(loaded.get_or_init(|| x)))
        };
        let start =
            json!({ "data": data, "corruption": corruption, "trigger": trigger_id(trigger) });
        let key = self.sample_key(model, eval, seed, ("start", start));
        let (samples, rec) = self.store.run(&key, label, |dir| {
            let start = crate::inpainting::corrupted_inputs(
                &images()?,
                trigger.map(|(_, t)| t),
                corruption,
                seed,
            )?;
            let opts = self.pipeline_options(eval, seed);
            let mut pipe = Pipeline::load(&model.model_dir, &opts)?;
            let png = dir.join("png");
            let _ = std::fs::remove_dir_all(&png);
            let run = pipe.sample_from_to_dir(&opts, &start, &png)?;
            Ok(SampleOutput {
                dir: png,
                n: run.png_files,
                seconds: run.seconds,
            })
        })?;
        // Poisoned inputs are scored against the target, unpoisoned ones against themselves.
        let reference = match trigger {
            Some(_) => y.shallow_clone(),
            None => images()?,
        };
        let (metrics, measured) = self.measure(&samples, &key, &reference, false, label)?;
        Ok((metrics, vec![rec, measured]))
    }

    pub(super) fn fid(&self, dir: &Path) -> Result<MetricRow> {
        let m = &self.profile.measure;
        let cache_dir = fid::default_cache_dir();
        let net: Box<dyn FeatureNet> = match m.fid {
            FidNetwork::ProxyFmnist => {
                let training = crate::metrics::proxy::fmnist::FmnistTraining::default();
                let mut rng = crate::rng::Rng::seeded(training.seed);
                let trained = crate::metrics::proxy::fmnist::train_or_load(
                    None,
                    self.profile.data.size,
                    self.profile.data.channels,
                    &training,
                    &cache_dir,
                    self.device,
                    &mut rng,
                )?;
                Box::new(trained.net)
            }
            FidNetwork::Inception => {
                let weights = crate::metrics::inception::default_weights()?;
                Box::new(crate::metrics::inception::FidInceptionV3::from_safetensors(
                    &weights,
                    self.device,
                )?)
            }
        };
        let mut reference = FidInput::parse(&m.reference)?;
        if let FidInput::Reference(spec) = &mut reference {
            spec.n = m.reference_n;
        }
        fid::fid(
            &FidInput::Images(dir.to_path_buf()),
            &reference,
            net.as_ref(),
            &FeatureCache::new(cache_dir),
            &FidOptions {
                batch: m.batch,
                limit: None,
                reference_split: None,
            },
        )
    }

    /// Runs every stage of `cell` and writes `cells/<id>/{rows,stages}.json` and sample
    /// previews into the run directory.
    pub fn run_cell(&self, cell: &Cell) -> Result<CellResult> {
        // One process per cell of a run: a second one aimed at the same cell is refused.
        // (The lock files sit apart: readers of `cells/` expect a result in every entry.)
        let _lock = crate::files::OutputLock::acquire_at(
            &self.run_dir.join("cells").join(&cell.id),
            &self
                .run_dir
                .join(".locks")
                .join(format!("{}.lock", cell.id)),
        )?;
        let mut stages = Vec::new();
        let (base, rec) = self.base()?;
        stages.push(rec);
        let (trained, rec) = self.model(cell, &base)?;
        stages.extend(rec);
        let model = trained.model;

        let shape = self.shape()?;
        let sources = crate::inputs::source_images(None)?;
        let trigger: Trigger = cell.trigger.parse()?;
        let target: Target = cell.target.parse()?;
        let g = trigger.build(shape, &sources)?;
        let y = target.build(&g, &sources)?;
        let epochs = self
            .profile
            .train_settings(cell)
            .map_or(0.0, |t| t.epochs as f64);

        let mut rows = Vec::new();
        for (i, eval) in cell.evals.iter().enumerate() {
            let seed = self.profile.measure.seed + cell.seed;
            for (kind, trig) in [
                ("clean", None),
                ("backdoor", Some((cell.trigger.as_str(), &g))),
            ] {
                let label = format!("{} {kind} {}/{}", cell.id, eval.sampler, eval.clip);
                let metrics = match eval.corruption {
                    None => {
                        let (samples, skey, rec) = self.sample(&model, eval, trig, seed, &label)?;
                        stages.push(rec);
                        let (metrics, rec) =
                            self.measure(&samples, &skey, &y, kind == "clean", &label)?;
                        stages.push(rec);
                        if i == 0 {
                            self.keep_samples(cell, kind, &samples.dir)?;
                        }
                        metrics
                    }
                    Some(c) => {
                        let label = format!("{label} {c}");
                        let (metrics, recs) =
                            self.corrupted(&model, eval, c, trig, &y, seed, &label)?;
                        stages.extend(recs);
                        metrics
                    }
                };
                for m in metrics {
                    rows.push(self.row(cell, eval, kind, epochs, m, None)?);
                }
            }
        }
        // E6: the kept intermediate models, sampled and measured as the finished one.
        for &epoch in &cell.checkpoints {
            let kept = trained
                .kept
                .iter()
                .find(|k| k.epoch == epoch)
                .with_context(|| format!("{}: no model was kept after epoch {epoch}", cell.id))?;
            let at = BaseModel {
                model_dir: kept.model_dir.clone(),
                weights_sha256: kept.weights_sha256.clone(),
            };
            let eval = cell.evals.first().context("a cell without evaluations")?;
            let seed = self.profile.measure.seed + cell.seed;
            for (kind, trig) in [
                ("clean", None),
                ("backdoor", Some((cell.trigger.as_str(), &g))),
            ] {
                let label = format!("{} {kind} epoch {epoch}", cell.id);
                let (samples, skey, rec) = self.sample(&at, eval, trig, seed, &label)?;
                stages.push(rec);
                let (metrics, rec) = self.measure(&samples, &skey, &y, kind == "clean", &label)?;
                stages.push(rec);
                for m in metrics {
                    rows.push(self.row(cell, eval, kind, epoch as f64, m, None)?);
                }
            }
        }
        for spec in &cell.defenses {
            let (defense_rows, rec) = self.defend(cell, &model, spec, epochs)?;
            rows.extend(defense_rows);
            stages.push(rec);
        }
        let result = CellResult {
            cell: cell.clone(),
            rows,
            stages,
        };
        let dir = self.run_dir.join("cells").join(&cell.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::files::write_atomic(
            &dir.join("result.json"),
            serde_json::to_string_pretty(&result)?.as_bytes(),
        )?;
        Ok(result)
    }

    /// The first PNGs of a sample folder, for the report's sample grids.
    fn keep_samples(&self, cell: &Cell, kind: &str, from: &Path) -> Result<()> {
        let to = self.run_dir.join("samples").join(&cell.id).join(kind);
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        let files = crate::metrics::image_set::list_pngs(from)?;
        for f in files.iter().take(self.profile.measure.keep_samples) {
            if let Some(name) = f.file_name() {
                std::fs::copy(f, to.join(name))
                    .with_context(|| format!("copying {}", f.display()))?;
            }
        }
        Ok(())
    }

    /// A frame row of this cell.
    pub fn row(
        &self,
        cell: &Cell,
        eval: &Eval,
        samples: &str,
        epochs: f64,
        m: MetricRow,
        defense: Option<(&str, &str, Option<i64>)>,
    ) -> Result<FrameRow> {
        let (defense, defense_param, defense_epoch) = defense.unwrap_or(("none", "", None));
        let steps = eval.steps.map_or_else(
            || {
                let t = self.train_timesteps().unwrap_or(1000) as usize;
                eval.sampler.default_steps(t) as i64
            },
            |s| s as i64,
        );
        Ok(FrameRow {
            run_id: self.run_id.clone(),
            cell: cell.id.clone(),
            experiment: cell.experiment.clone(),
            dataset: self.profile.data.dataset.clone(),
            image_size: self.profile.data.size as i64,
            channels: self.profile.data.channels as i64,
            trigger: cell.trigger.clone(),
            // The paper's target names (Corner, Hat, ...), as the report's figures label them.
            target: cell.target.parse::<Target>()?.paper_name().into(),
            poison_rate: cell.poison_rate,
            training: cell.training.name().into(),
            epochs,
            schedule_share: match self.profile.train_settings(cell) {
                Some(t) => epochs / t.epochs as f64,
                None => 1.0,
            },
            seed: cell.seed as i64,
            defense: defense.into(),
            defense_param: defense_param.into(),
            defense_epoch,
            sampler: eval.sampler.name().into(),
            steps,
            clip: eval.clip.name().into(),
            corruption: eval.corruption.map_or("none", |c| c.name()).into(),
            samples: samples.into(),
            metric: m.metric,
            value: m.value,
            n_generated: m.protocol.n_generated,
            n_reference: m.protocol.n_reference,
            protocol: serde_json::to_string(&m.protocol)?,
        })
    }

    fn train_timesteps(&self) -> Option<i64> {
        match &self.profile.base {
            super::profile::Base::Pretrain { scheduler, .. } => {
                scheduler.get("num_train_timesteps")?.as_i64()
            }
            _ => None,
        }
    }
}

/// The training config of a profile's clean pre-training; p = 0 poisons nothing, so the trigger
/// and target only name the run.
pub fn pretrain_config(
    data: &crate::attack::DataConfig,
    unet: &str,
    scheduler: &serde_json::Value,
    train: &crate::training::trainer::TrainSettings,
) -> AttackConfig {
    AttackConfig {
        data: data.clone(),
        backdoor: BackdoorConfig {
            trigger: "NONE".into(),
            target: "CORNER".into(),
            poison_rate: 0.0,
            sources: None,
        },
        model: ModelConfig::Scratch {
            unet: unet.into(),
            scheduler: scheduler.clone(),
        },
        train: train.clone(),
    }
}

/// The shipped base's `train.json` must record the profile's pre-training config: a profile
/// edited without retraining would otherwise measure a model of other settings.
pub fn check_shipped_base(dir: &Path, artifact: &str, cfg: &AttackConfig) -> Result<()> {
    let path = dir.join("train.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("the shipped base `{artifact}` has no {}", path.display()))?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let want = serde_json::to_value(cfg)?;
    anyhow::ensure!(
        record.get("config") == Some(&want),
        "the shipped base `{artifact}` ({}) was trained with other settings than the profile's \
         [base]: recorded {}, profile {}. Pass --retrain-base to pre-train with the profile's \
         settings, or restore the profile's [base]",
        dir.display(),
        record
            .get("config")
            .map_or("nothing".into(), |c| c.to_string()),
        want
    );
    Ok(())
}

/// `v` without the object entries whose value is null (at any depth).
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        serde_json::Value::Array(a) => a.into_iter().map(without_nulls).collect(),
        other => other,
    }
}
