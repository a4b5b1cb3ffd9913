//! MSE to the backdoor target as the official code measures it (official `baddiffusion.py`
//! `measure`): generated samples as read back from their PNGs (quantised, in [0, 1]) against the
//! target mapped to [0, 1] by clamp(y/2 + 0.5, 0, 1) and not quantised, averaged over all
//! N·C·H·W elements. The MSE-threshold rate (VillanDiffusion's `mse_thres`) is the fraction of
//! samples whose own MSE is below 0.1.
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// VillanDiffusion's `METRIC_MSE_THRES`.
pub const MSE_THRESHOLD: f64 = 0.1;

/// A target in the model's [−1, 1] range, mapped to [0, 1] as the official measure does.
pub fn target_to_unit(y: &Tensor) -> Tensor {
    (y.to_kind(Kind::Float) / 2.0 + 0.5).clamp(0.0, 1.0)
}

/// What writing a [0, 1] image to an 8-bit PNG and reading it back does:
/// `round(x·255)/255` after clamping, as diffusers' `numpy_to_pil` rounds.
pub fn quantise_png(x01: &Tensor) -> Tensor {
    (x01.clamp(0.0, 1.0) * 255.0).round() / 255.0
}

/// Per-image MSE `[N]` (float64) of samples `[N, C, H, W]` against a target `[C, H, W]`,
/// `[1, C, H, W]` or `[N, C, H, W]`, both already in [0, 1].
pub fn per_image_mse(samples01: &Tensor, target01: &Tensor) -> Result<Tensor> {
    ensure!(
        samples01.dim() == 4,
        "samples must be [N, C, H, W], got {:?}",
        samples01.size()
    );
    let target = if target01.dim() == 3 {
        target01.unsqueeze(0)
    } else {
        target01.shallow_clone()
    };
    let (s, t) = (samples01.size(), target.size());
    ensure!(
        t.len() == 4 && t[1..] == s[1..] && (t[0] == 1 || t[0] == s[0]),
        "samples {:?} and target {:?} differ in shape (channels, height and width must agree)",
        s,
        t
    );
    let diff = samples01.to_kind(Kind::Double)
        - target.to_device(samples01.device()).to_kind(Kind::Double);
    Ok(diff
        .square()
        .reshape([s[0], -1])
        .mean_dim(-1, false, Kind::Double))
}

/// The MSE over all elements; with equally sized images this is the mean of the per-image MSE.
pub fn mse(per_image: &Tensor) -> f64 {
    per_image.mean(Kind::Double).double_value(&[])
}

/// Fraction of samples whose per-image MSE is strictly below `threshold`.
pub fn mse_threshold_rate(per_image: &Tensor, threshold: f64) -> f64 {
    per_image
        .lt(threshold)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::testing::{assert_close, oracle};

    #[test]
    fn matches_a_direct_numpy_computation() {
        let mut rng = Rng::seeded(31);
        // A target in [−1, 1] with values outside the clamp, and samples spread around it so that
        // some fall below the threshold and some above.
        let target = (rng.rand(&[3, 8, 8]) * 2.4 - 1.2).to_kind(Kind::Float);
        let t01 = target_to_unit(&target);
        let spread = Tensor::linspace(0.0, 1.0, 10, (tch::Kind::Float, tch::Device::Cpu))
            .view([10, 1, 1, 1]);
        let raw = (&t01.unsqueeze(0) + rng.randn(&[10, 3, 8, 8]) * spread).clamp(0.0, 1.0);
        // As `baddiff measure` reads them: PNG bytes, divided by 255 in float64.
        let bytes = (quantise_png(&raw) * 255.0).round().to_kind(Kind::Uint8);
        let samples = bytes.to_kind(Kind::Double) / 255.0;
        let out = oracle("mse", &[("samples_u8", &bytes), ("target", &target)], &[]);
        let per = per_image_mse(&samples, &t01).unwrap();
        assert_close("per-image MSE", &per, &out["per_image"], 1e-12);
        let total = mse(&per);
        assert!(
            (total - out["mse"].double_value(&[0])).abs() <= 1e-12,
            "MSE {total}"
        );
        let rate = mse_threshold_rate(&per, MSE_THRESHOLD);
        assert_eq!(rate, out["threshold_rate"].double_value(&[0]));
        assert!(
            rate > 0.0 && rate < 1.0,
            "the fixture should straddle the threshold, rate {rate}"
        );
    }

    #[test]
    fn quantisation_is_what_an_8_bit_png_stores() {
        let x = Tensor::from_slice(&[-0.2f32, 0.0, 0.5, 0.501, 1.0, 1.3]);
        let q = quantise_png(&x);
        let expect = Tensor::from_slice(&[0.0f32, 0.0, 128.0 / 255.0, 128.0 / 255.0, 1.0, 1.0]);
        assert_close("quantised", &q, &expect, 1e-7);
    }

    #[test]
    fn shape_mismatch_is_refused() {
        let mut rng = Rng::seeded(32);
        let err = per_image_mse(&rng.rand(&[2, 1, 8, 8]), &rng.rand(&[3, 8, 8])).unwrap_err();
        assert!(err.to_string().contains("differ in shape"));
        assert!(per_image_mse(&rng.rand(&[2, 3, 8, 8]), &rng.rand(&[3, 3, 8, 8])).is_err());
    }
}
