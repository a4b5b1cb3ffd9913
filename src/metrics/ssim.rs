//! SSIM as `torchmetrics.StructuralSimilarityIndexMeasure(data_range=1.0)` computes it with its
//! defaults: an 11×11 Gaussian window (σ 1.5; torchmetrics derives the size from σ), k1 0.01,
//! k2 0.03, inputs reflect-padded by 5, local statistics by one grouped convolution, variances
//! clamped at 0, the SSIM map averaged per image and then over the batch.
//!
//! The border differs between torchmetrics releases. Those of the paper's time (before
//! torchmetrics PR #2721, 2024) cropped 5 px from each side of the SSIM map after padding
//! (32×32 → 22×22); the project's pinned torchmetrics 1.9.0 averages the whole map.
//! [`SsimBorder`] selects one and the protocol of every row names it.
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Which part of the SSIM map is averaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SsimBorder {
    /// Crop the padding width off each side (torchmetrics before PR #2721; the official runs).
    Cropped,
    /// Average the whole map (torchmetrics ≥ 1.5, including the pinned 1.9.0).
    Full,
}

impl SsimBorder {
    pub fn describe(self) -> &'static str {
        match self {
            SsimBorder::Cropped => "torchmetrics<1.5 (map cropped by the padding)",
            SsimBorder::Full => "torchmetrics>=1.5 (whole map)",
        }
    }
}

/// SSIM settings; [`Default`] is torchmetrics' defaults with `data_range=1.0` and the
/// official runs' cropped border.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SsimConfig {
    pub sigma: f64,
    pub k1: f64,
    pub k2: f64,
    pub data_range: f64,
    pub border: SsimBorder,
}

impl Default for SsimConfig {
    fn default() -> Self {
        SsimConfig {
            sigma: 1.5,
            k1: 0.01,
            k2: 0.03,
            data_range: 1.0,
            border: SsimBorder::Cropped,
        }
    }
}

impl SsimConfig {
    /// Window size torchmetrics derives from σ: `int(3.5σ + 0.5)·2 + 1` (11 for σ = 1.5).
    pub fn window(&self) -> i64 {
        (3.5 * self.sigma + 0.5) as i64 * 2 + 1
    }
}

/// The separable Gaussian window as a grouped-convolution weight `[C, 1, k, k]`, built in
/// float32 with torchmetrics' operations so the rounding agrees.
fn gaussian_window(channels: i64, k: i64, sigma: f64, device: Device) -> Tensor {
    let start = (1 - k) as f64 / 2.0;
    let dist = Tensor::arange_start_step(start, start + k as f64, 1.0, (Kind::Float, device));
    let g = (-(dist / sigma).pow_tensor_scalar(2) / 2.0).exp();
    let g = (&g / g.sum(Kind::Float)).unsqueeze(0);
    g.transpose(0, 1)
        .matmul(&g)
        .expand([channels, 1, k, k], false)
}

/// Per-image SSIM `[N]` (float32) of `preds` against `target`, both `[N, C, H, W]` in
/// `[0, data_range]`; a single `[C, H, W]` target is compared with every image.
pub fn ssim_per_image(preds: &Tensor, target: &Tensor, cfg: &SsimConfig) -> Result<Tensor> {
    ensure!(
        preds.dim() == 4,
        "SSIM needs images [N, C, H, W], got {:?}",
        preds.size()
    );
    let target = if target.dim() == 3 {
        target.unsqueeze(0).expand_as(preds)
    } else {
        target.shallow_clone()
    };
    ensure!(
        target.size() == preds.size(),
        "SSIM: images {:?} and target {:?} differ in shape",
        preds.size(),
        target.size()
    );
    let k = cfg.window();
    let pad = (k - 1) / 2;
    let (c, h, w) = (preds.size()[1], preds.size()[2], preds.size()[3]);
    let min = if cfg.border == SsimBorder::Cropped {
        2 * pad + 1
    } else {
        pad + 1
    };
    ensure!(
        h >= min && w >= min,
        "SSIM: images of {h}×{w} are too small for a {k}×{k} window with the {:?} border (need at least {min}×{min})",
        cfg.border
    );
    let preds = preds.to_kind(Kind::Float);
    let target = target.to_device(preds.device()).to_kind(Kind::Float);
    let (c1, c2) = (
        (cfg.k1 * cfg.data_range).powi(2),
        (cfg.k2 * cfg.data_range).powi(2),
    );
    let p = preds.reflection_pad2d([pad, pad, pad, pad]);
    let t = target.reflection_pad2d([pad, pad, pad, pad]);
    let stacked = Tensor::cat(&[&p, &t, &(&p * &p), &(&t * &t), &(&p * &t)], 0);
    let window = gaussian_window(c, k, cfg.sigma, preds.device());
    let out = stacked
        .conv2d(&window, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
        .chunk(5, 0);
    let (mu_p, mu_t) = (&out[0], &out[1]);
    let (mu_p_sq, mu_t_sq, mu_pt) = (
        mu_p.pow_tensor_scalar(2),
        mu_t.pow_tensor_scalar(2),
        mu_p * mu_t,
    );
    let var_p = (&out[2] - &mu_p_sq).clamp_min(0.0);
    let var_t = (&out[3] - &mu_t_sq).clamp_min(0.0);
    let cov = &out[4] - &mu_pt;
    let upper = cov * 2.0 + c2;
    let lower = var_p + var_t + c2;
    let map = ((mu_pt * 2.0 + c1) * upper) / ((mu_p_sq + mu_t_sq + c1) * lower);
    let map = match cfg.border {
        SsimBorder::Full => map,
        SsimBorder::Cropped => map.narrow(2, pad, h - 2 * pad).narrow(3, pad, w - 2 * pad),
    };
    let n = map.size()[0];
    Ok(map.reshape([n, -1]).mean_dim(-1, false, Kind::Float))
}

/// Mean SSIM over the batch, as the metric's `compute()` returns it.
pub fn ssim(preds: &Tensor, target: &Tensor, cfg: &SsimConfig) -> Result<f64> {
    Ok(ssim_per_image(preds, target, cfg)?
        .mean(Kind::Double)
        .double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::testing::{assert_close, oracle};

    /// Random pairs, and structured ones: a blurred/shifted copy and a flat target with a box.
    fn pairs(rng: &mut Rng) -> Vec<(&'static str, Tensor, Tensor)> {
        let a = rng.rand(&[4, 3, 32, 32]);
        let b = rng.rand(&[4, 3, 32, 32]);
        let noisy = (&a + rng.randn(&[4, 3, 32, 32]) * 0.05).clamp(0.0, 1.0);
        let ramp = Tensor::linspace(0.0, 1.0, 32, (Kind::Float, Device::Cpu));
        let grad = (ramp.view([1, 1, 1, 32]) * ramp.view([1, 1, 32, 1]))
            .expand([2, 1, 32, 32], false)
            .contiguous();
        let shifted = grad.roll([3], [3]);
        let flat = Tensor::full([1, 3, 16, 20], 0.3, (Kind::Float, Device::Cpu));
        let boxed = flat.copy();
        let _ = boxed.narrow(2, 4, 6).narrow(3, 8, 6).fill_(0.9);
        vec![
            ("independent noise", a.shallow_clone(), b),
            ("noisy copy", a, noisy),
            ("shifted gradient", grad, shifted),
            ("flat vs box", flat, boxed),
        ]
    }

    #[test]
    fn matches_torchmetrics_with_both_borders() {
        let mut rng = Rng::seeded(21);
        let pairs = pairs(&mut rng);
        // One oracle run for all pairs: `preds_i`, `target_i`.
        let names: Vec<(String, String)> = (0..pairs.len())
            .map(|i| (format!("preds_{i}"), format!("target_{i}")))
            .collect();
        let mut inputs = Vec::new();
        for ((p, t), (_, x, y)) in names.iter().zip(&pairs) {
            inputs.push((p.as_str(), x));
            inputs.push((t.as_str(), y));
        }
        let out = oracle("ssim", &inputs, &[]);
        for (i, (name, x, y)) in pairs.iter().enumerate() {
            for (border, key) in [(SsimBorder::Full, "full"), (SsimBorder::Cropped, "cropped")] {
                let cfg = SsimConfig {
                    border,
                    ..Default::default()
                };
                let ours = ssim_per_image(x, y, &cfg).unwrap();
                assert_close(
                    &format!("{name} per-image {key}"),
                    &ours,
                    &out[&format!("{key}_per_image_{i}")],
                    1e-5,
                );
                let mean = ssim(x, y, &cfg).unwrap();
                let theirs = out[&format!("{key}_mean_{i}")].double_value(&[]);
                assert!(
                    (mean - theirs).abs() <= 1e-5,
                    "{name} mean {key}: {mean} vs {theirs}"
                );
            }
        }
    }

    #[test]
    fn identical_images_score_one_and_a_single_target_broadcasts() {
        let mut rng = Rng::seeded(22);
        let x = rng.rand(&[3, 3, 32, 32]);
        let v = ssim_per_image(&x, &x, &SsimConfig::default()).unwrap();
        assert_close(
            "SSIM(x, x)",
            &v,
            &Tensor::ones([3], (Kind::Float, Device::Cpu)),
            1e-6,
        );
        let target = x.get(1);
        let one = ssim_per_image(&x, &target, &SsimConfig::default()).unwrap();
        assert!((one.double_value(&[1]) - 1.0).abs() < 1e-6 && one.double_value(&[0]) < 0.5);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut rng = Rng::seeded(23);
        let cfg = SsimConfig::default();
        assert!(
            ssim_per_image(&rng.rand(&[2, 3, 32, 32]), &rng.rand(&[2, 3, 16, 16]), &cfg).is_err()
        );
        assert!(ssim_per_image(&rng.rand(&[3, 32, 32]), &rng.rand(&[3, 32, 32]), &cfg).is_err());
        let err =
            ssim_per_image(&rng.rand(&[1, 1, 4, 4]), &rng.rand(&[1, 1, 4, 4]), &cfg).unwrap_err();
        assert!(err.to_string().contains("too small"));
        let err =
            ssim_per_image(&rng.rand(&[1, 1, 8, 8]), &rng.rand(&[1, 1, 8, 8]), &cfg).unwrap_err();
        assert!(err.to_string().contains("need at least 11×11"), "{err}");
        let full = SsimConfig {
            border: SsimBorder::Full,
            ..cfg
        };
        assert!(ssim_per_image(&rng.rand(&[1, 1, 8, 8]), &rng.rand(&[1, 1, 8, 8]), &full).is_ok());
    }
}
