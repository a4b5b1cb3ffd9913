//! The CPU profile's stand-in for FID: the Fréchet distance on features of the small CNN
//! classifier of [`super::ProxyClassifier`], trained once (seeded, deterministic, on the CPU)
//! on Fashion-MNIST's training split at the profile's image size and channels.
//!
//! The trained weights are cached under `<cache>/proxy/<key>/` with a card (`card.json`: what
//! it was trained on, its test accuracy, its weights' sha256). The key is the sha256 of
//! everything that determines the weights: the train and test sets' content hashes, size,
//! channels, the classifier's shape, the training settings with their seed, and
//! [`CODE_VERSION`]. Later calls with the same key load the weights instead of training.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use super::{ProxyClassifier, ProxyConfig, PROXY_DIM};
use crate::datasets::named::{DatasetName, Selection};
use crate::datasets::{Dataset, Split};
use crate::metrics::fid::FeatureNet;
use crate::metrics::image_set::ImageSet;
use crate::rng::Rng;

/// The proxy's name: its metric is `proxy_FD[fmnist-cnn]`.
pub const NAME: &str = "fmnist-cnn";

/// Bump whenever the classifier or its training changes what weights a key yields, so weights
/// cached by older code are never reused.
pub const CODE_VERSION: u32 = 1;

/// How the proxy is trained. The defaults took 12–21 s at 16 px on a busy two-core CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FmnistTraining {
    pub seed: u64,
    pub epochs: usize,
    pub batch: i64,
    pub lr: f64,
    /// Train on the first N training images only; all 60,000 when None.
    pub train_images: Option<usize>,
}

impl Default for FmnistTraining {
    fn default() -> Self {
        FmnistTraining {
            seed: 0,
            epochs: 2,
            batch: 128,
            lr: 2e-3,
            train_images: None,
        }
    }
}

/// What a cached proxy was trained on and what it reached (`card.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyCard {
    pub metric: String,
    pub key: String,
    pub code_version: u32,
    pub image_size: usize,
    pub channels: usize,
    pub training: FmnistTraining,
    pub train_split: String,
    pub train_hash: String,
    pub n_train: usize,
    pub test_split: String,
    pub test_hash: String,
    pub n_test: usize,
    pub final_loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub train_seconds: f64,
    pub weights_sha256: String,
}

/// Runs libtorch's intra-op work of this thread on one thread until dropped.
struct OneThread(i32);

impl OneThread {
    fn new() -> Self {
        let previous = tch::get_num_threads();
        tch::set_num_threads(1);
        OneThread(previous)
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// A proxy ready to measure with, and whether it came from the cache.
pub struct TrainedProxy {
    pub net: ProxyClassifier,
    pub card: ProxyCard,
    pub card_path: PathBuf,
    pub from_cache: bool,
}

/// The classifier's shape at this size and channel count.
pub fn config(image_size: usize, channels: usize) -> ProxyConfig {
    ProxyConfig {
        name: NAME.into(),
        channels: channels as i64,
        image_size: image_size as i64,
        classes: 10,
    }
}

/// A split of Fashion-MNIST at the proxy's size and channels, with its content hash (images,
/// then labels).
fn split(
    data_dir: Option<&Path>,
    split: Split,
    size: usize,
    channels: usize,
    n: Option<usize>,
) -> Result<(Dataset, String, String)> {
    let spec = Selection {
        size: Some(size),
        n,
        dir: data_dir.map(Path::to_path_buf),
        ..Selection::new(DatasetName::FashionMnist, split)
    };
    let ds = spec.load(Some(channels))?;
    let set = ImageSet::from_tensor(ds.images.shallow_clone(), Path::new(&spec.label()))?;
    let labels = Vec::<u8>::try_from(ds.labels.to_kind(Kind::Uint8))?;
    let hash = crate::metrics::sha256_hex(
        format!("{}{}", set.set_hash(), crate::metrics::sha256_hex(&labels)).as_bytes(),
    );
    Ok((ds, hash, spec.label()))
}

/// The Fashion-MNIST proxy at `image_size` and `channels`: loaded from `cache_dir` when this
/// exact proxy was trained before, else trained now (from `training.seed`: `rng` is reseeded,
/// so the weights never depend on the caller's stream) and cached. `data_dir` is the
/// Fashion-MNIST idx folder (located through the fetch cache when None). The network is put on
/// `device`; training always runs on the CPU, where it is deterministic.
pub fn train_or_load(
    data_dir: Option<&Path>,
    image_size: usize,
    channels: usize,
    training: &FmnistTraining,
    cache_dir: &Path,
    device: Device,
    rng: &mut Rng,
) -> Result<TrainedProxy> {
    ensure!(
        training.epochs > 0 && training.batch > 0 && training.lr > 0.0,
        "proxy training needs positive epochs, batch and learning rate, got {training:?}"
    );
    let cfg = config(image_size, channels);
    let (train, train_hash, train_split) = split(
        data_dir,
        Split::Train,
        image_size,
        channels,
        training.train_images,
    )?;
    let (test, test_hash, test_split) = split(data_dir, Split::Test, image_size, channels, None)?;
    let key_json = serde_json::json!({
        "schema": 1,
        "code_version": CODE_VERSION,
        "proxy": {
            "name": NAME,
            "architecture": format!("conv3x3(16)-relu-maxpool2-conv3x3(32)-relu-maxpool2-linear({PROXY_DIM})-relu-linear(10)"),
            "image_size": image_size,
            "channels": channels,
        },
        "train": train_hash,
        "test": test_hash,
        "training": training,
    });
    let key = crate::metrics::sha256_hex(key_json.to_string().as_bytes());
    let dir = cache_dir.join("proxy").join(&key);
    let (weights, card_path) = (dir.join("weights.safetensors"), dir.join("card.json"));

    let cached = weights.is_file() && card_path.is_file();
    if !cached {
        let start = Instant::now();
        // One thread: these small convolutions gain little from more (and lose much when the
        // cores are busy), and a fixed thread count keeps the weights bit-reproducible.
        let _one_thread = OneThread::new();
        rng.reseed(training.seed);
        let mut net = ProxyClassifier::new(cfg.clone(), Device::Cpu, rng);
        let x = train.images.to_kind(tch::Kind::Float) / 255.0;
        let report = net.train(
            &x,
            &train.labels,
            training.epochs,
            training.batch,
            training.lr,
            rng,
        )?;
        let test_accuracy = net.accuracy(&(test.images.to_kind(Kind::Float) / 255.0), &test.labels);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating proxy cache folder {}", dir.display()))?;
        // Written under a temporary name and renamed, so a reader never sees half a file.
        // (Unique per process and call; it keeps the extension the format is chosen by.)
        let tmp = PathBuf::from(format!(
            "{}.safetensors",
            crate::files::temp_path(&weights).display()
        ));
        let weights_sha256 = net.save(&tmp)?;
        std::fs::rename(&tmp, &weights)
            .with_context(|| format!("moving {} into the cache", weights.display()))?;
        let card = ProxyCard {
            metric: net.metric_name(),
            key: key.clone(),
            code_version: CODE_VERSION,
            image_size,
            channels,
            training: training.clone(),
            train_split,
            train_hash,
            n_train: train.len(),
            test_split,
            test_hash,
            n_test: test.len(),
            final_loss: report.final_loss,
            train_accuracy: report.train_accuracy,
            test_accuracy,
            train_seconds: start.elapsed().as_secs_f64(),
            weights_sha256,
        };
        crate::files::write_atomic(&card_path, serde_json::to_string_pretty(&card)?.as_bytes())
            .with_context(|| format!("moving {} into the cache", card_path.display()))?;
    }
    // Read back from disk in both cases, so a fresh and a cached proxy report the same card.
    let card = {
        let text = std::fs::read_to_string(&card_path)
            .with_context(|| format!("reading {}", card_path.display()))?;
        serde_json::from_str::<ProxyCard>(&text).with_context(|| {
            format!(
                "corrupt proxy card {}: delete {}",
                card_path.display(),
                dir.display()
            )
        })?
    };
    let mut net = ProxyClassifier::load(cfg, &weights, device)?;
    ensure!(
        net.weights_sha256()? == card.weights_sha256,
        "cached proxy weights {} do not match their card {}: delete {}",
        weights.display(),
        card_path.display(),
        dir.display()
    );
    net.set_notes(vec![format!(
        "{} is not FID: Fréchet distance on {PROXY_DIM}-d features of a CNN trained once on {} ({} images, \
         seed {}, {} epochs); test accuracy {:.4} on {} ({} images); card {}",
        card.metric,
        card.train_split,
        card.n_train,
        card.training.seed,
        card.training.epochs,
        card.test_accuracy,
        card.test_split,
        card.n_test,
        // Relative to the cache, so runs with different cache locations agree on the protocol.
        card_path
            .iter()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<PathBuf>()
            .display()
    )]);
    Ok(TrainedProxy {
        net,
        card,
        card_path,
        from_cache: cached,
    })
}

#[cfg(test)]
mod tests;
