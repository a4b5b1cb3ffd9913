//! `cargo xtask fetch` and `cargo xtask verify`: thin wrappers over the `fetch` crate.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::project_root;

pub struct FetchArgs {
    pub names: Vec<String>,
    pub profile: Option<String>,
    pub manifest: Option<PathBuf>,
    pub mirrors: Vec<String>,
    pub offline: bool,
    pub jobs: usize,
}

pub fn fetch(a: FetchArgs) -> Result<()> {
    let path = a
        .manifest
        .unwrap_or_else(|| project_root().join("artifacts/manifest.toml"));
    let manifest = fetch::Manifest::load(&path)?;
    let cache = fetch::Cache::open_default()?;
    println!("cache: {}", cache.root().display());
    let opts = fetch::FetchOptions {
        mirrors: a.mirrors.iter().map(|m| fetch::Mirror::parse(m)).collect(),
        offline: a.offline,
        jobs: a.jobs,
        ..Default::default()
    };
    let report = fetch::fetch(&manifest, &cache, &a.names, a.profile.as_deref(), &opts)?;
    print!("{report}");
    if !report.is_complete() {
        bail!(
            "some artifacts are not available{}",
            if a.offline {
                " (offline: pass --mirror DIR with an offline copy, or drop --offline)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub fn verify() -> Result<()> {
    let cache = fetch::Cache::open_default()?;
    let rep = cache
        .verify()
        .with_context(|| format!("verifying {}", cache.root().display()))?;
    for (what, to) in &rep.quarantined {
        println!("CORRUPT  {what}: moved to {}", to.display());
    }
    println!(
        "verify: {} file(s) re-hashed in {}, {} quarantined",
        rep.checked,
        cache.root().display(),
        rep.quarantined.len()
    );
    if !rep.quarantined.is_empty() {
        bail!("corrupt cache entries were quarantined; `cargo xtask fetch` brings them back");
    }
    Ok(())
}
