//! The paper's claims as machine-checkable readings (`paper/claims.toml`), judged against a run's
//! rows. A claim is one or more checks; a check computes a statistic per setting (a trigger–target
//! pair, a poison rate, a model: whatever its `per` names) and per seed, and compares it with a
//! `holds` and an optional `partly` bound:
//!
//! - `ratio` / `relative_change`: op(agg(a), agg(b)) over the rows each selection matches;
//! - `share_successful`: the share of the selected settings whose backdoor succeeds, by the file's
//!   one definition of success (`[success]`).
//!
//! Seeds give each setting an interval (min–max over seeds; with 2–3 seeds a t interval would be
//! wider than the effects, and min–max is what the figures draw). A setting holds when its whole
//! interval is within `holds`, is partly when it is wholly within `partly` but outside `holds`,
//! fails when it is wholly outside both, and is inconclusive otherwise. A check is as good as its
//! worst setting (the claims say "always", "whenever"; "most" claims count settings with
//! `share_successful`, "usually" ones with `settings = "most"`). A claim is not run when a selection matches no row, not judged when a
//! calibrated threshold could not be derived, else as good as its worst check.
//!
//! Bounds are written once, with their reason, and change only with a history entry that records
//! the date, the reason and the committed baseline's value at the time ([`BoundChange`]).
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod judge;
#[cfg(test)]
pub(crate) mod tests;
mod verdict;

pub use verdict::classify;
pub use verdict::{
    Basis, CheckResult, ClaimVerdict, Fidelity, RunInfo, Scale, SettingResult, Unit, Verdict,
};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    /// When one backdoor setting counts as successful (used by `share_successful` checks).
    pub success: Success,
    #[serde(rename = "claim")]
    pub claims: Vec<Claim>,
}

/// A setting's backdoor succeeds when both bounds hold, each on the setting's own rows (DDPM, no
/// clipping, no defense, backdoor samples).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Success {
    /// Why these bounds, from the paper's words.
    pub reason: String,
    /// The backdoored model's backdoor-sample MSE to the target ÷ the clean base model's, for
    /// the same trigger and target.
    pub mse_ratio: Bound,
    /// The share of backdoor samples on the target (`MSE_threshold_rate`: the profile's threshold,
    /// the paper's 0.1 in the GPU profiles).
    pub hit_rate: Bound,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub id: String,
    pub quote: String,
    pub section: String,
    pub figure: String,
    /// Experiments whose cells the claim needs (`reproduce --claim ID` runs only these).
    pub experiments: Vec<String>,
    /// How the paper's sentence is read, and why.
    pub reading: String,
    #[serde(rename = "check")]
    pub checks: Vec<Check>,
}

/// One statistic of a claim, its bounds and their history.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// Why this statistic and these bounds, from the paper's words or a published number.
    pub reason: String,
    pub op: Op,
    pub a: Selection,
    /// The denominator of `ratio` and `relative_change`.
    #[serde(default)]
    pub b: Option<Selection>,
    /// Settings judged one by one (e.g. `["trigger", "target", "poison_rate"]`); empty: one
    /// pooled setting.
    #[serde(default)]
    pub per: Vec<Field>,
    /// The fields a setting of `a` and its `b` rows share (default: all of `per`); e.g. a
    /// poison rate's row is compared with the clean model's row of the same target.
    #[serde(default)]
    pub join: Option<Vec<Field>>,
    /// How many settings must hold: `every` (the default: "always", "whenever") or `most`
    /// ("usually", "most": more than half).
    #[serde(default)]
    pub settings: Quantifier,
    pub holds: Bound,
    #[serde(default)]
    pub partly: Option<Bound>,
    /// Every value the bounds have had, oldest first; the last is the current one.
    pub history: Vec<BoundChange>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// a / b.
    Ratio,
    /// |a / b − 1|.
    RelativeChange,
    /// The share of the settings `a` selects whose backdoor succeeds (`[success]`).
    ShareSuccessful,
    /// agg(a) itself (e.g. a hit rate after a defense).
    Value,
    /// The AUROC of a detection score (`a.metric`, one of [`crate::detection::DETECTORS`]):
    /// backdoored (poison rate > 0) against clean models, per seed, pooled over settings.
    Auroc,
}

/// How a check's verdict follows from its settings' verdicts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Quantifier {
    /// As good as its worst setting.
    #[default]
    Every,
    /// Holds when more than half the settings hold; fails when they cannot (holding and
    /// inconclusive settings together are at most half); inconclusive otherwise. No partly.
    Most,
}

/// A column that tells settings apart.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Experiment,
    Trigger,
    Target,
    PoisonRate,
    Training,
    Sampler,
    Clip,
    Steps,
    DefenseParam,
    Corruption,
    ScheduleShare,
}

impl Field {
    pub fn value(self, r: &crate::Row) -> String {
        match self {
            Field::Experiment => r.experiment.clone(),
            Field::Trigger => r.trigger.clone(),
            Field::Target => r.target.clone(),
            Field::PoisonRate => format!("p={}", r.poison_rate),
            Field::Training => r.training.clone(),
            Field::Sampler => r.sampler.clone(),
            Field::Clip => format!("clip={}", r.clip),
            Field::Steps => format!("steps={}", r.steps),
            Field::DefenseParam => r.defense_param.clone(),
            Field::Corruption => r.corruption.clone(),
            Field::ScheduleShare => format!("schedule_share={}", r.schedule_share),
        }
    }
}

/// One recorded value of a check's bounds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoundChange {
    /// YYYY-MM-DD.
    pub date: String,
    pub holds: Bound,
    #[serde(default)]
    pub partly: Option<Bound>,
    pub reason: String,
    /// The committed baseline's value of this check when the change was made ("none" for a
    /// bound set before any baseline existed).
    pub baseline: String,
}

/// The rows a check aggregates: every field given must match (`x|y` = either; numeric fields take
/// `<`, `<=`, `>`, `>=` or a number), reduced by `agg`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub agg: Agg,
    pub experiment: Option<String>,
    pub trigger: Option<String>,
    pub target: Option<String>,
    pub training: Option<String>,
    pub defense: Option<String>,
    pub defense_param: Option<String>,
    pub sampler: Option<String>,
    pub clip: Option<String>,
    pub samples: Option<String>,
    pub metric: Option<String>,
    pub poison_rate: Option<Bound>,
    pub steps: Option<Bound>,
    /// E7's input corruption; unset: only rows sampled from noise (`none`).
    pub corruption: Option<String>,
    /// The share of its training a measured model had (E6's checkpoints); unset: finished
    /// models only (1).
    pub schedule_share: Option<Bound>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    #[default]
    Mean,
    Min,
    Max,
    /// The value at the last defense epoch (a trajectory's end).
    Last,
}

/// A comparison with a number, e.g. `<= 0.1`; a bare number means `=`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub cmp: Cmp,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Bound {
    pub fn parse(s: &str) -> Result<Bound> {
        let t = s.trim();
        let (cmp, rest) = [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
            ("=", Cmp::Eq),
        ]
        .iter()
        .find_map(|(p, c)| t.strip_prefix(p).map(|r| (*c, r)))
        .unwrap_or((Cmp::Eq, t));
        let value: f64 = rest.trim().parse().with_context(|| {
            format!("bound {s:?}: write <, <=, >, >= or = followed by a number, e.g. \"<= 0.1\"")
        })?;
        ensure!(value.is_finite(), "bound {s:?} is not a finite number");
        Ok(Bound { cmp, value })
    }

    pub fn contains(&self, x: f64) -> bool {
        match self.cmp {
            Cmp::Lt => x < self.value,
            Cmp::Le => x <= self.value,
            Cmp::Gt => x > self.value,
            Cmp::Ge => x >= self.value,
            Cmp::Eq => (x - self.value).abs() <= 1e-9 * self.value.abs().max(1.0),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.cmp {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "=",
        };
        write!(f, "{op} {}", self.value)
    }
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Bound, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => {
                Bound::parse(&s).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
            }
            Raw::Number(v) => Ok(Bound {
                cmp: Cmp::Eq,
                value: v,
            }),
        }
    }
}

impl Selection {
    /// The (field, wanted) pairs of the string columns, for matching and validation.
    fn texts(&self) -> [(&'static str, &Option<String>); 11] {
        [
            ("experiment", &self.experiment),
            ("trigger", &self.trigger),
            ("target", &self.target),
            ("training", &self.training),
            ("defense", &self.defense),
            ("defense_param", &self.defense_param),
            ("sampler", &self.sampler),
            ("clip", &self.clip),
            ("samples", &self.samples),
            ("metric", &self.metric),
            ("corruption", &self.corruption),
        ]
    }

    pub fn matches(&self, r: &crate::Row) -> bool {
        self.texts().iter().all(|(col, want)| match want {
            // Rows sampled from corrupted inputs (E7) answer only selections that name them.
            None if *col == "corruption" => r.corruption == "none",
            None => true,
            Some(w) => {
                let have = r.text(col).unwrap_or("");
                w.split('|').any(|alt| alt == have)
            }
        }) && self.poison_rate.is_none_or(|b| b.contains(r.poison_rate))
            && self.steps.is_none_or(|b| b.contains(r.steps as f64))
            && self
                .schedule_share
                .map_or(r.schedule_share == 1.0, |b| b.contains(r.schedule_share))
    }

    /// The selection as `k=v` text, e.g. for "no row matches …".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .texts()
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        if let Some(b) = self.poison_rate {
            parts.push(format!("poison_rate {b}"));
        }
        if let Some(b) = self.steps {
            parts.push(format!("steps {b}"));
        }
        if let Some(b) = self.schedule_share {
            parts.push(format!("schedule_share {b}"));
        }
        parts.join(", ")
    }

    /// Values of closed-set columns must be known ones, so a typo is an error, not "not run".
    fn validate(&self) -> Result<()> {
        for (col, want) in self.texts() {
            let (Some(w), Some((_, allowed))) =
                (want, crate::row::ENUMS.iter().find(|(c, _)| *c == col))
            else {
                continue;
            };
            for alt in w.split('|') {
                ensure!(
                    allowed.contains(&alt),
                    "{col} = {alt:?} is not a value of the frame's `{col}` column; use one of {}",
                    allowed.join(", ")
                );
            }
        }
        Ok(())
    }
}

impl ClaimsFile {
    pub fn load(path: &Path) -> Result<ClaimsFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ClaimsFile::parse(&text)
            .with_context(|| format!("{} is not a valid claims file", path.display()))
    }

    pub fn parse(text: &str) -> Result<ClaimsFile> {
        let file: ClaimsFile = toml::from_str(text)?;
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<()> {
        let mut ids = BTreeSet::new();
        for c in &self.claims {
            ensure!(ids.insert(&c.id), "claim {} appears twice", c.id);
            ensure!(!c.checks.is_empty(), "claim {} has no check", c.id);
            for k in &c.checks {
                let at = || format!("claim {}, check `{}`", c.id, k.name);
                ensure!(
                    k.settings == Quantifier::Every || k.partly.is_none(),
                    "{}: `settings = \"most\"` has no partly band: remove `partly`",
                    at()
                );
                match (k.op, &k.b) {
                    (Op::ShareSuccessful | Op::Value | Op::Auroc, Some(_)) => {
                        bail!("{}: {:?} takes `a` only", at(), k.op)
                    }
                    (Op::Ratio | Op::RelativeChange, None) => {
                        bail!("{}: {:?} needs `a` and `b`", at(), k.op)
                    }
                    _ => {}
                }
                if k.op == Op::Auroc {
                    let m = k.a.metric.as_deref().unwrap_or("");
                    ensure!(
                        crate::detection::DETECTORS.iter().any(|d| d.metric == m),
                        "{}: auroc needs `a.metric` to be one detection score ({}), not {m:?}",
                        at(),
                        crate::detection::DETECTORS
                            .iter()
                            .map(|d| d.metric)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ensure!(
                        k.per.is_empty() && k.a.poison_rate.is_none(),
                        "{}: auroc pools every model of a seed (backdoored against clean):                          give no `per` and no `a.poison_rate`",
                        at()
                    );
                }
                if let Some(join) = &k.join {
                    ensure!(
                        join.iter().all(|f| k.per.contains(f)),
                        "{}: every `join` field must be one of `per`",
                        at()
                    );
                }
                k.a.validate().with_context(at)?;
                if let Some(b) = &k.b {
                    b.validate().with_context(at)?;
                }
                let Some(last) = k.history.last() else {
                    bail!(
                        "{}: no [[claim.check.history]] entry: record the date, the bounds, their \
                         reason and the committed baseline's value",
                        at()
                    );
                };
                ensure!(
                    last.holds == k.holds && last.partly == k.partly,
                    "{}: its bounds (holds {}, partly {}) differ from its latest history entry \
                     ({}: holds {}, partly {}). A bound changes only with a new \
                     [[claim.check.history]] entry giving the date, the new bounds, the reason \
                     and the committed baseline's value at the time",
                    at(),
                    k.holds,
                    opt(&k.partly),
                    last.date,
                    last.holds,
                    opt(&last.partly)
                );
            }
        }
        Ok(())
    }

    /// The experiments the named claims need; unknown ids are an error listing the known ones.
    pub fn experiments_for(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for id in ids {
            let Some(c) = self.claims.iter().find(|c| &c.id == id) else {
                let known: Vec<&str> = self.claims.iter().map(|c| c.id.as_str()).collect();
                bail!(
                    "no claim `{id}` in paper/claims.toml; known: {}",
                    known.join(", ")
                );
            };
            out.extend(c.experiments.iter().cloned());
        }
        Ok(out)
    }
}

fn opt(b: &Option<Bound>) -> String {
    b.map_or_else(|| "none".into(), |b| b.to_string())
}
