//! The scale model's regime (`paper/miniature.md`): a miniature's verdicts mean something only if
//! its backdoor takes and its clean samples stay clean, as on the paper's models. Checked on
//! every run from its own rows, at the highest fine-tuned poison rate of the poison-rate sweep
//! (E1), per trigger–target pair and seed, with the criteria's numbers fixed before any claim was
//! judged (criteria 1 and 2; criterion 3, the clean model's quality, is measured by hand there).
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

/// One trigger–target pair at the highest rate, one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairCheck {
    pub trigger: String,
    pub target: String,
    pub poison_rate: f64,
    pub seed: i64,
    pub trigger_hits: f64,
    pub clean_hits: f64,
    pub n: i64,
}

impl PairCheck {
    pub fn holds(&self) -> bool {
        self.trigger_hits >= MIN_TRIGGER_HITS && self.clean_hits <= MAX_CLEAN_HITS
    }

    /// E.g. "BOX_14 → HAT at 50 %, seed 0: 96.9 % of trigger samples and 3.9 % of clean samples
    /// on the target".
    /// A set the run did not measure (NaN) fails the check and reads "not measured".
    pub fn describe(&self) -> String {
        let pct = |x: f64| {
            if x.is_nan() {
                "not measured".to_string()
            } else {
                format!("{:.1} %", x * 100.0)
            }
        };
        format!(
            "{} → {} at {:.0} %, seed {}: {} of trigger samples and {} of clean samples on the target",
            self.trigger,
            self.target,
            self.poison_rate * 100.0,
            self.seed,
            pct(self.trigger_hits),
            pct(self.clean_hits)
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

/// One line for a verdict's limits: `None` where every pair is in the regime (or nothing was
/// checked), else which pairs are not and why.
pub fn outside(pairs: &[PairCheck]) -> Option<String> {
    let failed: Vec<String> = pairs
        .iter()
        .filter(|p| !p.holds())
        .map(PairCheck::describe)
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "outside the scale model's regime (paper/miniature.md: ≥ {:.0} % of trigger and ≤ {:.0} % of clean samples on the target at the highest rate): {}",
            MIN_TRIGGER_HITS * 100.0,
            MAX_CLEAN_HITS * 100.0,
            failed.join("; ")
        )
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

    #[test]
    fn the_highest_rate_decides_and_each_criterion_is_named() {
        let rows = vec![
            row("BOX_14", 0.05, "backdoor", 0.10),
            row("BOX_14", 0.05, "clean", 0.00),
            row("BOX_14", 0.5, "backdoor", 0.97),
            row("BOX_14", 0.5, "clean", 0.039),
            row("STOP_SIGN_14", 0.5, "backdoor", 0.99),
            row("STOP_SIGN_14", 0.5, "clean", 0.01),
        ];
        let pairs = check(&rows);
        assert_eq!(pairs.len(), 2, "the 5 % cells are not checked");
        assert!(!pairs[0].holds() && pairs[1].holds());
        let why = outside(&pairs).unwrap();
        assert!(
            why.contains("BOX_14 → HAT at 50 %") && why.contains("3.9 % of clean"),
            "{why}"
        );
        assert!(!why.contains("STOP_SIGN_14"), "{why}");
        // Trigger hits below 95 % fail too; every pair in the regime says nothing.
        assert!(!check(&[
            row("BOX_14", 0.5, "backdoor", 0.94),
            row("BOX_14", 0.5, "clean", 0.0)
        ])[0]
            .holds());
        assert_eq!(outside(&pairs[1..]), None);
        // A pair whose clean samples were not measured is not in the regime, and says why.
        let only_trigger = check(&[row("BOX_14", 0.5, "backdoor", 0.99)]);
        assert!(outside(&only_trigger)
            .unwrap()
            .contains("not measured of clean"));
        assert_eq!(check(&[]), vec![]);
    }
}
