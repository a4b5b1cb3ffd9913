//! What a profile's verdicts can show, before it runs: its scale (data, size, T, model, N, seeds,
//! FID or proxy) and which of the paper's claims its cells can judge. The latter asks the claims
//! engine itself, on the rows the cells will produce (values are placeholders; only which rows
//! exist matters), so the plan and the verdicts cannot disagree about what a profile covers.
use anyhow::Result;
use frame::claims::{ClaimsFile, Fidelity, RunInfo, Scale, Verdict};
use frame::Row;

use super::profile::{Base, Profile};
use super::Cell;
use crate::triggers::Target;

/// The profile's scale, as recorded in the plan and the run manifest.
pub fn scale(p: &Profile) -> Result<Scale> {
    let timesteps = match &p.base {
        Base::Pretrain { scheduler, .. } => scheduler
            .get("num_train_timesteps")
            .and_then(|v| v.as_u64()),
        // The released checkpoints the GPU profiles use are DDPM with T = 1000.
        Base::Checkpoint { .. } => Some(1000),
    };
    let unet_parameters = match &p.base {
        Base::Pretrain { unet, .. } => Some(unet_parameters(p, unet)?),
        Base::Checkpoint { .. } => None,
    };
    let mut seeds: Vec<u64> = p
        .experiments
        .iter()
        .flat_map(|e| e.seeds.iter().copied())
        .collect();
    seeds.sort_unstable();
    seeds.dedup();
    Ok(Scale {
        fidelity: p.fidelity,
        dataset: p.data.dataset.clone(),
        image_size: p.data.size,
        channels: p.data.channels,
        timesteps,
        unet_parameters,
        n: p.measure.n,
        n_by_experiment: p
            .experiments
            .iter()
            .filter_map(|e| Some((e.id.clone(), e.measure.as_ref()?.n)))
            .filter(|(_, n)| *n != p.measure.n)
            .collect(),
        seeds,
        quality: p.measure.fid.metric(),
    })
}

fn unet_parameters(p: &Profile, unet: &str) -> Result<u64> {
    let cfg = crate::attack::unet_config(unet, &p.data)?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    crate::unet::UNet2DModel::build(vs.root(), &cfg, crate::unet::Fill::Zeros)?;
    Ok(crate::unet::parameter_count(&vs) as u64)
}

/// The rows `cells` will produce, with placeholder values.
pub fn predicted_rows(p: &Profile, cells: &[Cell]) -> Result<Vec<Row>> {
    let quality = p.measure.fid.metric();
    let mut rows = Vec::new();
    for c in cells {
        let target = c.target.parse::<Target>()?.paper_name().to_string();
        let row = |sampler: &str, clip: &str, samples: &str, metric: String| Row {
            run_id: "plan".into(),
            cell: c.id.clone(),
            experiment: c.experiment.clone(),
            dataset: p.data.dataset.clone(),
            image_size: p.data.size as i64,
            channels: p.data.channels as i64,
            trigger: c.trigger.clone(),
            target: target.clone(),
            poison_rate: c.poison_rate,
            training: c.training.name().into(),
            epochs: 1.0,
            schedule_share: 1.0,
            seed: c.seed as i64,
            defense: "none".into(),
            defense_param: String::new(),
            defense_epoch: None,
            sampler: sampler.into(),
            steps: 1,
            clip: clip.into(),
            corruption: "none".into(),
            samples: samples.into(),
            metric,
            value: 0.5,
            n_generated: p.measure.n as i64,
            n_reference: 1,
            protocol: "{}".into(),
        };
        let total_epochs = p
            .for_experiment(&c.experiment)
            .train_settings(c)
            .map(|t| t.epochs as f64);
        // The finished model (epochs 1 of 1), then E6's kept ones with the first evaluation.
        let ages = std::iter::once((1.0, 1.0)).chain(
            c.checkpoints
                .iter()
                .filter_map(|&e| total_epochs.map(|t| (e as f64, e as f64 / t))),
        );
        for (age, (epochs, share)) in ages.enumerate() {
            for e in c.evals.iter().take(if age == 0 { usize::MAX } else { 1 }) {
                for samples in ["clean", "backdoor"] {
                    // E7's unpoisoned inputs are scored against themselves: MSE and SSIM only.
                    let metrics: Vec<String> = match (e.corruption, samples) {
                        (Some(_), "clean") => vec!["MSE".into(), "SSIM".into()],
                        _ => {
                            let mut m: Vec<String> = ["MSE", "MSE_threshold_rate", "SSIM"]
                                .map(String::from)
                                .to_vec();
                            m.push(frame::calibrate::CALIBRATED_RATE.into());
                            if samples == "clean" {
                                m.push(quality.clone());
                            }
                            m
                        }
                    };
                    for m in metrics {
                        let mut r = row(e.sampler.name(), e.clip.name(), samples, m);
                        r.epochs = epochs;
                        r.schedule_share = share;
                        r.corruption = e.corruption.map_or("none", |c| c.name()).into();
                        rows.push(r);
                    }
                }
            }
        }
        for parsed in &c.defenses {
            let (kind, param, written) = parsed.describe();
            for (epoch, samples, metric) in written {
                let mut r = row("ddpm", "x0", samples, metric.into());
                r.defense = kind.into();
                r.defense_param = param.clone();
                r.defense_epoch = epoch;
                rows.push(r);
            }
        }
    }
    Ok(rows)
}

/// Per claim: whether the profile's cells can judge it, and if not, why (the engine's reason).
pub fn judgeable(
    claims: &ClaimsFile,
    p: &Profile,
    cells: &[Cell],
) -> Result<Vec<(String, Option<String>)>> {
    let rows = predicted_rows(p, cells)?;
    let info = RunInfo {
        profile: p.name.clone(),
        scale: None,
    };
    Ok(claims
        .judge(&rows, &info)
        .into_iter()
        .map(|v| {
            let why = matches!(v.verdict, Verdict::NotRun | Verdict::NotJudged).then(|| {
                v.checks
                    .iter()
                    .filter_map(|k| k.note.clone())
                    .next()
                    .unwrap_or_else(|| v.verdict.as_str().into())
            });
            (v.id, why)
        })
        .collect())
}

/// How the plan states a profile's fidelity.
pub fn fidelity_text(f: Fidelity) -> &'static str {
    match f {
        Fidelity::Miniature => "a scale model: its verdicts are scale-model verdicts",
        Fidelity::Paper => "the paper's data and models",
        Fidelity::Rehearsal => "a dress rehearsal, shrunk: its numbers are not results",
    }
}
