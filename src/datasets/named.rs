//! The paper's datasets by name, and selections of their images: `NAME[:SPLIT][@SIZE]`, e.g.
//! `cifar10:train` (the paper's 50,000 CIFAR-10 training images) or `fashion-mnist:train@16`
//! (the smoke profile's size); `cifar10-train` is the same as `cifar10:train`. Training data
//! (`attack::load_dataset`) and FID reference sets (`metrics::reference`) are both selections,
//! loaded through the datasets' own readers and PIL-exact preprocessing ([`Dataset::prepare`]).
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};

use super::{Dataset, Split};

/// The folder of the user's CelebA-HQ 256 images (no pinned download exists to fetch).
pub const CELEBA_HQ_ENV: &str = "BADDIFF_CELEBA_HQ";

/// The paper's datasets, by the names profiles, cells and references use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    Cifar10,
    FashionMnist,
    Mnist,
    CelebaHq,
}

impl DatasetName {
    pub const ALL: [DatasetName; 4] = [
        DatasetName::Cifar10,
        DatasetName::FashionMnist,
        DatasetName::Mnist,
        DatasetName::CelebaHq,
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => DatasetName::Cifar10,
            "fashion-mnist" | "fashion_mnist" | "fmnist" => DatasetName::FashionMnist,
            "mnist" => DatasetName::Mnist,
            "celeba-hq" | "celeba-hq-256" | "celeba_hq_256" => DatasetName::CelebaHq,
            _ => bail!(
                "unknown dataset `{name}`: use one of {}",
                DatasetName::ALL.map(|d| d.name()).join(", ")
            ),
        })
    }

    /// The canonical name, as in reference labels.
    pub fn name(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::CelebaHq => "celeba-hq",
        }
    }

    /// The dataset's own image side in pixels.
    pub fn native_size(self) -> usize {
        match self {
            DatasetName::Cifar10 => 32,
            DatasetName::FashionMnist | DatasetName::Mnist => 28,
            DatasetName::CelebaHq => 256,
        }
    }

    fn native_channels(self) -> usize {
        match self {
            DatasetName::Cifar10 | DatasetName::CelebaHq => 3,
            DatasetName::FashionMnist | DatasetName::Mnist => 1,
        }
    }

    /// Where the dataset's files are: the fetch cache (and, for Fashion-MNIST, Debian's
    /// `dataset-fashion-mnist` install); CelebA-HQ has no pinned download: the user names its
    /// folder in [`CELEBA_HQ_ENV`].
    pub fn locate(self) -> Result<PathBuf> {
        let cached = |name: &str| fetch::path_of(name).ok();
        match self {
            DatasetName::Cifar10 => cached("cifar10-binary")
                .map(|d| d.join("extracted"))
                .context(
                    "CIFAR-10 is not in the cache: run `cargo xtask fetch cifar10-binary`, or pass the folder \
                     holding cifar-10-batches-bin/ (`--reference-data DIR` for FID, `dir` in a cell's [data])",
                ),
            DatasetName::FashionMnist => cached("fashion-mnist")
                .or_else(|| cached("fashion-mnist-debian"))
                .or_else(|| {
                    let debian = PathBuf::from(crate::datasets::idx::DEBIAN_FASHION_MNIST_DIR);
                    debian.is_dir().then_some(debian)
                })
                .context(
                    "Fashion-MNIST is neither in the cache nor installed: run `cargo xtask fetch fashion-mnist` \
                     (or `apt-get install dataset-fashion-mnist`), or pass its idx folder (`--reference-data DIR` for FID, `dir` in a cell's [data])",
                ),
            DatasetName::Mnist => cached("mnist").context(
                "MNIST is not in the cache: run `cargo xtask fetch mnist`, or pass its idx folder \
                 (`--reference-data DIR` for FID, `dir` in a cell's [data])",
            ),
            DatasetName::CelebaHq => match std::env::var_os(CELEBA_HQ_ENV).filter(|d| !d.is_empty()) {
                Some(d) => {
                    let d = PathBuf::from(d);
                    ensure!(
                        d.is_dir(),
                        "{CELEBA_HQ_ENV}={} is not a folder: set it to the folder of CelebA-HQ's \
                         256 px PNG images (datasets/README.md)",
                        d.display()
                    );
                    Ok(d)
                }
                None => bail!(
                    "CelebA-HQ has no pinned download: set {CELEBA_HQ_ENV} to the folder of its 30,000 \
                     PNG images of 256 px (or pass `--reference-data DIR` for FID, `dir` in a cell's \
                     [data]); see datasets/README.md"
                ),
            },
        }
    }
}

/// Which images of a dataset: its split, the side they are resized to and how many of them.
/// Training data and FID reference sets are both selections, so both are found and
/// preprocessed one way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub dataset: DatasetName,
    pub split: Split,
    /// Side in pixels after PIL's bilinear resize; the dataset's own size when None.
    pub size: Option<usize>,
    /// Only the first N images of the split, in file order (the official code's 2048); all when
    /// None (the paper's 50,000 CIFAR-10 training images).
    pub n: Option<usize>,
    /// The dataset's folder; found through [`DatasetName::locate`] when None.
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

/// The prefix that marks an argument as a dataset rather than a path (FID inputs).
pub const PREFIX: &str = "dataset:";

impl Selection {
    /// The whole split of a dataset at its own size.
    pub fn new(dataset: DatasetName, split: Split) -> Self {
        Selection {
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
                    format!(
                        "dataset `{arg}`: size `{s}` is not a positive number of pixels ({syntax})"
                    )
                })?;
                (b, Some(size))
            }
            None => (body, None),
        };
        let (name, split) = match body.split_once(':') {
            Some((name, split)) => {
                let split = parse_split(split).with_context(|| {
                    format!("dataset `{arg}`: unknown split `{split}` (train, test or train+test)")
                })?;
                (name, split)
            }
            None => ["train+test", "train", "test"]
                .iter()
                .find_map(|s| {
                    body.strip_suffix(&format!("-{s}"))
                        .filter(|n| DatasetName::parse(n).is_ok())
                        .map(|n| (n, parse_split(s).unwrap()))
                })
                .unwrap_or((body, Split::Train)),
        };
        ensure!(
            !name.is_empty(),
            "dataset `{arg}`: no dataset name ({syntax})"
        );
        let dataset =
            DatasetName::parse(name).with_context(|| format!("dataset `{arg}` ({syntax})"))?;
        Ok(Selection {
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
    /// dataset's own when None) and resized to the selection's size with PIL's bilinear filter.
    pub fn load(&self, channels: Option<usize>) -> Result<Dataset> {
        let native = self.dataset.native_size();
        if let Some(size) = self.size {
            ensure!(
                size <= native,
                "{}: {} images are {native}×{native} px, so {size} px images would be \
                 upsampled; choose a size of at most {native}",
                self.label(),
                self.dataset.name()
            );
        }
        if let Some(c) = channels {
            ensure!(
                c == 1 || c == 3,
                "{}: images have 1 or 3 channels, not {c}",
                self.label()
            );
        }
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => self.dataset.locate()?,
        };
        let ds = match self.dataset {
            DatasetName::Cifar10 => super::cifar10::load(&dir, self.split)?,
            DatasetName::FashionMnist => super::idx::fashion_mnist(&dir, self.split)?,
            DatasetName::Mnist => super::idx::mnist(&dir, self.split)?,
            DatasetName::CelebaHq => {
                ensure!(
                    self.split == Split::Train,
                    "CelebA-HQ has one split, `train` (the whole folder, as the official code loads it)"
                );
                let c = channels.unwrap_or(self.dataset.native_channels());
                let size = self.size.unwrap_or(native);
                super::image_folder::load(&dir, c, size, self.n)?
            }
        };
        let label = self.label();
        let ds = match self.n {
            Some(n) => {
                ensure!(n > 0, "{label}: N must be positive");
                ensure!(
                    n <= ds.len(),
                    "{label}: the split holds {} images, fewer than the {n} requested",
                    ds.len()
                );
                ds.take(n)
            }
            None => ds,
        };
        let (h, w) = ds.image_size();
        ensure!(
            h == w && self.size.is_none_or(|s| s <= h),
            "{label}: the images in {} are {w}×{h} px, not square images of at least {} px",
            dir.display(),
            self.size.unwrap_or(h)
        );
        ds.prepare(channels.unwrap_or(ds.channels()), self.size.unwrap_or(h))
            .with_context(|| format!("preparing {label}"))
    }
}

#[cfg(test)]
mod tests;
