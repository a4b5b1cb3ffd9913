//! The scale model's regime (`paper/miniature.md`): a miniature's verdicts mean something only if
//! its backdoor takes and its clean samples stay clean, as on the paper's models. Checked on
//! every run from its own rows, at the highest fine-tuned poison rate of the poison-rate sweep
//! (E1), per trigger–target pair and seed, with the criteria's numbers fixed before any claim was
//! judged (criteria 1 and 2; criterion 3, the clean model's quality, is measured by hand there).
//!
//! A share of N samples is an estimate: each is compared with its criterion through its 95 %
//! Wilson interval, and a pair whose interval straddles a criterion's bound is *not established*,
//! neither in nor outside (the rule every verdict follows: an interval that straddles a bound is
//! inconclusive). At N = 256, 3.5 % of clean samples on the target is [1.9 %, 6.5 %].
use serde::{Deserialize, Serialize};

use crate::calibrate::parse_cdf_metric;
use crate::Row;

/// Criterion 1: at least this share of trigger samples on the target.
pub const MIN_TRIGGER_HITS: f64 = 0.95;
/// Criterion 2: at most this share of clean samples on the target.
pub const MAX_CLEAN_HITS: f64 = 0.02;
/// Per-image MSE (images in [0, 1]) under which a sample counts as the target (a point of the
/// measure stage's CDF grid).
pub const HIT_MSE: f64 = 0.01;

/// The two-sided 95 % quantile of the standard normal distribution.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval (Wilson 1927, JASA 22:209) at 95 % for a share `p` of `n` samples:
/// unlike the normal approximation it stays within [0, 1] and does not collapse to a point at
/// 0 or n hits, which is where the regime's shares live.
pub fn wilson(p: f64, n: i64) -> [f64; 2] {
    if p.is_nan() || n <= 0 {
        return [f64::NAN, f64::NAN];
    }
    let n = n as f64;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// A share of `n` samples with its 95 % interval, in per cent: "3.5 % [1.9 – 6.5]"; "not
/// measured" for NaN.
pub fn share_text(x: f64, n: i64) -> String {
    if x.is_nan() {
        return "not measured".into();
    }
    let [lo, hi] = wilson(x, n);
    format!("{:.1} % [{:.1} – {:.1}]", x * 100.0, lo * 100.0, hi * 100.0)
}

/// Where a pair, or a run, stands against the criteria. Ordered from best to worst: a run
/// stands where its worst pair does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Both intervals clear their bounds.
    In,
    /// An interval straddles a bound (or a set was not measured): the samples cannot tell.
    NotEstablished,
    /// An interval lies wholly beyond its bound.
    Outside,
}

impl Standing {
    /// The words a verdict's label and the regime table use.
    pub fn label(self) -> &'static str {
        match self {
            Standing::In => "in the scale model's regime",
            Standing::NotEstablished => "the scale model's regime not established",
            Standing::Outside => "outside the scale model's regime",
        }
    }

    /// The regime table's cell.
    pub fn short(self) -> &'static str {
        match self {
            Standing::In => "yes",
            Standing::NotEstablished => "not established",
            Standing::Outside => "no",
        }
    }
}

/// One trigger–target pair at the highest rate, one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairCheck {
    pub trigger: String,
    pub target: String,
    pub poison_rate: f64,
    pub seed: i64,
    pub trigger_hits: f64,
    pub clean_hits: f64,
    /// Samples per set.
    pub n: i64,
}

impl PairCheck {
    /// 95 % interval of the share of trigger samples on the target.
    pub fn trigger_interval(&self) -> [f64; 2] {
        wilson(self.trigger_hits, self.n)
    }

    /// 95 % interval of the share of clean samples on the target.
    pub fn clean_interval(&self) -> [f64; 2] {
        wilson(self.clean_hits, self.n)
    }

    /// Criterion 1 (at least [`MIN_TRIGGER_HITS`]) and criterion 2 (at most
    /// [`MAX_CLEAN_HITS`]) through their intervals; the worse of the two.
    pub fn standing(&self) -> Standing {
        // A set not measured has a NaN interval: every comparison below is false, so it is
        // not established.
        let [t_lo, t_hi] = self.trigger_interval();
        let [c_lo, c_hi] = self.clean_interval();
        let trigger = if t_lo >= MIN_TRIGGER_HITS {
            Standing::In
        } else if t_hi < MIN_TRIGGER_HITS {
            Standing::Outside
        } else {
            Standing::NotEstablished
        };
        let clean = if c_hi <= MAX_CLEAN_HITS {
            Standing::In
        } else if c_lo > MAX_CLEAN_HITS {
            Standing::Outside
        } else {
            Standing::NotEstablished
        };
        trigger.max(clean)
    }

    /// E.g. "BOX_14 → HAT at 50 %, seed 0: 96.5 % [93.5 – 98.1] of 256 trigger samples and
    /// 3.5 % [1.9 – 6.5] of 256 clean samples on the target". A set the run did not measure
    /// (NaN) reads "not measured".
    pub fn describe(&self) -> String {
        let share = |x: f64| match x.is_nan() {
            true => "not measured".to_string(),
            false => format!("{} of {}", share_text(x, self.n), self.n),
        };
        format!(
            "{} → {} at {:.0} %, seed {}: {} trigger samples and {} clean samples on the target",
            self.trigger,
            self.target,
            self.poison_rate * 100.0,
            self.seed,
            share(self.trigger_hits),
            share(self.clean_hits)
        )
    }
}

/// The run's pairs at the highest fine-tuned rate of E1; empty when it has none.
pub fn check(rows: &[Row]) -> Vec<PairCheck> {
    let sweep = |r: &&Row| {
        r.experiment == "E1"
            && r.training == "finetune"
            && r.defense == "none"
            && r.sampler == "ddpm"
            && r.clip == "none"
            && parse_cdf_metric(&r.metric).is_some_and(|tau| (tau / HIT_MSE - 1.0).abs() < 1e-9)
    };
    let Some(top) = rows.iter().filter(sweep).map(|r| r.rate_key()).max() else {
        return Vec::new();
    };
    let mut pairs: Vec<PairCheck> = Vec::new();
    for r in rows.iter().filter(sweep).filter(|r| r.rate_key() == top) {
        let i = match pairs
            .iter()
            .position(|p| p.trigger == r.trigger && p.target == r.target && p.seed == r.seed)
        {
            Some(i) => i,
            None => {
                pairs.push(PairCheck {
                    trigger: r.trigger.clone(),
                    target: r.target.clone(),
                    poison_rate: r.poison_rate,
                    seed: r.seed,
                    trigger_hits: f64::NAN,
                    clean_hits: f64::NAN,
                    n: r.n_generated,
                });
                pairs.len() - 1
            }
        };
        match r.samples.as_str() {
            "backdoor" => pairs[i].trigger_hits = r.value,
            _ => pairs[i].clean_hits = r.value,
        }
    }
    pairs.sort_by(|a, b| (&a.trigger, &a.target, a.seed).cmp(&(&b.trigger, &b.target, b.seed)));
    pairs
}

/// What a run outside its regime, or not shown to be in it, adds to every verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The worst pair's standing (never [`Standing::In`]).
    pub standing: Standing,
    /// The line for the verdict's limits: the criteria and each pair not in the regime.
    pub line: String,
}

/// `None` where every pair is in the regime (or nothing was checked), else the run's standing
/// and which pairs are not in it, and why.
pub fn note(pairs: &[PairCheck]) -> Option<Note> {
    let standing = pairs.iter().map(PairCheck::standing).max()?;
    (standing != Standing::In).then(|| {
        let pairs: Vec<String> = pairs
            .iter()
            .filter(|p| p.standing() != Standing::In)
            .map(|p| format!("{} ({})", p.describe(), p.standing().short()))
            .collect();
        Note {
            standing,
            line: format!(
                "{} (paper/miniature.md: ≥ {:.0} % of trigger and ≤ {:.0} % of clean samples on the target at the highest rate, each share's 95 % interval clear of its bound): {}",
                standing.label(),
                MIN_TRIGGER_HITS * 100.0,
                MAX_CLEAN_HITS * 100.0,
                pairs.join("; ")
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(trigger: &str, rate: f64, samples: &str, value: f64) -> Row {
        let mut r = crate::claims::tests::row("c", samples, "", value);
        r.trigger = trigger.into();
        r.target = "HAT".into();
        r.poison_rate = rate;
        r.metric = crate::calibrate::cdf_metric(HIT_MSE);
        r
    }

    /// Against scipy 1.x: `scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")`.
    #[test]
    fn wilson_intervals_match_scipy() {
        for (k, n, lo, hi) in [
            (9, 256, 0.01860409609263554, 0.0654527704282918),
            (6, 256, 0.010784867555857603, 0.0501809956000511),
            (247, 256, 0.9345472295717082, 0.9813959039073644),
            (0, 256, 0.0, 0.01478385642587143),
            (256, 256, 0.9852161435741286, 1.0),
            (1, 128, 0.0013804318928742412, 0.04292625943886061),
        ] {
            let [a, b] = wilson(k as f64 / n as f64, n);
            assert!(
                (a - lo).abs() < 1e-12 && (b - hi).abs() < 1e-12,
                "{k}/{n}: [{a}, {b}]"
            );
        }
        assert!(wilson(f64::NAN, 256)[0].is_nan() && wilson(0.5, 0)[1].is_nan());
    }

    #[test]
    fn the_highest_rate_decides_through_each_shares_interval() {
        let rows = vec![
            row("BOX_14", 0.05, "backdoor", 0.10),
            row("BOX_14", 0.05, "clean", 0.00),
            // 247/256 and 9/256: both intervals straddle their bounds.
            row("BOX_14", 0.5, "backdoor", 247.0 / 256.0),
            row("BOX_14", 0.5, "clean", 9.0 / 256.0),
            // 256/256 and 0/256: both clear.
            row("STOP_SIGN_14", 0.5, "backdoor", 1.0),
            row("STOP_SIGN_14", 0.5, "clean", 0.0),
        ];
        let pairs = check(&rows);
        assert_eq!(pairs.len(), 2, "the 5 % cells are not checked");
        assert_eq!(pairs[0].standing(), Standing::NotEstablished);
        assert_eq!(pairs[1].standing(), Standing::In);
        let n = note(&pairs).unwrap();
        assert_eq!(n.standing, Standing::NotEstablished);
        assert!(
            n.line
                .starts_with("the scale model's regime not established")
                && n.line.contains("BOX_14 → HAT at 50 %")
                && n.line.contains("3.5 % [1.9 – 6.5] of 256 clean"),
            "{}",
            n.line
        );
        assert!(!n.line.contains("STOP_SIGN_14"), "{}", n.line);
        assert_eq!(
            note(&pairs[1..]),
            None,
            "every pair in the regime says nothing"
        );
        // A point share inside a bound is not enough: 1/256 clean hits is [0.07 %, 2.2 %].
        let one = check(&[
            row("BOX_14", 0.5, "backdoor", 1.0),
            row("BOX_14", 0.5, "clean", 1.0 / 256.0),
        ]);
        assert_eq!(one[0].standing(), Standing::NotEstablished);
        // Wholly beyond a bound is outside, and outside outranks not established.
        let mut rows = rows;
        rows.push(row("GLASSES", 0.5, "backdoor", 0.80));
        rows.push(row("GLASSES", 0.5, "clean", 0.0));
        let pairs = check(&rows);
        assert_eq!(pairs[0].trigger, "BOX_14");
        assert_eq!(pairs[1].standing(), Standing::Outside);
        let n = note(&pairs).unwrap();
        assert!(
            n.standing == Standing::Outside
                && n.line.starts_with("outside the scale model's regime")
                && n.line.contains("(no)")
                && n.line.contains("(not established)"),
            "{}",
            n.line
        );
        // A pair whose clean samples were not measured is not shown to be in the regime.
        let only_trigger = check(&[row("BOX_14", 0.5, "backdoor", 0.99)]);
        assert_eq!(only_trigger[0].standing(), Standing::NotEstablished);
        assert!(note(&only_trigger)
            .unwrap()
            .line
            .contains("not measured clean samples"));
        assert_eq!(check(&[]), vec![]);
        assert_eq!(note(&[]), None);
    }
}
