//! BadDiffusion under corrupted inputs (paper §4.7 and its supplement Sec. 4, experiment E7).
//!
//! The supplement is not public. This module is reconstructed from the authors' follow-up code,
//! IBM/VillanDiffusion (commit 05a7f5b), which defines the three corruptions and how they are
//! sampled and scored; it is labelled as such wherever its rows appear:
//!
//! - the corruption is applied in model space [−1, 1] to a set of dataset images, poisoned
//!   (trigger stamped, `VillanDiffusion.py:924-945`) or not;
//! - the corrupted image *is* x_T: the full DDPM chain runs from it, with no noise added and no
//!   known-pixel replacement (the fork's `pipeline_ddpm.py:113-139`, `init`);
//! - poisoned inputs are scored against the backdoor target, unpoisoned ones against their own
//!   uncorrupted image (`measure_inpaint`, `VillanDiffusion.py:887-919`).
//!
//! Deviations: the images are the first `n` of the profile's dataset, unflipped (VillanDiffusion
//! takes indices 0, N−1, N−2, … of a split drawn without a seed, after a random flip), and the
//! Gaussian noise comes from this crate's seeded generator, not torch's.
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::rng::Rng;

/// The standard deviation of the denoising task's noise (`noise_sp = noise * 0.3`,
/// `VillanDiffusion.py:899-929`), added in [−1, 1] without clamping.
pub const DENOISE_STD: f64 = 0.3;

/// One of the follow-up code's corruptions (`VillanDiffusion.py:23-29`; its task names without
/// the `poisoned_` / `unpoisoned_` prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// x + 0.3·ε, ε ~ N(0, I), one draw for the whole set.
    Denoise,
    /// A centred square of side ≈ 2/3 of the half width set to the set's minimum
    /// (`INPAINT_BOX`, `dataset.py:547-577`).
    InpaintBox,
    /// A band of columns left of the centre, every row, set to the set's minimum (`INPAINT_LINE`).
    InpaintLine,
}

impl Corruption {
    pub const ALL: [Corruption; 3] = [
        Corruption::Denoise,
        Corruption::InpaintBox,
        Corruption::InpaintLine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Corruption::Denoise => "denoise",
            Corruption::InpaintBox => "inpaint_box",
            Corruption::InpaintLine => "inpaint_line",
        }
    }

    /// The masked region of a W-wide image as (rows, columns), end-exclusive, as the follow-up
    /// code computes it from `half_dim = W // 2` (its rows use the width too); `None` for
    /// denoising, which masks nothing.
    pub fn region(self, width: i64) -> Option<(std::ops::Range<i64>, std::ops::Range<i64>)> {
        let half = width / 2;
        match self {
            Corruption::Denoise => None,
            Corruption::InpaintBox => {
                let (lo, hi) = (half - half / 3, half + half / 3);
                Some((lo..hi, lo..hi))
            }
            Corruption::InpaintLine => Some((0..2 * half, half - half / 10..half + half / 20)),
        }
    }

    /// Corrupts `images` (N, C, H, W) in [−1, 1]. Masked pixels of every channel take the
    /// minimum of the whole set (`torch.full_like(imgs, torch.min(imgs))`); the noise of
    /// `Denoise` is one draw from `rng` over the set. Nothing is clamped.
    pub fn apply(self, images: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let s = images.size();
        ensure!(
            s.len() == 4,
            "images to corrupt must be [N, C, H, W], got {s:?}"
        );
        let x = images.to_kind(Kind::Float);
        if self == Corruption::Denoise {
            return Ok(&x + rng.randn(&s).to_device(x.device()) * DENOISE_STD);
        }
        let (rows, cols) = self.region(s[3]).expect("a mask corruption has a region");
        ensure!(
            rows.end <= s[2] && cols.end <= s[3] && !rows.is_empty() && !cols.is_empty(),
            "a {}x{} image has no room for the {} mask (rows {rows:?}, columns {cols:?})",
            s[2],
            s[3],
            self.name()
        );
        let keep = Tensor::ones([s[2], s[3]], (Kind::Float, x.device()));
        let _ = keep
            .narrow(0, rows.start, rows.end - rows.start)
            .narrow(1, cols.start, cols.end - cols.start)
            .fill_(0.0);
        let fill = x.min();
        Ok(&x * &keep + (1.0 - &keep) * fill)
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Corruption {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Corruption> {
        match Corruption::ALL.into_iter().find(|c| c.name() == s) {
            Some(c) => Ok(c),
            None => bail!(
                "unknown corruption {s:?}: use {}",
                Corruption::ALL.map(|c| c.name()).join(", ")
            ),
        }
    }
}

/// The sampler's starting images of one E7 set: `images` (N, C, H, W, in [−1, 1]), stamped
/// with `trigger` when given (the poisoned task), then corrupted; `seed` draws the noise.
pub fn corrupted_inputs(
    images: &Tensor,
    trigger: Option<&Tensor>,
    corruption: Corruption,
    seed: u64,
) -> Result<Tensor> {
    let x = match trigger {
        Some(g) => crate::triggers::stamp(images, g)?,
        None => images.shallow_clone(),
    };
    corruption.apply(&x, &mut Rng::seeded(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The follow-up code's regions at the sizes it and this harness use: 32 px (CIFAR-10),
    /// 28 px (the CPU miniature), 256 px (CelebA-HQ); the same slices computed in Python.
    #[test]
    fn regions_match_the_follow_up_codes_slices() {
        let r = |c: Corruption, w| c.region(w).unwrap();
        assert_eq!(r(Corruption::InpaintBox, 32), (11..21, 11..21));
        assert_eq!(r(Corruption::InpaintLine, 32), (0..32, 15..16));
        assert_eq!(r(Corruption::InpaintBox, 28), (10..18, 10..18));
        assert_eq!(r(Corruption::InpaintLine, 28), (0..28, 13..14));
        assert_eq!(r(Corruption::InpaintBox, 256), (86..170, 86..170));
        assert_eq!(r(Corruption::InpaintLine, 256), (0..256, 116..134));
        assert_eq!(Corruption::Denoise.region(32), None);
    }

    /// On a fixed input the masks change exactly their region's pixels, in every channel, to
    /// the minimum of the whole set (here −0.75, in the second image), and nothing else.
    #[test]
    fn masks_change_exactly_their_region_to_the_sets_minimum() {
        let x = Tensor::arange(2 * 3 * 32 * 32, (Kind::Float, tch::Device::Cpu))
            .reshape([2, 3, 32, 32])
            .remainder(97.0)
            / 200.0;
        let _ = x.get(1).get(2).get(31).get(0).fill_(-0.75);
        for c in [Corruption::InpaintBox, Corruption::InpaintLine] {
            let y = c.apply(&x, &mut Rng::seeded(0)).unwrap();
            let (rows, cols) = c.region(32).unwrap();
            let changed = y.ne_tensor(&x);
            let mut expected = Tensor::zeros([2, 3, 32, 32], (Kind::Bool, tch::Device::Cpu));
            let _ = expected
                .narrow(2, rows.start, rows.end - rows.start)
                .narrow(3, cols.start, cols.end - cols.start)
                .fill_(1);
            // A pixel already at the fill value is "changed" to itself.
            expected = expected.logical_and(&x.ne(-0.75));
            assert!(changed.equal(&expected), "{c}: other pixels changed");
            let region = y.narrow(2, rows.start, rows.end - rows.start).narrow(
                3,
                cols.start,
                cols.end - cols.start,
            );
            assert_eq!(region.max().double_value(&[]), -0.75, "{c}");
            assert_eq!(region.min().double_value(&[]), -0.75, "{c}");
        }
    }

    /// Denoising adds 0.3 times one seeded standard-normal draw over the set, unclamped.
    #[test]
    fn denoise_adds_point_three_times_the_seeded_draw() {
        let x = Tensor::full([4, 1, 28, 28], 0.9, (Kind::Float, tch::Device::Cpu));
        let y = Corruption::Denoise.apply(&x, &mut Rng::seeded(7)).unwrap();
        let noise = Rng::seeded(7).randn(&[4, 1, 28, 28]);
        assert!(y.allclose(&(&x + noise * 0.3), 0.0, 1e-7, false));
        assert!(y.max().double_value(&[]) > 1.0, "no clamping to [-1, 1]");
    }

    /// A poisoned input is the stamped image, corrupted: the box erases part of a trigger in
    /// its region, the rest of the trigger stays.
    #[test]
    fn poisoned_inputs_are_stamped_then_corrupted() {
        let images = Tensor::zeros([2, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
        let g = Tensor::full([1, 28, 28], -1.0, (Kind::Float, tch::Device::Cpu));
        let _ = g.narrow(1, 16, 12).narrow(2, 16, 12).fill_(1.0);
        let y = corrupted_inputs(&images, Some(&g), Corruption::InpaintBox, 0).unwrap();
        // Trigger pixel outside the box (row 20, col 20) kept; inside it (row 16, col 16) is
        // the set's minimum, which is 0 here (the clean image's value).
        assert_eq!(y.double_value(&[0, 0, 20, 20]), 1.0);
        assert_eq!(y.double_value(&[0, 0, 16, 16]), 0.0);
        assert_eq!(y.double_value(&[1, 0, 5, 5]), 0.0);
        let clean = corrupted_inputs(&images, None, Corruption::InpaintBox, 0).unwrap();
        assert_eq!(clean.max().double_value(&[]), 0.0);
        assert!("inpaint_line".parse::<Corruption>().is_ok());
        assert!(format!("{:#}", "inpaint".parse::<Corruption>().unwrap_err()).contains("denoise"));
    }
}
