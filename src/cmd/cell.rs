use std::path::PathBuf;

use anyhow::{bail, Result};
use baddiffusion::matrix::{run::Cells, Filter, NotCached, Profile, StageStore};

/// Run one cell of a profile (every stage, through the stage cache) into a run directory.
#[derive(clap::Args)]
pub struct Args {
    /// Profile name (paper/profiles/NAME.toml) or a TOML path.
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// The cell id (`baddiff plan` lists them), or `base` for the clean base model alone.
    #[arg(long)]
    cell: String,
    /// The run directory (results/runs/RUN_ID); the cell writes cells/<id>/result.json there.
    #[arg(long)]
    run_dir: PathBuf,
    /// The stage cache [default: $BADDIFF_CACHE/stages].
    #[arg(long)]
    stages: Option<PathBuf>,
    /// cpu, cuda, cuda:N [default: the profile's, else auto].
    #[arg(long)]
    device: Option<String>,
    /// Show progress bars.
    #[arg(long)]
    progress: bool,
    /// Compute nothing: finish the cell from cached stages, or exit with status 3 when a stage
    /// would have to run (how `cargo xtask reproduce` learns which cells to submit to a cluster).
    #[arg(long)]
    cached_only: bool,
}

/// Exit status of `--cached-only` when the cell has work left.
pub const NOT_CACHED_EXIT: i32 = 3;

pub fn run(args: Args) -> Result<()> {
    let root = std::env::current_dir()?;
    let profile = Profile::load(&root, &args.profile)?;
    let device = baddiffusion::parse_device(args.device.as_deref().or(profile.device.as_deref()))?;
    if let (tch::Device::Cpu, Some(n)) = (device, profile.threads) {
        tch::set_num_threads(n as i32);
    }
    let run_id = args
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cells = profile.cells(&Filter::default())?;
    let cell = cells.iter().find(|c| c.id == args.cell);
    let profile = match cell {
        Some(c) => profile.for_experiment(&c.experiment),
        None => profile,
    };
    let ctx = Cells {
        store: StageStore {
            cached_only: args.cached_only,
            ..StageStore::new(args.stages.unwrap_or_else(StageStore::default_root))
        },
        device,
        run_id,
        run_dir: args.run_dir,
        progress: args.progress,
        profile,
    };
    let not_cached = |e: anyhow::Error| -> anyhow::Error {
        if let Some(nc) = e.downcast_ref::<NotCached>() {
            println!("not cached: {nc}");
            std::process::exit(NOT_CACHED_EXIT);
        }
        e
    };
    if args.cell == "base" {
        let (base, rec) = ctx.base().map_err(not_cached)?;
        eprintln!(
            "base model {} ({:.1} s)",
            base.model_dir.display(),
            rec.wall_s
        );
        return Ok(());
    }
    let Some(cell) = cell else {
        bail!(
            "profile `{}` has no cell `{}`: `baddiff plan --profile {}` lists them",
            ctx.profile.name,
            args.cell,
            args.profile
        );
    };
    let result = ctx.run_cell(cell).map_err(not_cached)?;
    let ran = result.stages.iter().filter(|s| s.ran).count();
    eprintln!(
        "cell {}: {} rows, {} of {} stages ran",
        cell.id,
        result.rows.len(),
        ran,
        result.stages.len()
    );
    Ok(())
}
