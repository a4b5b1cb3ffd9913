//! FID reference sets built by code from a dataset's raw pixels, never from JPEG copies.
//!
//! A reference is named `dataset:NAME[:SPLIT][@SIZE]`, e.g. `dataset:cifar10:train` (the paper's
//! 50,000 CIFAR-10 training images) or `dataset:fashion-mnist:train@16` (the smoke profile's
//! size); `dataset:cifar10-train` is the same as `dataset:cifar10:train`. The images go through
//! the datasets' own PIL-exact channel conversion and bilinear resize ([`Dataset::prepare`]) and
//! become an [`ImageSet`] hashed exactly like a PNG folder of the same pixels, so the reference's
//! features and statistics are cached by content like any other set: a second FID against the
//! same reference runs no network.
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};

use super::image_folder::ImageSet;
use crate::datasets::{self, Dataset, Split};

/// The datasets a reference can be built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefDataset {
    Cifar10,
    FashionMnist,
    Mnist,
    CelebaHq,
}

impl RefDataset {
    pub const ALL: [RefDataset; 4] = [
        RefDataset::Cifar10,
        RefDataset::FashionMnist,
        RefDataset::Mnist,
        RefDataset::CelebaHq,
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => RefDataset::Cifar10,
            "fashion-mnist" | "fashion_mnist" | "fmnist" => RefDataset::FashionMnist,
            "mnist" => RefDataset::Mnist,
            "celeba-hq" | "celeba-hq-256" | "celeba_hq_256" => RefDataset::CelebaHq,
            _ => bail!(
                "unknown reference dataset `{name}`: use one of {}",
                RefDataset::ALL.map(|d| d.name()).join(", ")
            ),
        })
    }

    /// The canonical name, as in reference labels.
    pub fn name(self) -> &'static str {
        match self {
            RefDataset::Cifar10 => "cifar10",
            RefDataset::FashionMnist => "fashion-mnist",
            RefDataset::Mnist => "mnist",
            RefDataset::CelebaHq => "celeba-hq",
        }
    }

    /// The dataset's own image side in pixels.
    pub fn native_size(self) -> usize {
        match self {
            RefDataset::Cifar10 => 32,
            RefDataset::FashionMnist | RefDataset::Mnist => 28,
            RefDataset::CelebaHq => 256,
        }
    }

    fn native_channels(self) -> usize {
        match self {
            RefDataset::Cifar10 | RefDataset::CelebaHq => 3,
            RefDataset::FashionMnist | RefDataset::Mnist => 1,
        }
    }

    /// Where the dataset's files are: the fetch cache (and, for Fashion-MNIST, Debian's
    /// `dataset-fashion-mnist` install); CelebA-HQ has no pinned download and needs its folder.
    pub fn locate(self) -> Result<PathBuf> {
        let cached = |name: &str| fetch::path_of(name).ok();
        match self {
            RefDataset::Cifar10 => cached("cifar10-binary")
                .map(|d| d.join("extracted"))
                .context(
                    "CIFAR-10 is not in the cache: run `cargo xtask fetch cifar10-binary`, or pass the folder \
                     holding cifar-10-batches-bin/ (--reference-data DIR)",
                ),
            RefDataset::FashionMnist => cached("fashion-mnist")
                .or_else(|| cached("fashion-mnist-debian"))
                .or_else(|| {
                    let debian = PathBuf::from(crate::triggers::DEBIAN_FASHION_MNIST_DIR);
                    debian.is_dir().then_some(debian)
                })
                .context(
                    "Fashion-MNIST is neither in the cache nor installed: run `cargo xtask fetch fashion-mnist` \
                     (or `apt-get install dataset-fashion-mnist`), or pass its idx folder (--reference-data DIR)",
                ),
            RefDataset::Mnist => cached("mnist").context(
                "MNIST is not in the cache: run `cargo xtask fetch mnist`, or pass its idx folder \
                 (--reference-data DIR)",
            ),
            RefDataset::CelebaHq => bail!(
                "CelebA-HQ has no pinned download: pass the folder of its 30,000 PNG images of 256 px \
                 (--reference-data DIR); see datasets/README.md"
            ),
        }
    }
}

/// A reference set: which dataset, split, size and how many of its images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceSpec {
    pub dataset: RefDataset,
    pub split: Split,
    /// Side in pixels after PIL's bilinear resize; the dataset's own size when None.
    pub size: Option<usize>,
    /// Only the first N images of the split, in file order (the official code's 2048); all when
    /// None (the paper's 50,000 CIFAR-10 training images).
    pub n: Option<usize>,
    /// The dataset's folder; found through [`RefDataset::locate`] when None.
    pub dir: Option<PathBuf>,
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
        Split::TrainTest => "train+test",
    }
}

fn parse_split(s: &str) -> Option<Split> {
    match s {
        "train" => Some(Split::Train),
        "test" => Some(Split::Test),
        "train+test" => Some(Split::TrainTest),
        _ => None,
    }
}

/// The prefix that marks a reference argument as a dataset rather than a path.
pub const PREFIX: &str = "dataset:";

impl ReferenceSpec {
    /// The whole split of a dataset at its own size.
    pub fn new(dataset: RefDataset, split: Split) -> Self {
        ReferenceSpec {
            dataset,
            split,
            size: None,
            n: None,
            dir: None,
        }
    }

    /// Parses `dataset:NAME[:SPLIT][@SIZE]` (the prefix is optional here); NAME may carry the
    /// split as a suffix (`cifar10-train`). The split defaults to `train`.
    pub fn parse(arg: &str) -> Result<Self> {
        let body = arg.strip_prefix(PREFIX).unwrap_or(arg);
        let syntax = "expected dataset:NAME[:SPLIT][@SIZE], e.g. dataset:cifar10:train or dataset:fashion-mnist:train@16";
        let (body, size) = match body.split_once('@') {
            Some((b, s)) => {
                let size: usize = s.parse().ok().filter(|&s| s > 0).with_context(|| {
                    format!("reference `{arg}`: size `{s}` is not a positive number of pixels ({syntax})")
                })?;
                (b, Some(size))
            }
            None => (body, None),
        };
        let (name, split) = match body.split_once(':') {
            Some((name, split)) => {
                let split = parse_split(split).with_context(|| {
                    format!(
                        "reference `{arg}`: unknown split `{split}` (train, test or train+test)"
                    )
                })?;
                (name, split)
            }
            None => ["train+test", "train", "test"]
                .iter()
                .find_map(|s| {
                    body.strip_suffix(&format!("-{s}"))
                        .filter(|n| RefDataset::parse(n).is_ok())
                        .map(|n| (n, parse_split(s).unwrap()))
                })
                .unwrap_or((body, Split::Train)),
        };
        ensure!(
            !name.is_empty(),
            "reference `{arg}`: no dataset name ({syntax})"
        );
        let dataset =
            RefDataset::parse(name).with_context(|| format!("reference `{arg}` ({syntax})"))?;
        Ok(ReferenceSpec {
            dataset,
            split,
            size,
            n: None,
            dir: None,
        })
    }

    /// The label recorded as the protocol's `reference_split`, e.g. `cifar10-train`,
    /// `fashion-mnist-train@16px, first 2048`.
    pub fn label(&self) -> String {
        let mut s = format!("{}-{}", self.dataset.name(), split_name(self.split));
        if let Some(size) = self.size.filter(|&s| s != self.dataset.native_size()) {
            s += &format!("@{size}px");
        }
        if let Some(n) = self.n {
            s += &format!(", first {n}");
        }
        s
    }

    /// The dataset's images and labels, the first N taken, converted to `channels` (the
    /// dataset's own when None) and resized to the spec's size with PIL's bilinear filter.
    pub fn load(&self, channels: Option<usize>) -> Result<Dataset> {
        let native = self.dataset.native_size();
        if let Some(size) = self.size {
            ensure!(
                size <= native,
                "reference {}: {} images are {native}×{native} px, so a {size} px reference would be \
                 upsampled; choose a size of at most {native}",
                self.label(),
                self.dataset.name()
            );
        }
        if let Some(c) = channels {
            ensure!(
                c == 1 || c == 3,
                "reference {}: images have 1 or 3 channels, not {c}",
                self.label()
            );
        }
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => self.dataset.locate()?,
        };
        let ds = match self.dataset {
            RefDataset::Cifar10 => datasets::cifar10::load(&dir, self.split)?,
            RefDataset::FashionMnist => datasets::idx::fashion_mnist(&dir, self.split)?,
            RefDataset::Mnist => datasets::idx::mnist(&dir, self.split)?,
            RefDataset::CelebaHq => {
                ensure!(
                    self.split == Split::Train,
                    "CelebA-HQ has one split, `train` (the whole folder, as the official code loads it)"
                );
                let c = channels.unwrap_or(self.dataset.native_channels());
                let size = self.size.unwrap_or(native);
                datasets::image_folder::load(&dir, c, size, self.n)?
            }
        };
        let label = self.label();
        let ds = match self.n {
            Some(n) => {
                ensure!(n > 0, "reference {label}: N must be positive");
                ensure!(
                    n <= ds.len(),
                    "reference {label}: the split holds {} images, fewer than the {n} requested",
                    ds.len()
                );
                ds.take(n)
            }
            None => ds,
        };
        let (h, w) = ds.image_size();
        ensure!(
            h == w && self.size.is_none_or(|s| s <= h),
            "reference {label}: the images in {} are {w}×{h} px, not square images of at least {} px",
            dir.display(),
            self.size.unwrap_or(h)
        );
        ds.prepare(channels.unwrap_or(ds.channels()), self.size.unwrap_or(h))
            .with_context(|| format!("preparing reference {label}"))
    }

    /// The reference as an image set (hashed like a PNG folder of the same pixels).
    pub fn image_set(&self, channels: Option<usize>) -> Result<ImageSet> {
        let ds = self.load(channels)?;
        let origin = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{PREFIX}{}", self.label())));
        ImageSet::from_tensor(ds.images, &origin)
    }
}

#[cfg(test)]
mod tests;
