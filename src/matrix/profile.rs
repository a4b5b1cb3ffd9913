//! A profile: one TOML file (`paper/profiles/<name>.toml`) that describes a whole experiment
//! matrix — the data and model every cell shares, the clean base model, the training settings of
//! fine-tuned and from-scratch cells, how samples are measured, and the experiments (paper §4),
//! each a grid of triggers × targets × poison rates × seeds with its evaluations and defenses.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Cell, Eval, Training};
use crate::attack::DataConfig;
use crate::defenses::spec::DefenseSpec;
use crate::training::trainer::TrainSettings;
use crate::triggers::{Target, Trigger};
use crate::validate::{at_least_one, positive};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// `miniature` (a scale model: its verdicts are labelled scale-model verdicts) or `paper`
    /// (the paper's datasets and models).
    pub fidelity: frame::claims::Fidelity,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (the default): the first GPU, and a refusal to run
    /// where no GPU is usable unless `--device cpu` forces the CPU (`device::resolve`).
    #[serde(default)]
    pub device: Option<String>,
    /// libtorch threads of every cell on the CPU. Part of what makes CPU numbers reproducible:
    /// reductions sum in an order that depends on the thread count, so the same seed gives the
    /// same numbers only with the same count (the Slurm executor requests this many cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Cells `cargo xtask reproduce` runs at once (each a process with `threads` threads) on
    /// the machine the profile is meant for; `--jobs` overrides it. Default 1.
    #[serde(default)]
    pub jobs: Option<usize>,
    /// The data every cell trains on (the `[data]` table of a cell config).
    pub data: DataConfig,
    /// Where the clean model comes from.
    pub base: Base,
    /// Settings of backdoor fine-tuning cells (the paper's main setting); a profile that only
    /// measures released models has none.
    pub finetune: Option<TrainSettings>,
    /// Settings of from-scratch cells (Fig. 3).
    pub scratch: Option<ScratchSettings>,
    pub measure: MeasureSettings,
    #[serde(rename = "experiment")]
    pub experiments: Vec<Experiment>,
    /// Throughput assumed where this machine has measured none (e.g. GPU profiles planned on a
    /// CPU machine); printed as "assumed" by `--plan`.
    #[serde(default)]
    pub assumed: Option<Throughput>,
}

/// The clean model fine-tuning starts from and the paper's 0 % poison rate measures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Base {
    /// Pre-train a fresh `unet` on clean data (scale models, where no released checkpoint fits).
    Pretrain {
        unet: String,
        scheduler: serde_json::Value,
        train: TrainSettings,
        /// The artifact holding this very pre-training's result, shipped with the repository
        /// (`artifacts/manifest.toml`): a run uses it instead of pre-training, after checking
        /// that its recorded config is this one; `--retrain-base` pre-trains instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipped: Option<String>,
        /// libtorch threads of the pre-training on a CPU; default: the profile's `threads`. The
        /// pre-training runs alone, before every cell, so it may use every core where the
        /// cells share them (`jobs`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threads: Option<usize>,
    },
    /// A released diffusers checkpoint from the artifact cache (e.g. google/ddpm-cifar10-32).
    Checkpoint { artifact: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScratchSettings {
    pub unet: String,
    /// The scheduler of from-scratch models; default: the base model's.
    pub scheduler: Option<serde_json::Value>,
    pub train: TrainSettings,
}

/// The network whose features the clean samples' Fréchet distance compares.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum FidNetwork {
    /// pytorch-fid's Inception: the paper's FID.
    #[serde(rename = "inception")]
    Inception,
    /// A small CNN trained once on Fashion-MNIST (CPU runs): a distance of the same form, named
    /// as a proxy, never compared with FID.
    #[serde(rename = "proxy-fmnist")]
    ProxyFmnist,
}

impl FidNetwork {
    /// The metric its distance is reported as in the frame.
    pub fn metric(self) -> String {
        match self {
            FidNetwork::Inception => "FID".into(),
            FidNetwork::ProxyFmnist => {
                format!("proxy_FD[{}]", crate::metrics::proxy::fmnist::NAME)
            }
        }
    }
}

/// How every evaluation is measured (official `baddiffusion.py:477-551`, `measure`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeasureSettings {
    /// Samples per evaluation, clean and backdoor each (the paper: 10,000; official code: 2,048).
    pub n: usize,
    /// Images per forward pass while sampling.
    pub batch: usize,
    /// Sampling seed (each seed of a cell adds to it).
    #[serde(default)]
    pub seed: u64,
    /// FID reference, `dataset:NAME[:SPLIT][@SIZE]`.
    pub reference: String,
    /// Use only the first N reference images.
    pub reference_n: Option<usize>,
    /// `inception` (pytorch-fid's weights, from the artifact cache) or `proxy-fmnist`.
    pub fid: FidNetwork,
    /// Per-image MSE below which a backdoor sample counts as the target.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// PNGs per cell copied into the run for the report's sample grids.
    #[serde(default = "default_keep")]
    pub keep_samples: usize,
}

impl MeasureSettings {
    pub fn validate(&self) -> Result<()> {
        at_least_one("n", self.n as u64)?;
        at_least_one("batch", self.batch as u64)?;
        if let Some(r) = self.reference_n {
            at_least_one("reference_n", r as u64)?;
        }
        positive("threshold", self.threshold)
    }
}

impl Throughput {
    pub fn validate(&self) -> Result<()> {
        positive(
            "seconds_per_train_iteration",
            self.seconds_per_train_iteration,
        )?;
        positive("seconds_per_sampling_step", self.seconds_per_sampling_step)
    }
}

fn default_threshold() -> f64 {
    crate::metrics::mse::MSE_THRESHOLD
}
fn default_keep() -> usize {
    16
}

/// One experiment of the matrix (paper §4: E1 … E9, `anp`, `sampler`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub id: String,
    /// What it reproduces, e.g. "Fig. 2: poison-rate sweep".
    pub title: String,
    pub triggers: Vec<String>,
    pub targets: Vec<String>,
    /// 0 means the clean base model itself (the paper's 0 %), not a fine-tune on clean data.
    pub poison_rates: Vec<f64>,
    /// `finetune`, `scratch`, or `released` (the base checkpoint is the backdoored model).
    pub training: String,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// How samples are drawn and measured; default: DDPM without clipping.
    #[serde(default = "default_evals")]
    pub evals: Vec<Eval>,
    /// E6, the epochs a backdoor needs: intermediate epochs at which each trained cell's model
    /// is measured as well (with the first evaluation). Each must be one of the training's
    /// `keep_epochs`; untrained cells (0 %) ignore them.
    #[serde(default)]
    pub checkpoints: Vec<u64>,
    /// Defense runs on each cell's model (`[[experiment.defense]]` tables).
    #[serde(default, rename = "defense")]
    pub defenses: Vec<DefenseSpec>,
    /// Per-experiment replacements of the profile's tables (e.g. CelebA-HQ's data and base model
    /// in a CIFAR-10 profile).
    #[serde(default)]
    pub data: Option<DataConfig>,
    #[serde(default)]
    pub base: Option<Base>,
    #[serde(default)]
    pub finetune: Option<TrainSettings>,
    #[serde(default)]
    pub measure: Option<MeasureSettings>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_evals() -> Vec<Eval> {
    vec![Eval::default()]
}

/// Seconds per unit of work assumed for planning where nothing was measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// What the assumption is, e.g. "one A100, fp32".
    pub hardware: String,
    pub seconds_per_train_iteration: f64,
    /// Seconds per model forward pass of one sampling batch.
    pub seconds_per_sampling_step: f64,
}

/// Which cells to run: `--only` filters (substring of the cell id, or `key=value` on experiment,
/// trigger, target, poison_rate, training, seed) and experiment sets (from `--claim`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub only: Vec<String>,
    pub experiments: Option<BTreeSet<String>>,
}

impl Filter {
    fn keeps(&self, cell: &Cell) -> Result<bool> {
        if let Some(exps) = &self.experiments {
            if !exps.contains(&cell.experiment) {
                return Ok(false);
            }
        }
        for f in &self.only {
            let keep = match f.split_once('=') {
                None => cell.id.contains(f.as_str()),
                Some((k, v)) => match k {
                    "experiment" => cell.experiment == v,
                    "trigger" => cell.trigger == v,
                    "target" => cell.target == v,
                    "training" => cell.training.name() == v,
                    "seed" => cell.seed.to_string() == v,
                    "poison_rate" => v.parse::<f64>().map(|p| p == cell.poison_rate)?,
                    _ => bail!(
                        "--only {f}: unknown field `{k}`; use experiment, trigger, target, poison_rate, training, seed, or a part of a cell id"
                    ),
                },
            };
            if !keep {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Profile {
    /// `name` is a profile name (`paper/profiles/<name>.toml`) or a path to a TOML file.
    pub fn load(root: &Path, name: &str) -> Result<Profile> {
        let path = if name.ends_with(".toml") {
            PathBuf::from(name)
        } else {
            root.join("paper/profiles").join(format!("{name}.toml"))
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no profile `{name}` ({}): known profiles are {}",
                path.display(),
                known_profiles(root).join(", ")
            )
        })?;
        let profile: Profile = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid profile", path.display()))?;
        profile.check()?;
        Ok(profile)
    }

    /// libtorch threads of the clean pre-training on a CPU: `[base] threads`, else the profile's.
    pub fn base_threads(&self) -> Option<usize> {
        match &self.base {
            Base::Pretrain {
                threads: Some(n), ..
            } => Some(*n),
            _ => self.threads,
        }
    }

    /// Catches what would otherwise fail hours into a run: unknown names, rates outside [0, 1],
    /// numbers out of range.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(t) = self.threads {
            at_least_one("threads", t as u64)?;
        }
        if let Some(j) = self.jobs {
            at_least_one("jobs", j as u64)?;
        }
        if let Some(a) = &self.assumed {
            a.validate().context("in [assumed]")?;
        }
        self.check_tables("")?;
        let mut ids = BTreeSet::new();
        for e in &self.experiments {
            ensure!(ids.insert(&e.id), "experiment {} appears twice", e.id);
            self.for_experiment(&e.id)
                .check_tables(&format!("experiment {}: ", e.id))?;
            for t in &e.triggers {
                t.parse::<Trigger>()
                    .with_context(|| format!("experiment {}", e.id))?;
            }
            for t in &e.targets {
                t.parse::<Target>()
                    .with_context(|| format!("experiment {}", e.id))?;
            }
            for &p in &e.poison_rates {
                ensure!(
                    (0.0..=1.0).contains(&p),
                    "experiment {}: poison rate {p} is outside [0, 1]",
                    e.id
                );
            }
            let training = Training::parse(&e.training)?;
            ensure!(
                training != Training::Scratch || self.scratch.is_some(),
                "experiment {} trains from scratch but the profile has no [scratch] table",
                e.id
            );
            ensure!(
                training != Training::Finetune || self.finetune.is_some() || e.finetune.is_some(),
                "experiment {} fine-tunes but the profile has no [finetune] table",
                e.id
            );
            if !e.checkpoints.is_empty() {
                let p = self.for_experiment(&e.id);
                let kept = match training {
                    Training::Finetune => p.finetune.map(|t| t.keep_epochs),
                    Training::Scratch => p.scratch.map(|s| s.train.keep_epochs),
                    _ => None,
                }
                .with_context(|| {
                    format!(
                        "experiment {}: checkpoints need a trained model (finetune or scratch)",
                        e.id
                    )
                })?;
                for c in &e.checkpoints {
                    ensure!(
                        kept.contains(c),
                        "experiment {}: checkpoint {c} is not kept by its training: add it to keep_epochs ({kept:?}) in [{}]",
                        e.id,
                        if training == Training::Scratch { "scratch" } else { "finetune" }
                    );
                }
                ensure!(
                    e.evals.first().is_some_and(|v| v.corruption.is_none()),
                    "experiment {}: checkpoints are measured with the first evaluation, which must sample from noise (no corruption)",
                    e.id
                );
            }
        }
        Ok(())
    }

    /// The numbers of the tables an experiment may replace; `at` says whose they are.
    fn check_tables(&self, at: &str) -> Result<()> {
        self.data
            .validate()
            .with_context(|| format!("{at}in [data]"))?;
        if let Base::Pretrain {
            unet,
            train,
            threads,
            ..
        } = &self.base
        {
            crate::attack::unet_config(unet, &self.data)
                .with_context(|| format!("{at}in [base]"))?;
            if let Some(t) = threads {
                at_least_one("threads", *t as u64).with_context(|| format!("{at}in [base]"))?;
            }
            train
                .validate()
                .with_context(|| format!("{at}in [base] train"))?;
        }
        if let Some(f) = &self.finetune {
            f.validate().with_context(|| format!("{at}in [finetune]"))?;
        }
        if let Some(s) = &self.scratch {
            crate::attack::unet_config(&s.unet, &self.data)
                .with_context(|| format!("{at}in [scratch]"))?;
            s.train
                .validate()
                .with_context(|| format!("{at}in [scratch] train"))?;
        }
        self.measure
            .validate()
            .with_context(|| format!("{at}in [measure]"))
    }

    /// Every cell of the matrix that `filter` keeps, in profile order. Cells with the same
    /// training share their models through the stage cache; ids are unique.
    pub fn cells(&self, filter: &Filter) -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        let mut seen = BTreeSet::new();
        for e in &self.experiments {
            for trigger in &e.triggers {
                for target in &e.targets {
                    for &p in &e.poison_rates {
                        for &seed in &e.seeds {
                            let training = match Training::parse(&e.training)? {
                                Training::Released => Training::Released,
                                _ if p == 0.0 => Training::Pretrained,
                                t => t,
                            };
                            let id = format!(
                                "{}.{}.{}.p{:.2}.{}.s{seed}",
                                e.id,
                                trigger,
                                target,
                                p,
                                training.name()
                            );
                            let cell = Cell {
                                id,
                                experiment: e.id.clone(),
                                trigger: trigger.clone(),
                                target: target.clone(),
                                poison_rate: p,
                                training,
                                seed,
                                evals: e.evals.clone(),
                                defenses: e.defenses.clone(),
                                checkpoints: if training.trains() {
                                    e.checkpoints.clone()
                                } else {
                                    vec![]
                                },
                            };
                            if seen.insert(cell.id.clone()) && filter.keeps(&cell)? {
                                cells.push(cell);
                            }
                        }
                    }
                }
            }
        }
        ensure!(
            !cells.is_empty(),
            "no cell of profile `{}` matches the filters",
            self.name
        );
        Ok(cells)
    }

    /// The profile as one experiment sees it: its own data, base, fine-tune and measure tables
    /// where it has them.
    pub fn for_experiment(&self, id: &str) -> Profile {
        let mut p = self.clone();
        if let Some(e) = self.experiments.iter().find(|e| e.id == id) {
            if let Some(d) = &e.data {
                p.data = d.clone();
            }
            if let Some(b) = &e.base {
                p.base = b.clone();
            }
            if let Some(f) = &e.finetune {
                p.finetune = Some(f.clone());
            }
            if let Some(m) = &e.measure {
                p.measure = m.clone();
            }
        }
        p
    }

    /// The named inputs (artifact manifest names) its cells read: the trigger and target source
    /// images, base checkpoints, datasets kept in the artifact cache, Inception's weights.
    /// Fashion-MNIST is left out: the smoke scale model reads the system copy.
    pub fn artifacts(&self) -> Vec<String> {
        let mut names = BTreeSet::from(["baddiffusion-static".to_string()]);
        let ids = std::iter::once(None).chain(self.experiments.iter().map(|e| Some(&e.id)));
        for id in ids {
            let p = id.map_or_else(|| self.clone(), |id| self.for_experiment(id));
            match &p.base {
                Base::Checkpoint { artifact }
                | Base::Pretrain {
                    shipped: Some(artifact),
                    ..
                } => {
                    names.insert(artifact.clone());
                }
                Base::Pretrain { shipped: None, .. } => {}
            }
            if p.measure.fid == FidNetwork::Inception {
                names.insert("pytorch-fid-inception".into());
            }
            let dataset = match p.data.dataset.as_str() {
                "cifar10" => Some("cifar10-binary"),
                "celeba-hq" | "celeba-hq-256" => Some("celeba-hq-256"),
                "mnist" => Some("mnist"),
                _ => None,
            };
            names.extend(dataset.map(String::from));
        }
        names.into_iter().collect()
    }

    /// Training settings of a cell (its seed replaces the profile's).
    pub fn train_settings(&self, cell: &Cell) -> Option<TrainSettings> {
        let mut t = match cell.training {
            Training::Pretrained | Training::Released => return None,
            Training::Finetune => self.finetune.clone()?,
            Training::Scratch => self.scratch.as_ref()?.train.clone(),
        };
        t.seed = cell.seed;
        Some(t)
    }
}

/// Names of the profiles under `paper/profiles/`.
pub fn known_profiles(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("paper/profiles"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml").then_some(())?;
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
