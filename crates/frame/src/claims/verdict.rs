//! What judging produces (the entries of `claims.json`) and what it needs to know of the run.
use serde::{Deserialize, Serialize};

use super::{Bound, Cmp, Op};

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
    /// A dress rehearsal (`--shrink`): a profile shrunk to exercise its code paths, often on
    /// stand-in inputs; its numbers are not results and its verdicts are not verdicts.
    Rehearsal,
}

impl Fidelity {
    pub fn verdict_label(self) -> &'static str {
        match self {
            Fidelity::Miniature => "scale-model verdict",
            Fidelity::Paper => "paper-scale verdict",
            Fidelity::Rehearsal => "dress rehearsal, not a verdict",
        }
    }

    /// The same, for the verdicts of a whole run.
    pub fn verdicts_label(self) -> &'static str {
        match self {
            Fidelity::Miniature => "scale-model verdicts",
            Fidelity::Paper => "paper-scale verdicts",
            Fidelity::Rehearsal => "a dress rehearsal: not verdicts",
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
    /// Samples per measured set (the profile's `[measure]`).
    pub n: usize,
    /// Experiments whose own `measure` sets another N, e.g. `("E1", 1024)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub n_by_experiment: Vec<(String, usize)>,
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
        let mut n = format!("N = {} samples per set", thousands(self.n as u64));
        if !self.n_by_experiment.is_empty() {
            let other: Vec<String> = self
                .n_by_experiment
                .iter()
                .map(|(e, k)| format!("{e}: {}", thousands(*k as u64)))
                .collect();
            n.push_str(&format!(" ({})", other.join(", ")));
        }
        parts.push(n);
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

/// "Most" settings hold: more than half of them; it fails once holding and inconclusive
/// settings together cannot be more than half.
pub(super) fn most(settings: &[SettingResult]) -> Verdict {
    let n = settings.len();
    let holds = settings
        .iter()
        .filter(|s| s.verdict == Verdict::Holds)
        .count();
    let open = settings
        .iter()
        .filter(|s| s.verdict == Verdict::Inconclusive)
        .count();
    if 2 * holds > n {
        Verdict::Holds
    } else if 2 * (holds + open) <= n {
        Verdict::Fails
    } else {
        Verdict::Inconclusive
    }
}
