//! `baddiff`: the program that does the heavy work (train, sample, measure, defend).
use clap::Parser;

#[derive(Parser)]
#[command(name = "baddiff", version = version(), about = "BadDiffusion reproduction: train, sample, measure, defend")]
struct Cli {}

fn version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (libtorch ", env!("BADDIFF_LIBTORCH_VERSION"), ")")
}

fn main() {
    let _cli = Cli::parse();
}
