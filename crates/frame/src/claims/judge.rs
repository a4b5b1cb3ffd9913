//! Judging: checks per setting and seed, intervals against bounds, and what each verdict rests on.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Agg, Bound, Check, Claim, ClaimsFile, Cmp, Field, Op, Selection, Success};
use crate::calibrate::{self, CALIBRATED_RATE};
use crate::Row;

/// A claim's or a check's verdict. Order: better first, so the worst of several is the max.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "partly")]
    Partly,
    #[serde(rename = "inconclusive")]
    Inconclusive,
    #[serde(rename = "fails")]
    Fails,
    /// The rows exist but cannot answer (e.g. no calibrated threshold: the setting leaks).
    #[serde(rename = "not judged")]
    NotJudged,
    /// A selection matched no row: the run did not have the cells.
    #[serde(rename = "not run")]
    NotRun,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Holds,
        Verdict::Partly,
        Verdict::Inconclusive,
        Verdict::Fails,
        Verdict::NotJudged,
        Verdict::NotRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Partly => "partly",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Fails => "fails",
            Verdict::NotJudged => "not judged",
            Verdict::NotRun => "not run",
        }
    }

    /// A symbol that reads at a glance, also without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            Verdict::Holds => "✓",
            Verdict::Partly => "◐",
            Verdict::Inconclusive => "?",
            Verdict::Fails => "✗",
            Verdict::NotJudged => "–",
            Verdict::NotRun => "∅",
        }
    }
}

/// Whether a profile runs the paper's data and models or a scale model of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fidelity {
    /// A scale model (e.g. 16 px Fashion-MNIST on a CPU): its verdicts say whether the paper's
    /// effects appear in miniature, not whether they hold on CIFAR-10.
    Miniature,
    /// The paper's datasets and models (on fewer cells, samples or seeds where the profile says).
    Paper,
}

impl Fidelity {
    pub fn verdict_label(self) -> &'static str {
        match self {
            Fidelity::Miniature => "scale-model verdict",
            Fidelity::Paper => "paper-scale verdict",
        }
    }
}

/// What a profile's runs are: written by `baddiff plan` into the plan and the run manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub fidelity: Fidelity,
    pub dataset: String,
    pub image_size: usize,
    pub channels: usize,
    /// Diffusion steps T of the base model, when the profile states them.
    pub timesteps: Option<u64>,
    /// Parameters of the base UNet, when the profile builds it.
    pub unet_parameters: Option<u64>,
    /// Samples per measured set.
    pub n: usize,
    pub seeds: Vec<u64>,
    /// `FID` or the proxy's metric name.
    pub quality: String,
}

impl Scale {
    /// One line, e.g. "Fashion-MNIST 16 px, 1 channel, T = 100, 280,177-parameter UNet, N = 256,
    /// 1 seed, proxy FD".
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} {} px, {} channel{}",
            self.dataset,
            self.image_size,
            self.channels,
            if self.channels == 1 { "" } else { "s" }
        )];
        if let Some(t) = self.timesteps {
            parts.push(format!("T = {t}"));
        }
        if let Some(p) = self.unet_parameters {
            parts.push(format!("{}-parameter UNet", thousands(p)));
        }
        parts.push(format!("N = {} samples per set", thousands(self.n as u64)));
        parts.push(match self.seeds.len() {
            1 => "1 seed".to_string(),
            k => format!("{k} seeds"),
        });
        parts.push(if self.quality == "FID" {
            "FID".into()
        } else {
            format!("{} (a proxy, not FID)", self.quality)
        });
        parts.join(", ")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The run being judged.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub profile: String,
    pub scale: Option<Scale>,
}

/// What a verdict rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    pub profile: String,
    pub fidelity: Option<Fidelity>,
    /// The profile's scale in one line.
    pub scale: Option<String>,
    /// Seeds of the rows the claim used.
    pub seeds: Vec<i64>,
    /// Samples per set of the rows the claim used.
    pub n: Vec<i64>,
    /// Clean-quality metrics the claim used (FID or a proxy).
    pub quality: Vec<String>,
    pub single_run: bool,
    /// E.g. "scale-model verdict, single run".
    pub label: String,
}

/// One seed's value of one setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub seed: i64,
    pub value: f64,
    /// The operands of `ratio` / `relative_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// For `share_successful`: each setting and whether it succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingResult {
    /// E.g. "BOX_14 · Corner · p=0.5", or "all settings".
    pub label: String,
    pub verdict: Verdict,
    /// Min and max over seeds.
    pub interval: [f64; 2],
    pub units: Vec<Unit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub reason: String,
    pub op: Op,
    pub holds: Bound,
    #[serde(default)]
    pub partly: Option<Bound>,
    pub verdict: Verdict,
    /// Mean over every setting and seed.
    pub value: Option<f64>,
    /// Min and max over every setting and seed.
    pub interval: Option<[f64; 2]>,
    pub settings: Vec<SettingResult>,
    /// Why it was not run or not judged, or what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One judged claim (an entry of `claims.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimVerdict {
    pub id: String,
    /// The paper's words.
    pub quote: String,
    pub section: String,
    /// E.g. "Fig. 2a"; links to that figure in the report.
    pub figure: String,
    pub reading: String,
    pub verdict: Verdict,
    pub basis: Basis,
    pub checks: Vec<CheckResult>,
    /// Where the run limits what the verdict can show.
    pub limits: Vec<String>,
    /// The run cells the claim used.
    pub cells: Vec<String>,
    /// The command that reproduces only this claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Where an interval lies relative to a bound's region.
#[derive(PartialEq)]
enum Relation {
    Inside,
    Outside,
    Straddles,
}

fn relation(b: &Bound, lo: f64, hi: f64) -> Relation {
    let (inside, outside) = match b.cmp {
        Cmp::Lt | Cmp::Le => (b.contains(hi), !b.contains(lo)),
        Cmp::Gt | Cmp::Ge => (b.contains(lo), !b.contains(hi)),
        Cmp::Eq => (
            b.contains(lo) && b.contains(hi),
            !(b.contains(lo) || b.contains(hi) || (lo < b.value && b.value < hi)),
        ),
    };
    if inside {
        Relation::Inside
    } else if outside {
        Relation::Outside
    } else {
        Relation::Straddles
    }
}

/// The verdict of an interval: holds or partly only when wholly within, fails only when wholly
/// outside, inconclusive when it straddles a bound.
pub fn classify(lo: f64, hi: f64, holds: &Bound, partly: Option<&Bound>) -> Verdict {
    match relation(holds, lo, hi) {
        Relation::Inside => Verdict::Holds,
        Relation::Straddles => Verdict::Inconclusive,
        Relation::Outside => match partly.map(|p| relation(p, lo, hi)) {
            None | Some(Relation::Outside) => Verdict::Fails,
            Some(Relation::Inside) => Verdict::Partly,
            Some(Relation::Straddles) => Verdict::Inconclusive,
        },
    }
}

type Key = Vec<(Field, String)>;

fn key_of(fields: &[Field], r: &Row) -> Key {
    fields.iter().map(|f| (*f, f.value(r))).collect()
}

fn label(k: &Key) -> String {
    if k.is_empty() {
        "all settings".into()
    } else {
        k.iter()
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
        if let Some(c) = cals.iter().find(|c| c.threshold.is_none()) {
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
    out.verdict = out
        .settings
        .iter()
        .map(|s| s.verdict)
        .max()
        .unwrap_or(Verdict::NotRun);
    out
}

impl ClaimsFile {
    /// Each claim's verdict (the run's `claims.json`). `rows` include the derived
    /// `MSE_calibrated_rate` rows (the frame collection adds them).
    pub fn judge(&self, rows: &[Row], run: &RunInfo) -> Vec<ClaimVerdict> {
        let cals = calibrate::calibrations(rows);
        self.claims
            .iter()
            .map(|c| c.judge(&self.success, rows, &cals, run))
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
    ) -> ClaimVerdict {
        let mut used = Used::default();
        let checks: Vec<CheckResult> = self
            .checks
            .iter()
            .map(|k| match k.op {
                Op::ShareSuccessful => share_check(k, success, rows, cals, &mut used),
                Op::Ratio | Op::RelativeChange => ratio_check(k, rows, cals, &mut used),
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
        if single_run {
            label_parts.push("single run".into());
        } else if used.seeds.len() > 1 {
            label_parts.push(format!("{} seeds, min–max", used.seeds.len()));
        }
        let mut limits = Vec::new();
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
