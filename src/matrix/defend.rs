//! The defend stage: a defense from a profile's `[[experiment.defense]]` table
//! ([`DefenseSpec`]) run on a cell's model (paper §4.6). Inference-time clipping needs no stage
//! of its own: it is an evaluation (`evals = [{ clip = "xt" }]`).
use anyhow::{Context as _, Result};
use serde_json::json;

use super::run::{BaseModel, Cells};
use super::stage::{StageKey, StageKind, StageRecord};
use super::{Cell, Eval, FrameRow};
use crate::defenses::anp::{anp_probe, AnpConfig};
use crate::defenses::elijah::{elijah, ElijahConfig};
use crate::defenses::noise_test::{noise_test, NoiseTestConfig};
use crate::defenses::prune::{anp_prune, PruneConfig};
use crate::defenses::spec::{DefenseConfig, DefenseSpec};
use crate::defenses::terd::{terd, TerdConfig};
use crate::defenses::{Backdoor, DefenseRow, MeasureOptions};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::scheduler::SamplerKind;

impl Cells {
    /// Runs one defense on `model` and returns its frame rows.
    pub fn defend(
        &self,
        cell: &Cell,
        model: &BaseModel,
        defense: &DefenseSpec,
        epochs: f64,
    ) -> Result<(Vec<FrameRow>, StageRecord)> {
        let kind = defense.kind();
        let m = &self.profile.measure;
        let n = defense.n.unwrap_or(m.n.min(128));
        let steps = defense.steps;
        let key = StageKey::new(
            StageKind::Defend,
            json!({
                "model": model.weights_sha256, "spec": defense.table(), "trigger": cell.trigger,
                "target": cell.target, "n": n, "seed": m.seed + cell.seed, "data": self.profile.data,
            }),
        );
        let label = format!("{} {kind}", cell.id);
        let (rows, rec): (Vec<DefenseRow>, _) = self.store.run(&key, &label, |dir| {
            let opts = PipelineOptions {
                sampler: SamplerKind::Ddpm,
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
            match &defense.defense {
                DefenseConfig::Anp(cfg) => {
                    let cfg = AnpConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    Ok(anp_probe(&mut pipe, &data, &backdoor, &cfg, &measure)?.rows)
                }
                DefenseConfig::Prune(cfg) => {
                    let cfg = PruneConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    let out = dir.join("pruned");
                    let _ = std::fs::remove_dir_all(&out);
                    Ok(anp_prune(&mut pipe, &data, &backdoor, &cfg, &measure, &out)?.rows)
                }
                DefenseConfig::Elijah(cfg) => {
                    let cfg = ElijahConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    let out = dir.join("repaired");
                    let _ = std::fs::remove_dir_all(&out);
                    let r = elijah(&mut pipe, &data, &backdoor, &cfg, &measure, &out)?;
                    let mut rows = r.rows;
                    // Clean quality before and after removal, by the profile's Fréchet distance
                    // on the same number of samples.
                    let sides = [(0, &r.clean_before), (cfg.removal.epochs, &r.clean_after)];
                    for (epoch, images) in sides {
                        let Some(images) = images else { continue };
                        let at = dir.join(format!("clean-epoch-{epoch}"));
                        let _ = std::fs::remove_dir_all(&at);
                        crate::sampling::save_pngs(
                            &(images.to_kind(tch::Kind::Float) / 127.5 - 1.0),
                            &at,
                            0,
                        )?;
                        let template = rows[0].clone();
                        rows.push(DefenseRow {
                            defense_epoch: Some(epoch),
                            samples: "clean".into(),
                            row: self.fid(&at)?,
                            ..template
                        });
                    }
                    Ok(rows)
                }
                DefenseConfig::Terd(cfg) => {
                    let cfg = TerdConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    Ok(terd(&mut pipe, &data, &backdoor, &cfg, &measure)?.rows)
                }
                DefenseConfig::NoiseTest(cfg) => {
                    let cfg = NoiseTestConfig {
                        seed: cell.seed,
                        ..cfg.clone()
                    };
                    Ok(noise_test(&backdoor, &cfg)?.rows)
                }
            }
        })?;
        // The rows say how the defense sampled.
        let eval = Eval {
            sampler: SamplerKind::Ddpm,
            steps,
            clip: defense.sample_clip(),
            corruption: None,
        };
        let rows = rows
            .into_iter()
            .map(|r| {
                // Costs have always been filed under `clean`; model statistics without samples
                // (TERD) under `none`; samples from an inverted trigger (Elijah) under `inverted`.
                let samples = match r.samples.as_str() {
                    "backdoor" => "backdoor",
                    "inverted" => "inverted",
                    "none" if !r.row.metric.starts_with("cost_") => "none",
                    _ => "clean",
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
