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

/// Brings the selected inputs into the cache: first from this machine (the cache, `--mirror`
/// directories, system copies), in process; then, for what is still missing, by `baddiff-fetch`,
/// which carries the HTTP client. Before building it, the missing files' hosts are looked up: with
/// no network and no mirror this fails in seconds, naming the files and the fix.
pub fn fetch(a: FetchArgs) -> Result<()> {
    fetch_into(&fetch::Cache::open_default()?, a)
}

fn fetch_into(cache: &fetch::Cache, a: FetchArgs) -> Result<()> {
    let path = a
        .manifest
        .clone()
        .unwrap_or_else(|| project_root().join("artifacts/manifest.toml"));
    let manifest = fetch::Manifest::load(&path)?;
    println!("cache: {}", cache.root().display());
    let mirrors: Vec<fetch::Mirror> = a.mirrors.iter().map(|m| fetch::Mirror::parse(m)).collect();
    let opts = fetch::FetchOptions {
        mirrors: mirrors.clone(),
        offline: true,
        jobs: a.jobs,
        ..Default::default()
    };
    let local = fetch::fetch(&manifest, cache, &a.names, a.profile.as_deref(), &opts)?;
    if local.is_complete() {
        print!("{local}");
        return Ok(());
    }
    if a.offline {
        print!("{local}");
        bail!("some artifacts are not available (offline: pass --mirror DIR with an offline copy, or drop --offline)");
    }
    let hosts = fetch::reach::hosts_for_missing(&manifest, &local, &mirrors);
    let reachable = hosts.iter().filter(|h| fetch::reach::resolves(h)).count();
    let missing = local.missing();
    if reachable == 0 {
        print!("{local}");
        bail!("{}", no_source_message(&missing, &hosts));
    }
    println!(
        "{} file(s) to download ({} of {} host(s) resolve); building the downloader, baddiff-fetch \
         (about two minutes the first time)",
        missing.len(),
        reachable,
        hosts.len()
    );
    crate::binaries::build_fetcher()?;
    let mut cmd = std::process::Command::new(crate::binaries::fetcher());
    // The same cache as this pass (the downloader opens the default one, which this sets).
    cmd.current_dir(project_root())
        .env("BADDIFF_CACHE", cache.root())
        .arg("--manifest")
        .arg(&path)
        .args(["--jobs", &a.jobs.to_string()]);
    if let Some(p) = &a.profile {
        cmd.args(["--profile", p]);
    }
    for m in &a.mirrors {
        cmd.args(["--mirror", m]);
    }
    cmd.args(&a.names);
    let status = cmd.status().context("running baddiff-fetch")?;
    anyhow::ensure!(
        status.success(),
        "some artifacts are not available (baddiff-fetch's report above says why; without network pass --mirror DIR with a copy)"
    );
    Ok(())
}

/// Why nothing can bring `missing` here: the files (the first few), the hosts that did not resolve,
/// and the fix.
fn no_source_message(missing: &[String], hosts: &std::collections::BTreeSet<String>) -> String {
    const SHOWN: usize = 6;
    let mut files = missing
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        files.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    let why = if hosts.is_empty() {
        "no URL serves them".to_string()
    } else {
        format!(
            "no host that serves them resolves here ({}): no network?",
            hosts.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "{} input file(s) are missing ({files}) and {why} Pass `--mirror DIR` with an offline \
         copy of them (files as DIR/<artifact>/<path> or DIR/<file name>)",
        missing.len()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// With no network and no mirror, the command fails before building anything, naming what is
    /// missing, the hosts that did not resolve, and `--mirror`.
    #[test]
    fn missing_inputs_whose_hosts_do_not_resolve_fail_at_once_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        std::fs::write(
            &manifest,
            format!(
                "schema = 1\n[[artifact]]\nname = \"far\"\nkind = \"weights\"\nlicence = \"test\"\n\
                 source_page = \"https://example.org\"\n[[artifact.file]]\npath = \"w.bin\"\n\
                 sha256 = \"{}\"\nurls = [\"https://nothing.invalid/w.bin\"]\n",
                "ab".repeat(32)
            ),
        )
        .unwrap();
        let cache = fetch::Cache::open(&dir.path().join("cache")).unwrap();
        let err = fetch_into(
            &cache,
            FetchArgs {
                names: vec!["far".into()],
                profile: None,
                manifest: Some(manifest),
                mirrors: vec![],
                offline: false,
                jobs: 1,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("far/w.bin"), "{err}");
        assert!(err.contains("nothing.invalid"), "{err}");
        assert!(err.contains("--mirror DIR"), "{err}");
    }
}
