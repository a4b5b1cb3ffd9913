//! FID between two image sets, as `python -m pytorch_fid DIR_A DIR_B` computes it, with features
//! cached per image content so that another N or another reference costs no recomputation.
//!
//! The cache lives under `<cache>/<weights sha256>/`: `features/<set hash>.safetensors` holds
//! the features of one computed set with the hash of every image (`hashes`), and
//! `stats/<set hash>.safetensors` its statistics. Features are looked up per image, so a subset
//! or a superset of sets already seen only runs the network on images it has never seen.
//!
//! Where the Inception weights are unavailable (offline machines), a proxy feature network can
//! take its place through [`FeatureNet`]; its metric name never contains plain "FID".
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::frechet::{frechet_distance, Statistics};
use super::image_set::{Channels, ImageSet};
use super::inception::FidInceptionV3;
use super::{MetricRow, Protocol};
use crate::datasets::named::{Selection, PREFIX};

/// A network whose features a Fréchet distance is computed on.
pub trait FeatureNet {
    /// The metric's name in result rows.
    fn metric_name(&self) -> String;
    /// Implementation description for the protocol.
    fn implementation(&self) -> String;
    /// sha256 of the weights file: the cache key of every feature it computes.
    fn weights_sha256(&self) -> Result<String>;
    /// How the network reads images.
    fn channels(&self) -> Channels;
    /// Channels a dataset reference is converted to for this network (None: the dataset's own).
    fn input_channels(&self) -> Option<usize> {
        match self.channels() {
            Channels::Rgb => Some(3),
            Channels::Native => None,
        }
    }
    /// Facts every row measured with this network must carry (e.g. a proxy's test accuracy).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// How it resizes them, for the protocol.
    fn resize(&self) -> Option<String>;
    fn device(&self) -> Device;
    /// Features `[N, D]` (float32, CPU) of images `[N, C, H, W]` in [0, 1].
    fn features(&self, images01: &Tensor) -> Tensor;
}

impl FeatureNet for FidInceptionV3 {
    fn metric_name(&self) -> String {
        "FID".into()
    }
    fn implementation(&self) -> String {
        "baddiffusion FID Inception (port of pytorch-fid 0.3.0 InceptionV3 pool3)".into()
    }
    fn weights_sha256(&self) -> Result<String> {
        match self.weights() {
            Some(w) => Ok(w.sha256.clone()),
            None => {
                bail!("the Inception network has no weights loaded; pass --inception-weights PATH")
            }
        }
    }
    fn channels(&self) -> Channels {
        Channels::Rgb
    }
    fn resize(&self) -> Option<String> {
        Some("bilinear to 299x299, align_corners=False, then 2x-1".into())
    }
    fn device(&self) -> Device {
        FidInceptionV3::device(self)
    }
    fn features(&self, images01: &Tensor) -> Tensor {
        self.pool3(images01)
    }
}

/// Where FID features and statistics are cached: `fid/` in the artifact cache
/// (`$BADDIFF_CACHE`, else `$XDG_CACHE_HOME` or `~/.cache`, `/baddiffusion`).
pub fn default_cache_dir() -> PathBuf {
    fetch::Cache::default_root().join("fid")
}

/// Content-addressed store of features and statistics.
pub struct FeatureCache {
    pub dir: PathBuf,
}

/// Writes safetensors atomically, so concurrent readers never see half a file.
fn write_atomic(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    crate::files::write_atomic_with(path, |tmp| {
        Tensor::write_safetensors(tensors, tmp)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FeatureCache { dir: dir.into() }
    }

    fn net_dir(&self, weights_sha: &str) -> PathBuf {
        self.dir.join(weights_sha)
    }

    /// Features of every image already computed with these weights, by image hash.
    fn known(&self, weights_sha: &str, wanted: &[[u8; 32]]) -> Result<HashMap<[u8; 32], Tensor>> {
        let dir = self.net_dir(weights_sha).join("features");
        let mut found = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(found);
        };
        let wanted: std::collections::HashSet<&[u8; 32]> = wanted.iter().collect();
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
                continue;
            }
            let shard: HashMap<String, Tensor> = crate::tensor_io::read_safetensors(&path)
                .with_context(|| {
                    format!("corrupt feature cache file {}: delete it", path.display())
                })?
                .into_iter()
                .collect();
            let (Some(hashes), Some(feats)) = (shard.get("hashes"), shard.get("features")) else {
                bail!(
                    "feature cache file {} lacks `hashes` or `features`: delete it",
                    path.display()
                );
            };
            let bytes = Vec::<u8>::try_from(hashes.flatten(0, -1))?;
            for (row, h) in bytes.chunks_exact(32).enumerate() {
                let h: [u8; 32] = h.try_into().unwrap();
                if wanted.contains(&h) && !found.contains_key(&h) {
                    found.insert(h, feats.get(row as i64));
                }
            }
            if found.len() == wanted.len() {
                break;
            }
        }
        Ok(found)
    }

    /// Features `[N, D]` of a set in its order, running `net` only on images never seen before.
    pub fn features(&self, net: &dyn FeatureNet, set: &ImageSet, batch: usize) -> Result<Tensor> {
        ensure!(batch > 0, "batch size must be positive");
        let sha = net.weights_sha256()?;
        let known = self.known(&sha, &set.image_hashes)?;
        let todo: Vec<usize> = (0..set.len())
            .filter(|&i| !known.contains_key(&set.image_hashes[i]))
            .collect();
        let mut computed: HashMap<[u8; 32], Tensor> = HashMap::new();
        if !todo.is_empty() {
            let bar = (todo.len() > 200).then(|| progress(todo.len(), &net.metric_name()));
            let mut rows = Vec::new();
            for chunk in todo.chunks(batch) {
                let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
                let images = set.images.index_select(0, &idx).to_kind(Kind::Float) / 255.0;
                rows.push(net.features(&images));
                if let Some(b) = &bar {
                    b.inc(chunk.len() as u64);
                }
            }
            let feats = Tensor::cat(&rows, 0);
            let hashes: Vec<u8> = todo.iter().flat_map(|&i| set.image_hashes[i]).collect();
            let hashes = Tensor::from_slice(&hashes).reshape([todo.len() as i64, 32]);
            let shard_hash = super::image_set::set_hash(
                &todo
                    .iter()
                    .map(|&i| set.image_hashes[i])
                    .collect::<Vec<_>>(),
            );
            let path = self
                .net_dir(&sha)
                .join("features")
                .join(format!("{shard_hash}.safetensors"));
            write_atomic(&path, &[("features", &feats), ("hashes", &hashes)])?;
            for (k, &i) in todo.iter().enumerate() {
                computed.insert(set.image_hashes[i], feats.get(k as i64));
            }
        }
        let rows: Vec<Tensor> = set
            .image_hashes
            .iter()
            .map(|h| {
                known
                    .get(h)
                    .or_else(|| computed.get(h))
                    .expect("every image has features")
                    .shallow_clone()
            })
            .collect();
        Ok(Tensor::stack(&rows, 0))
    }

    /// Statistics of a set, from the cache when this set was measured with these weights before.
    pub fn statistics(
        &self,
        net: &dyn FeatureNet,
        set: &ImageSet,
        batch: usize,
    ) -> Result<Statistics> {
        let path = self
            .net_dir(&net.weights_sha256()?)
            .join("stats")
            .join(format!("{}.safetensors", set.set_hash()));
        if path.exists() {
            if let Ok(stats) = Statistics::load(&path) {
                if stats.is_complete() {
                    return Ok(stats);
                }
            }
        }
        let stats = Statistics::from_features(&self.features(net, set, batch)?)?;
        let tensors = stats.tensors();
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
        write_atomic(&path, &named)?;
        Ok(stats)
    }
}

fn progress(n: usize, what: &str) -> indicatif::ProgressBar {
    let bar = crate::progress::bar(
        n as u64,
        "{msg} features {bar:30} {pos}/{len} [{elapsed} < {eta}, {per_sec}]",
        true,
    );
    bar.set_message(what.to_string());
    bar
}

/// One side of a FID comparison: an image folder, or a statistics file (ours or pytorch-fid's
/// `.npz`), like pytorch-fid's command line, or a reference built from a dataset's pixels.
pub enum FidInput {
    Images(PathBuf),
    Stats(PathBuf),
    Reference(Selection),
}

impl FidInput {
    /// A command-line argument: `dataset:NAME[:SPLIT][@SIZE]` (see [`Selection::parse`]),
    /// else a path.
    pub fn parse(arg: &str) -> Result<Self> {
        if arg.starts_with(PREFIX) {
            Ok(FidInput::Reference(Selection::parse(arg)?))
        } else {
            Self::from_path(Path::new(arg))
        }
    }

    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(FidInput::Images(path.to_path_buf()));
        }
        ensure!(
            path.exists(),
            "{} does not exist (expected an image folder or a statistics file)",
            path.display()
        );
        match path.extension().and_then(|e| e.to_str()) {
            Some("npz" | "safetensors") => Ok(FidInput::Stats(path.to_path_buf())),
            _ => bail!(
                "{} is neither an image folder nor a .npz/.safetensors statistics file",
                path.display()
            ),
        }
    }
}

/// Options of one FID measurement.
pub struct FidOptions {
    pub batch: usize,
    /// Use only the first N images of each folder (a dataset reference takes its own N).
    pub limit: Option<usize>,
    /// Name of the reference split, for the protocol (a dataset reference names itself).
    pub reference_split: Option<String>,
}

/// Statistics of one side, with its content hash and what else is known of it.
struct Side {
    stats: Statistics,
    hash: String,
    label: Option<String>,
    /// (channels, height, width) of its images, when read from images.
    shape: Option<(i64, i64, i64)>,
}

fn side(
    input: &FidInput,
    net: &dyn FeatureNet,
    cache: &FeatureCache,
    opts: &FidOptions,
) -> Result<Side> {
    let from_set = |set: ImageSet, label: Option<String>| -> Result<Side> {
        Ok(Side {
            stats: cache.statistics(net, &set, opts.batch)?,
            hash: set.set_hash(),
            label,
            shape: Some(set.image_shape()),
        })
    };
    match input {
        FidInput::Images(dir) => from_set(
            ImageSet::read_png_dir(dir, opts.limit, net.channels())?,
            None,
        ),
        FidInput::Reference(spec) => {
            from_set(spec.image_set(net.input_channels())?, Some(spec.label()))
        }
        FidInput::Stats(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Side {
                stats: Statistics::load(path)?,
                hash: super::sha256_hex(&bytes),
                label: None,
                shape: None,
            })
        }
    }
}

/// The Fréchet distance between `generated` and `reference` on `net`'s features, as one row.
pub fn fid(
    generated: &FidInput,
    reference: &FidInput,
    net: &dyn FeatureNet,
    cache: &FeatureCache,
    opts: &FidOptions,
) -> Result<MetricRow> {
    let gen = side(generated, net, cache, opts)?;
    let reference = side(reference, net, cache, opts)?;
    let (a, b) = (&gen.stats, &reference.stats);
    let value = frechet_distance(a, b)?;
    let mut warnings: Vec<String> = [a.warning(), b.warning()].into_iter().flatten().collect();
    if let (Some(g), Some(r)) = (gen.shape, reference.shape) {
        if g != r {
            warnings.push(format!(
                "generated images are {g:?} (C, H, W) but the reference images are {r:?}: the network resizes \
                 them differently; build the reference at the generated size (dataset:NAME@SIZE)"
            ));
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    warnings.extend(net.notes());
    Ok(MetricRow {
        metric: net.metric_name(),
        value,
        protocol: Protocol {
            implementation: net.implementation(),
            version: env!("CARGO_PKG_VERSION").into(),
            weights_sha256: Some(net.weights_sha256()?),
            n_generated: a.n,
            n_reference: b.n,
            reference_split: opts.reference_split.clone().or(reference.label),
            reference_hash: Some(reference.hash),
            resize: net.resize(),
            image_format: "png (8-bit), read as [0,1]".into(),
            dtype: "float32 features, float64 statistics".into(),
            device: format!("{:?}", net.device()),
            warnings,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests;
