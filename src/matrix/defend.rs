//! The defend stage: a defense from a profile's `[[experiment.defense]]` table
//! ([`DefenseSpec`]) run on a cell's model (paper §4.6). Inference-time clipping needs no stage
//! of its own: it is an evaluation (`evals = [{ clip = "xt" }]`).
use anyhow::{Context as _, Result};
use serde_json::json;

use super::run::{BaseModel, Cells};
use super::stage::{StageKey, StageKind, StageRecord};
use super::{Cell, Eval, FrameRow};
use crate::defenses::spec::{DefenseConfig, DefenseSpec};
use crate::defenses::{self, Backdoor, DefenseRow, MeasureOptions};
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
            let measure = MeasureOptions {
                n,
                seed: m.seed + cell.seed,
                batch: m.batch,
                steps,
                device: self.device,
            };
            let out = dir.join(if kind == "anp-prune" {
                "pruned"
            } else {
                "repaired"
            });
            let data = || crate::attack::load_dataset(&self.profile.data);
            let outcome = defenses::run(
                defense, &mut pipe, data, &backdoor, &measure, &out, cell.seed,
            )?;
            let mut rows = outcome.rows;
            // Elijah's clean quality before and after removal, by the profile's Fréchet
            // distance on the same number of samples.
            if let (DefenseConfig::Elijah(cfg), Some((before, after))) =
                (&defense.defense, outcome.clean_before_after)
            {
                for (epoch, images) in [(0, before), (cfg.removal.epochs, after)] {
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
            }
            Ok(rows)
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
