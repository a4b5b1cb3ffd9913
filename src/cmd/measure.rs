use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::metrics::image_set::{Channels, ImageSet};
use baddiffusion::metrics::ssim::{SsimBorder, SsimConfig};
use baddiffusion::metrics::{self, mse::MSE_THRESHOLD};

/// Backdoor metrics of a sample folder against its target: MSE, MSE-threshold rate, SSIM.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of generated PNGs.
    #[arg(long)]
    samples: PathBuf,
    /// Backdoor target in [−1, 1] (.npy or .safetensors), [C, H, W].
    #[arg(long)]
    target: PathBuf,
    /// Where to write the metric rows (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Measure only the first N samples.
    #[arg(long, value_parser = baddiffusion::validate::count)]
    n: Option<usize>,
    /// Per-image MSE below which a sample counts as the target.
    #[arg(long, default_value_t = MSE_THRESHOLD, value_parser = baddiffusion::validate::positive_number)]
    threshold: f64,
    /// SSIM border: `cropped` (torchmetrics of the paper's time) or `full` (torchmetrics ≥ 1.5).
    #[arg(long, value_enum, default_value = "cropped")]
    ssim_border: SsimBorder,
}

pub fn run(args: Args) -> Result<()> {
    let _lock = baddiffusion::files::OutputLock::acquire(&args.out)?;
    let samples = ImageSet::read_png_dir(&args.samples, args.n, Channels::Native)?;
    let (target, sha) = metrics::load_target(&args.target)?;
    let cfg = SsimConfig {
        border: args.ssim_border,
        ..Default::default()
    };
    let rows = metrics::target_metrics(&samples, &target, &sha, &cfg, args.threshold)?;
    for row in &rows {
        println!(
            "{}: {:.6} (N = {})",
            row.metric, row.value, row.protocol.n_generated
        );
    }
    baddiffusion::files::write_atomic(&args.out, serde_json::to_string_pretty(&rows)?.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))
}
