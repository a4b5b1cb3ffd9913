use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::matrix::shrink::Shrink;
use baddiffusion::matrix::Profile;

/// Write a profile shrunk for a dress rehearsal (`cargo xtask reproduce --shrink` runs it).
#[derive(clap::Args)]
pub struct Args {
    /// Profile name (paper/profiles/NAME.toml) or a TOML path.
    #[arg(long)]
    profile: String,
    /// Where to write the shrunk profile (TOML).
    #[arg(long)]
    out: PathBuf,
    /// The rehearsal runs on the CPU: train in float32 where the profile trains in fp16 (CUDA only).
    #[arg(long)]
    cpu: bool,
}

pub fn run(args: Args) -> Result<()> {
    let root = std::env::current_dir()?;
    let profile = Profile::load(&root, &args.profile)?;
    let shrink = Shrink {
        no_mixed_precision: args.cpu,
        ..Shrink::REHEARSAL
    };
    let shrunk = profile.shrunk(&shrink)?;
    let text = toml::to_string(&shrunk).context("writing the shrunk profile as TOML")?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    baddiffusion::files::write_atomic(&args.out, text.as_bytes())?;
    // It must read back as a valid profile (the runs load it by path).
    Profile::load(&root, &args.out.to_string_lossy())?;
    println!("{}", args.out.display());
    Ok(())
}
