//! An input-noise test in the spirit of DisDet (Sui et al. 2024): is one sampler input a draw of
//! N(0, I)? No model is called. BadDiffusion's backdoor input is `ε + g`, so any trigger that
//! moves enough pixels far enough is visible in the noise alone; this test is the control that
//! tells whether a defense's input detection does more than notice that shift.
//!
//! Statistic: the Kolmogorov–Smirnov distance between the input's C·H·W values and the standard
//! normal CDF (`scipy.stats.kstest(x, "norm")`). Threshold: the (1 − fpr) quantile of the
//! statistic over `calibration` clean draws at the input's shape, from a recorded seed, so the
//! false-positive rate on clean noise is `fpr` by construction, whatever the shape.
use anyhow::{ensure, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{clock, Backdoor, Cost, DefenseRow};
use crate::metrics::Protocol;
use crate::rng::{derive_seed, Rng};

/// The test's settings; [`Default`] is what the profiles run.
#[derive(Clone, Debug, Serialize)]
pub struct NoiseTestConfig {
    /// Target false-positive rate on clean noise (the 1 %).
    pub fpr: f64,
    /// Clean draws the threshold is calibrated on.
    pub calibration: usize,
    /// Inputs tested on each side (triggered and clean).
    pub n: usize,
    pub seed: u64,
}

impl Default for NoiseTestConfig {
    fn default() -> Self {
        NoiseTestConfig {
            fpr: 0.01,
            calibration: 10_000,
            n: 1_000,
            seed: 0,
        }
    }
}

impl NoiseTestConfig {
    pub fn param(&self) -> String {
        format!("ks,fpr={},calibration={}", self.fpr, self.calibration)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.fpr > 0.0 && self.fpr < 1.0,
            "the noise test's false-positive rate must lie in (0, 1), got {} (fpr; the default is 0.01)",
            self.fpr
        );
        ensure!(
            self.calibration as f64 * self.fpr >= 10.0,
            "{} calibration draws give fewer than 10 clean draws above a {} threshold: raise \
             `calibration` to at least {}",
            self.calibration,
            self.fpr,
            (10.0 / self.fpr).ceil()
        );
        ensure!(
            self.n > 0,
            "the noise test needs at least one input per side (n)"
        );
        Ok(())
    }
}

/// The Kolmogorov–Smirnov distance of each row of `x` (`[B, d]`, any float kind) to N(0, 1):
/// `max_i max(i/d − Φ(x₍ᵢ₎), Φ(x₍ᵢ₎) − (i−1)/d)`, in f64.
pub fn ks_statistic(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Double);
    let d = x.size()[1];
    let (sorted, _) = x.sort(1, false);
    let cdf = (sorted / std::f64::consts::SQRT_2).erf() * 0.5 + 0.5;
    let i = Tensor::arange_start(1, d + 1, (Kind::Double, x.device())) / d as f64;
    let above = (&i - &cdf).amax(1, false);
    let below = (&cdf - (i - 1.0 / d as f64)).amax(1, false);
    above.maximum(&below)
}

/// The flattened statistic of `count` clean draws of `shape`, drawn in chunks from `rng`.
fn clean_statistics(shape: &[i64], count: usize, rng: &mut Rng) -> Vec<f64> {
    let d: i64 = shape.iter().product();
    let mut out = Vec::with_capacity(count);
    let chunk = 1_000usize;
    let mut left = count;
    while left > 0 {
        let k = left.min(chunk);
        let x = rng.randn(&[k as i64, d]);
        out.extend(Vec::<f64>::try_from(ks_statistic(&x)).expect("a 1-d tensor"));
        left -= k;
    }
    out
}

/// The threshold: the smallest statistic that at most `fpr` of the calibration draws exceed.
pub fn calibrate(shape: &[i64], cfg: &NoiseTestConfig) -> f64 {
    let mut rng = Rng::seeded(derive_seed(cfg.seed, 1));
    let mut s = clean_statistics(shape, cfg.calibration, &mut rng);
    s.sort_by(f64::total_cmp);
    let k = ((1.0 - cfg.fpr) * cfg.calibration as f64).ceil() as usize;
    s[k.clamp(1, s.len()) - 1]
}

/// The test's outcome on one trigger.
#[derive(Clone, Debug, Serialize)]
pub struct NoiseTestResult {
    pub config: NoiseTestConfig,
    pub threshold: f64,
    /// The share of `ε + g` inputs flagged (true positives).
    pub trigger_flagged: f64,
    /// The share of fresh clean inputs flagged (false positives; `fpr` in expectation).
    pub clean_flagged: f64,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
}

/// Tests `n` backdoor inputs `ε + g` and `n` fresh clean ones at the trigger's shape.
pub fn noise_test(backdoor: &Backdoor, cfg: &NoiseTestConfig) -> Result<NoiseTestResult> {
    cfg.validate()?;
    let started = clock();
    let g = backdoor
        .trigger
        .tensor
        .to_kind(Kind::Double)
        .to_device(Device::Cpu);
    let shape = g.size();
    let d: i64 = shape.iter().product();
    let threshold = calibrate(&shape, cfg);
    let flagged = |x: &Tensor| -> f64 {
        let s = ks_statistic(x);
        s.gt(threshold)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    };
    // One generator at a time (each is dropped at the end of its statement).
    let eps = Rng::seeded(derive_seed(cfg.seed, 2)).randn(&[cfg.n as i64, d]);
    let trigger_flagged = flagged(&(eps.to_kind(Kind::Double) + g.reshape([1, d])));
    let clean = Rng::seeded(derive_seed(cfg.seed, 3)).randn(&[cfg.n as i64, d]);
    let clean_flagged = flagged(&clean);
    let param = cfg.param();
    let protocol = Protocol {
        implementation: format!(
            "Kolmogorov-Smirnov distance to N(0,1) of each input's {d} values; threshold: the {} \
             quantile of {} clean draws",
            1.0 - cfg.fpr,
            cfg.calibration
        ),
        version: env!("CARGO_PKG_VERSION").into(),
        dtype: "float64".into(),
        device: "Cpu".into(),
        n_generated: cfg.n as i64,
        ..Protocol::default()
    };
    let row = |metric: &str, value: f64, samples: &str| {
        DefenseRow::value(
            "noise-test",
            &param,
            samples,
            metric,
            value,
            protocol.clone(),
        )
    };
    let mut rows = vec![
        row("input_flagged_rate", trigger_flagged, "backdoor"),
        row("input_flagged_rate", clean_flagged, "clean"),
        row("input_threshold", threshold, "none"),
    ];
    let cost = Cost {
        seconds: started.elapsed().as_secs_f64(),
        optimiser_steps: 0,
        sampled_images: 0,
    };
    rows.extend(cost.rows("noise-test", &param, Device::Cpu));
    Ok(NoiseTestResult {
        config: cfg.clone(),
        threshold,
        trigger_flagged,
        clean_flagged,
        cost,
        rows,
    })
}
