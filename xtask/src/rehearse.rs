//! `cargo xtask rehearse`: the GPU profiles' dress rehearsal on a CPU without network.
//!
//! Format-true stand-ins of every external input (`python/standins/make_standins.py`: seeded
//! random data in the real layouts) are served from 127.0.0.1 under a manifest that is the
//! real one with the stand-ins' hashes and local URLs. Each GPU profile then runs shrunk
//! (`reproduce --shrink --device cpu`) in a fresh cache: download, checksum, extraction, the
//! `.bin` and `.pth` conversions, training, sampling, FID with the real Inception network,
//! defenses, frame, verdicts and report, at the real shapes (3 channels, 32 and 256 px, the real
//! UNet configs). Anything that crashes, or a cell missing from the frame, fails it; only CUDA
//! is left for `cargo xtask gpu-check`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

use crate::{project_root, target_dir};

/// The profiles rehearsed: every one that needs a GPU.
pub const PROFILES: [&str; 3] = ["kick-the-tires", "released", "paper"];
/// The stand-ins' seed.
const SEED: u64 = 0;
/// Served without their optional `.safetensors`, so the 256 px checkpoint takes the `.bin`
/// conversion path (the released models have no safetensors at all).
const BIN_ONLY: &[&str] = &["google-ddpm-ema-celebahq-256"];

#[derive(clap::Args, Default)]
pub struct Args {
    /// Only these profiles (repeatable) [default: kick-the-tires, released, paper].
    #[arg(long)]
    pub profile: Vec<String>,
    /// Where stand-ins, manifest, cache and runs go [default: target/rehearsal].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A directory or base URL holding copies of the official trigger and target images (the
    /// one real input), tried before upstream (repeatable; needed without network).
    #[arg(long = "mirror", value_name = "DIR|URL")]
    pub mirrors: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let dir = a.dir.unwrap_or_else(|| target_dir().join("rehearsal"));
    std::fs::create_dir_all(&dir)?;
    crate::pyenv::setup(false)?;
    let standins = standins(&dir.join("standins"))?;
    // The official images are real inputs: served from the user's cache, fetched there first.
    crate::artifacts::fetch(crate::artifacts::FetchArgs {
        names: vec!["baddiffusion-static".into()],
        profile: None,
        manifest: None,
        mirrors: a.mirrors.clone(),
        offline: false,
        jobs: 4,
    })?;
    let statics = fetch::path_of("baddiffusion-static")?;

    let server = tiny_http::Server::http("127.0.0.1:0")
        .map_err(|e| anyhow::anyhow!("starting the stand-ins' HTTP server: {e}"))?;
    let base = format!("http://{}", server.server_addr());
    let mut routes = BTreeMap::new();
    let manifest = fixture_manifest(&standins, &statics, &base, &mut routes)?;
    let manifest_path = dir.join("manifest.toml");
    std::fs::write(&manifest_path, manifest)?;
    std::thread::spawn(move || serve(server, routes));

    // A fresh cache: every input goes through the fetch path, every stage runs.
    let cache = dir.join("cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    let _env = EnvGuard::set(&[
        ("BADDIFF_CACHE", Some(cache.clone().into_os_string())),
        (
            "BADDIFF_CELEBA_HQ",
            Some(standins.join("celeba-hq-256").into_os_string()),
        ),
        ("BADDIFF_INCEPTION_WEIGHTS", None),
    ]);

    let profiles: Vec<String> = if a.profile.is_empty() {
        PROFILES.iter().map(|s| s.to_string()).collect()
    } else {
        a.profile
    };
    let runs = dir.join("runs");
    for p in &profiles {
        let started = std::time::Instant::now();
        let run_id = format!("{p}-shrunk");
        let run_dir = runs.join(&run_id);
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir)?;
        }
        let argv = [
            "reproduce",
            "--profile",
            p,
            "--shrink",
            "--device",
            "cpu",
            "--manifest",
            &manifest_path.to_string_lossy(),
            "--runs-dir",
            &runs.to_string_lossy(),
            "--run-id",
            &run_id,
        ];
        let args = Reproduce::try_parse_from(argv)?.args;
        crate::reproduce::run(args).with_context(|| format!("the rehearsal of {p} failed"))?;
        check_run(&run_dir, &target_dir().join(format!("shrunk/{p}.toml")))?;
        // No later profile reuses these stages; dropped now, the disk holds one profile's.
        let stages = cache.join("stages");
        if stages.exists() {
            std::fs::remove_dir_all(&stages)?;
        }
        println!(
            "rehearsal of {p}: passed in {:.1} min ({})",
            started.elapsed().as_secs_f64() / 60.0,
            run_dir.display()
        );
    }
    // Its trained models and checkpoints are gigabytes that nothing reuses (the next rehearsal
    // starts from an empty cache): only the stand-ins and the runs' reports stay.
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

/// Environment variables set for the rehearsal's processes, restored when dropped (so the test
/// command's later steps see the user's cache again).
struct EnvGuard(Vec<(&'static str, Option<std::ffi::OsString>)>);

impl EnvGuard {
    fn set(vars: &[(&'static str, Option<std::ffi::OsString>)]) -> EnvGuard {
        let saved = vars
            .iter()
            .map(|(k, _)| (*k, std::env::var_os(k)))
            .collect();
        for (k, v) in vars {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        EnvGuard(saved)
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

#[derive(Parser)]
struct Reproduce {
    #[command(flatten)]
    args: crate::reproduce::Args,
}

/// The stand-ins in `out`, made unless `standins.json` records this script and seed.
fn standins(out: &Path) -> Result<PathBuf> {
    let script = project_root().join("python/standins/make_standins.py");
    let script_sha = crate::sha256_hex(&std::fs::read(&script)?);
    let record: Option<serde_json::Value> = std::fs::read(out.join("standins.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let current =
        record.is_some_and(|r| r["script_sha256"] == script_sha.as_str() && r["seed"] == SEED);
    if !current {
        println!("making the stand-ins ({})", out.display());
        let status = std::process::Command::new(crate::pyenv::venv_python())
            .arg(&script)
            .arg(out)
            .args(["--seed", &SEED.to_string()])
            .status()?;
        ensure!(status.success(), "{} failed", script.display());
    }
    Ok(out.to_path_buf())
}

/// The real manifest with the stand-ins' hashes and local URLs; fills `routes` (URL path → file).
/// Artifacts without a stand-in keep their pinned hashes and are served from the user's cache
/// (the official images) or left as they are (the CPU profiles' inputs, not rehearsed).
fn fixture_manifest(
    standins: &Path,
    statics: &Path,
    base: &str,
    routes: &mut BTreeMap<String, PathBuf>,
) -> Result<String> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(standins.join("standins.json"))?)?;
    let hashes = record["files"]
        .as_object()
        .context("standins.json has no files")?;
    let text = std::fs::read_to_string(project_root().join("artifacts/manifest.toml"))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    let artifacts = manifest
        .get_mut("artifact")
        .and_then(|a| a.as_array_mut())
        .context("artifacts/manifest.toml has no [[artifact]]")?;
    for art in artifacts.iter_mut().filter_map(|a| a.as_table_mut()) {
        let name = art["name"].as_str().unwrap_or_default().to_string();
        let Some(files) = art.get_mut("file").and_then(|f| f.as_array_mut()) else {
            continue;
        };
        for file in files.iter_mut().filter_map(|f| f.as_table_mut()) {
            let path = file["path"].as_str().unwrap_or_default().to_string();
            let key = format!("{name}/{path}");
            let url = format!("/{key}");
            if let Some(sha) = hashes.get(&key).and_then(|h| h.as_str()) {
                for field in ["md5", "sha256_prefix", "sha256_source", "size"] {
                    file.remove(field);
                }
                file.insert("sha256".into(), sha.into());
                if !BIN_ONLY.contains(&name.as_str()) || !path.ends_with(".safetensors") {
                    routes.insert(url.clone(), standins.join(&key));
                }
            } else if name == "baddiffusion-static" {
                routes.insert(url.clone(), statics.join(&path));
            } else if hashes.keys().any(|k| k.starts_with(&format!("{name}/"))) {
                ensure!(
                    file.get("optional").and_then(|o| o.as_bool()) == Some(true),
                    "the stand-ins have no {key}, which the manifest does not mark optional: \
                     add it to python/standins/make_standins.py"
                );
            } else {
                continue;
            }
            file.insert(
                "urls".into(),
                toml::Value::Array(vec![format!("{base}{url}").into()]),
            );
        }
    }
    Ok(toml::to_string(&manifest)?)
}

/// Answers GET requests from `routes`, 404 otherwise, until the process ends.
fn serve(server: tiny_http::Server, routes: BTreeMap<String, PathBuf>) {
    for request in server.incoming_requests() {
        let file = routes
            .get(request.url())
            .and_then(|p| std::fs::File::open(p).ok());
        let _ = match file {
            Some(f) => request.respond(tiny_http::Response::from_file(f)),
            None => request.respond(tiny_http::Response::empty(404)),
        };
    }
}

/// Every planned cell left rows in the frame, the claims were judged and the report rendered.
fn check_run(run_dir: &Path, profile: &Path) -> Result<()> {
    let out = std::process::Command::new(crate::binaries::baddiff())
        .current_dir(project_root())
        .args(["plan", "--json", "--profile"])
        .arg(profile)
        .output()?;
    ensure!(
        out.status.success(),
        "baddiff plan --profile {}: {}",
        profile.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv"))?;
    let cells: Vec<&str> = plan["cells"]
        .as_array()
        .context("the plan has no cells")?
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    ensure!(!cells.is_empty(), "{}: no cells planned", run_dir.display());
    let missing: Vec<&&str> = cells
        .iter()
        .filter(|c| !csv.contains(&format!(",{c},")))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: cells without rows in metrics.csv: {missing:?}",
            run_dir.display()
        );
    }
    for f in ["claims.json", "report/report.md", "report/report.html"] {
        ensure!(run_dir.join(f).is_file(), "{}: no {f}", run_dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-ins folder whose record lists `files` (contents: the path itself).
    fn standins(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = serde_json::Map::new();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
            hashes.insert(f.to_string(), crate::sha256_hex(f.as_bytes()).into());
        }
        let record = serde_json::json!({"seed": SEED, "files": hashes});
        std::fs::write(dir.path().join("standins.json"), record.to_string()).unwrap();
        dir
    }

    const INCEPTION: &str = "pytorch-fid-inception/pt_inception-2015-12-05-6726825d.pth";

    /// The stand-in's hash replaces the real file's pins and its URL is the local server's;
    /// an optional file the stand-ins lack gets a URL that answers 404.
    #[test]
    fn the_fixture_manifest_pins_the_stand_ins_and_points_at_the_server() {
        let dir = standins(&[
            INCEPTION,
            "google-ddpm-ema-celebahq-256/config.json",
            "google-ddpm-ema-celebahq-256/scheduler_config.json",
            "google-ddpm-ema-celebahq-256/diffusion_pytorch_model.bin",
            "google-ddpm-ema-celebahq-256/diffusion_pytorch_model.safetensors",
        ]);
        let mut routes = BTreeMap::new();
        let text = fixture_manifest(
            dir.path(),
            Path::new("/statics"),
            "http://127.0.0.1:9",
            &mut routes,
        )
        .unwrap();
        let m = fetch::Manifest::parse(&text).unwrap();
        let inception = m.get("pytorch-fid-inception").unwrap();
        let f = &inception.files[0];
        assert_eq!(
            f.sha256.as_deref(),
            Some(crate::sha256_hex(INCEPTION.as_bytes()).as_str())
        );
        assert_eq!(f.urls, [format!("http://127.0.0.1:9/{INCEPTION}")]);
        assert_eq!(routes[&format!("/{INCEPTION}")], dir.path().join(INCEPTION));
        // The 256 px model is served without its optional safetensors (the .bin path runs).
        assert!(!routes
            .keys()
            .any(|k| k.ends_with("celebahq-256/diffusion_pytorch_model.safetensors")));
        assert!(routes.contains_key("/baddiffusion-static/hat.png"));
    }

    /// A stand-in set that lacks a required file is refused, naming it and the script.
    #[test]
    fn a_missing_required_stand_in_is_named() {
        let dir = standins(&["google-ddpm-cifar10-32/config.json"]);
        let err = fixture_manifest(
            dir.path(),
            Path::new("/s"),
            "http://x",
            &mut BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("google-ddpm-cifar10-32/scheduler_config.json")
                && err.contains("make_standins.py"),
            "{err}"
        );
    }
}
