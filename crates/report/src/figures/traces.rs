//! Line figures: a statistic against a number, one panel per model. ANP's probe per ANP epoch
//! and per perturbation budget (§4.6.1), and the epochs a backdoor needs (E6).
use std::collections::{BTreeMap, BTreeSet};

use super::{pick_utility, rate_label, utility_label, Figure, Stat, TraceFigure, TracePanel};
use super::{Row, TraceSeries};

/// A panel's key: trigger, target and poison rate (`Row::rate_key`), in that order.
type PanelKey = (String, String, i64);

fn model_key(r: &Row) -> PanelKey {
    (r.trigger.clone(), r.target.clone(), r.rate_key())
}

fn model_title((trigger, target, rate): &PanelKey) -> String {
    format!(
        "{trigger} → {target}, poison rate {}",
        rate_label(*rate as f64 / 1e6)
    )
}

/// Groups `points` (panel, series, x, value) into panels of series of x-sorted points, each
/// point's values (seeds) summarised as a [`Stat`]. Series are coloured in their order within
/// a panel.
fn panels(
    points: impl IntoIterator<Item = (PanelKey, String, f64, f64)>,
    title: impl Fn(&PanelKey) -> String,
) -> Vec<TracePanel> {
    // Per panel, per series, per x (as an exact key): x and its values.
    type Xs = BTreeMap<i64, (f64, Vec<f64>)>;
    let mut grouped: BTreeMap<PanelKey, BTreeMap<String, Xs>> = BTreeMap::new();
    for (panel, series, x, v) in points {
        grouped
            .entry(panel)
            .or_default()
            .entry(series)
            .or_default()
            // x as an exact key (to 1e-9), kept with its value for drawing.
            .entry((x * 1e9).round() as i64)
            .or_insert_with(|| (x, Vec::new()))
            .1
            .push(v);
    }
    grouped
        .into_iter()
        .map(|(key, series)| TracePanel {
            title: title(&key),
            series: series
                .into_iter()
                .enumerate()
                .map(|(i, (name, xs))| TraceSeries {
                    name,
                    colour: i,
                    points: xs
                        .into_values()
                        .filter_map(|(x, v)| Stat::of(v).map(|s| (x, s)))
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn figure(
    id: &str,
    title: &str,
    (x_label, y_label): (&str, &str),
    panels: Vec<TracePanel>,
    not_run: &str,
) -> Figure {
    Figure::Trace(TraceFigure {
        id: id.into(),
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        not_run: panels.is_empty().then(|| not_run.to_string()),
        panels,
    })
}

/// ANP's name for a trace: its parameters, with the defense named where it is not plain ANP.
fn anp_series(r: &Row) -> String {
    if r.defense == "anp" {
        r.defense_param.clone()
    } else {
        format!("{} {}", r.defense, r.defense_param)
    }
}

/// The ANP figure (§4.6.1): backdoor-target MSE of clean-noise samples per ANP epoch.
pub fn anp(rows: &[Row]) -> Figure {
    let points = rows
        .iter()
        .filter(|r| r.defense.starts_with("anp") && r.metric == "MSE")
        .filter_map(|r| {
            let e = r.defense_epoch?;
            Some((model_key(r), anp_series(r), e as f64, r.value))
        });
    figure(
        "anp",
        "ANP (§4.6.1): MSE to the target vs ANP epoch, per lr and budget",
        ("ANP epoch", "MSE to backdoor target"),
        panels(points, model_title),
        "not run: no ANP traces in this run",
    )
}

/// Later defenses (beyond the paper): each detection score against the poison rate, one panel
/// per score, one line per trigger; 0 % is the run's clean model.
pub fn later_scores(rows: &[Row]) -> Figure {
    let points = frame::detection::DETECTORS.iter().flat_map(|d| {
        rows.iter()
            .filter(|r| r.defense == d.defense && r.metric == d.metric && r.value.is_finite())
            .map(|r| {
                (
                    (d.metric.to_string(), String::new(), 0),
                    r.trigger.clone(),
                    r.poison_rate * 100.0,
                    r.value,
                )
            })
    });
    let title = |(metric, _, _): &PanelKey| {
        let d = frame::detection::DETECTORS
            .iter()
            .find(|d| d.metric == metric);
        let dir = match d.map(|d| d.direction) {
            Some(frame::detection::Direction::Low) => "low = backdoored",
            _ => "high = backdoored",
        };
        format!("{metric} ({dir})")
    };
    figure(
        "later-scores",
        "Later defenses: detection scores of clean (0 %) and backdoored models",
        ("poison rate (%)", "score"),
        panels(points, title),
        "not run: no Elijah or TERD defense in this run",
    )
}

/// `budget=B` of an ANP parameter string.
fn budget(param: &str) -> Option<f64> {
    param
        .split(',')
        .find_map(|kv| kv.strip_prefix("budget="))
        .and_then(|b| b.parse().ok())
}

/// ANP's budget sweep (§4.6.1, "a higher perturbation budget usually gives lower MSE"): the
/// trajectory's end (its last epoch, as claim C13 reads it) against the budget, per lr.
pub fn anp_budget(rows: &[Row]) -> Figure {
    // The last epoch of each trace (model, parameters, seed).
    let mut last: BTreeMap<(String, String, i64), (i64, &Row)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.defense == "anp" && r.metric == "MSE" && r.samples == "clean")
    {
        let (Some(e), Some(_)) = (r.defense_epoch, budget(&r.defense_param)) else {
            continue;
        };
        let k = (r.cell.clone(), r.defense_param.clone(), r.seed);
        if last.get(&k).is_none_or(|(le, _)| e > *le) {
            last.insert(k, (e, r));
        }
    }
    let lr = |p: &str| {
        p.split(',')
            .find(|kv| kv.starts_with("lr="))
            .unwrap_or(p)
            .to_string()
    };
    let points: Vec<_> = last
        .values()
        .map(|(_, r)| {
            let b = budget(&r.defense_param).expect("filtered above");
            (model_key(r), lr(&r.defense_param), b, r.value)
        })
        .collect();
    // A sweep needs two budgets at one lr on one model.
    let swept: BTreeSet<(PanelKey, String)> = points
        .iter()
        .filter(|(m, s, b, _)| {
            points
                .iter()
                .any(|(m2, s2, b2, _)| m2 == m && s2 == s && b2 != b)
        })
        .map(|(m, s, _, _)| (m.clone(), s.clone()))
        .collect();
    let points = points
        .into_iter()
        .filter(|(m, s, _, _)| swept.contains(&(m.clone(), s.clone())));
    figure(
        "anp-budget",
        "ANP budget (§4.6.1): MSE to the target at the last ANP epoch vs perturbation budget, per lr",
        ("perturbation budget", "MSE to backdoor target (last epoch)"),
        panels(points, model_title),
        "not run: no model was probed at two budgets",
    )
}

/// E6's rows sampled as the paper measures (DDPM, no clipping, no defense, from noise), at
/// every kept epoch and the end.
fn e6(r: &Row) -> bool {
    r.experiment == "E6"
        && r.defense == "none"
        && r.clip == "none"
        && r.sampler == "ddpm"
        && r.corruption == "none"
        && matches!(r.training.as_str(), "finetune" | "scratch")
}

/// E6, the epochs a backdoor needs: backdoor MSE (a) and clean quality (b) against the
/// fine-tuning epoch, one panel per trigger-target pair, a line per poison rate.
pub fn epochs_needed(rows: &[Row]) -> Vec<Figure> {
    let pair = |r: &Row| (r.trigger.clone(), r.target.clone(), 0);
    let pair_title = |(trigger, target, _): &PanelKey| format!("{trigger} → {target}");
    let series = |r: &Row| format!("poison rate {}", rate_label(r.poison_rate));
    let mse = rows
        .iter()
        .filter(|r| e6(r) && r.samples == "backdoor" && r.metric == "MSE")
        .map(|r| (pair(r), series(r), r.epochs, r.value));
    let utility = pick_utility(rows.iter().filter(|r| e6(r)));
    let quality = rows
        .iter()
        .filter(|r| e6(r) && r.samples == "clean" && Some(&r.metric) == utility.as_ref())
        .map(|r| (pair(r), series(r), r.epochs, r.value));
    let not_run = "not run: no E6 cells (models kept during fine-tuning) in this run";
    vec![
        figure(
            "e6a",
            "E6a: backdoor MSE vs fine-tuning epoch (epochs needed, §4)",
            ("epoch", "MSE to backdoor target"),
            panels(mse, pair_title),
            not_run,
        ),
        figure(
            "e6b",
            "E6b: clean quality vs fine-tuning epoch",
            (
                "epoch",
                &utility.as_deref().map_or("FID".into(), utility_label),
            ),
            panels(quality, pair_title),
            not_run,
        ),
    ]
}
