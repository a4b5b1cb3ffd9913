//! A profile's `[[experiment.defense]]` table (paper §4.6): `kind = "anp"` is the paper's ANP
//! probe (sweep `lr` and `budget`), `kind = "anp-prune"` ANP's own pruning (Wu & Wang 2021).
//! Read when the profile loads, so a typo fails before hours of training.
use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::anp::AnpConfig;
use super::prune::{PruneBy, PruneConfig};
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

/// The defenses a profile can run on a cell's model.
#[derive(Clone, Debug)]
pub enum DefenseConfig {
    Anp(AnpConfig),
    Prune(PruneConfig),
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
            other => bail!(
                "defense kind {other:?} is unknown: use `anp` or `anp-prune` (clipping is an evaluation: evals = [{{ clip = \"xt\" }}])"
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
    /// `defense_epoch`s of its trace (one `None` for a defense without epochs).
    pub fn describe(&self) -> (&'static str, String, Vec<Option<i64>>) {
        match &self.defense {
            DefenseConfig::Anp(c) => (
                self.kind(),
                c.param(),
                (1..=c.epochs as i64).map(Some).collect(),
            ),
            DefenseConfig::Prune(c) => (self.kind(), c.param(), vec![None]),
        }
    }

    /// How the defense samples: the probe as the official code (x̂₀ clipping), the pruned
    /// model without clipping, so its backdoor MSE is not the clipping's doing.
    pub fn sample_clip(&self) -> Clip {
        match &self.defense {
            DefenseConfig::Anp(c) => c.sample_clip,
            DefenseConfig::Prune(c) => c.sample_clip,
        }
    }
}
