//! The committed `artifacts/manifest.toml` parses, and its pinned source-image hashes match the
//! official images (the team's verbatim copies where present, else the fetched ones).
use std::path::PathBuf;

use fetch::{fetch, Cache, FetchOptions, Kind, Manifest, Mirror, Outcome, Trust};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The official images: the team's verbatim copies beside the checkout where they exist (an
/// independent check of the pinned hashes), else the default cache's, which `cargo xtask test`
/// fetched (and verified) before the tests.
fn shared_static() -> PathBuf {
    let shared = std::env::var_os("BADDIFF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let dir = shared.join("baddiffusion-assets/static");
    if dir.is_dir() {
        return dir;
    }
    fetch::path_of("baddiffusion-static").unwrap_or_else(|e| {
        panic!("{e}: `cargo xtask test` fetches the tests' inputs first (offline: `--mirror DIR`)")
    })
}

fn manifest() -> Manifest {
    Manifest::load(&repo_root().join("artifacts/manifest.toml")).unwrap()
}

#[test]
fn committed_manifest_parses_and_covers_the_inputs() {
    let m = manifest();
    for name in [
        "cifar10-binary",
        "fashion-mnist",
        "fashion-mnist-debian",
        "mnist",
        "celeba-hq-256",
        "google-ddpm-cifar10-32",
        "google-ddpm-ema-celebahq-256",
        "pytorch-fid-inception",
        "baddiffusion-static",
        "released-cifar10-p0.9-box14-corner",
    ] {
        m.get(name).unwrap();
    }
    assert_eq!(
        m.get("baddiffusion-static").unwrap().kind,
        Kind::SourceImage
    );
    for p in fetch::manifest::PROFILES {
        assert!(
            !m.select(&[], Some(p)).unwrap().is_empty(),
            "profile {p} selects nothing"
        );
    }
    // Every unpinned file can be checked against something or is declared trusted on first use.
    let cifar = &m.get("cifar10-binary").unwrap().files[0];
    assert_eq!(
        cifar.md5.as_deref(),
        Some("c32a1d4ab5d03f1284b67883e8d87530")
    );
}

#[test]
fn static_image_hashes_match_the_shared_copies_and_fetch_from_them_offline() {
    let m = manifest();
    let dir = shared_static();
    let a = m.get("baddiffusion-static").unwrap();
    assert_eq!(a.files.len(), 5);
    for f in &a.files {
        let d = fetch::hash::digest_file(&dir.join(&f.path)).unwrap();
        assert_eq!(Some(d.sha256), f.sha256, "{}", f.path);
        assert_eq!(Some(d.size), f.size, "{}", f.path);
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::open(tmp.path()).unwrap();
    let opts = FetchOptions {
        offline: true,
        progress: false,
        mirrors: vec![Mirror::Dir(dir.clone())],
        ..Default::default()
    };
    let mut m = m;
    m.lock_path = None; // never write the committed lock from a test
    let r = fetch(
        &m,
        &cache,
        &["baddiffusion-static".to_string()],
        None,
        &opts,
    )
    .unwrap();
    assert!(r.is_complete(), "{r}");
    assert!(r
        .files
        .iter()
        .all(|f| matches!(f.outcome, Outcome::Fetched { .. }) && f.trust == Trust::Pinned));
    assert!(cache
        .path_of("baddiffusion-static")
        .unwrap()
        .join("glasses.png")
        .is_file());
}
