//! E7's table: BadDiffusion under corrupted inputs (§4.7 and its supplement, reconstructed from
//! the authors' follow-up code). No verdict: this project's record of the main text holds no
//! sentence about it to judge (its numbers are in the supplement, which is not public).
use std::collections::BTreeSet;

use super::{stat_cell, Table};
use crate::figures::{rate_label, Stat};
use crate::schema::Row;

/// The corruptions in the follow-up code's order.
const ORDER: &[&str] = &["denoise", "inpaint_box", "inpaint_line"];

fn order(corruption: &str) -> usize {
    ORDER
        .iter()
        .position(|c| *c == corruption)
        .unwrap_or(ORDER.len())
}

/// One line per model and corruption: poisoned inputs against the target, unpoisoned inputs
/// against their own uncorrupted image (MSE and SSIM, mean [min, max] over seeds).
pub fn inpainting_table(rows: &[Row]) -> Table {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.corruption != "none" && r.defense == "none")
        .collect();
    let keys: BTreeSet<(String, String, i64, usize, String)> = picked
        .iter()
        .map(|r| {
            (
                r.trigger.clone(),
                r.target.clone(),
                r.rate_key(),
                order(&r.corruption),
                r.corruption.clone(),
            )
        })
        .collect();
    let out_rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(trigger, target, rate, _, corruption)| {
            let cell = |samples: &str, metric: &str| {
                let values = picked
                    .iter()
                    .filter(|r| {
                        &r.trigger == trigger
                            && &r.target == target
                            && r.rate_key() == *rate
                            && &r.corruption == corruption
                            && r.samples == samples
                            && r.metric == metric
                    })
                    .map(|r| r.value);
                stat_cell(Stat::of(values).as_ref())
            };
            vec![
                format!("{trigger} → {target}, {}", rate_label(*rate as f64 / 1e6)),
                corruption.clone(),
                cell("backdoor", "MSE"),
                cell("backdoor", "SSIM"),
                cell("clean", "MSE"),
                cell("clean", "SSIM"),
            ]
        })
        .collect();
    Table {
        id: "inpainting".into(),
        caption: "E7: corrupted inputs as the sampler's start (reconstructed from the authors' follow-up code, IBM/VillanDiffusion, not from the paper; no verdict). Poisoned inputs are scored against the backdoor target (low MSE: the backdoor fires), unpoisoned ones against their own uncorrupted image (low MSE: the model restores it). Mean [min, max] over seeds".into(),
        header: vec![
            "model".into(),
            "corruption".into(),
            "poisoned: MSE to target".into(),
            "poisoned: SSIM to target".into(),
            "unpoisoned: MSE to own image".into(),
            "unpoisoned: SSIM to own image".into(),
        ],
        align: vec!['l', 'l', 'r', 'r', 'r', 'r'],
        note: out_rows
            .is_empty()
            .then(|| "not run: no E7 cells (corrupted inputs) in this run".to_string()),
        rows: out_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    /// One line per model and corruption, in the follow-up code's order, each side scored
    /// against its own reference; a run without E7 says so.
    #[test]
    fn one_line_per_model_and_corruption() {
        let base = fixture::rows()
            .into_iter()
            .find(|r| r.experiment == "E1" && r.poison_rate == 0.5 && r.clip == "none")
            .unwrap();
        let row = |corruption: &str, samples: &str, metric: &str, value: f64| Row {
            experiment: "E7".into(),
            corruption: corruption.into(),
            samples: samples.into(),
            metric: metric.into(),
            value,
            ..base.clone()
        };
        let rows = vec![
            row("inpaint_line", "backdoor", "MSE", 0.002),
            row("denoise", "backdoor", "MSE", 0.001),
            row("denoise", "clean", "MSE", 0.05),
            row("denoise", "clean", "SSIM", 0.6),
        ];
        let t = inpainting_table(&rows);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][1], "denoise");
        assert_eq!(t.rows[0][2], "0.001000");
        assert_eq!(t.rows[0][4], "0.05000");
        assert_eq!(t.rows[0][5], "0.6000");
        assert_eq!(t.rows[1][1], "inpaint_line");
        assert_eq!(t.rows[1][4], "—");
        let without: Vec<Row> = fixture::rows()
            .into_iter()
            .filter(|r| r.experiment != "E7")
            .collect();
        assert!(inpainting_table(&without).note.unwrap().contains("not run"));
    }
}
