//! The defend stage: a defense from a profile's `[[experiment.defense]]` table run on a cell's
//! model (paper §4.6). `kind = "anp"` is the paper's ANP probe (sweep `lr` and `budget`);
//! `kind = "anp-prune"` is ANP's own pruning (Wu & Wang 2021). Inference-time clipping needs no
//! stage of its own: it is an evaluation (`evals = [{ clip = "xt" }]`).
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use super::run::{BaseModel, Cells};
use super::stage::{StageKey, StageRecord};
use super::{Cell, Eval, FrameRow};
use crate::defenses::anp::{anp_probe, AnpConfig};
use crate::defenses::prune::{anp_prune, PruneBy, PruneConfig};
use crate::defenses::{Backdoor, DefenseRow, MeasureOptions};
use crate::pipeline::{Pipeline, PipelineOptions};

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

/// A profile's `[[experiment.defense]]` table, read into its defense's settings.
#[derive(Clone, Debug)]
pub enum DefenseSpec {
    Anp(AnpConfig),
    Prune(PruneConfig),
}

impl DefenseSpec {
    /// Reads and checks a table: a known kind, only its fields, valid values. Profiles call this
    /// when they load, so a typo fails before hours of training, not at the defend stage.
    pub fn parse(spec: &Value) -> Result<DefenseSpec> {
        let kind = spec.get("kind").and_then(Value::as_str).unwrap_or("");
        let batch = count(spec, "batch")?.map(|b| b as usize);
        count(spec, "n")?;
        count(spec, "steps")?;
        let parsed = match kind {
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
                DefenseSpec::Anp(cfg)
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
                    (None, None) => d.by.clone(),
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
                DefenseSpec::Prune(cfg)
            }
            other => bail!(
                "defense kind {other:?} is unknown: use `anp` or `anp-prune` (clipping is an evaluation: evals = [{{ clip = \"xt\" }}])"
            ),
        };
        Ok(parsed)
    }

    /// Its frame identity: the `defense` kind, the `defense_param` its rows carry, and the
    /// `defense_epoch`s of its trace (one `None` for a defense without epochs).
    pub fn describe(&self) -> (&'static str, String, Vec<Option<i64>>) {
        match self {
            DefenseSpec::Anp(c) => ("anp", c.param(), (1..=c.epochs as i64).map(Some).collect()),
            DefenseSpec::Prune(c) => ("anp-prune", c.param(), vec![None]),
        }
    }

    /// How the defense samples: the probe as the official code (x̂₀ clipping), the pruned
    /// model without clipping, so its backdoor MSE is not the clipping's doing.
    fn sample_clip(&self) -> crate::scheduler::Clip {
        match self {
            DefenseSpec::Anp(c) => c.sample_clip,
            DefenseSpec::Prune(c) => c.sample_clip,
        }
    }
}

impl Cells {
    /// Runs one defense on `model` and returns its frame rows.
    pub fn defend(
        &self,
        cell: &Cell,
        model: &BaseModel,
        spec: &Value,
        epochs: f64,
    ) -> Result<(Vec<FrameRow>, StageRecord)> {
        let kind = spec["kind"].as_str().unwrap_or("");
        let defense = DefenseSpec::parse(spec)?;
        let m = &self.profile.measure;
        let n = count(spec, "n")?.map_or(m.n.min(128), |v| v as usize);
        // Sampling steps of the defense's measurements; default every training step (DDPM).
        let steps = count(spec, "steps")?.map(|v| v as usize);
        let key = StageKey::new(
            "defend",
            json!({
                "model": model.weights_sha256, "spec": spec, "trigger": cell.trigger,
                "target": cell.target, "n": n, "seed": m.seed + cell.seed, "data": self.profile.data,
            }),
        );
        let label = format!("{} {kind}", cell.id);
        let (rows, rec): (Vec<DefenseRow>, _) = self.store.run(&key, &label, |dir| {
            let opts = PipelineOptions {
                sampler: "ddpm".parse()?,
                steps,
                clip: None,
                override_scheduler: true,
                n,
                seed: m.seed + cell.seed,
                batch: m.batch,
                device: self.device,
                progress: false,
            };
            let mut pipe = Pipeline::load(&model.model_dir, &opts)?;
            let backdoor = Backdoor::for_pipeline(&pipe, &cell.trigger, &cell.target, None)?;
            let data = crate::attack::load_dataset(&self.profile.data)?;
            let measure = MeasureOptions {
                n,
                seed: m.seed + cell.seed,
                batch: m.batch,
                steps,
                device: self.device,
            };
            match &defense {
                DefenseSpec::Anp(cfg) => {
                    let cfg = AnpConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    Ok(anp_probe(&mut pipe, &data, &backdoor, &cfg, &measure)?.rows)
                }
                DefenseSpec::Prune(cfg) => {
                    let cfg = PruneConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    let out = dir.join("pruned");
                    let _ = std::fs::remove_dir_all(&out);
                    Ok(anp_prune(&mut pipe, &data, &backdoor, &cfg, &measure, &out)?.rows)
                }
            }
        })?;
        // The rows say how the defense sampled.
        let eval = Eval {
            sampler: "ddpm".into(),
            steps,
            clip: defense.sample_clip().name().into(),
        };
        let rows = rows
            .into_iter()
            .filter(|r| r.samples != "none" || r.row.metric.starts_with("cost_"))
            .map(|r| {
                let samples = if r.samples == "backdoor" {
                    "backdoor"
                } else {
                    "clean"
                };
                self.row(
                    cell,
                    &eval,
                    samples,
                    epochs,
                    r.row,
                    Some((kind, &r.defense_param, r.defense_epoch.map(|e| e as i64))),
                )
            })
            .collect::<Result<Vec<_>>>()
            .context("defense rows")?;
        Ok((rows, rec))
    }
}
