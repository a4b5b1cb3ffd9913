//! Shared fixtures of the integration tests: a run directory with the fixture frame, a manifest,
//! claims verdicts and small sample images.
#![allow(dead_code)]
use std::path::Path;

use report::claims::{ClaimVerdict, Verdict};
use report::{fixture, schema};

pub fn verdicts() -> Vec<ClaimVerdict> {
    let mut numbers = std::collections::BTreeMap::new();
    numbers.insert("mse_with_trigger".to_string(), serde_json::json!(0.0021));
    numbers.insert("mse_clean_model".to_string(), serde_json::json!(0.12));
    vec![
        ClaimVerdict {
            id: "C1".into(),
            quote: "5% poison rate is sufficient … in most of the trigger-target settings".into(),
            section: "4.2".into(),
            figure: "Fig. 2a".into(),
            verdict: Verdict::Holds,
            numbers,
            tolerance: serde_json::json!("MSE ≤ 0.1 × clean model's"),
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
            tolerance: serde_json::json!(null),
            cells: vec![],
            command: None,
        },
    ]
}

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

fn solid_png(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(16, 16, image::Rgb(rgb)).save(path).unwrap();
}

/// A complete run directory in `dir`.
pub fn run_dir(dir: &Path) {
    let rows = fixture::rows();
    schema::write_rows(&dir.join(schema::FRAME_FILE), &rows).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest().to_string()).unwrap();
    std::fs::write(dir.join("claims.json"), serde_json::to_string(&verdicts()).unwrap()).unwrap();
    solid_png(&dir.join("gallery/triggers/BOX_14.png"), [128, 128, 128]);
    solid_png(&dir.join("gallery/targets/Shoe.png"), [250, 250, 250]);
    for r in rows.iter().filter(|r| r.experiment == "E1" && r.trigger == "BOX_14" && r.target == "Shoe") {
        for (kind, rgb) in [("clean", [30, 90, 30]), ("backdoor", [200, 40, 40])] {
            for i in 0..2 {
                solid_png(&dir.join(format!("samples/{}/{kind}/{i}.png", r.cell)), rgb);
            }
        }
    }
}
