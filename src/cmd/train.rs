use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::attack::{self, AttackConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The cell's settings (TOML: [data], [backdoor], [model], [train]); see `baddiff train --help`.
    #[arg(long)]
    config: PathBuf,
    /// Output directory: model/ (diffusers pipeline), state/ (resume), train_log.jsonl, train.json.
    /// Rerunning with the same directory resumes from its last checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Override [backdoor] trigger.
    #[arg(long)]
    trigger: Option<String>,
    /// Override [backdoor] target.
    #[arg(long)]
    target: Option<String>,
    /// Override [backdoor] poison_rate.
    #[arg(long)]
    poison_rate: Option<f64>,
    /// Override [train] epochs.
    #[arg(long)]
    epochs: Option<u64>,
    /// Stop after this many iterations (the run's length in steps instead of epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Override [train] seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override [train] learning_rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override [train] batch.
    #[arg(long)]
    batch: Option<i64>,
    /// cpu, cuda or cuda:N (default: CUDA when visible).
    #[arg(long)]
    device: Option<String>,
    /// libtorch's CPU threads [default: this machine's cores]. Always set, never left to libtorch:
    /// at the same count, a count libtorch chose and one set explicitly give other weights
    /// (paper/miniature.md), so the recorded `threads` says all there is to say.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let mut cfg = AttackConfig::from_toml_file(&a.config)?;
    if let Some(v) = a.trigger {
        cfg.backdoor.trigger = v;
    }
    if let Some(v) = a.target {
        cfg.backdoor.target = v;
    }
    if let Some(v) = a.poison_rate {
        cfg.backdoor.poison_rate = v;
    }
    if let Some(v) = a.epochs {
        cfg.train.epochs = v;
    }
    if let Some(v) = a.steps {
        cfg.train.steps = Some(v);
    }
    if let Some(v) = a.seed {
        cfg.train.seed = v;
    }
    if let Some(v) = a.lr {
        cfg.train.learning_rate = v;
    }
    if let Some(v) = a.batch {
        cfg.train.batch = v;
    }
    cfg.validate()
        .context("the cell config with the command line's overrides")?;
    let device = baddiffusion::parse_device(a.device.as_deref())?;
    if device == tch::Device::Cpu {
        let n = a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        tch::set_num_threads(n as i32);
    }
    let summary = attack::train(&cfg, &a.out, device, true)?;
    if summary.skipped_steps > 0 {
        eprintln!(
            "float16: {} optimizer step(s) skipped on overflow (the loss scale backed off; the schedule held)",
            summary.skipped_steps
        );
    }
    eprintln!(
        "trained {} iterations on {} samples ({} poisoned) in {:.0} s; model at {}",
        summary.iterations,
        summary.n_samples,
        summary.n_poisoned,
        summary.seconds,
        summary.model_dir.display()
    );
    Ok(())
}
