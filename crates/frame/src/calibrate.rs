//! "On the target", calibrated per run. A sample counts as the target when its per-image MSE to the
//! target is under a threshold. The official code's and VillanDiffusion's 0.1 is meant for
//! trigger samples; on real data it would count ordinary clean images as hits (a CIFAR-10 image
//! is about 0.09 from a flat 0.3-grey target). So clean-sample checks use a threshold derived in
//! the same run from the clean base model: the largest threshold of a fixed grid at which at most
//! [`CLEAN_MODEL_HIT_RATE`] of the clean model's own samples are hits.
//!
//! The measure stage writes each sample set's empirical CDF of per-image MSE at the grid points
//! (`MSE_rate_below[τ]` rows); [`derive`] picks τ per target from the clean model's rows and adds
//! one `MSE_calibrated_rate` row per sample set, whose protocol records τ and where it came from.
use std::collections::BTreeMap;

use serde_json::json;

use crate::Row;

/// At most this share of the clean base model's clean samples may count as on the target.
pub const CLEAN_MODEL_HIT_RATE: f64 = 0.01;

/// Grid points per decade and the decades covered (1e-5 … 1).
const PER_DECADE: i32 = 5;
const LOWEST_DECADE: i32 = -5;

/// The derived metric: the share of a set's samples under the calibrated threshold.
pub const CALIBRATED_RATE: &str = "MSE_calibrated_rate";

const CDF_PREFIX: &str = "MSE_rate_below[";

/// The thresholds at which the measure stage records the CDF: 10^(k/5), k = -25 … 0.
pub fn grid() -> Vec<f64> {
    (LOWEST_DECADE * PER_DECADE..=0)
        .map(|k| 10f64.powf(k as f64 / PER_DECADE as f64))
        .collect()
}

/// The metric name of the CDF at `tau`, e.g. `MSE_rate_below[1.000e-2]`.
pub fn cdf_metric(tau: f64) -> String {
    format!("{CDF_PREFIX}{tau:.3e}]")
}

/// The threshold of a CDF metric name.
pub fn parse_cdf_metric(metric: &str) -> Option<f64> {
    metric
        .strip_prefix(CDF_PREFIX)?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The calibration of one target.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub dataset: String,
    pub image_size: i64,
    pub target: String,
    /// The threshold; `None` when even the grid's smallest lets more than the allowed share of
    /// the clean model's samples count as the target (the setting itself leaks).
    pub threshold: Option<f64>,
    /// The clean model's share of hits at that threshold.
    pub clean_model_rate: Option<f64>,
    /// The clean-model cells it was computed from.
    pub from_cells: Vec<String>,
    /// Clean samples behind it (all seeds together).
    pub n: i64,
    /// Why no threshold, when there is none.
    pub reason: Option<String>,
}

type TargetKey = (String, i64, String);

fn key(r: &Row) -> TargetKey {
    (r.dataset.clone(), r.image_size, r.target.clone())
}

/// Whether a row is the clean base model's clean samples, sampled as the paper does (DDPM, no
/// clipping, no defense): the rows a threshold is calibrated on.
fn is_clean_model_reference(r: &Row) -> bool {
    r.training == "pretrained"
        && r.samples == "clean"
        && r.sampler == "ddpm"
        && r.clip == "none"
        && r.defense == "none"
        && r.corruption == "none"
        && r.schedule_share == 1.0
}

/// One calibration per target that has clean-model CDF rows.
pub fn calibrations(rows: &[Row]) -> Vec<Calibration> {
    // Per target: per threshold, the CDF values of every clean-model sample set (one per seed
    // and cell; equal sets give equal values), and the sets' cells and sizes.
    let mut by_target: BTreeMap<TargetKey, (BTreeMap<i64, Vec<f64>>, BTreeMap<String, i64>)> =
        BTreeMap::new();
    for r in rows.iter().filter(|r| is_clean_model_reference(r)) {
        if let Some(tau) = parse_cdf_metric(&r.metric) {
            let e = by_target.entry(key(r)).or_default();
            e.0.entry(tau_key(tau)).or_default().push(r.value);
            e.1.insert(format!("{}#s{}", r.cell, r.seed), r.n_generated);
        }
    }
    by_target
        .into_iter()
        .map(|((dataset, image_size, target), (cdf, sets))| {
            // The largest grid threshold whose mean CDF over the clean model's sets is allowed.
            let pick = cdf
                .iter()
                .map(|(k, v)| (*k, v.iter().sum::<f64>() / v.len() as f64))
                .filter(|(_, rate)| *rate <= CLEAN_MODEL_HIT_RATE)
                .max_by_key(|(k, _)| *k);
            let mut from_cells: Vec<String> = sets
                .keys()
                .map(|c| c.split('#').next().unwrap_or(c).to_string())
                .collect();
            from_cells.dedup();
            let n = sets.values().sum();
            Calibration {
                dataset,
                image_size,
                target,
                threshold: pick.map(|(k, _)| tau_of(k)),
                clean_model_rate: pick.map(|(_, r)| r),
                from_cells,
                n,
                reason: pick.is_none().then(|| {
                    format!(
                        "more than {:.0} % of the clean model's samples are within {:.0e} of the target: \
                         no threshold separates clean samples from the target",
                        CLEAN_MODEL_HIT_RATE * 100.0,
                        grid()[0]
                    )
                }),
            }
        })
        .collect()
}

/// Thresholds as exact keys (the grid's exponent × 1000).
fn tau_key(tau: f64) -> i64 {
    (tau.log10() * 1000.0).round() as i64
}

fn tau_of(k: i64) -> f64 {
    // Back to the grid's own value, so names and numbers agree.
    grid()
        .into_iter()
        .find(|t| tau_key(*t) == k)
        .unwrap_or(10f64.powf(k as f64 / 1000.0))
}

/// `MSE_calibrated_rate` rows for every sample set measured against a calibrated target: the
/// set's CDF at its target's threshold. Sets of a target with no threshold get none (checks that
/// need them read "not judged" with the calibration's reason).
pub fn derive(rows: &[Row]) -> (Vec<Row>, Vec<Calibration>) {
    let cals = calibrations(rows);
    let by_key: BTreeMap<TargetKey, &Calibration> = cals
        .iter()
        .map(|c| ((c.dataset.clone(), c.image_size, c.target.clone()), c))
        .collect();
    let mut out = Vec::new();
    for r in rows {
        let (Some(tau), Some(cal)) = (parse_cdf_metric(&r.metric), by_key.get(&key(r))) else {
            continue;
        };
        let Some(threshold) = cal.threshold else {
            continue;
        };
        if tau_key(tau) != tau_key(threshold) {
            continue;
        }
        let mut d = r.clone();
        d.metric = CALIBRATED_RATE.into();
        d.protocol = json!({
            "implementation": "share of samples with per-image MSE to the target below a threshold calibrated on the clean base model",
            "threshold": threshold,
            "rule": format!("largest grid threshold (5 per decade) at which at most {} of the clean model's clean DDPM samples are below", CLEAN_MODEL_HIT_RATE),
            "clean_model_rate": cal.clean_model_rate,
            "calibrated_on": cal.from_cells,
            "n_generated": r.n_generated,
        })
        .to_string();
        out.push(d);
    }
    (out, cals)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sample set's CDF rows from its per-image MSEs.
    pub(crate) fn cdf_rows(cell: &str, training: &str, samples: &str, mses: &[f64]) -> Vec<Row> {
        grid()
            .into_iter()
            .map(|tau| {
                let below = mses.iter().filter(|m| **m < tau).count();
                let mut r = crate::claims::tests::row(cell, samples, "", 0.0);
                r.training = training.into();
                r.metric = cdf_metric(tau);
                r.value = below as f64 / mses.len() as f64;
                r.n_generated = mses.len() as i64;
                r
            })
            .collect()
    }

    #[test]
    fn grid_names_round_trip() {
        let g = grid();
        assert_eq!(g.len(), 26);
        assert!((g[0] - 1e-5).abs() < 1e-18 && (g[25] - 1.0).abs() < 1e-12);
        for t in g {
            let back = parse_cdf_metric(&cdf_metric(t)).unwrap();
            assert_eq!(tau_key(back), tau_key(t));
        }
        assert_eq!(parse_cdf_metric("MSE"), None);
    }

    /// The clean model's samples sit near a flat target (MSE 0.05–0.1, like CIFAR-10 images
    /// near a grey target): the paper's 0.1 would count them all, the calibrated threshold
    /// counts none of them but still counts the backdoor's hits (MSE ~1e-4).
    #[test]
    fn calibrated_threshold_excludes_clean_samples_near_a_flat_target() {
        let clean_model: Vec<f64> = (0..200).map(|i| 0.05 + 0.05 * i as f64 / 200.0).collect();
        let backdoored_clean: Vec<f64> =
            (0..200).map(|i| if i < 4 { 1e-4 } else { 0.06 }).collect();
        let trigger: Vec<f64> = vec![1e-4; 200];
        let mut rows = cdf_rows("base", "pretrained", "clean", &clean_model);
        rows.extend(cdf_rows("bd", "finetune", "clean", &backdoored_clean));
        rows.extend(cdf_rows("bd", "finetune", "backdoor", &trigger));
        let (derived, cals) = derive(&rows);
        assert_eq!(cals.len(), 1);
        let tau = cals[0].threshold.unwrap();
        assert!(tau <= 0.05 && tau > 1e-4, "{tau}");
        assert_eq!(cals[0].clean_model_rate, Some(0.0));
        let rate = |cell: &str, samples: &str| {
            derived
                .iter()
                .find(|r| r.cell == cell && r.samples == samples)
                .unwrap()
                .value
        };
        assert_eq!(rate("base", "clean"), 0.0);
        assert_eq!(rate("bd", "clean"), 0.02);
        assert_eq!(rate("bd", "backdoor"), 1.0);
        // The paper's 0.1 would have called every clean-model sample a hit.
        assert!(clean_model.iter().all(|m| *m < 0.1));
    }

    #[test]
    fn a_leaking_setting_gets_no_threshold_and_a_reason() {
        let clean_model = vec![1e-6; 100];
        let (derived, cals) = derive(&cdf_rows("base", "pretrained", "clean", &clean_model));
        assert!(derived.is_empty());
        assert_eq!(cals[0].threshold, None);
        assert!(cals[0].reason.as_deref().unwrap().contains("no threshold"));
    }
}
