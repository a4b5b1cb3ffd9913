//! A profile's `[[experiment.defense]]` table (paper §4.6): `kind = "anp"` is the paper's ANP
//! probe (sweep `lr` and `budget`), `kind = "anp-prune"` ANP's own pruning (Wu & Wang 2021), and
//! the defenses that came after the paper: `elijah`, `terd` and the model-free `noise-test`.
//! Read when the profile loads, so a typo fails before hours of training. `baddiff defend`
//! reads its `--set key=value` settings through the same parser.
use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::anp::AnpConfig;
use super::elijah::ElijahConfig;
use super::noise_test::NoiseTestConfig;
use super::prune::{PruneBy, PruneConfig};
use super::terd::TerdConfig;
use crate::scheduler::Clip;

/// A number field; present but not a number is an error, not the default.
fn num(spec: &Value, field: &str) -> Result<Option<f64>> {
    spec.get(field)
        .map(|v| {
            v.as_f64().with_context(|| {
                format!("defense field {field} = {v} is out of range: it must be a number")
            })
        })
        .transpose()
}

/// A count field: a whole number ≥ 1 (a cast would turn −4 or 2.5 into another count).
fn count(spec: &Value, field: &str) -> Result<Option<u64>> {
    spec.get(field)
        .map(|v| {
            v.as_u64().filter(|&n| n >= 1).with_context(|| {
                format!(
                    "defense field {field} = {v} is out of range: it must be a whole number ≥ 1"
                )
            })
        })
        .transpose()
}

/// A yes/no field.
fn boolean(spec: &Value, field: &str) -> Result<Option<bool>> {
    spec.get(field)
        .map(|v| {
            v.as_bool()
                .with_context(|| format!("defense field {field} = {v} must be true or false"))
        })
        .transpose()
}

/// A whole number ≥ 0 (e.g. warm-up steps, which may be none).
fn whole(spec: &Value, field: &str) -> Result<Option<u64>> {
    spec.get(field)
        .map(|v| {
            v.as_u64().with_context(|| {
                format!(
                    "defense field {field} = {v} is out of range: it must be a whole number ≥ 0"
                )
            })
        })
        .transpose()
}

/// Refuses settings a defense table may not carry.
fn check_fields(spec: &Value, allowed: &[&str]) -> Result<()> {
    for k in spec.as_object().into_iter().flat_map(|o| o.keys()) {
        if !allowed.contains(&k.as_str()) {
            bail!(
                "defense field `{k}` is unknown; allowed: {}",
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

/// A profile's `[[experiment.defense]]` table, read into its defense's settings (the defaults
/// are the configs' own, which the CLI uses too). It is written back as the table it was read
/// from, which is also what the defend stage's key hashes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct DefenseSpec {
    pub defense: DefenseConfig,
    /// Samples per measurement; default: the profile's `measure.n`, at most 128.
    pub n: Option<usize>,
    /// Sampling steps of its measurements; default: every training step (DDPM).
    pub steps: Option<usize>,
    table: Value,
}

impl PartialEq for DefenseSpec {
    fn eq(&self, other: &DefenseSpec) -> bool {
        self.table == other.table
    }
}

impl TryFrom<Value> for DefenseSpec {
    type Error = anyhow::Error;
    fn try_from(table: Value) -> Result<DefenseSpec> {
        DefenseSpec::parse(&table)
    }
}

impl From<DefenseSpec> for Value {
    fn from(d: DefenseSpec) -> Value {
        d.table
    }
}

/// A row a defense writes: its `defense_epoch`, `samples` and `metric`.
pub type WrittenRow = (Option<i64>, &'static str, &'static str);

/// The defenses a profile can run on a cell's model.
#[derive(Clone, Debug)]
pub enum DefenseConfig {
    Anp(AnpConfig),
    Prune(PruneConfig),
    Elijah(ElijahConfig),
    Terd(TerdConfig),
    NoiseTest(NoiseTestConfig),
}

impl DefenseSpec {
    /// Reads and checks a table: a known kind, only its fields, valid values. Profiles call this
    /// when they load, so a typo fails before hours of training, not at the defend stage.
    pub fn parse(spec: &Value) -> Result<DefenseSpec> {
        let kind = spec.get("kind").and_then(Value::as_str).unwrap_or("");
        let batch = count(spec, "batch")?.map(|b| b as usize);
        let n = count(spec, "n")?.map(|v| v as usize);
        let steps = count(spec, "steps")?.map(|v| v as usize);
        let defense = match kind {
            "anp" => {
                check_fields(spec, &["kind", "lr", "budget", "epochs", "steps_per_epoch", "batch", "n", "steps"])?;
                let d = AnpConfig::default();
                let cfg = AnpConfig {
                    lr: num(spec, "lr")?.unwrap_or(d.lr),
                    budget: num(spec, "budget")?.unwrap_or(d.budget),
                    epochs: count(spec, "epochs")?.unwrap_or(d.epochs),
                    steps_per_epoch: count(spec, "steps_per_epoch")?,
                    batch: batch.unwrap_or(d.batch),
                    ..d
                };
                cfg.validate()?;
                DefenseConfig::Anp(cfg)
            }
            "anp-prune" => {
                check_fields(
                    spec,
                    &["kind", "iterations", "fraction", "threshold", "batch", "n", "eps", "alpha", "steps"],
                )?;
                let d = PruneConfig::default();
                let by = match (num(spec, "fraction")?, num(spec, "threshold")?) {
                    (Some(f), None) => PruneBy::Fraction(f),
                    (None, Some(t)) => PruneBy::Threshold(t),
                    (None, None) => d.by,
                    _ => bail!("anp-prune takes `fraction` or `threshold`, not both"),
                };
                let cfg = PruneConfig {
                    iterations: count(spec, "iterations")?.unwrap_or(d.iterations),
                    eps: num(spec, "eps")?.unwrap_or(d.eps),
                    alpha: num(spec, "alpha")?.unwrap_or(d.alpha),
                    batch: batch.unwrap_or(d.batch),
                    by,
                    ..d
                };
                cfg.validate()?;
                DefenseConfig::Prune(cfg)
            }
            "elijah" => {
                check_fields(
                    spec,
                    &[
                        "kind", "lambda", "lr", "inversion_steps", "noises", "samples", "remove",
                        "clean_fraction", "removal_epochs", "removal_batch", "removal_lr",
                        "removal_warmup", "n", "steps",
                    ],
                )?;
                let d = ElijahConfig::default();
                let cfg = ElijahConfig {
                    lambda: num(spec, "lambda")?.unwrap_or(d.lambda),
                    lr: num(spec, "lr")?.unwrap_or(d.lr),
                    steps: count(spec, "inversion_steps")?.unwrap_or(d.steps),
                    noises: count(spec, "noises")?.map_or(d.noises, |v| v as usize),
                    samples: count(spec, "samples")?.map_or(d.samples, |v| v as usize),
                    remove: boolean(spec, "remove")?.unwrap_or(d.remove),
                    removal: super::elijah::RemovalConfig {
                        clean_fraction: num(spec, "clean_fraction")?
                            .unwrap_or(d.removal.clean_fraction),
                        epochs: count(spec, "removal_epochs")?.unwrap_or(d.removal.epochs),
                        batch: count(spec, "removal_batch")?
                            .map_or(d.removal.batch, |v| v as usize),
                        lr: num(spec, "removal_lr")?.unwrap_or(d.removal.lr),
                        warmup: whole(spec, "removal_warmup")?.unwrap_or(d.removal.warmup),
                        ..d.removal.clone()
                    },
                    ..d
                };
                cfg.validate()?;
                DefenseConfig::Elijah(cfg)
            }
            "terd" => {
                check_fields(
                    spec,
                    &[
                        "kind", "lr", "iterations", "refine_iterations", "batch", "weight",
                        "last_steps", "first_steps", "sampler_steps", "inputs", "n", "steps",
                    ],
                )?;
                let d = TerdConfig::default();
                let cfg = TerdConfig {
                    lr: num(spec, "lr")?.unwrap_or(d.lr),
                    iterations: count(spec, "iterations")?.unwrap_or(d.iterations),
                    refine_iterations: whole(spec, "refine_iterations")?
                        .unwrap_or(d.refine_iterations),
                    batch: batch.unwrap_or(d.batch),
                    weight: num(spec, "weight")?.unwrap_or(d.weight),
                    last_steps: count(spec, "last_steps")?.map_or(d.last_steps, |v| v as i64),
                    first_steps: count(spec, "first_steps")?.map_or(d.first_steps, |v| v as i64),
                    sampler_steps: count(spec, "sampler_steps")?
                        .map_or(d.sampler_steps, |v| v as usize),
                    inputs: count(spec, "inputs")?.map_or(d.inputs, |v| v as usize),
                    ..d
                };
                cfg.validate()?;
                DefenseConfig::Terd(cfg)
            }
            "noise-test" => {
                check_fields(spec, &["kind", "fpr", "calibration", "inputs", "n", "steps"])?;
                let d = NoiseTestConfig::default();
                let cfg = NoiseTestConfig {
                    fpr: num(spec, "fpr")?.unwrap_or(d.fpr),
                    calibration: count(spec, "calibration")?
                        .map_or(d.calibration, |v| v as usize),
                    n: count(spec, "inputs")?.map_or(d.n, |v| v as usize),
                    ..d
                };
                cfg.validate()?;
                DefenseConfig::NoiseTest(cfg)
            }
            other => bail!(
                "defense kind {other:?} is unknown: use `anp`, `anp-prune`, `elijah`, `terd` or `noise-test` (clipping is an evaluation: evals = [{{ clip = \"xt\" }}])"
            ),
        };
        Ok(DefenseSpec {
            defense,
            n,
            steps,
            table: spec.clone(),
        })
    }

    /// The `kind` the table names (`anp`, `anp-prune`): the frame's `defense` column.
    pub fn kind(&self) -> &'static str {
        match &self.defense {
            DefenseConfig::Anp(_) => "anp",
            DefenseConfig::Prune(_) => "anp-prune",
            DefenseConfig::Elijah(_) => "elijah",
            DefenseConfig::Terd(_) => "terd",
            DefenseConfig::NoiseTest(_) => "noise-test",
        }
    }

    /// The table as written.
    pub fn table(&self) -> &Value {
        &self.table
    }

    /// The same table with `settings` set (a shrunk run's amounts), read again.
    pub fn with(&self, settings: &[(&str, Value)]) -> Result<DefenseSpec> {
        let mut table = self.table.clone();
        if let Some(t) = table.as_object_mut() {
            for (k, v) in settings {
                t.insert(k.to_string(), v.clone());
            }
        }
        DefenseSpec::parse(&table)
    }

    /// Its frame identity: the `defense` kind, the `defense_param` its rows carry, and the
    /// (`defense_epoch`, `samples`, `metric`) of the rows it writes (what `--plan` predicts).
    pub fn describe(&self) -> (&'static str, String, Vec<WrittenRow>) {
        let both = |epoch| [(epoch, "clean", "MSE"), (epoch, "backdoor", "MSE")];
        let rows = match &self.defense {
            DefenseConfig::Anp(c) => (1..=c.epochs as i64).flat_map(|e| both(Some(e))).collect(),
            DefenseConfig::Prune(_) => both(None).to_vec(),
            DefenseConfig::Elijah(c) => {
                let mut r = vec![
                    (None, "inverted", "elijah_uniformity"),
                    (None, "inverted", "elijah_tv"),
                    (None, "inverted", "MSE_threshold_rate"),
                ];
                if c.remove {
                    let end = Some(c.removal.epochs as i64);
                    r.extend([
                        (Some(0), "clean", "MSE"),
                        (end, "clean", "MSE"),
                        (end, "backdoor", "MSE"),
                        (end, "backdoor", "MSE_threshold_rate"),
                    ]);
                }
                r
            }
            DefenseConfig::Terd(_) => vec![
                (None, "none", "terd_kl_mean"),
                (None, "none", "terd_kl_var"),
                (None, "backdoor", "input_flagged_rate"),
                (None, "clean", "input_flagged_rate"),
            ],
            DefenseConfig::NoiseTest(_) => vec![
                (None, "backdoor", "input_flagged_rate"),
                (None, "clean", "input_flagged_rate"),
            ],
        };
        let param = match &self.defense {
            DefenseConfig::Anp(c) => c.param(),
            DefenseConfig::Prune(c) => c.param(),
            DefenseConfig::Elijah(c) => c.param(),
            DefenseConfig::Terd(c) => c.param(),
            DefenseConfig::NoiseTest(c) => c.param(),
        };
        (self.kind(), param, rows)
    }

    /// The work of one run, in single-image model passes (a backward pass counted as two
    /// forwards), for `--plan`: with the model's `timesteps`, `data` clean images and `n_default`
    /// samples per measurement where the table gives no `n`.
    pub fn image_passes(&self, timesteps: u64, data: u64, n_default: usize) -> u64 {
        let n = self.n.unwrap_or(n_default) as u64;
        let steps = self.steps.map_or(timesteps, |s| s as u64);
        let measure = n * steps;
        match &self.defense {
            DefenseConfig::Anp(c) => {
                let per_epoch = c
                    .steps_per_epoch
                    .unwrap_or_else(|| data.div_ceil(c.batch as u64));
                c.epochs * (per_epoch * c.batch as u64 * 3 + measure)
            }
            // A perturbation step and a mask step on two losses per iteration.
            DefenseConfig::Prune(c) => c.iterations * c.batch as u64 * 9 + 2 * measure,
            DefenseConfig::Elijah(c) => {
                let r = &c.removal;
                let inversion = c.steps * c.noises as u64 * 3 + c.samples as u64 * steps;
                let subset = ((data as f64 * r.clean_fraction).round() as u64).max(1);
                // Three trained passes (3 each) and the frozen model's forward per image.
                let removal = r.epochs * subset.div_ceil(r.batch as u64) * r.batch as u64 * 10;
                inversion + if c.remove { removal + 4 * measure } else { 0 }
            }
            DefenseConfig::Terd(c) => {
                let b = c.batch as u64;
                c.iterations * b * 6 + c.refine_iterations * b * (c.sampler_steps as u64 * 3 + 12)
            }
            DefenseConfig::NoiseTest(_) => 0,
        }
    }

    /// How the defense samples: the probe as the official code (x̂₀ clipping), the pruned
    /// model without clipping, so its backdoor MSE is not the clipping's doing.
    pub fn sample_clip(&self) -> Clip {
        match &self.defense {
            DefenseConfig::Anp(c) => c.sample_clip,
            DefenseConfig::Prune(c) => c.sample_clip,
            DefenseConfig::Elijah(c) => c.sample_clip,
            // They sample nothing.
            DefenseConfig::Terd(_) | DefenseConfig::NoiseTest(_) => crate::scheduler::Clip::None,
        }
    }
}
