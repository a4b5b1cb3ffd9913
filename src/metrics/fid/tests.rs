use std::cell::Cell;

use super::*;
use crate::metrics::image_set::tests::write_pngs;
use crate::rng::Rng;

/// A cheap deterministic feature network (per-channel moments and a few pixel products) that
/// counts the images it sees, to check what the cache spares.
pub(crate) struct MomentNet {
    pub(crate) seen: Cell<i64>,
    mode: Channels,
}

impl MomentNet {
    /// Reads images as RGB, like the Inception network.
    pub(crate) fn new() -> Self {
        MomentNet {
            seen: Cell::new(0),
            mode: Channels::Rgb,
        }
    }

    /// Reads grayscale images as one channel, like a one-channel proxy.
    pub(crate) fn native() -> Self {
        MomentNet {
            seen: Cell::new(0),
            mode: Channels::Native,
        }
    }
}

impl FeatureNet for MomentNet {
    fn metric_name(&self) -> String {
        "FD_moments".into()
    }
    fn implementation(&self) -> String {
        "test moments".into()
    }
    fn weights_sha256(&self) -> Result<String> {
        Ok("moments-v1".into())
    }
    fn channels(&self) -> Channels {
        self.mode
    }
    fn resize(&self) -> Option<String> {
        None
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn features(&self, x: &Tensor) -> Tensor {
        self.seen.set(self.seen.get() + x.size()[0]);
        let mean = x.mean_dim([2, 3].as_slice(), false, Kind::Float);
        let sq = x.square().mean_dim([2, 3].as_slice(), false, Kind::Float);
        let corner = x.narrow(2, 0, 2).narrow(3, 0, 2).flatten(1, -1);
        Tensor::cat(&[mean, sq, corner], 1)
    }
}

fn random_set(rng: &mut Rng, n: i64) -> Tensor {
    (rng.rand(&[n, 3, 8, 8]) * 255.0).to_kind(Kind::Uint8)
}

#[test]
fn fid_caches_per_image_and_matches_a_direct_computation() {
    let mut rng = Rng::seeded(51);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let a_imgs = random_set(&mut rng, 40);
    write_pngs(&a, &a_imgs);
    write_pngs(
        &b,
        &(a_imgs.to_kind(Kind::Float) * 0.7).to_kind(Kind::Uint8),
    );
    let net = MomentNet::new();
    let cache = FeatureCache::new(dir.path().join("cache"));
    let opts = FidOptions {
        batch: 16,
        limit: None,
        reference_split: Some("test-b".into()),
    };
    let (ia, ib) = (
        FidInput::from_path(&a).unwrap(),
        FidInput::from_path(&b).unwrap(),
    );

    let row = fid(&ia, &ib, &net, &cache, &opts).unwrap();
    assert_eq!(net.seen.get(), 80);
    let direct = frechet_distance(
        &Statistics::from_features(&net.features(&(a_imgs.to_kind(Kind::Float) / 255.0))).unwrap(),
        &Statistics::from_features(
            &cache
                .features(
                    &net,
                    &ImageSet::read_png_dir(&b, None, Channels::Rgb).unwrap(),
                    7,
                )
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        (row.value - direct).abs() <= 1e-9 * direct.abs(),
        "{} vs {direct}",
        row.value
    );
    assert_eq!(row.metric, "FD_moments");
    let p = &row.protocol;
    assert_eq!((p.n_generated, p.n_reference), (40, 40));
    assert_eq!(p.reference_split.as_deref(), Some("test-b"));
    assert_eq!(p.weights_sha256.as_deref(), Some("moments-v1"));
    assert!(p.warnings.is_empty());

    // Same sets again, a smaller N, and the sets swapped: nothing is recomputed.
    net.seen.set(0);
    let again = fid(&ia, &ib, &net, &cache, &opts).unwrap();
    assert_eq!(again.value, row.value);
    let fewer = fid(
        &ia,
        &ib,
        &net,
        &cache,
        &FidOptions {
            limit: Some(25),
            ..opts
        },
    )
    .unwrap();
    let opts = FidOptions {
        batch: 16,
        limit: None,
        reference_split: None,
    };
    let swapped = fid(&ib, &ia, &net, &cache, &opts).unwrap();
    assert_eq!(net.seen.get(), 0, "cached features were recomputed");
    assert_eq!(fewer.protocol.n_generated, 25);
    assert!(
        (swapped.value - row.value).abs() <= 1e-9 * row.value,
        "FID is not symmetric"
    );

    // A superset only runs the new images.
    write_pngs(&dir.path().join("c"), &random_set(&mut rng, 3));
    for i in 0..3 {
        std::fs::copy(
            dir.path().join(format!("c/{i}.png")),
            a.join(format!("{}.png", 40 + i)),
        )
        .unwrap();
    }
    fid(&ia, &ib, &net, &cache, &opts).unwrap();
    assert_eq!(net.seen.get(), 3);

    // FID(X, X) ≈ 0.
    let same = fid(&ib, &ib, &net, &cache, &opts).unwrap();
    assert!(same.value.abs() < 1e-9, "FID(X, X) = {}", same.value);
}

#[test]
fn statistics_files_stand_in_for_folders() {
    let mut rng = Rng::seeded(52);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_pngs(&a, &random_set(&mut rng, 30));
    write_pngs(&b, &random_set(&mut rng, 30));
    let net = MomentNet::new();
    let cache = FeatureCache::new(dir.path().join("cache"));
    let opts = FidOptions {
        batch: 8,
        limit: None,
        reference_split: None,
    };
    let from_dirs = fid(
        &FidInput::from_path(&a).unwrap(),
        &FidInput::from_path(&b).unwrap(),
        &net,
        &cache,
        &opts,
    )
    .unwrap();
    let stats = cache
        .statistics(
            &net,
            &ImageSet::read_png_dir(&b, None, Channels::Rgb).unwrap(),
            8,
        )
        .unwrap();
    let file = dir.path().join("b_stats.safetensors");
    stats.save(&file).unwrap();
    let from_file = fid(
        &FidInput::from_path(&a).unwrap(),
        &FidInput::from_path(&file).unwrap(),
        &net,
        &cache,
        &opts,
    )
    .unwrap();
    assert_eq!(from_file.value, from_dirs.value);
    assert_eq!(from_file.protocol.n_reference, 30);
    assert_eq!(
        from_file.protocol.reference_hash,
        Some(crate::metrics::sha256_hex(&std::fs::read(&file).unwrap()))
    );
}

#[test]
fn few_images_warn_and_bad_inputs_are_named() {
    let mut rng = Rng::seeded(53);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_pngs(&a, &random_set(&mut rng, 5));
    let net = MomentNet::new();
    let cache = FeatureCache::new(dir.path().join("cache"));
    let opts = FidOptions {
        batch: 8,
        limit: None,
        reference_split: None,
    };
    let ia = FidInput::from_path(&a).unwrap();
    let row = fid(&ia, &ia, &net, &cache, &opts).unwrap();
    assert_eq!(row.protocol.warnings.len(), 2);
    assert!(row.protocol.warnings[0].contains("only 5 feature vectors for 18 dimensions"));

    let err = FidInput::from_path(&dir.path().join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::write(dir.path().join("x.txt"), "x").unwrap();
    let err = FidInput::from_path(&dir.path().join("x.txt"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("x.txt"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fid(
        &ia,
        &FidInput::from_path(&empty).unwrap(),
        &net,
        &cache,
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no .png images") && err.contains("empty"),
        "{err}"
    );
    let no_weights = FidInceptionV3::new(Device::Cpu);
    let err = fid(&ia, &ia, &no_weights, &cache, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--inception-weights"), "{err}");
}
