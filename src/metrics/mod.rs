//! The paper's metrics (spec §5): FID (pytorch-fid's Inception, Fréchet distance of pool3
//! statistics), MSE to the backdoor target and its threshold rate, and SSIM. Every number leaves
//! this module as a [`MetricRow`] carrying the [`Protocol`] that produced it.
pub mod fid;
pub mod frechet;
pub mod image_folder;
pub mod inception;
pub mod mse;
pub mod protocol;
pub mod ssim;

pub use protocol::{MetricRow, Protocol};

use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
