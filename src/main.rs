//! `baddiff`: the program that does the heavy work (train, sample, measure, defend). Each
//! subcommand lives in `src/cmd/<name>.rs` as an `Args` struct and a `run` function.
use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "baddiff", version = version(), about = "BadDiffusion reproduction: train, sample, measure, defend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what this binary runs on (versions, device, whether libtorch's CUDA backend is
    /// loaded, GPUs visible, threads) as JSON, for run records.
    Env(cmd::env::Args),
    /// Backdoor metrics (MSE, MSE-threshold rate, SSIM) of a sample folder against its target.
    Measure(cmd::measure::Args),
    /// FID between generated images and a reference (folder, statistics or dataset:NAME), or a
    /// named proxy of it (--proxy fmnist) where the Inception weights are unavailable.
    Fid(cmd::fid::Args),
    /// Sample clean images, or backdoor images with --trigger, from a diffusers model directory.
    Sample(cmd::sample::Args),
    /// Run a defense (anp, anp-prune, clip) on a backdoored model and write its rows.
    Defend(cmd::defend::Args),
    /// Train one cell: backdoor fine-tuning or training from scratch, resumable.
    Train(cmd::train::Args),
    /// List the cells of a profile and estimate their cost.
    Plan(cmd::plan::Args),
    /// Run one cell of a profile (all its stages, through the stage cache).
    Cell(cmd::cell::Args),
    /// Time one benchmark workload (ours; `cargo xtask bench` runs it against its Python peer).
    Bench(cmd::bench::Args),
    /// Write a profile shrunk for a dress rehearsal: every code path at the real shapes, a few
    /// steps and samples each (`cargo xtask reproduce --shrink`).
    Shrink(cmd::shrink::Args),
    /// Write Tab. 1's trigger and target images of a profile.
    Gallery(cmd::gallery::Args),
    /// One part of `cargo xtask gpu-check` (CUDA against CPU parity, float16 training, the
    /// fastest sampling batch) as JSON; refuses without a usable GPU.
    GpuCheck(cmd::gpu_check::Args),
}

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (libtorch ",
        env!("BADDIFF_LIBTORCH_VERSION"),
        ")"
    )
}

fn main() {
    let result = match Cli::parse().command {
        Command::Env(args) => cmd::env::run(args),
        Command::Measure(args) => cmd::measure::run(args),
        Command::Fid(args) => cmd::fid::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Cell(args) => cmd::cell::run(args),
        Command::Gallery(args) => cmd::gallery::run(args),
        Command::Shrink(args) => cmd::shrink::run(args),
        Command::Defend(args) => cmd::defend::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::GpuCheck(args) => cmd::gpu_check::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
