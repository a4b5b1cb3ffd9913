//! Named external inputs, resolved through the fetch cache (nothing in the library downloads).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::triggers::SourceImages;

/// The directory of a fetched artifact, or an error saying how to fetch it.
pub fn artifact_dir(name: &str) -> Result<PathBuf> {
    fetch::path_of(name).with_context(|| {
        format!("input `{name}` is not in the cache: run `cargo xtask fetch {name}` (offline, add `--mirror DIR` pointing at a copy)")
    })
}

/// The official trigger/target source images: `dir` if given, else the cached
/// `baddiffusion-static` artifact. Each image's sha256 is still checked when it is read.
pub fn source_images(dir: Option<&Path>) -> Result<SourceImages> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => artifact_dir("baddiffusion-static")?,
    };
    Ok(SourceImages::new(dir))
}
