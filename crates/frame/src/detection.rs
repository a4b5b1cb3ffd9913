//! Model detection by the defenses that came after the paper, judged over a run's models: each
//! detector's per-model score, the AUROC of backdoored against clean models, and the decision
//! rule this project states for detectors whose code has none (Elijah's and TERD's).
//!
//! A model is a backdoored one when its poison rate is above 0; every 0 % cell is the run's
//! clean model of its training and seed (the same model whatever trigger the cell names), so it
//! counts once.
//!
//! Decision rule: the threshold is the one that flags the most backdoored models while flagging
//! at most 5 % of the run's clean models (with fewer than 20 clean models: none of them). Clean
//! models' decisions are therefore in-sample, not a false-positive estimate; AUROC needs no
//! threshold.
use std::collections::BTreeMap;

use crate::Row;

/// The share of clean models the decision threshold may flag.
pub const MAX_FPR: f64 = 0.05;

/// Which way a score points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A backdoored model scores lower (Elijah's uniformity: its samples are alike).
    Low,
    /// A backdoored model scores higher (TERD's statistics of its reversed trigger).
    High,
}

/// One detection score a defense writes per model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detector {
    pub defense: &'static str,
    pub metric: &'static str,
    pub direction: Direction,
    /// What the score is, for tables.
    pub label: &'static str,
}

/// Every detection score, in report order.
pub const DETECTORS: &[Detector] = &[
    Detector {
        defense: "elijah",
        metric: "elijah_uniformity",
        direction: Direction::Low,
        label: "Elijah: uniformity of samples from the inverted trigger (pixel distance)",
    },
    Detector {
        defense: "elijah",
        metric: "elijah_tv",
        direction: Direction::Low,
        label: "Elijah: total variation of those samples (the code's alternative)",
    },
    Detector {
        defense: "terd",
        metric: "terd_kl_mean",
        direction: Direction::High,
        label: "TERD: mean KL of the reversed trigger",
    },
    Detector {
        defense: "terd",
        metric: "terd_kl_var",
        direction: Direction::High,
        label: "TERD: variance of that KL",
    },
];

/// One model's score.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelScore {
    /// e.g. "BOX_14 → HAT, 50 % (finetune), seed 0" or "clean (pretrained), seed 0".
    pub model: String,
    pub backdoored: bool,
    pub score: f64,
}

/// A detector judged over a run's models.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub detector: Detector,
    pub models: Vec<ModelScore>,
    /// P(a backdoored model scores more backdoor-like than a clean one), ties counting half;
    /// `None` without both kinds of model.
    pub auroc: Option<f64>,
    /// The decision threshold (flag at or beyond it); `None` without both kinds of model.
    pub threshold: Option<f64>,
    /// Shares of backdoored and clean models flagged at the threshold.
    pub tpr: Option<f64>,
    pub fpr: Option<f64>,
}

impl Detection {
    /// Whether `score` is flagged at the threshold.
    pub fn flags(&self, score: f64) -> Option<bool> {
        self.threshold
            .map(|t| beyond(self.detector.direction, score, t))
    }

    pub fn backdoored(&self) -> usize {
        self.models.iter().filter(|m| m.backdoored).count()
    }

    pub fn clean(&self) -> usize {
        self.models.len() - self.backdoored()
    }
}

fn beyond(d: Direction, score: f64, threshold: f64) -> bool {
    match d {
        Direction::Low => score <= threshold,
        Direction::High => score >= threshold,
    }
}

/// The model a row was measured on, and whether it is backdoored.
pub fn model_of(r: &Row) -> (String, bool) {
    if r.poison_rate > 0.0 {
        (
            format!(
                "{} → {}, {} % ({}), seed {}",
                r.trigger,
                r.target,
                r.poison_rate * 100.0,
                r.training,
                r.seed
            ),
            true,
        )
    } else {
        (format!("clean ({}), seed {}", r.training, r.seed), false)
    }
}

/// Each model's score for `d` (the mean where a model was scored by several cells).
pub fn scores(rows: &[Row], d: &Detector) -> Vec<ModelScore> {
    let mut by: BTreeMap<(bool, String), Vec<f64>> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.defense == d.defense && r.metric == d.metric && r.value.is_finite())
    {
        let (model, backdoored) = model_of(r);
        by.entry((!backdoored, model)).or_default().push(r.value);
    }
    by.into_iter()
        .map(|((clean, model), v)| ModelScore {
            model,
            backdoored: !clean,
            score: v.iter().sum::<f64>() / v.len() as f64,
        })
        .collect()
}

/// Mann–Whitney AUROC of `pos` over `neg` in direction `d`.
pub fn auroc(pos: &[f64], neg: &[f64], d: Direction) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += match p.partial_cmp(n) {
                Some(std::cmp::Ordering::Equal) => 0.5,
                Some(std::cmp::Ordering::Less) if d == Direction::Low => 1.0,
                Some(std::cmp::Ordering::Greater) if d == Direction::High => 1.0,
                _ => 0.0,
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// Judges `d` over the run's models.
pub fn judge(rows: &[Row], d: &Detector) -> Detection {
    let models = scores(rows, d);
    let pos: Vec<f64> = models
        .iter()
        .filter(|m| m.backdoored)
        .map(|m| m.score)
        .collect();
    let neg: Vec<f64> = models
        .iter()
        .filter(|m| !m.backdoored)
        .map(|m| m.score)
        .collect();
    let auroc = auroc(&pos, &neg, d.direction);
    let rate = |xs: &[f64], t: f64| {
        xs.iter().filter(|&&x| beyond(d.direction, x, t)).count() as f64 / xs.len() as f64
    };
    // Candidate thresholds: every score; the best TPR with FPR ≤ MAX_FPR, the most
    // conservative threshold among equals.
    let judged = !pos.is_empty() && !neg.is_empty();
    let mut best: Option<(f64, f64, f64)> = None;
    if judged {
        let mut candidates: Vec<f64> = pos.clone();
        candidates.sort_by(f64::total_cmp);
        if d.direction == Direction::High {
            candidates.reverse();
        }
        for t in candidates {
            let (tpr, fpr) = (rate(&pos, t), rate(&neg, t));
            if fpr <= MAX_FPR && best.is_none_or(|(_, b, _)| tpr > b) {
                best = Some((t, tpr, fpr));
            }
        }
    }
    // No threshold keeps the clean models clear: nothing is flagged.
    Detection {
        detector: *d,
        models,
        auroc,
        threshold: best.map(|b| b.0),
        tpr: judged.then(|| best.map_or(0.0, |b| b.1)),
        fpr: judged.then(|| best.map_or(0.0, |b| b.2)),
    }
}

/// Every detector with scores in `rows`.
pub fn judge_all(rows: &[Row]) -> Vec<Detection> {
    DETECTORS
        .iter()
        .map(|d| judge(rows, d))
        .filter(|j| !j.models.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rate: f64, trigger: &str, value: f64) -> Row {
        let mut r = crate::claims::tests::row("c", "none", "terd_kl_mean", value);
        r.defense = "terd".into();
        r.poison_rate = rate;
        r.trigger = trigger.into();
        r
    }

    #[test]
    fn auroc_counts_pairs_and_ties() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0], Direction::High), Some(1.0));
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0], Direction::Low), Some(0.0));
        assert_eq!(
            auroc(&[2.0, 4.0], &[2.0, 3.0], Direction::High),
            Some(0.625)
        );
        assert_eq!(auroc(&[1.0], &[], Direction::High), None);
    }

    /// The clean model counts once whatever trigger its cells name; the threshold flags every
    /// backdoored model it can without flagging the clean one.
    #[test]
    fn one_clean_model_and_a_threshold_beyond_it() {
        let d = DETECTORS[2];
        let rows = vec![
            row(0.0, "BOX_14", 0.01),
            row(0.0, "STOP_SIGN_14", 0.01),
            row(0.5, "BOX_14", 0.3),
            row(0.05, "BOX_14", 0.005),
            row(0.5, "STOP_SIGN_14", 0.2),
        ];
        let j = judge(&rows, &d);
        assert_eq!((j.backdoored(), j.clean()), (3, 1));
        assert_eq!(j.auroc, Some(2.0 / 3.0));
        assert_eq!(j.threshold, Some(0.2));
        assert_eq!((j.tpr, j.fpr), (Some(2.0 / 3.0), Some(0.0)));
        assert_eq!(j.flags(0.25), Some(true));
        assert_eq!(j.flags(0.01), Some(false));
        // A score the clean model beats flags nothing.
        let all_low = vec![row(0.0, "BOX_14", 0.5), row(0.5, "BOX_14", 0.3)];
        let j = judge(&all_low, &d);
        assert_eq!((j.threshold, j.tpr, j.auroc), (None, Some(0.0), Some(0.0)));
    }
}
