//! External inputs of the BadDiffusion harness: the hash-pinned manifest (`artifacts/manifest.toml`),
//! a content-addressed cache, and verified downloads with mirrors, resume and an offline mode.
//! Every later stage asks the cache for its inputs by name ([`path_of`]); nothing else downloads.
pub mod cache;
#[cfg(feature = "download")]
mod download;
pub mod extract;
mod fetch;
pub mod hash;
pub mod lockfile;
pub mod manifest;
pub mod reach;
pub mod report;

pub use cache::{Cache, CacheError, VerifyReport};
pub use fetch::{fetch, FetchError, FetchOptions, Mirror};
pub use manifest::{Artifact, FileSpec, Kind, Manifest, ManifestError};
pub use report::{FetchReport, FileReport, Outcome, Trust};

/// The directory of a fetched artifact in the default cache (`BADDIFF_CACHE`, else the user's cache
/// directory); its files sit at their manifest paths, unpacked archives under their `into` name.
pub fn path_of(name: &str) -> Result<std::path::PathBuf, CacheError> {
    Cache::open_default()?.path_of(name)
}
