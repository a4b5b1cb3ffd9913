//! A small but complete metric frame for tests and demonstrations: two triggers × three targets ×
//! poison rates {0, 0.1, 0.5} × 2 seeds, fine-tune vs scratch cells, clipping cells, ANP traces and
//! sampler cells. Values follow simple closed-form trends (no randomness) so figures look like the
//! paper's shapes and snapshots are stable. No CelebA-HQ (E3) cells: Fig. 4 renders as "not run".
use std::path::Path;

use crate::claims::{ClaimVerdict, Verdict};
use crate::schema::Row;

pub const TRIGGERS: &[&str] = &["BOX_14", "STOP_SIGN_14"];
pub const TARGETS: &[&str] = &["Corner", "Shoe", "Hat"];
pub const RATES: &[f64] = &[0.0, 0.1, 0.5];
pub const SEEDS: &[i64] = &[0, 1];
pub const PROXY: &str = "FD_fmnist_cnn";

/// The settings of one fixture measurement; turned into rows by [`Cell::rows`].
#[derive(Clone)]
struct Cell {
    experiment: &'static str,
    trigger: &'static str,
    target: &'static str,
    rate: f64,
    training: &'static str,
    seed: i64,
    clip: &'static str,
    sampler: &'static str,
    steps: i64,
}

impl Cell {
    fn name(&self) -> String {
        format!(
            "{}-{}-{}-p{}-{}-s{}",
            self.experiment, self.trigger, self.target, self.rate, self.training, self.seed
        )
    }

    fn row(&self, samples: &str, metric: &str, value: f64) -> Row {
        let n_generated = 64;
        Row {
            run_id: "fixture-run".into(),
            cell: self.name(),
            experiment: self.experiment.into(),
            dataset: "fmnist".into(),
            image_size: 16,
            channels: 1,
            trigger: self.trigger.into(),
            target: self.target.into(),
            poison_rate: self.rate,
            training: self.training.into(),
            epochs: if self.training == "scratch" { 40.0 } else { 5.0 },
            seed: self.seed,
            defense: if self.clip == "none" { "none" } else { "clip" }.into(),
            defense_param: String::new(),
            defense_epoch: None,
            sampler: self.sampler.into(),
            steps: self.steps,
            clip: self.clip.into(),
            samples: samples.into(),
            metric: metric.into(),
            value,
            n_generated,
            n_reference: 256,
            protocol: format!(
                "{{\"n_generated\":{n_generated},\"sampler\":\"{}\",\"steps\":{},\"weights_sha\":\"fixture\"}}",
                self.sampler, self.steps
            ),
        }
    }

    /// Utility on clean samples; MSE, SSIM and threshold rate on backdoor samples.
    fn rows(&self) -> Vec<Row> {
        let t = TARGETS.iter().position(|x| *x == self.target).unwrap_or(0) as f64;
        let g = TRIGGERS
            .iter()
            .position(|x| *x == self.trigger)
            .unwrap_or(0) as f64;
        let s = self.seed as f64;
        let scratch = self.training == "scratch";
        let mut fd = 12.0 + 6.0 * self.rate + 0.5 * t - 1.5 * g + 0.3 * s;
        if scratch {
            fd += 9.0;
        }
        // The backdoor is learnt once poisoned; before that the MSE is the clean image's distance.
        let mut mse = if self.rate == 0.0 {
            0.12 + 0.02 * t
        } else {
            0.02 * (1.0 - self.rate).powi(3) + 0.002 * t
        } + 0.001 * s;
        if scratch {
            mse += 0.004;
        }
        if self.clip != "none" {
            mse = (mse * 8.0).min(0.3);
            fd += 0.4;
        }
        match self.sampler {
            "ddim" => mse = 0.11 + 0.001 * s,
            "dpm-solver" => mse = 0.115 + 0.001 * s,
            _ => {}
        }
        let ssim = (1.0 - 5.0 * mse).max(0.0);
        let hit = if mse < 0.05 { 1.0 - mse * 10.0 } else { 0.0 };
        vec![
            self.row("clean", PROXY, fd),
            self.row("backdoor", "MSE", mse),
            self.row("backdoor", "SSIM", ssim),
            self.row("backdoor", "MSE_threshold_rate", hit),
        ]
    }
}

fn base(experiment: &'static str, trigger: &'static str, target: &'static str, rate: f64) -> Cell {
    Cell {
        experiment,
        trigger,
        target,
        rate,
        training: if rate == 0.0 {
            "pretrained"
        } else {
            "finetune"
        },
        seed: 0,
        clip: "none",
        sampler: "ddpm",
        steps: 100,
    }
}

/// The fixture frame's rows.
pub fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for &trigger in TRIGGERS {
        for &target in TARGETS {
            for &rate in RATES {
                for &seed in SEEDS {
                    let cell = Cell {
                        seed,
                        ..base("E1", trigger, target, rate)
                    };
                    out.extend(cell.rows());
                    out.extend(
                        Cell {
                            experiment: "E4",
                            clip: "x0",
                            ..cell.clone()
                        }
                        .rows(),
                    );
                }
            }
        }
    }
    // Fine-tune vs scratch (Fig. 3): scratch is one run, as in the paper.
    for &target in &["Corner", "Hat"] {
        for &rate in RATES {
            let cell = Cell {
                training: "scratch",
                ..base("E2", "BOX_14", target, rate)
            };
            out.extend(cell.rows());
        }
    }
    out.extend(anp_rows());
    for (sampler, steps) in [("ddpm", 100), ("ddim", 10), ("dpm-solver", 10)] {
        for &seed in SEEDS {
            let cell = Cell {
                sampler,
                steps,
                seed,
                ..base("sampler", "BOX_14", "Corner", 0.5)
            };
            out.extend(cell.rows());
        }
    }
    out
}

/// ANP traces: backdoor-target MSE of clean-noise samples per ANP epoch, per learning rate and
/// budget. A larger learning rate makes the MSE explode; a larger budget reveals the target more.
fn anp_rows() -> Vec<Row> {
    let mut out = Vec::new();
    for &(lr, budget) in &[(1e-4, 2.0), (1e-4, 4.0), (2e-4, 4.0)] {
        for epoch in 0..5i64 {
            let e = epoch as f64;
            let mse = if lr > 1e-4 {
                0.1 + 0.05 * e
            } else {
                0.12 * (-0.1 * budget * e).exp()
            };
            let cell = base("anp", "BOX_14", "Hat", 0.5);
            let mut row = cell.row("clean", "MSE", mse);
            row.defense = "anp".into();
            row.defense_param = format!("lr={lr},budget={budget}");
            row.defense_epoch = Some(epoch);
            out.push(row);
        }
    }
    out
}

/// Two claims verdicts, one holding and one not run.
pub fn verdicts() -> Vec<ClaimVerdict> {
    let check = "backdoor MSE with trigger / clean model";
    let numbers = [("", 0.0175), (" a", 0.0021), (" b", 0.12)]
        .map(|(k, v)| (format!("{check}{k}"), serde_json::json!(v)))
        .into();
    let tolerance = |op: &str, holds: &str, partly: &str| crate::claims::Check {
        op: op.into(),
        holds: holds.into(),
        partly: partly.into(),
    };
    vec![
        ClaimVerdict {
            id: "C1".into(),
            quote: "5% poison rate is sufficient … in most of the trigger-target settings".into(),
            section: "4.2".into(),
            figure: "Fig. 2a".into(),
            verdict: Verdict::Holds,
            numbers,
            tolerance: [(check.to_string(), tolerance("ratio", "<= 0.1", "<= 0.5"))].into(),
            cells: vec!["E1-BOX_14-Corner-p0.1-finetune-s0".into()],
            command: Some("cargo xtask reproduce --claim C1".into()),
        },
        ClaimVerdict {
            id: "C4".into(),
            quote: "a poison rate of 20% is enough".into(),
            section: "4.5".into(),
            figure: "Fig. 4a".into(),
            verdict: Verdict::NotRun,
            numbers: Default::default(),
            tolerance: [(
                "backdoor MSE at 20% / clean model".to_string(),
                tolerance("ratio", "<= 0.1", "<= 0.5"),
            )]
            .into(),
            cells: vec![],
            command: None,
        },
    ]
}

/// A manifest with the fields the appendix reads.
pub fn manifest() -> serde_json::Value {
    serde_json::json!({
        "run_id": "fixture-run",
        "profile": "smoke",
        "started": "2026-01-02T03:04:05Z",
        "git": {"commit": "0123456789abcdef", "dirty": false},
        "host": {"cpu": "test cpu", "cores": 2, "memory_bytes": 8589934592u64},
        "stages": [
            {"stage": "train", "experiment": "E1", "cell": "E1-BOX_14-Corner-p0.1-finetune-s0", "wall_s": 125.0, "disk_bytes": 1048576, "status": "ran"},
            {"stage": "measure", "experiment": "E1", "cell": "E1-BOX_14-Corner-p0.1-finetune-s0", "wall_s": 12.5, "disk_bytes": 2048, "status": "ran"},
            {"stage": "anp", "experiment": "anp", "wall_s": 3725.0, "status": "cached"}
        ]
    })
}

fn solid_png(path: &Path, rgb: [u8; 3]) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(path))?;
    image::RgbImage::from_pixel(16, 16, image::Rgb(rgb)).save(path)?;
    Ok(())
}

/// Writes a complete run directory into `dir`: the fixture frame, a manifest, claims verdicts,
/// a Tab. 1 gallery and sample images for Tab. 2.
pub fn write_run_dir(dir: &Path) -> anyhow::Result<()> {
    let rows = rows();
    std::fs::create_dir_all(dir)?;
    crate::schema::write_rows(&dir.join(crate::schema::FRAME_FILE), &rows)?;
    std::fs::write(dir.join("manifest.json"), manifest().to_string())?;
    std::fs::write(dir.join("claims.json"), serde_json::to_string(&verdicts())?)?;
    solid_png(&dir.join("gallery/triggers/BOX_14.png"), [128, 128, 128])?;
    solid_png(&dir.join("gallery/targets/Shoe.png"), [250, 250, 250])?;
    for r in rows
        .iter()
        .filter(|r| r.experiment == "E1" && r.trigger == "BOX_14" && r.target == "Shoe")
    {
        for (kind, rgb) in [("clean", [30, 90, 30]), ("backdoor", [200, 40, 40])] {
            for i in 0..2 {
                solid_png(&dir.join(format!("samples/{}/{kind}/{i}.png", r.cell)), rgb)?;
            }
        }
    }
    Ok(())
}
