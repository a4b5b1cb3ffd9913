//! Checks on a statistic read directly rather than as a ratio: `value` (a selection's aggregate,
//! per setting and seed) and `auroc` (detection over a run's models, per seed), for the claims
//! of the defenses that came after the paper.
use std::collections::BTreeMap;

use super::judge::{empty_result, finish, group, missing, Key, Used};
use super::verdict::{CheckResult, Unit};
use super::Check;
use crate::calibrate;
use crate::detection::{self, DETECTORS};
use crate::Row;

/// The result of a check whose selection matched no row.
fn unanswered(k: &Check, cals: &[calibrate::Calibration]) -> CheckResult {
    let mut out = empty_result(k);
    let (v, note) = missing(&k.a, cals);
    out.verdict = v;
    out.note = Some(note);
    out
}

/// The selection's aggregate per setting (`per`) and seed.
pub(super) fn value_check(
    k: &Check,
    rows: &[Row],
    cals: &[calibrate::Calibration],
    used: &mut Used,
) -> CheckResult {
    let a = group(&k.a, &k.per, rows);
    if a.values.is_empty() {
        return unanswered(k, cals);
    }
    let out = empty_result(k);
    let mut per_setting: BTreeMap<Key, Vec<Unit>> = BTreeMap::new();
    for ((key, seed), v) in &a.values {
        per_setting.entry(key.clone()).or_default().push(Unit {
            seed: *seed,
            value: *v,
            a: Some(*v),
            b: None,
            detail: vec![],
        });
    }
    used.add(&a.rows);
    finish(k, out, per_setting, vec![])
}

/// AUROC of the selected detection score, backdoored (poison rate > 0) against clean models,
/// per seed, pooled over every other field.
pub(super) fn auroc_check(
    k: &Check,
    rows: &[Row],
    cals: &[calibrate::Calibration],
    used: &mut Used,
) -> CheckResult {
    let mut out = empty_result(k);
    let metric = k.a.metric.as_deref().unwrap_or("");
    let Some(d) = DETECTORS.iter().find(|d| d.metric == metric) else {
        out.note = Some(format!(
            "auroc needs `a.metric` to be a detection score ({}), not {metric:?}",
            DETECTORS
                .iter()
                .map(|d| d.metric)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return out;
    };
    let picked: Vec<Row> = rows
        .iter()
        .filter(|r| k.a.matches(r) && r.value.is_finite())
        .cloned()
        .collect();
    if picked.is_empty() {
        return unanswered(k, cals);
    }
    let mut by_seed: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
    for r in &picked {
        by_seed.entry(r.seed).or_default().push(r.clone());
    }
    let mut units = vec![];
    let mut undefined = vec![];
    for (seed, seed_rows) in by_seed {
        let j = detection::judge(&seed_rows, d);
        match j.auroc {
            Some(v) => units.push(Unit {
                seed,
                value: v,
                a: None,
                b: None,
                detail: j
                    .models
                    .iter()
                    .map(|m| {
                        let kind = if m.backdoored { "backdoored" } else { "clean" };
                        format!("{} ({kind}): {}", m.model, m.score)
                    })
                    .collect(),
            }),
            None => undefined.push(format!(
                "seed {seed}: {} backdoored and {} clean model(s); AUROC needs both",
                j.backdoored(),
                j.clean()
            )),
        }
    }
    used.add(&picked);
    finish(k, out, BTreeMap::from([(Key::new(), units)]), undefined)
}
