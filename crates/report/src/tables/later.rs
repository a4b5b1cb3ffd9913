//! "Later defenses": Elijah, TERD and the input-noise test, judged on every model of a run
//! (beyond the paper). Detection over models ([`frame::detection`]), Elijah's removal, and the
//! input tests per trigger.
use std::collections::BTreeSet;

use frame::detection::{self, model_of, Detection};

use super::{num, stat_cell, Table};
use crate::figures::Stat;
use crate::schema::{is_utility_metric, Row};

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), num)
}

/// The mean cost per model of `defense` (seconds, optimiser steps).
fn cost(rows: &[Row], defense: &str, metric: &str) -> Option<Stat> {
    Stat::of(
        rows.iter()
            .filter(|r| r.defense == defense && r.metric == metric)
            .map(|r| r.value),
    )
}

/// One line per detection score: how many models of each kind, AUROC, the stated rule's
/// threshold and its true- and false-positive shares, and the defense's cost per model.
pub fn detection_table(rows: &[Row]) -> Table {
    let judged = detection::judge_all(rows);
    let out: Vec<Vec<String>> = judged
        .iter()
        .map(|j| {
            vec![
                j.detector.label.into(),
                format!("{} / {}", j.backdoored(), j.clean()),
                opt(j.auroc),
                opt(j.threshold),
                opt(j.tpr),
                opt(j.fpr),
                stat_cell(cost(rows, j.detector.defense, "cost_seconds").as_ref()),
                stat_cell(cost(rows, j.detector.defense, "cost_optimiser_steps").as_ref()),
            ]
        })
        .collect();
    Table {
        id: "later-detection".into(),
        caption: format!(
            "Later defenses, model detection over the run's models (beyond the paper). AUROC: the chance a backdoored model scores more backdoor-like than a clean one. Rule (neither Elijah's nor TERD's code has one): the threshold that flags the most backdoored models while flagging at most {} % of the clean ones, so clean models' shares are in-sample. Cost per model: mean [min, max]",
            detection::MAX_FPR * 100.0
        ),
        header: [
            "score",
            "models (backdoored / clean)",
            "AUROC",
            "threshold",
            "backdoored flagged",
            "clean flagged",
            "seconds per model",
            "optimiser steps per model",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
        note: out
            .is_empty()
            .then(|| "not run: no Elijah or TERD defense in this run".to_string()),
        rows: out,
    }
}

/// One line per model: each detection score and whether the rule flags it, and the share of
/// the samples from Elijah's inverted trigger that land on the backdoor target.
pub fn models_table(rows: &[Row]) -> Table {
    let judged: Vec<Detection> = detection::judge_all(rows);
    let models: BTreeSet<(bool, String)> = judged
        .iter()
        .flat_map(|j| j.models.iter().map(|m| (!m.backdoored, m.model.clone())))
        .collect();
    let inverted_hits = |model: &str| {
        Stat::of(
            rows.iter()
                .filter(|r| {
                    r.defense == "elijah"
                        && r.samples == "inverted"
                        && r.metric == "MSE_threshold_rate"
                        && model_of(r).0 == model
                })
                .map(|r| r.value),
        )
    };
    let out: Vec<Vec<String>> = models
        .iter()
        .map(|(clean, model)| {
            let mut line = vec![
                model.clone(),
                if *clean { "clean" } else { "backdoored" }.into(),
            ];
            for j in &judged {
                line.push(match j.models.iter().find(|m| &m.model == model) {
                    None => "—".into(),
                    Some(m) => {
                        let mark = match j.flags(m.score) {
                            Some(true) => " ⚑",
                            _ => "",
                        };
                        format!("{}{mark}", num(m.score))
                    }
                });
            }
            // A mean over the model's cells, as its scores are (the clean model has one per
            // trigger, the same model and seed).
            line.push(inverted_hits(model).map_or_else(|| "—".into(), |s| num(s.mean)));
            line
        })
        .collect();
    let mut header = vec!["model".to_string(), "kind".into()];
    header.extend(judged.iter().map(|j| j.detector.metric.to_string()));
    header.push("Elijah: inverted-trigger samples on target".into());
    Table {
        id: "later-models".into(),
        caption: "Later defenses per model: each detection score (⚑: flagged by the rule above) and the share of the 16 samples from Elijah's inverted trigger within the profile's MSE threshold of the backdoor target (does the inversion find a trigger that fires?)".into(),
        align: std::iter::once('l')
            .chain(std::iter::repeat_n('r', header.len() - 1))
            .collect(),
        header,
        note: out
            .is_empty()
            .then(|| "not run: no Elijah or TERD defense in this run".to_string()),
        rows: out,
    }
}

/// A removal line's model: the model, and for the clean model (which every trigger's 0 % cell
/// shares) the trigger whose inputs measured it.
fn removal_model(r: &Row) -> (bool, String) {
    match model_of(r) {
        (m, true) => (false, m),
        (m, false) => (true, format!("{m}, {} inputs", r.trigger)),
    }
}

/// One line per model Elijah's removal ran on: before → after, on the same numbers of samples.
pub fn removal_table(rows: &[Row]) -> Table {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.defense == "elijah" && r.defense_epoch.is_some())
        .collect();
    let models: BTreeSet<(bool, String)> = picked.iter().map(|r| removal_model(r)).collect();
    let out: Vec<Vec<String>> = models
        .iter()
        .map(|(_, model)| {
            let of = |samples: &str, metric: &dyn Fn(&str) -> bool, after: bool| {
                Stat::of(
                    picked
                        .iter()
                        .filter(|r| {
                            removal_model(r).1 == *model
                                && r.samples == samples
                                && metric(&r.metric)
                                && (r.defense_epoch != Some(0)) == after
                        })
                        .map(|r| r.value),
                )
            };
            let pair = |samples: &str, metric: &dyn Fn(&str) -> bool| {
                format!(
                    "{} → {}",
                    stat_cell(of(samples, metric, false).as_ref()),
                    stat_cell(of(samples, metric, true).as_ref())
                )
            };
            vec![
                model.clone(),
                pair("backdoor", &|m| m == "MSE_threshold_rate"),
                pair("backdoor", &|m| m == "MSE"),
                pair("clean", &|m| m == "MSE_threshold_rate"),
                pair("clean", &is_utility_metric),
            ]
        })
        .collect();
    Table {
        id: "later-removal".into(),
        caption: "Elijah's removal per model, before → after (the same number of samples each side): trigger samples on the target (hit rate, profile's MSE threshold) and their MSE to it, clean samples on the target, and clean quality (the profile's Fréchet distance on those few samples: compare before with after, not with other tables)".into(),
        header: [
            "model",
            "trigger samples on target",
            "trigger samples: MSE to target",
            "clean samples on target",
            "clean quality (FD)",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'r', 'r', 'r', 'r'],
        note: out
            .is_empty()
            .then(|| "not run: no Elijah removal in this run".to_string()),
        rows: out,
    }
}

/// One line per cell with an input test: the shares of triggered and of clean inputs flagged by
/// TERD's test (with that model's reversed trigger) and by the model-free noise test.
pub fn inputs_table(rows: &[Row]) -> Table {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "input_flagged_rate")
        .collect();
    let cells: BTreeSet<(String, String)> = picked
        .iter()
        .map(|r| (model_of(r).0, r.trigger.clone()))
        .collect();
    let out: Vec<Vec<String>> = cells
        .iter()
        .map(|(model, trigger)| {
            let of = |defense: &str, samples: &str| {
                stat_cell(
                    Stat::of(
                        picked
                            .iter()
                            .filter(|r| {
                                model_of(r).0 == *model
                                    && &r.trigger == trigger
                                    && r.defense == defense
                                    && r.samples == samples
                            })
                            .map(|r| r.value),
                    )
                    .as_ref(),
                )
            };
            vec![
                model.clone(),
                trigger.clone(),
                of("terd", "backdoor"),
                of("terd", "clean"),
                of("noise-test", "backdoor"),
                of("noise-test", "clean"),
            ]
        })
        .collect();
    Table {
        id: "later-inputs".into(),
        caption: "Input detection: shares of triggered (ε + trigger) and clean inputs flagged, by TERD's likelihood test with the model's reversed trigger and by the model-free noise test (Kolmogorov–Smirnov against N(0, I), calibrated to 1 % false positives). A clean model has no backdoor, so on its rows \"triggered\" only says what the test does with the trigger's inputs".into(),
        header: [
            "model",
            "trigger",
            "TERD: triggered flagged",
            "TERD: clean flagged",
            "noise test: triggered flagged",
            "noise test: clean flagged",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'l', 'r', 'r', 'r', 'r'],
        note: out
            .is_empty()
            .then(|| "not run: no input test in this run".to_string()),
        rows: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    /// Detection, per-model, removal and input tables from a handful of rows; a run without the
    /// later defenses says so in each.
    #[test]
    fn later_tables_from_rows() {
        let base = fixture::rows()
            .into_iter()
            .find(|r| r.experiment == "E1" && r.poison_rate == 0.5 && r.clip == "none")
            .unwrap();
        let row = |rate: f64, defense: &str, samples: &str, metric: &str, epoch, value| Row {
            experiment: "later".into(),
            poison_rate: rate,
            defense: defense.into(),
            samples: samples.into(),
            metric: metric.into(),
            defense_epoch: epoch,
            value,
            ..base.clone()
        };
        let rows = vec![
            row(0.0, "terd", "none", "terd_kl_mean", None, 0.01),
            row(0.5, "terd", "none", "terd_kl_mean", None, 0.3),
            row(0.5, "terd", "clean", "cost_seconds", None, 12.0),
            row(
                0.5,
                "elijah",
                "backdoor",
                "MSE_threshold_rate",
                Some(0),
                1.0,
            ),
            row(
                0.5,
                "elijah",
                "backdoor",
                "MSE_threshold_rate",
                Some(11),
                0.0,
            ),
            row(0.5, "terd", "backdoor", "input_flagged_rate", None, 1.0),
            row(0.5, "noise-test", "clean", "input_flagged_rate", None, 0.01),
        ];
        let d = detection_table(&rows);
        assert_eq!(d.rows.len(), 1);
        assert_eq!(&d.rows[0][1..6], ["1 / 1", "1.000", "0.3000", "1.000", "0"]);
        assert_eq!(d.rows[0][6], "12.00");
        let m = models_table(&rows);
        assert_eq!(m.rows.len(), 2);
        assert!(m.rows[0][2].ends_with('⚑'), "{:?}", m.rows);
        assert_eq!(m.rows[1][1], "clean");
        let r = removal_table(&rows);
        assert_eq!(r.rows[0][1], "1.000 → 0");
        let i = inputs_table(&rows);
        assert_eq!(&i.rows[0][2..], ["1.000", "—", "—", "0.01000"]);
        let none = &fixture::rows()[..4];
        for t in [
            detection_table(none),
            models_table(none),
            removal_table(none),
            inputs_table(none),
        ] {
            assert!(t.note.unwrap().starts_with("not run"));
        }
    }
}
