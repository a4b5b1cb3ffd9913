use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::metrics::fid::{self, FeatureCache, FidInput, FidOptions};
use baddiffusion::metrics::inception::FidInceptionV3;

/// FID between two image folders or statistics files, like `python -m pytorch_fid A B`.
#[derive(clap::Args)]
pub struct Args {
    /// Generated images: a PNG folder, or statistics (.safetensors ours, .npz pytorch-fid's).
    dir_a: PathBuf,
    /// Reference images: a PNG folder, or statistics.
    dir_b: PathBuf,
    /// pytorch-fid's FID Inception weights as safetensors (convert the .pth with
    /// python/convert_pth.py); defaults to $BADDIFF_INCEPTION_WEIGHTS.
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Use only the first N images of each folder.
    #[arg(long)]
    n: Option<usize>,
    /// Name of the reference split, recorded in the protocol (e.g. cifar10-train).
    #[arg(long)]
    reference_split: Option<String>,
    /// Feature cache folder (default: $BADDIFF_CACHE/fid or the user's cache directory).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Also write the metric row as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let weights = args
        .inception_weights
        .or_else(|| std::env::var_os("BADDIFF_INCEPTION_WEIGHTS").map(PathBuf::from))
        .context(
            "no Inception weights: pass --inception-weights PATH (pytorch-fid's pt_inception-2015-12-05-6726825d.pth \
             converted with `python/convert_pth.py IN.pth OUT.safetensors`) or set BADDIFF_INCEPTION_WEIGHTS",
        )?;
    let net = FidInceptionV3::from_safetensors(&weights, baddiffusion::default_device())?;
    let cache = FeatureCache::new(args.cache.unwrap_or_else(fid::default_cache_dir));
    let opts = FidOptions {
        batch: args.batch,
        limit: args.n,
        reference_split: args.reference_split,
    };
    let row = fid::fid(
        &FidInput::from_path(&args.dir_a)?,
        &FidInput::from_path(&args.dir_b)?,
        &net,
        &cache,
        &opts,
    )?;
    println!("FID: {}", row.value);
    if let Some(out) = args.out {
        std::fs::write(&out, serde_json::to_string_pretty(&[&row])?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
