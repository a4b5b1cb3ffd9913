use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::matrix::Profile;
use baddiffusion::sampling::to_png_bytes;
use baddiffusion::triggers::{ImageShape, Target, Trigger};

/// Tab. 1: every trigger and target of the paper, and any other of a profile, at the profile's
/// image size, as PNGs named after them.
#[derive(clap::Args)]
pub struct Args {
    /// Profile name (paper/profiles/NAME.toml) or a TOML path.
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// Draw at this image size instead of the profile's (to compare scale-model sizes).
    #[arg(long)]
    size: Option<usize>,
    /// Draw with this many channels (1 or 3) instead of the profile's.
    #[arg(long)]
    channels: Option<usize>,
    /// Writes OUT/triggers/NAME.png and OUT/targets/NAME.png.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let _lock = baddiffusion::files::OutputLock::acquire(&args.out)?;
    let profile = Profile::load(&std::env::current_dir()?, &args.profile)?;
    let size = args.size.unwrap_or(profile.data.size);
    let channels = args.channels.unwrap_or(profile.data.channels);
    let shape = ImageShape::new(channels, size)?;
    let sources = baddiffusion::inputs::source_images(None)?;
    // The paper's Tab. 1 in full (drawing costs no training), then any other the profile uses.
    let mut triggers: Vec<String> = Trigger::PAPER.iter().map(|t| t.to_string()).collect();
    let mut targets: Vec<String> = Target::all().iter().map(|t| t.to_string()).collect();
    for e in &profile.experiments {
        for t in &e.triggers {
            let t = t.parse::<Trigger>()?.to_string();
            if !triggers.contains(&t) {
                triggers.push(t);
            }
        }
        for t in &e.targets {
            let t = t.parse::<Target>()?.to_string();
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    let write = |sub: &str, name: &str, t: &tch::Tensor| -> Result<()> {
        let dir = args.out.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        baddiffusion::files::write_atomic(&path, &to_png_bytes(t)?)
            .with_context(|| format!("writing {}", path.display()))
    };
    let mut first = None;
    for name in &triggers {
        let g = name.parse::<Trigger>()?.build(shape, &sources)?;
        // A trigger is shown as the official code shows it: stamped on a grey background.
        write("triggers", name, &baddiffusion::triggers::bg2grey(&g))?;
        first.get_or_insert(g);
    }
    // Targets that depend on the trigger (NoShift, Shift) are built from the first (Grey Box).
    if let Some(g) = first {
        for name in &targets {
            write(
                "targets",
                name,
                &name.parse::<Target>()?.build(&g, &sources)?,
            )?;
        }
    }
    println!("{}", args.out.display());
    Ok(())
}
