use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use baddiffusion::metrics::fid::{self, FeatureCache, FeatureNet, FidInput, FidOptions};
use baddiffusion::metrics::image_set;
use baddiffusion::metrics::inception::FidInceptionV3;
use baddiffusion::metrics::proxy::fmnist::{self, FmnistTraining};
use baddiffusion::rng::Rng;

/// Feature networks that stand in for Inception where its weights are unavailable.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Proxy {
    /// Fréchet distance on a small CNN trained once on Fashion-MNIST (`proxy_FD[fmnist-cnn]`).
    Fmnist,
}

/// FID between generated images and a reference, like `python -m pytorch_fid A B`; the
/// reference may also be built from a dataset's pixels (`dataset:cifar10:train`).
#[derive(clap::Args)]
pub struct Args {
    /// Generated images: a PNG folder, or statistics (.safetensors ours, .npz pytorch-fid's).
    dir_a: PathBuf,
    /// Reference: a PNG folder, statistics, or dataset:NAME[:SPLIT][@SIZE] (NAME: cifar10,
    /// fashion-mnist, mnist, celeba-hq; SPLIT: train (default), test, train+test; SIZE: PIL
    /// bilinear resize to SIZE px).
    #[arg(
        value_name = "DIR_B|dataset:NAME[:SPLIT][@SIZE]",
        required_unless_present = "reference"
    )]
    dir_b: Option<String>,
    /// The reference, as an option: e.g. dataset:cifar10:train (the paper's 50,000 CIFAR-10
    /// training images).
    #[arg(long, conflicts_with = "dir_b")]
    reference: Option<String>,
    /// Use only the first N images of a dataset reference (e.g. 2048, the official code's N);
    /// the whole split by default.
    #[arg(long, value_parser = baddiffusion::validate::count)]
    reference_n: Option<usize>,
    /// Folder holding the reference dataset's files (else found in the fetch cache).
    #[arg(long)]
    reference_data: Option<PathBuf>,
    /// pytorch-fid's FID Inception weights as safetensors (convert the .pth with
    /// python/convert_pth.py); defaults to $BADDIFF_INCEPTION_WEIGHTS, else the fetched
    /// pytorch-fid-inception artifact (converted once).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Measure with a proxy network instead of Inception (the number is not FID and is named so).
    #[arg(long, value_enum, conflicts_with = "inception_weights")]
    proxy: Option<Proxy>,
    /// The proxy's image size in pixels; default: that of the generated images.
    #[arg(long, value_parser = baddiffusion::validate::count)]
    proxy_size: Option<usize>,
    /// The proxy's channels (1 or 3); default: those of the generated images.
    #[arg(long)]
    proxy_channels: Option<usize>,
    /// Seed of the proxy's one-time training.
    #[arg(long, default_value_t = 0)]
    proxy_seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 50, value_parser = baddiffusion::validate::count)]
    batch: usize,
    /// Use only the first N images of each folder (e.g. 10000 generated, the paper's N).
    #[arg(long, value_parser = baddiffusion::validate::count)]
    n: Option<usize>,
    /// Name of the reference split, recorded in the protocol (dataset references name
    /// themselves, e.g. cifar10-train).
    #[arg(long)]
    reference_split: Option<String>,
    /// Feature cache folder (default: $BADDIFF_CACHE/fid or the user's cache directory).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Also write the metric row as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// (channels, side) of the first PNG of a folder.
fn generated_shape(dir: &Path) -> Result<(usize, usize)> {
    let first = image_set::list_pngs(dir)?.remove(0);
    let img =
        image::open(&first).with_context(|| format!("cannot read image {}", first.display()))?;
    ensure!(
        img.width() == img.height(),
        "{} is {}×{} px: the proxy measures square images",
        first.display(),
        img.width(),
        img.height()
    );
    let channels = if img.color().has_color() { 3 } else { 1 };
    Ok((channels, img.width() as usize))
}

pub fn run(args: Args) -> Result<()> {
    let _lock = args
        .out
        .as_deref()
        .map(baddiffusion::files::OutputLock::acquire)
        .transpose()?;
    let cache_dir = args.cache.clone().unwrap_or_else(fid::default_cache_dir);
    let reference = args
        .reference
        .as_deref()
        .or(args.dir_b.as_deref())
        .context("no reference: pass DIR_B or --reference dataset:NAME")?;
    let mut reference = FidInput::parse(reference)?;
    match &mut reference {
        FidInput::Reference(spec) => {
            spec.n = args.reference_n;
            spec.dir = args.reference_data.clone();
        }
        _ => ensure!(
            args.reference_n.is_none() && args.reference_data.is_none(),
            "--reference-n and --reference-data apply to dataset references (dataset:NAME) only; \
             use --n to limit folders"
        ),
    }
    let device = baddiffusion::default_device();
    let net: Box<dyn FeatureNet> = match args.proxy {
        Some(Proxy::Fmnist) => {
            let (channels, size) = match (args.proxy_channels, args.proxy_size) {
                (Some(c), Some(s)) => (c, s),
                (c, s) if args.dir_a.is_dir() => {
                    let (gc, gs) = generated_shape(&args.dir_a)?;
                    (c.unwrap_or(gc), s.unwrap_or(gs))
                }
                _ => bail!(
                    "{} is not an image folder: pass --proxy-size and --proxy-channels",
                    args.dir_a.display()
                ),
            };
            let training = FmnistTraining {
                seed: args.proxy_seed,
                ..Default::default()
            };
            let mut rng = Rng::seeded(args.proxy_seed);
            let trained = fmnist::train_or_load(
                None, size, channels, &training, &cache_dir, device, &mut rng,
            )?;
            eprintln!(
                "{} proxy {} (test accuracy {:.4}); card {}",
                if trained.from_cache {
                    "loaded"
                } else {
                    "trained"
                },
                trained.card.metric,
                trained.card.test_accuracy,
                trained.card_path.display()
            );
            Box::new(trained.net)
        }
        None => {
            let weights = match &args.inception_weights {
                Some(w) => w.clone(),
                None => baddiffusion::metrics::inception::default_weights().context(
                    "no Inception weights: pass --inception-weights PATH (pytorch-fid's \
                     pt_inception-2015-12-05-6726825d.pth converted with `python/convert_pth.py IN.pth \
                     OUT.safetensors`), set BADDIFF_INCEPTION_WEIGHTS, or fetch pytorch-fid-inception; \
                     offline, `--proxy fmnist` measures a clearly named proxy instead",
                )?,
            };
            Box::new(FidInceptionV3::from_safetensors(&weights, device)?)
        }
    };
    let cache = FeatureCache::new(cache_dir);
    let opts = FidOptions {
        batch: args.batch,
        limit: args.n,
        reference_split: args.reference_split,
    };
    let row = fid::fid(
        &FidInput::from_path(&args.dir_a)?,
        &reference,
        net.as_ref(),
        &cache,
        &opts,
    )?;
    println!(
        "{}: {} (N = {} generated vs {} reference{})",
        row.metric,
        row.value,
        row.protocol.n_generated,
        row.protocol.n_reference,
        row.protocol
            .reference_split
            .as_deref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default()
    );
    if let Some(out) = args.out {
        baddiffusion::files::write_atomic(&out, serde_json::to_string_pretty(&[&row])?.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
