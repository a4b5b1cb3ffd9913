//! The training sets of the paper and their preprocessing (official `dataset.py`).
//!
//! A [`Dataset`] holds its images as uint8 N×C×H×W (what the files store; 4× smaller than float)
//! and int64 labels (−1 where a set has none). The official per-image transform is
//! `convert` → `Resize([S, S])` (PIL bilinear) → `ToTensor` → `normalize` (range [−1, 0.99998], the
//! 1e-5 eps quirk) → `RandomHorizontalFlip`. The first two are uint8 operations, done once by
//! [`Dataset::prepare`]; normalisation and the flip happen per batch in
//! [`Dataset::clean_batch`], the flip drawn per sample from the run's [`Rng`]. The flip applies to
//! the clean image only, before any trigger is stamped (see [`crate::poison`]).
pub mod cifar10;
pub mod idx;
pub mod image_folder;
pub mod named;

#[cfg(test)]
mod props;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use crate::pil::{self, ImageU8};
use crate::rng::Rng;

/// Which part of a dataset with a train/test split to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
    /// Train followed by test, what the official code trains on (`split="train+test"`).
    TrainTest,
}

/// Images (uint8 N×C×H×W, CPU) and labels (int64 N).
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub images: Tensor,
    pub labels: Tensor,
}

impl Dataset {
    pub fn new(name: &str, images: Tensor, labels: Tensor) -> Result<Dataset> {
        let s = images.size();
        ensure!(
            s.len() == 4 && images.kind() == Kind::Uint8,
            "dataset {name}: images must be uint8 N×C×H×W, got {:?} {s:?}",
            images.kind()
        );
        ensure!(
            s[1] == 1 || s[1] == 3,
            "dataset {name}: images have {} channels; 1 or 3 are supported",
            s[1]
        );
        ensure!(
            labels.size() == [s[0]],
            "dataset {name}: {} images but labels of shape {:?}",
            s[0],
            labels.size()
        );
        Ok(Dataset {
            name: name.to_string(),
            images,
            labels: labels.to_kind(Kind::Int64),
        })
    }

    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn channels(&self) -> usize {
        self.images.size()[1] as usize
    }

    /// (height, width).
    pub fn image_size(&self) -> (usize, usize) {
        let s = self.images.size();
        (s[2] as usize, s[3] as usize)
    }

    /// The official channel transform (`convert("L")` for 1 channel, `convert("RGB")` for 3) then
    /// `Resize([size, size])` with Pillow's bilinear filter; each is skipped when already satisfied.
    pub fn prepare(&self, channels: usize, size: usize) -> Result<Dataset> {
        ensure!(
            channels == 1 || channels == 3,
            "images have 1 or 3 channels, not {channels}"
        );
        let (h, w) = self.image_size();
        if channels == self.channels() && (h, w) == (size, size) {
            return Dataset::new(
                &self.name,
                self.images.shallow_clone(),
                self.labels.shallow_clone(),
            );
        }
        let n = self.len();
        let mut data = Vec::with_capacity(n * channels * size * size);
        for i in 0..n {
            let img = ImageU8::from_tensor(&self.images.get(i as i64))?;
            let img = pil::convert_channels(&img, channels)?;
            data.extend_from_slice(&pil::resize_bilinear(&img, size, size)?.data);
        }
        let images = Tensor::from_slice(&data).reshape([
            n as i64,
            channels as i64,
            size as i64,
            size as i64,
        ]);
        Dataset::new(&self.name, images, self.labels.shallow_clone())
    }

    /// The first `n` images (scale models train on subsets).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len()) as i64;
        Dataset {
            name: self.name.clone(),
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }

    /// Images at `indices` (int64), normalized to [−1, 0.99998] float32, not flipped.
    pub fn normalized(&self, indices: &Tensor) -> Tensor {
        pil::normalize_u8(&self.images.index_select(0, &indices.to_device(Device::Cpu)))
    }

    /// The clean training images at `indices`: normalized, each flipped horizontally with
    /// probability 0.5 (`RandomHorizontalFlip`), on the CPU.
    pub fn clean_batch(&self, indices: &Tensor, rng: &mut Rng) -> Tensor {
        random_horizontal_flip(&self.normalized(indices), rng)
    }
}

/// Flips each image of an N×C×H×W batch left-right where a uniform draw is < 0.5 (one draw per
/// sample, in batch order, as `RandomHorizontalFlip` draws `torch.rand(1) < p` per image).
pub fn random_horizontal_flip(x: &Tensor, rng: &mut Rng) -> Tensor {
    let n = x.size()[0];
    let flip = rng
        .rand(&[n])
        .lt(0.5)
        .to_device(x.device())
        .reshape([n, 1, 1, 1]);
    x.flip([3]).where_self(&flip, x)
}

/// One epoch's batches of indices, as `DataLoader(shuffle=True, drop_last=False)` makes them: a
/// permutation drawn from `rng`, cut into `batch_size` chunks, the last one possibly shorter.
pub fn shuffled_batches(n: usize, batch_size: usize, rng: &mut Rng) -> Vec<Tensor> {
    assert!(batch_size > 0, "batch size must be positive");
    let perm = rng.with(|| Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu)));
    perm.split(batch_size as i64, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_batches_cover_every_sample_once() {
        let mut rng = Rng::seeded(9);
        let batches = shuffled_batches(1000, 128, &mut rng);
        let sizes: Vec<i64> = batches.iter().map(|b| b.size()[0]).collect();
        assert_eq!(sizes.len(), 8);
        assert_eq!(
            sizes[7],
            1000 - 7 * 128,
            "the last batch keeps the remainder (drop_last=False)"
        );
        let all = Tensor::cat(&batches, 0).sort(0, false).0;
        assert!(all.equal(&Tensor::arange(1000, (Kind::Int64, Device::Cpu))));
    }

    fn tiny() -> Dataset {
        let images = Tensor::arange(4 * 3 * 2 * 5, (Kind::Int64, Device::Cpu))
            .reshape([4, 3, 2, 5])
            .to_kind(Kind::Uint8);
        Dataset::new("tiny", images, Tensor::from_slice(&[0i64, 1, 2, 3])).unwrap()
    }

    #[test]
    fn bad_shapes_are_refused() {
        let x = Tensor::zeros([2, 2, 4, 4], (Kind::Uint8, Device::Cpu));
        assert!(Dataset::new("x", x, Tensor::from_slice(&[0i64, 1])).is_err());
        let x = Tensor::zeros([2, 3, 4, 4], (Kind::Uint8, Device::Cpu));
        assert!(Dataset::new("x", x.shallow_clone(), Tensor::from_slice(&[0i64])).is_err());
        assert!(Dataset::new("x", x.to_kind(Kind::Float), Tensor::from_slice(&[0i64, 1])).is_err());
    }

    #[test]
    fn normalized_range_and_values() {
        let ds = tiny();
        let x = ds.normalized(&Tensor::from_slice(&[1i64, 3]));
        assert_eq!(x.size(), [2, 3, 2, 5]);
        let expect = (ds.images.get(1).to_kind(Kind::Float) / 255.0) / 1.00001 * 2.0 - 1.0;
        crate::testing::assert_close("image 1", &x.get(0), &expect, 1e-7);
        let full = pil::normalize_u8(&Tensor::from_slice(&[0u8, 255]));
        assert_eq!(
            (
                full.double_value(&[0]),
                (full.double_value(&[1]) * 1e5).round() / 1e5
            ),
            (-1.0, 0.99998)
        );
    }

    #[test]
    fn flips_are_per_sample_and_seeded() {
        let ds = tiny();
        let idx = Tensor::arange(4, (Kind::Int64, Device::Cpu)).repeat([50]);
        let plain = ds.normalized(&idx);
        let a = ds.clean_batch(&idx, &mut Rng::seeded(5));
        let b = ds.clean_batch(&idx, &mut Rng::seeded(5));
        assert!(a.equal(&b), "same seed, same flips");
        let flipped: Vec<bool> = (0..200)
            .map(|i| {
                let (x, p) = (a.get(i), plain.get(i));
                if x.equal(&p) {
                    false
                } else {
                    assert!(
                        x.equal(&p.flip([2])),
                        "sample {i} is neither the image nor its mirror"
                    );
                    true
                }
            })
            .collect();
        let n = flipped.iter().filter(|&&f| f).count();
        assert!((60..=140).contains(&n), "{n} of 200 flipped");
    }

    #[test]
    fn prepare_converts_and_resizes_like_pillow() {
        let ds = tiny();
        let small = ds.prepare(1, 4).unwrap();
        assert_eq!(small.images.size(), [4, 1, 4, 4]);
        let one = ImageU8::from_tensor(&ds.images.get(2)).unwrap();
        let expect = pil::resize_bilinear(&pil::convert_l(&one).unwrap(), 4, 4)
            .unwrap()
            .to_tensor();
        assert!(small.images.get(2).equal(&expect));
        assert!(ds.prepare(3, 7).unwrap().images.size() == [4, 3, 7, 7]);
        assert!(ds.prepare(2, 7).is_err());
        assert_eq!(ds.take(2).len(), 2);
    }
}
