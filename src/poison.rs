//! Poisoning the training set (official `dataset.py:162-205`): `int(N·p)` samples carry the trigger and the target.
//!
//! As in the official FIXED mode, poisoned samples *replace* clean ones (the dataset keeps N
//! samples); p = 0 and p = 1 are valid. **Deviation:** the official split
//! (`datasets.train_test_split`) is unseeded, so which samples are poisoned differs per run; here
//! they are the first `int(N·p)` entries of a permutation drawn from the run's [`Rng`], so a run
//! is reproducible from its seed.
//!
//! A batch has the official code's fields: the clean image (randomly flipped), `pixel_values` R
//! and `target` y. Clean samples have R = 0 and y = x; poisoned ones R = r = M⊙x + (1−M)⊙g (x
//! flipped before stamping; g never flipped) and y = the target.
use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use crate::datasets::Dataset;
use crate::rng::Rng;
use crate::triggers;

/// A dataset with a fixed set of poisoned samples.
#[derive(Debug)]
pub struct PoisonedDataset {
    pub clean: Dataset,
    /// g, float32 C×S×S.
    pub trigger: Tensor,
    /// y, float32 C×S×S.
    pub target: Tensor,
    /// bool N: which samples are poisoned.
    pub poisoned: Tensor,
    pub poison_rate: f64,
}

/// One training batch, CPU or moved with [`PoisonBatch::to_device`].
#[derive(Debug)]
pub struct PoisonBatch {
    /// The clean image x after the random flip (what ANP and clean-loss logging use).
    pub image: Tensor,
    /// R: 0 for clean samples, the stamped image r for poisoned ones.
    pub pixel_values: Tensor,
    /// y: x for clean samples, the backdoor target for poisoned ones.
    pub target: Tensor,
    /// bool B.
    pub is_clean: Tensor,
}

impl PoisonBatch {
    pub fn to_device(&self, device: Device) -> PoisonBatch {
        PoisonBatch {
            image: self.image.to_device(device),
            pixel_values: self.pixel_values.to_device(device),
            target: self.target.to_device(device),
            is_clean: self.is_clean.to_device(device),
        }
    }

    pub fn len(&self) -> usize {
        self.image.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `int(n·p)`, the official count of poisoned samples.
pub fn poisoned_count(n: usize, poison_rate: f64) -> usize {
    (n as f64 * poison_rate) as usize
}

impl PoisonedDataset {
    /// Poisons `int(N·p)` samples of `clean`, chosen by a permutation drawn from `rng`.
    pub fn new(
        clean: Dataset,
        trigger: Tensor,
        target: Tensor,
        poison_rate: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        ensure!(
            poison_rate.is_finite() && (0.0..=1.0).contains(&poison_rate),
            "poison rate {poison_rate} is outside [0, 1]"
        );
        let (h, w) = clean.image_size();
        let want = [clean.channels() as i64, h as i64, w as i64];
        for (what, t) in [("trigger", &trigger), ("target", &target)] {
            ensure!(
                t.size() == want,
                "the {what} has shape {:?} but the {} images are {:?}: build it for {} channel(s) at {h}×{w} \
                 (a trigger must not be larger than the images)",
                t.size(),
                clean.name,
                want,
                want[0]
            );
        }
        let n = clean.len();
        let k = poisoned_count(n, poison_rate);
        let perm = rng.with(|| Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu)));
        let mut poisoned = Tensor::zeros([n as i64], (Kind::Bool, Device::Cpu));
        let _ = poisoned.index_fill_(0, &perm.narrow(0, 0, k as i64), 1);
        let to_f32 = |t: Tensor| t.to_device(Device::Cpu).to_kind(Kind::Float);
        Ok(PoisonedDataset {
            clean,
            trigger: to_f32(trigger),
            target: to_f32(target),
            poisoned,
            poison_rate,
        })
    }

    pub fn len(&self) -> usize {
        self.clean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clean.is_empty()
    }

    pub fn num_poisoned(&self) -> usize {
        self.poisoned.sum(Kind::Int64).int64_value(&[]) as usize
    }

    /// The samples at `indices` (int64), flips drawn from `rng`, on the CPU.
    pub fn batch(&self, indices: &Tensor, rng: &mut Rng) -> Result<PoisonBatch> {
        let indices = indices.to_device(Device::Cpu);
        let x = self.clean.clean_batch(&indices, rng);
        let poisoned = self
            .poisoned
            .index_select(0, &indices)
            .reshape([-1, 1, 1, 1]);
        let r = triggers::stamp(&x, &self.trigger)?;
        let pixel_values = r.where_self(&poisoned, &x.zeros_like());
        let target = self.target.expand_as(&x).where_self(&poisoned, &x);
        Ok(PoisonBatch {
            image: x,
            pixel_values,
            target,
            is_clean: poisoned.logical_not().reshape([-1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::{ImageShape, SourceImages, Target, Trigger};

    fn dataset(rng: &mut Rng, n: i64, c: i64, s: i64) -> Dataset {
        let images = rng.randint(256, &[n, c, s, s]).to_kind(Kind::Uint8);
        Dataset::new(
            "random",
            images,
            Tensor::zeros([n], (Kind::Int64, Device::Cpu)),
        )
        .unwrap()
    }

    fn backdoor(c: usize, s: usize) -> (Tensor, Tensor) {
        let src = SourceImages::new(crate::testing::official_images());
        let g = Trigger::Box(14)
            .build(ImageShape::new(c, s).unwrap(), &src)
            .unwrap();
        let y = Target::Corner.build(&g, &src).unwrap();
        (g, y)
    }

    #[test]
    fn count_is_int_of_n_times_p_and_seeded() {
        assert_eq!(poisoned_count(60_000, 0.1), 6_000);
        assert_eq!(poisoned_count(60_000, 0.05), 3_000);
        assert_eq!(poisoned_count(10, 0.25), 2);
        let (g, y) = backdoor(3, 16);
        for (p, k) in [(0.0, 0), (0.3, 30), (1.0, 100)] {
            let mut rng = Rng::seeded(1);
            let ds = PoisonedDataset::new(
                dataset(&mut rng, 100, 3, 16),
                g.copy(),
                y.copy(),
                p,
                &mut rng,
            )
            .unwrap();
            assert_eq!((ds.len(), ds.num_poisoned()), (100, k), "p = {p}");
        }
        let pick = |seed| {
            let mut rng = Rng::seeded(seed);
            PoisonedDataset::new(
                dataset(&mut rng, 100, 3, 16),
                g.copy(),
                y.copy(),
                0.3,
                &mut rng,
            )
            .unwrap()
            .poisoned
        };
        assert!(pick(4).equal(&pick(4)));
        assert!(!pick(4).equal(&pick(5)));
    }

    #[test]
    fn batch_fields_follow_the_official_code() {
        let (g, y) = backdoor(3, 16);
        let mut rng = Rng::seeded(2);
        let ds = PoisonedDataset::new(
            dataset(&mut rng, 40, 3, 16),
            g.copy(),
            y.copy(),
            0.5,
            &mut rng,
        )
        .unwrap();
        let idx = Tensor::arange(40, (Kind::Int64, Device::Cpu));
        let b = ds.batch(&idx, &mut rng).unwrap();
        assert_eq!(b.len(), 40);
        let plain = ds.clean.normalized(&idx);
        let mask = g.eq(-1.0);
        for i in 0..40 {
            let x = b.image.get(i);
            assert!(
                x.equal(&plain.get(i)) || x.equal(&plain.get(i).flip([2])),
                "image {i} is x or its mirror"
            );
            let clean = b.is_clean.int64_value(&[i]) == 1;
            assert_eq!(clean, ds.poisoned.int64_value(&[i]) == 0);
            if clean {
                assert!(
                    b.pixel_values.get(i).eq(0.0).all().int64_value(&[]) == 1,
                    "clean R = 0"
                );
                assert!(b.target.get(i).equal(&x), "clean y = x");
            } else {
                // r keeps the (flipped) clean pixels where the mask is set, the trigger elsewhere.
                let r = b.pixel_values.get(i);
                assert!(r.masked_select(&mask).equal(&x.masked_select(&mask)));
                assert!(r
                    .masked_select(&mask.logical_not())
                    .equal(&g.masked_select(&mask.logical_not())));
                assert!(
                    b.target.get(i).equal(&y),
                    "poisoned y = target (never flipped)"
                );
            }
        }
        // p = 1: every sample poisoned; p = 0: none.
        let all = PoisonedDataset::new(
            dataset(&mut rng, 8, 3, 16),
            g.copy(),
            y.copy(),
            1.0,
            &mut rng,
        )
        .unwrap();
        let b = all
            .batch(&Tensor::arange(8, (Kind::Int64, Device::Cpu)), &mut rng)
            .unwrap();
        assert_eq!(b.is_clean.sum(Kind::Int64).int64_value(&[]), 0);
        let none = PoisonedDataset::new(
            dataset(&mut rng, 8, 3, 16),
            g.copy(),
            y.copy(),
            0.0,
            &mut rng,
        )
        .unwrap();
        let b = none
            .batch(&Tensor::arange(8, (Kind::Int64, Device::Cpu)), &mut rng)
            .unwrap();
        assert_eq!(b.is_clean.sum(Kind::Int64).int64_value(&[]), 8);
        assert!(b.pixel_values.eq(0.0).all().int64_value(&[]) == 1);
    }

    #[test]
    fn bad_rates_and_shapes_are_refused() {
        let (g, y) = backdoor(3, 16);
        let mut rng = Rng::seeded(3);
        for p in [-0.1, 1.5, f64::NAN] {
            let err =
                PoisonedDataset::new(dataset(&mut rng, 4, 3, 16), g.copy(), y.copy(), p, &mut rng)
                    .unwrap_err();
            assert!(err.to_string().contains("outside [0, 1]"), "{err}");
        }
        // A 32 px trigger on 16 px images, and a 3-channel trigger on 1-channel images.
        let (g32, y32) = backdoor(3, 32);
        let err = PoisonedDataset::new(dataset(&mut rng, 4, 3, 16), g32, y32, 0.5, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trigger has shape [3, 32, 32]") && err.contains("[3, 16, 16]"),
            "{err}"
        );
        let err = PoisonedDataset::new(dataset(&mut rng, 4, 1, 16), g, y, 0.5, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 channel(s)"), "{err}");
    }
}
