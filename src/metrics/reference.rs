//! FID reference sets built by code from a dataset's raw pixels, never from JPEG copies.
//!
//! A reference is named `dataset:NAME[:SPLIT][@SIZE]`, e.g. `dataset:cifar10:train` (the paper's
//! 50,000 CIFAR-10 training images) or `dataset:fashion-mnist:train@16` (the smoke profile's
//! size); `dataset:cifar10-train` is the same as `dataset:cifar10:train`. The images go through
//! the datasets' own PIL-exact channel conversion and bilinear resize ([`crate::datasets::Dataset::prepare`]) and
//! become an [`ImageSet`] hashed exactly like a PNG folder of the same pixels, so the reference's
//! features and statistics are cached by content like any other set: a second FID against the
//! same reference runs no network.
use std::path::PathBuf;

use anyhow::Result;

use super::image_set::ImageSet;
use crate::datasets::named::{Selection, PREFIX};

impl Selection {
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
