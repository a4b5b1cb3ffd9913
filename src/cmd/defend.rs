use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use baddiffusion::attack::{load_dataset, DataConfig};
use baddiffusion::defenses::anp::{anp_probe, AnpConfig};
use baddiffusion::defenses::clip::clip_defense;
use baddiffusion::defenses::prune::{anp_prune, PruneBy, PruneConfig};
use baddiffusion::defenses::spec::{DefenseConfig, DefenseSpec};
use baddiffusion::defenses::{self, Backdoor, DefenseRow, MeasureOptions};
use baddiffusion::pipeline::{Pipeline, PipelineOptions};
use baddiffusion::scheduler::{Clip, SamplerKind};
use serde::Serialize;

/// The defenses of paper §4.6 (and ANP pruning after it).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Defense {
    /// The paper's ANP probe: perturb (γ, β) after every conv to maximise the clean loss,
    /// sample clean noise each epoch, report MSE/SSIM to the target.
    Anp,
    /// ANP pruning (Wu & Wang 2021): optimise channel masks under perturbation, prune the
    /// smallest, save the pruned model, measure it.
    AnpPrune,
    /// Inference-time clipping: sample with clip none, x0 and xt and measure each.
    Clip,
    /// Elijah (An et al. 2024): invert a trigger, score the uniformity of its samples, and
    /// fine-tune the backdoor away (settings: --set, as a profile's defense table).
    Elijah,
    /// TERD (Mo et al. 2024): reverse a trigger in two stages, its model statistics and input
    /// detection (settings: --set).
    Terd,
    /// An input-noise test: flag inputs that are not draws of N(0, I) (no model calls).
    NoiseTest,
}

impl Defense {
    fn name(self) -> &'static str {
        match self {
            Defense::Anp => "anp",
            Defense::AnpPrune => "anp-prune",
            Defense::Clip => "clip",
            Defense::Elijah => "elijah",
            Defense::Terd => "terd",
            Defense::NoiseTest => "noise-test",
        }
    }
}

/// Runs a defense on a backdoored model and writes its rows.
#[derive(clap::Args)]
pub struct Args {
    defense: Defense,
    /// The backdoored diffusers model directory.
    #[arg(long)]
    model: PathBuf,
    /// The backdoor's trigger (e.g. BOX_14, STOP_SIGN_14).
    #[arg(long)]
    trigger: String,
    /// The backdoor's target (e.g. CORNER, HAT, SHOE).
    #[arg(long)]
    target: String,
    /// The official source images (default: the cached `baddiffusion-static` artifact).
    #[arg(long)]
    sources: Option<PathBuf>,
    /// Clean data for anp and anp-prune: fashion-mnist, mnist, cifar10, celeba-hq.
    #[arg(long)]
    data: Option<String>,
    /// Where the data are (default: the cached artifact).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    split: String,
    /// Use only the first N images of the data.
    #[arg(long)]
    limit: Option<usize>,
    /// ANP: Adam learning rate on (γ, β).
    #[arg(long, default_value_t = AnpConfig::default().lr)]
    lr: f64,
    /// ANP: γ, β are clamped to [−budget, budget].
    #[arg(long, default_value_t = AnpConfig::default().budget)]
    budget: f64,
    #[arg(long, default_value_t = AnpConfig::default().epochs)]
    epochs: u64,
    /// Cap each ANP epoch at this many steps (scale models).
    #[arg(long)]
    steps_per_epoch: Option<u64>,
    /// Training batch of anp and anp-prune [default: 128].
    #[arg(long)]
    batch: Option<usize>,
    /// Clipping while sampling the ANP measurements (official: x0).
    #[arg(long, default_value_t = AnpConfig::default().sample_clip)]
    sample_clip: Clip,
    /// anp-prune: perturbation bound ε.
    #[arg(long, default_value_t = PruneConfig::default().eps)]
    eps: f64,
    /// anp-prune: weight of the natural loss.
    #[arg(long, default_value_t = PruneConfig::default().alpha)]
    alpha: f64,
    /// anp-prune: SGD learning rate of the masks.
    #[arg(long, default_value_t = PruneConfig::default().mask_lr)]
    mask_lr: f64,
    /// anp-prune: mask updates.
    #[arg(long, default_value_t = PruneConfig::default().iterations)]
    iterations: u64,
    /// anp-prune: prune channels whose mask is below this (default 0.2 unless --prune-fraction).
    #[arg(long, conflicts_with = "prune_fraction")]
    prune_threshold: Option<f64>,
    /// anp-prune: prune this fraction of all channels, smallest masks first.
    #[arg(long)]
    prune_fraction: Option<f64>,
    /// anp-prune: where to write the pruned model (a diffusers pipeline folder).
    #[arg(long)]
    pruned_out: Option<PathBuf>,
    /// elijah, terd, noise-test: a setting of the profile's defense table, e.g.
    /// `--set inversion_steps=100 --set remove=false` (repeatable; the table's defaults are the
    /// published settings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// elijah: where to write the repaired model (a diffusers pipeline folder) when it removes.
    #[arg(long)]
    repaired_out: Option<PathBuf>,
    /// clip: the clip modes to compare.
    #[arg(long, value_delimiter = ',', default_value = "none,x0,xt")]
    clip_modes: Vec<Clip>,
    /// Images per measurement.
    #[arg(long, default_value_t = 128, value_parser = baddiffusion::validate::count)]
    n: usize,
    /// Inference steps of the measurements (default: all training steps).
    #[arg(long, value_parser = baddiffusion::validate::count)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64, value_parser = baddiffusion::validate::count)]
    sample_batch: usize,
    /// Where to write the report (JSON: rows, cost, trace).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Report<T: Serialize> {
    defense: &'static str,
    model_dir: PathBuf,
    weights_sha256: String,
    trigger: String,
    target: String,
    result: T,
    runtime: serde_json::Value,
}

pub fn run(a: Args) -> Result<()> {
    let device = baddiffusion::default_device();
    let popts = PipelineOptions {
        sampler: SamplerKind::Ddpm,
        steps: None,
        clip: None,
        override_scheduler: false,
        n: a.n,
        seed: a.seed,
        batch: a.sample_batch,
        device,
        progress: false,
    };
    let anp_cfg = AnpConfig {
        lr: a.lr,
        budget: a.budget,
        epochs: a.epochs,
        steps_per_epoch: a.steps_per_epoch,
        batch: a.batch.unwrap_or(AnpConfig::default().batch),
        sample_clip: a.sample_clip,
        seed: a.seed,
        ..AnpConfig::default()
    };
    let prune_cfg = PruneConfig {
        eps: a.eps,
        alpha: a.alpha,
        mask_lr: a.mask_lr,
        iterations: a.iterations,
        batch: a.batch.unwrap_or(PruneConfig::default().batch),
        by: match (a.prune_threshold, a.prune_fraction) {
            (_, Some(f)) => PruneBy::Fraction(f),
            (Some(t), None) => PruneBy::Threshold(t),
            (None, None) => PruneConfig::default().by,
        },
        seed: a.seed,
        ..PruneConfig::default()
    };
    // Check the settings before loading anything.
    let table = later_table(a.defense, &a.settings)?;
    match a.defense {
        Defense::Anp => anp_cfg.validate()?,
        Defense::AnpPrune => {
            prune_cfg.validate()?;
            ensure!(
                a.pruned_out.is_some(),
                "anp-prune writes the pruned model: give --pruned-out DIR"
            );
        }
        Defense::Clip => {}
        Defense::Elijah => {
            if let Some(DefenseConfig::Elijah(c)) = table.as_ref().map(|t| &t.defense) {
                ensure!(
                    !c.remove || a.repaired_out.is_some(),
                    "elijah's removal writes the repaired model: give --repaired-out DIR (or --set remove=false)"
                );
            }
        }
        Defense::Terd | Defense::NoiseTest => {}
    }
    // One writer per output: the report and the pruned or repaired model.
    let _locks = [Some(&a.out), a.pruned_out.as_ref(), a.repaired_out.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| baddiffusion::files::OutputLock::acquire(p))
        .collect::<Result<Vec<_>>>()?;
    let mut pipeline = Pipeline::load(&a.model, &popts)?;
    let backdoor = Backdoor::for_pipeline(&pipeline, &a.trigger, &a.target, a.sources.as_deref())?;
    let measure = MeasureOptions {
        n: a.n,
        seed: a.seed,
        batch: a.sample_batch,
        steps: a.steps,
        device,
    };
    let weights_sha256 = pipeline.checkpoint.weights.safetensors.sha256.clone();
    let [c, h, _] = pipeline.image_shape()?;
    let data = || -> Result<_> {
        let name = a.data.clone().with_context(|| {
            format!(
                "{} trains on clean images: give --data (e.g. fashion-mnist, cifar10)",
                a.defense.name()
            )
        })?;
        load_dataset(&DataConfig {
            dataset: name,
            dir: a.data_dir.clone(),
            split: a.split.clone(),
            channels: c as usize,
            size: h as usize,
            limit: a.limit,
        })
    };
    let report = |result: serde_json::Value, rows: &[DefenseRow]| -> Result<()> {
        for r in rows {
            eprintln!(
                "{} [{}] {}{} {}: {:.6}",
                r.defense,
                r.defense_param,
                r.samples,
                r.defense_epoch
                    .map(|e| format!(" epoch {e}"))
                    .unwrap_or_default(),
                r.row.metric,
                r.row.value
            );
        }
        let rep = Report {
            defense: a.defense.name(),
            model_dir: a.model.clone(),
            weights_sha256: weights_sha256.clone(),
            trigger: a.trigger.clone(),
            target: a.target.clone(),
            result,
            runtime: baddiffusion::runtime_info(),
        };
        baddiffusion::files::write_atomic(&a.out, serde_json::to_string_pretty(&rep)?.as_bytes())
            .with_context(|| format!("writing {}", a.out.display()))
    };
    match a.defense {
        Defense::Anp => {
            let data = data()?;
            let r = anp_probe(&mut pipeline, &data, &backdoor, &anp_cfg, &measure)?;
            report(serde_json::to_value(&r)?, &r.rows)
        }
        Defense::AnpPrune => {
            let data = data()?;
            let out = a.pruned_out.clone().expect("checked above");
            let r = anp_prune(&mut pipeline, &data, &backdoor, &prune_cfg, &measure, &out)?;
            eprintln!(
                "pruned {} of {} channels; model written to {}",
                r.pruned.len(),
                r.total_channels,
                out.display()
            );
            report(serde_json::to_value(&r)?, &r.rows)
        }
        Defense::Clip => {
            let r = clip_defense(&mut pipeline, &backdoor, &a.clip_modes, &measure)?;
            report(serde_json::to_value(&r)?, &r.rows)
        }
        Defense::Elijah | Defense::Terd | Defense::NoiseTest => {
            let table = table.expect("parsed above for the later defenses");
            let measure = MeasureOptions {
                n: table.n.unwrap_or(a.n),
                steps: table.steps.or(a.steps),
                ..measure
            };
            let out = a.repaired_out.clone().unwrap_or_default();
            let r = defenses::run(
                &table,
                &mut pipeline,
                data,
                &backdoor,
                &measure,
                &out,
                a.seed,
            )?;
            report(r.result, &r.rows)
        }
    }
}

/// The later defenses' settings: `--set k=v` pairs read as a profile's defense table (values are
/// JSON where they parse as JSON, e.g. `0.1` or `false`, else text), so the CLI and profiles
/// share one parser and one set of defaults. `None` for the paper's defenses, which take flags.
fn later_table(defense: Defense, settings: &[String]) -> Result<Option<DefenseSpec>> {
    if !matches!(
        defense,
        Defense::Elijah | Defense::Terd | Defense::NoiseTest
    ) {
        ensure!(
            settings.is_empty(),
            "--set is for elijah, terd and noise-test; {} takes its own flags (see --help)",
            defense.name()
        );
        return Ok(None);
    }
    let mut table = serde_json::Map::new();
    table.insert("kind".into(), defense.name().into());
    for kv in settings {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: write KEY=VALUE, e.g. --set lr=0.1"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
        table.insert(k.trim().into(), value);
    }
    DefenseSpec::parse(&serde_json::Value::Object(table))
        .map(Some)
        .with_context(|| format!("the {} settings given with --set", defense.name()))
}
