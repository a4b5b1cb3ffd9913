use tch::Tensor;

use super::*;
use crate::metrics::fid::{fid, FeatureCache, FidInput, FidOptions};
use crate::metrics::frechet::{frechet_distance, Statistics};

fn data() -> Option<&'static Path> {
    Some(Path::new(crate::datasets::idx::DEBIAN_FASHION_MNIST_DIR))
}

#[test]
fn same_seed_same_weights() {
    let mut rng = Rng::seeded(91);
    let small = FmnistTraining {
        train_images: Some(3000),
        epochs: 1,
        ..Default::default()
    };
    let train = |cache: &Path, training: &FmnistTraining, rng: &mut Rng| {
        train_or_load(data(), 12, 1, training, cache, Device::Cpu, rng).unwrap()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = train(a.path(), &small, &mut rng);
    // Draws in between must not matter: training reseeds from its own seed.
    let _ = rng.randn(&[17]);
    let second = train(b.path(), &small, &mut rng);
    assert!(!first.from_cache && !second.from_cache);
    assert_eq!(first.card.weights_sha256, second.card.weights_sha256);
    assert_eq!(first.card.key, second.card.key);
    assert_eq!(
        crate::metrics::sha256_hex(
            &std::fs::read(
                a.path()
                    .join("proxy")
                    .join(&first.card.key)
                    .join("weights.safetensors")
            )
            .unwrap()
        ),
        first.card.weights_sha256
    );
    let other = train(
        a.path(),
        &FmnistTraining {
            seed: 1,
            ..small.clone()
        },
        &mut rng,
    );
    assert_ne!(other.card.key, first.card.key);
    assert_ne!(other.card.weights_sha256, first.card.weights_sha256);

    let err = train_or_load(
        data(),
        12,
        1,
        &FmnistTraining { epochs: 0, ..small },
        a.path(),
        Device::Cpu,
        &mut rng,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("positive epochs"), "{err}");
    let err = train_or_load(
        data(),
        32,
        1,
        &FmnistTraining::default(),
        a.path(),
        Device::Cpu,
        &mut rng,
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("at most 28"), "{err:#}");
}

/// Statistics of the proxy's features of some images (uint8 N×1×H×W).
fn stats(net: &ProxyClassifier, images: &Tensor) -> Statistics {
    Statistics::from_features(&net.features(&(images.to_kind(Kind::Float) / 255.0))).unwrap()
}

/// Trains the smoke profile's proxy (16 px, grayscale) with the default settings once, loads
/// it from the cache the second time, and checks that its distance separates what it should.
#[test]
fn proxy_learns_fashion_mnist_and_separates_datasets() {
    let cache = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded(92);
    let training = FmnistTraining::default();
    let trained = train_or_load(
        data(),
        16,
        1,
        &training,
        cache.path(),
        Device::Cpu,
        &mut rng,
    )
    .unwrap();
    let card = &trained.card;
    assert!(!trained.from_cache);
    assert!(card.test_accuracy > 0.8, "{card:#?}");
    assert_eq!((card.n_train, card.n_test), (60_000, 10_000));
    assert_eq!(card.test_split, "fashion-mnist-test@16px");
    let on_disk: ProxyCard =
        serde_json::from_str(&std::fs::read_to_string(&trained.card_path).unwrap()).unwrap();
    assert_eq!(&on_disk, card);

    let again = train_or_load(
        data(),
        16,
        1,
        &training,
        cache.path(),
        Device::Cpu,
        &mut rng,
    )
    .unwrap();
    assert!(again.from_cache);
    assert_eq!(&again.card, card);
    let net = again.net;
    assert_eq!(net.weights_sha256().unwrap(), card.weights_sha256);
    assert_eq!(net.metric_name(), "proxy_FD[fmnist-cnn]");
    assert!(!net.metric_name().contains("FID"));

    // Measured through fid(): the row names the proxy and carries its test accuracy.
    let spec = Selection {
        size: Some(16),
        n: Some(2000),
        dir: data().map(Path::to_path_buf),
        ..Selection::new(DatasetName::FashionMnist, Split::Test)
    };
    let fcache = FeatureCache::new(cache.path().join("fid"));
    let opts = FidOptions {
        batch: 500,
        limit: None,
        reference_split: None,
    };
    let same = FidInput::Reference(spec.clone());
    let row = fid(&same, &same, &net, &fcache, &opts).unwrap();
    assert!(row.value.abs() < 1e-6, "FD(X, X) = {}", row.value);
    assert_eq!(row.metric, "proxy_FD[fmnist-cnn]");
    assert!(
        row.protocol
            .warnings
            .iter()
            .any(|w| w.contains(&format!("test accuracy {:.4}", card.test_accuracy))),
        "{:?}",
        row.protocol.warnings
    );
    assert_eq!(
        row.protocol.weights_sha256.as_deref(),
        Some(card.weights_sha256.as_str())
    );

    // Two disjoint halves of the test split are close; a shifted distribution is far.
    let test = Selection { n: None, ..spec }.load(Some(1)).unwrap().images;
    let (a, b) = (test.narrow(0, 0, 5000), test.narrow(0, 5000, 5000));
    let halves = frechet_distance(&stats(&net, &a), &stats(&net, &b)).unwrap();
    let rotated = frechet_distance(&stats(&net, &a), &stats(&net, &b.transpose(2, 3))).unwrap();
    eprintln!("proxy FD: disjoint halves {halves:.4}, one half rotated {rotated:.4}");
    assert!(
        rotated > 10.0 * halves,
        "rotated {rotated} vs halves {halves}"
    );
    match DatasetName::Mnist.locate() {
        Ok(dir) => {
            let mnist = Selection {
                size: Some(16),
                n: Some(5000),
                dir: Some(dir),
                ..Selection::new(DatasetName::Mnist, Split::Test)
            }
            .load(Some(1))
            .unwrap()
            .images;
            let fd = frechet_distance(&stats(&net, &a), &stats(&net, &mnist)).unwrap();
            assert!(fd > 10.0 * halves, "MNIST {fd} vs halves {halves}");
        }
        Err(e) => eprintln!("MNIST comparison not run: {e:#}"),
    }
}
