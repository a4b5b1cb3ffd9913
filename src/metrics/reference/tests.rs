use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::*;
use crate::datasets::named::DatasetName;
use crate::datasets::Split;
use crate::metrics::fid::tests::MomentNet;
use crate::metrics::fid::{fid, FeatureCache, FeatureNet, FidInput, FidOptions};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::image_set::{tests::write_pngs, Channels};
use crate::rng::Rng;

fn debian_fmnist() -> PathBuf {
    PathBuf::from(crate::datasets::idx::DEBIAN_FASHION_MNIST_DIR)
}

fn fmnist_test(size: usize, n: usize) -> Selection {
    Selection {
        size: Some(size),
        n: Some(n),
        dir: Some(debian_fmnist()),
        ..Selection::new(DatasetName::FashionMnist, Split::Test)
    }
}

fn opts() -> FidOptions {
    FidOptions {
        batch: 64,
        limit: None,
        reference_split: None,
    }
}

#[test]
fn dataset_arguments_are_references() {
    assert!(matches!(
        FidInput::parse("dataset:fmnist:test@16").unwrap(),
        FidInput::Reference(_)
    ));
}

/// The reference built from the idx files is pixel for pixel the set its lossless PNG copy
/// reads as, with the same hash and statistics, and measuring against either runs the network
/// once.
#[test]
fn dataset_reference_equals_its_png_copy() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fmnist_test(16, 300);
    let set = spec.image_set(None).unwrap();
    assert_eq!(set.images.size(), [300, 1, 16, 16]);
    // The same pixels through the datasets' own loader and PIL resize.
    let direct = crate::datasets::idx::fashion_mnist(&debian_fmnist(), Split::Test)
        .unwrap()
        .take(300)
        .prepare(1, 16)
        .unwrap();
    assert!(set.images.equal(&direct.images));

    let pngs = dir.path().join("pngs");
    write_pngs(&pngs, &set.images);
    let read = ImageSet::read_png_dir(&pngs, None, Channels::Native).unwrap();
    assert!(read.images.equal(&set.images));
    assert_eq!(read.set_hash(), set.set_hash());

    // Statistics from each path, each in a fresh cache, are identical.
    let net = MomentNet::native();
    let from_ds = FeatureCache::new(dir.path().join("c1"))
        .statistics(&net, &set, 64)
        .unwrap();
    let from_png = FeatureCache::new(dir.path().join("c2"))
        .statistics(&net, &read, 64)
        .unwrap();
    assert!(from_ds.mu.equal(&from_png.mu) && from_ds.sigma.equal(&from_png.sigma));
    assert_eq!(net.seen.get(), 600);

    // Against a generated folder: the reference's statistics are computed once, then cached,
    // whether the reference is named as a dataset or as its PNG copy.
    let gen = dir.path().join("gen");
    let mut rng = Rng::seeded(81);
    write_pngs(
        &gen,
        &(rng.rand(&[50, 1, 16, 16]) * 255.0).to_kind(Kind::Uint8),
    );
    let cache = FeatureCache::new(dir.path().join("shared"));
    let (g, r) = (
        FidInput::from_path(&gen).unwrap(),
        FidInput::Reference(spec.clone()),
    );
    net.seen.set(0);
    let first = fid(&g, &r, &net, &cache, &opts()).unwrap();
    assert_eq!(net.seen.get(), 350);
    let again = fid(&g, &r, &net, &cache, &opts()).unwrap();
    let via_png = fid(&g, &FidInput::Images(pngs), &net, &cache, &opts()).unwrap();
    assert_eq!(net.seen.get(), 350, "a cached reference was recomputed");
    assert_eq!((again.value, via_png.value), (first.value, first.value));
    let direct_fd = frechet_distance(
        &cache
            .statistics(
                &net,
                &ImageSet::read_png_dir(&gen, None, Channels::Native).unwrap(),
                64,
            )
            .unwrap(),
        &from_ds,
    )
    .unwrap();
    assert_eq!(first.value, direct_fd);
    let p = &first.protocol;
    assert_eq!((p.n_generated, p.n_reference), (50, 300));
    assert_eq!(
        p.reference_split.as_deref(),
        Some("fashion-mnist-test@16px, first 300")
    );
    assert_eq!(p.reference_hash.as_deref(), Some(set.set_hash().as_str()));
    assert!(
        p.warnings.iter().all(|w| !w.contains("(C, H, W)")),
        "{:?}",
        p.warnings
    );
}

/// A network that reads RGB gets the grayscale reference replicated to three channels, as its
/// PNG copy read as RGB (PIL's `convert('RGB')`).
#[test]
fn rgb_networks_get_converted_references() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fmnist_test(12, 40);
    let net = MomentNet::new();
    let rgb = spec.image_set(net.input_channels()).unwrap();
    assert_eq!(rgb.images.size(), [40, 3, 12, 12]);
    let gray = spec.image_set(None).unwrap();
    write_pngs(dir.path(), &gray.images);
    let read = ImageSet::read_png_dir(dir.path(), None, Channels::Rgb).unwrap();
    assert!(read.images.equal(&rgb.images));
    assert_eq!(read.set_hash(), rgb.set_hash());

    // A generated set of another size than the reference is measured, with a warning.
    let cache = FeatureCache::new(dir.path().join("cache"));
    let native = FidInput::Reference(Selection {
        size: None,
        ..spec.clone()
    });
    let row = fid(
        &FidInput::from_path(dir.path()).unwrap(),
        &native,
        &net,
        &cache,
        &opts(),
    )
    .unwrap();
    assert!(
        row.protocol
            .warnings
            .iter()
            .any(|w| w.contains("dataset:NAME@SIZE")),
        "{:?}",
        row.protocol.warnings
    );
}

/// Writes a CIFAR-10 test batch of random records (the real file's exact layout).
fn write_cifar_test_batch(dir: &Path, rng: &mut Rng) -> Tensor {
    use crate::datasets::cifar10::{IMAGE_BYTES, RECORDS_PER_FILE, TEST_FILE};
    let images = (rng.rand(&[RECORDS_PER_FILE as i64, 3, 32, 32]) * 255.0).to_kind(Kind::Uint8);
    let px = Vec::<u8>::try_from(images.flatten(0, -1)).unwrap();
    let mut bytes = Vec::new();
    for (i, rec) in px.chunks_exact(IMAGE_BYTES).enumerate() {
        bytes.push((i % 10) as u8);
        bytes.extend_from_slice(rec);
    }
    std::fs::write(dir.join(TEST_FILE), bytes).unwrap();
    images
}

#[test]
fn cifar10_reference_takes_the_first_n_of_its_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded(82);
    let images = write_cifar_test_batch(dir.path(), &mut rng);
    let spec = Selection {
        n: Some(100),
        dir: Some(dir.path().to_path_buf()),
        ..Selection::parse("dataset:cifar10:test").unwrap()
    };
    let set = spec.image_set(Some(3)).unwrap();
    assert!(set.images.equal(&images.narrow(0, 0, 100)));
    assert_eq!(spec.label(), "cifar10-test, first 100");
    let whole = Selection {
        n: None,
        ..spec.clone()
    };
    assert_eq!(whole.image_set(None).unwrap().len(), 10_000);
    // Train files absent: the error names the missing batch.
    let train = Selection {
        split: Split::Train,
        ..spec.clone()
    };
    let err = format!("{:#}", train.image_set(None).unwrap_err());
    assert!(err.contains("data_batch_1.bin"), "{err}");
    let err = format!(
        "{:#}",
        Selection {
            size: Some(64),
            ..spec.clone()
        }
        .image_set(None)
        .unwrap_err()
    );
    assert!(err.contains("32×32") && err.contains("at most 32"), "{err}");
    let err = format!(
        "{:#}",
        Selection {
            n: Some(10_001),
            ..spec
        }
        .image_set(None)
        .unwrap_err()
    );
    assert!(
        err.contains("10000 images, fewer than the 10001 requested"),
        "{err}"
    );
}

#[test]
fn bad_references_are_clear_errors() {
    let err = format!(
        "{:#}",
        Selection::parse("dataset:fashion-mnist@64")
            .unwrap()
            .image_set(None)
            .unwrap_err()
    );
    assert!(err.contains("28×28") && err.contains("at most 28"), "{err}");
    let err = format!(
        "{:#}",
        Selection::new(DatasetName::CelebaHq, Split::Train)
            .image_set(None)
            .unwrap_err()
    );
    assert!(err.contains("--reference-data"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        Selection {
            dir: Some(empty.path().to_path_buf()),
            ..Selection::new(DatasetName::Mnist, Split::Test)
        }
        .image_set(None)
        .unwrap_err()
    );
    assert!(err.contains("t10k-images-idx3-ubyte"), "{err}");
    let err = format!("{:#}", fmnist_test(16, 10).image_set(Some(2)).unwrap_err());
    assert!(err.contains("not 2"), "{err}");
    assert!(ImageSet::from_tensor(
        Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
        Path::new("x")
    )
    .is_err());
}
