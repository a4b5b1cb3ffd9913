//! Judging: checks per setting and seed (ratios, shares of successful settings, values read
//! directly, detection AUROC), intervals against bounds, and what each verdict rests on.
use std::collections::{BTreeMap, BTreeSet};

use super::{Agg, Check, Claim, ClaimsFile, Field, Op, Quantifier, Selection, Success};
use crate::calibrate::{self, CALIBRATED_RATE};
use crate::detection::{self, DETECTORS};
use crate::Row;

use super::verdict::{
    classify, most, Basis, CheckResult, ClaimVerdict, Fidelity, RunInfo, Scale, SettingResult,
    Unit, Verdict,
};

type Key = Vec<(Field, String)>;

fn key_of(fields: &[Field], r: &Row) -> Key {
    fields.iter().map(|f| (*f, f.value(r))).collect()
}

fn label(k: &Key) -> String {
    if k.is_empty() {
        "all settings".into()
    } else {
        k.iter()
            // A finished model's share goes without saying.
            .filter(|(f, v)| !(*f == Field::ScheduleShare && v == "schedule_share=1"))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// Rows of one selection, grouped by `fields` and seed, each group reduced by the selection's agg.
struct Groups {
    values: BTreeMap<(Key, i64), f64>,
    rows: Vec<Row>,
}

fn group(sel: &Selection, fields: &[Field], rows: &[Row]) -> Groups {
    let mut raw: BTreeMap<(Key, i64), Vec<&Row>> = BTreeMap::new();
    let mut used = Vec::new();
    for r in rows
        .iter()
        .filter(|r| sel.matches(r) && r.value.is_finite())
    {
        raw.entry((key_of(fields, r), r.seed)).or_default().push(r);
        used.push(r.clone());
    }
    let values = raw
        .into_iter()
        .map(|(k, rs)| {
            let vals: Vec<f64> = match sel.agg {
                Agg::Last => {
                    let last = rs.iter().filter_map(|r| r.defense_epoch).max();
                    rs.iter()
                        .filter(|r| r.defense_epoch == last)
                        .map(|r| r.value)
                        .collect()
                }
                _ => rs.iter().map(|r| r.value).collect(),
            };
            let v = match sel.agg {
                Agg::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Mean | Agg::Last => vals.iter().sum::<f64>() / vals.len() as f64,
            };
            (k, v)
        })
        .collect();
    Groups { values, rows: used }
}

/// The `b` value for a setting and seed: the same seed, or the only seed `b` has for it (a clean
/// base model shared by every seed of the backdoored ones).
fn lookup(b: &Groups, key: &Key, seed: i64) -> Option<f64> {
    if let Some(v) = b.values.get(&(key.clone(), seed)) {
        return Some(*v);
    }
    let mut same: Vec<f64> = b
        .values
        .iter()
        .filter(|((k, _), _)| k == key)
        .map(|(_, v)| *v)
        .collect();
    (same.len() == 1).then(|| same.remove(0))
}

/// Facts about the rows a check used, for the claim's basis.
#[derive(Default)]
struct Used {
    cells: BTreeSet<String>,
    seeds: BTreeSet<i64>,
    n: BTreeSet<i64>,
    quality: BTreeSet<String>,
}

impl Used {
    fn add(&mut self, rows: &[Row]) {
        for r in rows {
            self.cells.insert(r.cell.clone());
            self.seeds.insert(r.seed);
            self.n.insert(r.n_generated);
            if crate::row::is_utility_metric(&r.metric) {
                self.quality.insert(r.metric.clone());
            }
        }
    }
}

/// Why a selection matched nothing: a missing calibration is "not judged", anything else "not run".
fn missing(sel: &Selection, cals: &[calibrate::Calibration]) -> (Verdict, String) {
    let wants_calibrated = sel
        .metric
        .as_deref()
        .is_some_and(|m| m.split('|').any(|x| x == CALIBRATED_RATE));
    if wants_calibrated {
        // The selection's own targets (any, when it names none) that have no threshold.
        let named = |t: &str| {
            sel.target
                .as_deref()
                .is_none_or(|w| w.split('|').any(|x| x == t))
        };
        if let Some(c) = cals
            .iter()
            .find(|c| c.threshold.is_none() && named(&c.target))
        {
            return (
                Verdict::NotJudged,
                format!(
                    "no calibrated threshold for {}: {}",
                    c.target,
                    c.reason.clone().unwrap_or_default()
                ),
            );
        }
        if cals.is_empty() {
            return (
                Verdict::NotJudged,
                "no clean base model samples with per-image MSE records to calibrate \"on the target\" on".into(),
            );
        }
    }
    (
        Verdict::NotRun,
        format!(
            "no row matches {}: the run has no such cell or measurement",
            sel.describe()
        ),
    )
}

fn ratio_check(
    k: &Check,
    rows: &[Row],
    cals: &[calibrate::Calibration],
    used: &mut Used,
) -> CheckResult {
    let b_sel = k.b.as_ref().expect("validated: ratio checks have b");
    let join = k.join.clone().unwrap_or_else(|| k.per.clone());
    let a = group(&k.a, &k.per, rows);
    let b = group(b_sel, &join, rows);
    let mut out = empty_result(k);
    for (sel, g) in [(&k.a, &a), (b_sel, &b)] {
        if g.values.is_empty() {
            let (v, note) = missing(sel, cals);
            out.verdict = v;
            out.note = Some(note);
            return out;
        }
    }
    let mut per_setting: BTreeMap<Key, Vec<Unit>> = BTreeMap::new();
    let mut undefined = Vec::new();
    for ((key, seed), av) in &a.values {
        let jk: Key = key
            .iter()
            .filter(|(f, _)| join.contains(f))
            .cloned()
            .collect();
        let Some(bv) = lookup(&b, &jk, *seed) else {
            undefined.push(format!("{} (seed {seed}): no matching `b` row", label(key)));
            continue;
        };
        let value = match k.op {
            Op::RelativeChange => (av / bv - 1.0).abs(),
            _ => av / bv,
        };
        if value.is_nan() {
            undefined.push(format!(
                "{} (seed {seed}): {av} / {bv} is undefined",
                label(key)
            ));
            continue;
        }
        per_setting.entry(key.clone()).or_default().push(Unit {
            seed: *seed,
            value,
            a: Some(*av),
            b: Some(bv),
            detail: vec![],
        });
    }
    used.add(&a.rows);
    used.add(&b.rows);
    finish(k, out, per_setting, undefined)
}

fn share_check(
    k: &Check,
    success: &Success,
    rows: &[Row],
    cals: &[calibrate::Calibration],
    used: &mut Used,
) -> CheckResult {
    let mut out = empty_result(k);
    // The settings' own rows, sampled as the paper measures the attack.
    let base = |metric: &str| Selection {
        samples: Some("backdoor".into()),
        sampler: Some("ddpm".into()),
        clip: Some("none".into()),
        defense: Some("none".into()),
        metric: Some(metric.into()),
        ..k.a.clone()
    };
    let settings = [
        Field::Experiment,
        Field::Trigger,
        Field::Target,
        Field::PoisonRate,
        Field::ScheduleShare,
    ];
    let mse = group(&base("MSE"), &settings, rows);
    if mse.values.is_empty() {
        let (v, note) = missing(&base("MSE"), cals);
        out.verdict = v;
        out.note = Some(note);
        return out;
    }
    let hits = group(&base("MSE_threshold_rate"), &settings, rows);
    let clean_sel = Selection {
        training: Some("pretrained".into()),
        poison_rate: None,
        // The clean model is finished whatever share of its fine-tune a setting had.
        schedule_share: None,
        ..base("MSE")
    };
    let join = [Field::Experiment, Field::Trigger, Field::Target];
    let clean = group(&clean_sel, &join, rows);
    let mut by_seed: BTreeMap<i64, Vec<(bool, String)>> = BTreeMap::new();
    let mut undefined = Vec::new();
    for ((key, seed), m) in &mse.values {
        let jk: Key = key
            .iter()
            .filter(|(f, _)| join.contains(f))
            .cloned()
            .collect();
        let (Some(h), Some(c)) = (
            hits.values.get(&(key.clone(), *seed)),
            lookup(&clean, &jk, *seed),
        ) else {
            undefined.push(format!(
                "{} (seed {seed}): no trigger hit rate or no clean-model MSE for the same trigger and target",
                label(key)
            ));
            continue;
        };
        let ratio = m / c;
        let ok = success.mse_ratio.contains(ratio) && success.hit_rate.contains(*h);
        by_seed.entry(*seed).or_default().push((
            ok,
            format!(
                "{} {}: MSE ratio {} (succeeds {}), trigger hits {} (succeeds {})",
                if ok { "✓" } else { "✗" },
                label(key),
                short(ratio),
                success.mse_ratio,
                short(*h),
                success.hit_rate
            ),
        ));
    }
    used.add(&mse.rows);
    used.add(&hits.rows);
    used.add(&clean.rows);
    let units = by_seed
        .into_iter()
        .map(|(seed, s)| Unit {
            seed,
            value: s.iter().filter(|(ok, _)| *ok).count() as f64 / s.len() as f64,
            a: None,
            b: None,
            detail: s.into_iter().map(|(_, d)| d).collect(),
        })
        .collect();
    finish(k, out, BTreeMap::from([(Key::new(), units)]), undefined)
}

fn short(x: f64) -> String {
    if x == 0.0 || (1e-3..1e4).contains(&x.abs()) {
        format!("{:.4}", x)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{x:.3e}")
    }
}

fn empty_result(k: &Check) -> CheckResult {
    CheckResult {
        name: k.name.clone(),
        reason: k.reason.clone(),
        op: k.op,
        holds: k.holds,
        partly: k.partly,
        verdict: Verdict::NotRun,
        value: None,
        interval: None,
        settings: vec![],
        note: None,
    }
}

fn finish(
    k: &Check,
    mut out: CheckResult,
    per_setting: BTreeMap<Key, Vec<Unit>>,
    undefined: Vec<String>,
) -> CheckResult {
    if !undefined.is_empty() {
        out.note = Some(format!("left out: {}", undefined.join("; ")));
    }
    out.settings = per_setting
        .into_iter()
        .filter(|(_, u)| !u.is_empty())
        .map(|(key, units)| {
            let lo = units.iter().map(|u| u.value).fold(f64::INFINITY, f64::min);
            let hi = units
                .iter()
                .map(|u| u.value)
                .fold(f64::NEG_INFINITY, f64::max);
            SettingResult {
                label: label(&key),
                verdict: classify(lo, hi, &k.holds, k.partly.as_ref()),
                interval: [lo, hi],
                units,
            }
        })
        .collect();
    let all: Vec<f64> = out
        .settings
        .iter()
        .flat_map(|s| s.units.iter().map(|u| u.value))
        .collect();
    if all.is_empty() {
        out.verdict = Verdict::NotJudged;
        return out;
    }
    out.value = Some(all.iter().sum::<f64>() / all.len() as f64);
    out.interval = Some([
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ]);
    out.verdict = match k.settings {
        Quantifier::Every => out
            .settings
            .iter()
            .map(|s| s.verdict)
            .max()
            .unwrap_or(Verdict::NotRun),
        Quantifier::Most => most(&out.settings),
    };
    out
}

impl ClaimsFile {
    /// Each claim's verdict (the run's `claims.json`). `rows` include the derived
    /// `MSE_calibrated_rate` rows (the frame collection adds them).
    pub fn judge(&self, rows: &[Row], run: &RunInfo) -> Vec<ClaimVerdict> {
        let cals = calibrate::calibrations(rows);
        // A scale model outside its regime, or not shown to be in it, labels every verdict so
        // (paper/miniature.md).
        let regime = run
            .scale
            .as_ref()
            .filter(|s| s.fidelity == Fidelity::Miniature)
            .and_then(|_| crate::regime::note(&crate::regime::check(rows)));
        self.claims
            .iter()
            .map(|c| c.judge(&self.success, rows, &cals, run, regime.as_ref()))
            .collect()
    }
}

impl Claim {
    fn judge(
        &self,
        success: &Success,
        rows: &[Row],
        cals: &[calibrate::Calibration],
        run: &RunInfo,
        regime: Option<&crate::regime::Note>,
    ) -> ClaimVerdict {
        let mut used = Used::default();
        let checks: Vec<CheckResult> = self
            .checks
            .iter()
            .map(|k| match k.op {
                Op::ShareSuccessful => share_check(k, success, rows, cals, &mut used),
                Op::Ratio | Op::RelativeChange => ratio_check(k, rows, cals, &mut used),
                Op::Value => value_check(k, rows, cals, &mut used),
                Op::Auroc => auroc_check(k, rows, cals, &mut used),
            })
            .collect();
        let verdict = if checks.iter().any(|c| c.verdict == Verdict::NotRun) {
            Verdict::NotRun
        } else if checks.iter().any(|c| c.verdict == Verdict::NotJudged) {
            Verdict::NotJudged
        } else {
            checks
                .iter()
                .map(|c| c.verdict)
                .max()
                .unwrap_or(Verdict::NotRun)
        };
        let fidelity = run.scale.as_ref().map(|s| s.fidelity);
        let single_run = used.seeds.len() == 1;
        let mut label_parts = vec![fidelity
            .map_or("verdict of an unlabelled run", |f| f.verdict_label())
            .to_string()];
        if let Some(r) = regime {
            label_parts.push(r.standing.label().into());
        }
        if single_run {
            label_parts.push("single run".into());
        } else if used.seeds.len() > 1 {
            label_parts.push(format!("{} seeds, min–max", used.seeds.len()));
        }
        let mut limits: Vec<String> = regime.map(|r| r.line.clone()).into_iter().collect();
        if let Some(s) = run
            .scale
            .as_ref()
            .filter(|s| s.fidelity == Fidelity::Miniature)
        {
            limits.push(format!(
                "scale model ({}): shows whether the effect appears in miniature, not whether the paper's numbers hold; see [deviations](deviations.md)",
                s.summary()
            ));
        }
        if single_run {
            limits.push("single run: one seed, no spread over seeds".into());
        }
        for q in used.quality.iter().filter(|q| *q != "FID") {
            limits.push(format!(
                "clean quality by {q}, a proxy Fréchet distance, not FID"
            ));
        }
        if let Some(n) = used
            .n
            .iter()
            .filter(|n| **n > 1)
            .min()
            .filter(|n| **n < 10_000)
        {
            limits.push(format!("N = {n} samples per set (the paper: 10,000)"));
        }
        for c in &checks {
            if let (Some(note), Verdict::NotRun | Verdict::NotJudged) = (&c.note, c.verdict) {
                limits.push(format!("{}: {note}", c.name));
            }
        }
        // A rehearsal runs every check to exercise the engine, and withholds what they conclude.
        let verdict = match (fidelity, verdict) {
            (
                Some(Fidelity::Rehearsal),
                Verdict::Holds | Verdict::Partly | Verdict::Fails | Verdict::Inconclusive,
            ) => {
                limits.push(
                    "a dress rehearsal (`--shrink`): its checks ran, their verdict is withheld"
                        .into(),
                );
                Verdict::NotJudged
            }
            (_, v) => v,
        };
        ClaimVerdict {
            id: self.id.clone(),
            quote: self.quote.clone(),
            section: self.section.clone(),
            figure: self.figure.clone(),
            reading: self.reading.clone(),
            verdict,
            basis: Basis {
                profile: run.profile.clone(),
                fidelity,
                scale: run.scale.as_ref().map(Scale::summary),
                seeds: used.seeds.into_iter().collect(),
                n: used.n.into_iter().collect(),
                quality: used.quality.into_iter().collect(),
                single_run,
                label: label_parts.join(", "),
            },
            checks,
            limits,
            cells: used.cells.into_iter().collect(),
            command: Some(format!(
                "cargo xtask reproduce --profile {} --claim {}",
                run.profile, self.id
            )),
        }
    }
}

/// The result of a check whose selection matched no row.
fn unanswered(k: &Check, cals: &[calibrate::Calibration]) -> CheckResult {
    let mut out = empty_result(k);
    let (v, note) = missing(&k.a, cals);
    out.verdict = v;
    out.note = Some(note);
    out
}

/// The selection's aggregate per setting (`per`) and seed.
fn value_check(
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
fn auroc_check(
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
