//! A small but complete metric frame for tests and demonstrations: two triggers × three targets ×
//! poison rates {0, 0.1, 0.5} × 2 seeds, fine-tune vs scratch cells, clipping cells, ANP traces and
//! sampler cells, a checkpoint series (E6), corrupted-input cells (E7) and the later defenses. Values follow simple
//! closed-form trends (no randomness) so figures look like the paper's shapes and snapshots are
//! stable. No CelebA-HQ (E3) cells: Fig. 4 renders as "not run".
use std::path::Path;

use crate::claims::ClaimVerdict;
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
            schedule_share: 1.0,
            seed: self.seed,
            defense: if self.clip == "none" { "none" } else { "clip" }.into(),
            defense_param: String::new(),
            defense_epoch: None,
            sampler: self.sampler.into(),
            steps: self.steps,
            clip: self.clip.into(),
            corruption: "none".into(),
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
    out.extend(e6_rows());
    out.extend(e7_rows());
    out.extend(later_rows());
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

/// E6: Grey Box → Corner at 10 % and 50 %, two seeds, measured after 1, 2 and 3 of 5 epochs
/// and at the end. The backdoor MSE falls from the clean image's distance as training goes on;
/// clean quality moves little.
fn e6_rows() -> Vec<Row> {
    let mut out = Vec::new();
    for &rate in RATES {
        for &seed in SEEDS {
            let cell = Cell {
                seed,
                ..base("E6", "BOX_14", "Corner", rate)
            };
            let clean_mse = 0.12 + 0.001 * seed as f64;
            for epoch in [1.0, 2.0, 3.0, 5.0] {
                let share = epoch / 5.0;
                for mut r in cell.rows() {
                    if rate > 0.0 {
                        r.epochs = epoch;
                        r.schedule_share = share;
                        if r.metric == "MSE" {
                            r.value += (clean_mse - r.value) * (1.0 - share).powi(2);
                        } else if r.samples == "clean" {
                            r.value += 0.5 * (1.0 - share);
                        }
                    }
                    if rate > 0.0 || epoch == 5.0 {
                        out.push(r);
                    }
                }
            }
        }
    }
    out
}

/// E7: Stop Sign → Hat, clean model and 50 %, each corruption; poisoned inputs against the target
/// (the backdoored model fires through denoising and the line, less through the box), unpoisoned
/// ones against their own image.
fn e7_rows() -> Vec<Row> {
    let mut out = Vec::new();
    for &rate in &[0.0, 0.5] {
        for (i, corruption) in ["denoise", "inpaint_box", "inpaint_line"]
            .iter()
            .enumerate()
        {
            let cell = base("E7", "STOP_SIGN_14", "Hat", rate);
            let to_target = if rate == 0.0 {
                0.15
            } else {
                0.002 + 0.01 * i as f64
            };
            for (samples, metric, value) in [
                ("backdoor", "MSE", to_target),
                ("backdoor", "SSIM", 1.0 - 4.0 * to_target),
                ("clean", "MSE", 0.03 + 0.01 * i as f64),
                ("clean", "SSIM", 0.7 - 0.05 * i as f64),
            ] {
                let mut r = cell.row(samples, metric, value);
                r.corruption = (*corruption).into();
                out.push(r);
            }
        }
    }
    out
}

/// The later defenses on both triggers → Hat at 0, 10 and 50 %: Elijah's uniformity falls and
/// TERD's KL rises with the poison rate (the 10 % Stop Sign model slips past Elijah), removal
/// takes the hit rate to near zero, the input tests flag triggered inputs.
fn later_rows() -> Vec<Row> {
    let mut out = Vec::new();
    for (t, &trigger) in TRIGGERS.iter().enumerate() {
        for &rate in RATES {
            let cell = base("later", trigger, "Hat", rate);
            let tf = t as f64;
            let mut row = |defense: &str, samples: &str, metric: &str, epoch, value| {
                let mut r = cell.row(samples, metric, value);
                r.defense = defense.into();
                r.defense_param = format!("{defense} settings");
                r.defense_epoch = epoch;
                out.push(r);
            };
            let uniformity = if rate == 0.0 {
                0.05
            } else {
                0.04 - 0.05 * rate + 0.02 * tf
            };
            row("elijah", "inverted", "elijah_uniformity", None, uniformity);
            row("elijah", "inverted", "MSE_threshold_rate", None, rate * 2.0);
            row("terd", "none", "terd_kl_mean", None, 0.002 + 0.4 * rate);
            row("terd", "none", "cost_seconds", None, 60.0 + tf);
            row("elijah", "clean", "cost_seconds", None, 120.0 + tf);
            row(
                "terd",
                "backdoor",
                "input_flagged_rate",
                None,
                if rate > 0.0 { 1.0 } else { 0.6 },
            );
            row(
                "terd",
                "clean",
                "input_flagged_rate",
                None,
                if rate > 0.0 { 0.0 } else { 0.3 },
            );
            row(
                "noise-test",
                "backdoor",
                "input_flagged_rate",
                None,
                1.0 - 0.1 * tf,
            );
            row("noise-test", "clean", "input_flagged_rate", None, 0.01);
            if rate > 0.0 {
                row("elijah", "backdoor", "MSE_threshold_rate", Some(0), 1.0);
                row(
                    "elijah",
                    "backdoor",
                    "MSE_threshold_rate",
                    Some(11),
                    0.02 * tf,
                );
                row("elijah", "clean", PROXY, Some(0), 20.0);
                row("elijah", "clean", PROXY, Some(11), 21.0 + tf);
            }
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

/// Two claims, as the real engine judges them on the fixture frame: one per-setting share of
/// successful backdoors (two seeds, so intervals), one that needs CelebA-HQ cells (not run).
pub const CLAIMS: &str = r#"
[success]
reason = "fixture"
mse_ratio = "<= 0.1"
hit_rate = "> 0.5"

[[claim]]
id = "C1"
quote = "BadDiffusion ... generates the target image whenever the trigger is present"
section = "§3"
figure = "Fig. 2a"
experiments = ["E1"]
reading = "every setting at p >= 50 % succeeds"
[[claim.check]]
name = "share of settings at p >= 50 % whose backdoor succeeds"
reason = "'whenever': every setting"
op = "share_successful"
a = { experiment = "E1", training = "finetune", poison_rate = ">= 0.5" }
holds = ">= 1"
[[claim.check.history]]
date = "2026-12-06"
holds = ">= 1"
reason = "fixture"
baseline = "none"
[[claim.check]]
name = "backdoor MSE, Stop Sign / Grey Box"
reason = "fixture: a per-setting ratio with seeds"
op = "ratio"
a = { experiment = "E1", trigger = "STOP_SIGN_14", training = "finetune", samples = "backdoor", metric = "MSE" }
b = { experiment = "E1", trigger = "BOX_14", training = "finetune", samples = "backdoor", metric = "MSE" }
per = ["target", "poison_rate"]
holds = "<= 1.5"
partly = "<= 3"
[[claim.check.history]]
date = "2026-12-06"
holds = "<= 1.5"
partly = "<= 3"
reason = "fixture"
baseline = "none"

[[claim]]
id = "C6"
quote = "a poison rate of 20% is enough"
section = "§4.4"
figure = "Fig. 4a"
experiments = ["E3"]
reading = "the CelebA-HQ backdoor succeeds at 20 %"
[[claim.check]]
name = "share of CelebA-HQ settings whose backdoor succeeds at 20 %"
reason = "fixture"
op = "share_successful"
a = { experiment = "E3", training = "finetune", poison_rate = "0.2" }
holds = ">= 1"
[[claim.check.history]]
date = "2026-12-06"
holds = ">= 1"
reason = "fixture"
baseline = "none"
"#;

/// The fixture profile's scale.
pub fn scale() -> crate::claims::Scale {
    crate::claims::Scale {
        fidelity: crate::claims::Fidelity::Miniature,
        dataset: "fmnist".into(),
        image_size: 16,
        channels: 1,
        timesteps: Some(100),
        unet_parameters: Some(280_177),
        n: 64,
        n_by_experiment: vec![],
        seeds: vec![0, 1],
        quality: PROXY.into(),
    }
}

/// The fixture's claims verdicts, judged by the real engine.
pub fn verdicts() -> Vec<ClaimVerdict> {
    let file = crate::claims::ClaimsFile::parse(CLAIMS).expect("the fixture claims parse");
    file.judge(
        &rows(),
        &crate::claims::RunInfo {
            profile: "smoke".into(),
            scale: Some(scale()),
        },
    )
}

/// A manifest with the fields the appendix reads.
pub fn manifest() -> serde_json::Value {
    serde_json::json!({
        "run_id": "fixture-run",
        "profile": "smoke",
        "scale": scale(),
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
