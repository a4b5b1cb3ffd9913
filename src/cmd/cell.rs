use std::path::PathBuf;

use anyhow::{bail, Result};
use baddiffusion::matrix::{run::Cells, Filter, NotCached, Profile, StageStore};

/// Run cells of a profile (every stage, through the stage cache) into a run directory.
#[derive(clap::Args)]
pub struct Args {
    /// Profile name (paper/profiles/NAME.toml) or a TOML path.
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// The cell id (`baddiff plan` lists them), or `base` for the clean base model alone;
    /// repeat it to run several cells in order in one process.
    #[arg(long, required = true)]
    cell: Vec<String>,
    /// The run directory (results/runs/RUN_ID); the cell writes cells/<id>/result.json there.
    #[arg(long)]
    run_dir: PathBuf,
    /// The stage cache [default: $BADDIFF_CACHE/stages].
    #[arg(long)]
    stages: Option<PathBuf>,
    /// cpu, cuda, cuda:N [default: the profile's, else auto]. A GPU profile (auto) refuses to
    /// run without a usable GPU; `--device cpu` forces the CPU.
    #[arg(long)]
    device: Option<String>,
    /// Show progress bars.
    #[arg(long)]
    progress: bool,
    /// Compute nothing: finish each cell from cached stages, or print `not cached: CELL: why`
    /// and exit with status 3 at the end when a stage would have to run (how
    /// `cargo xtask reproduce` learns, in one process, which cells to submit to a cluster).
    #[arg(long)]
    cached_only: bool,
    /// Pre-train the clean base model even where the profile ships it (`[base] shipped`).
    #[arg(long)]
    retrain_base: bool,
}

/// Exit status of `--cached-only` when a cell has work left.
pub const NOT_CACHED_EXIT: i32 = 3;
/// How `--cached-only` names a cell with work left, on standard output.
pub const NOT_CACHED_PREFIX: &str = "not cached: ";

/// The device of a profile's cells here (`explicit`: `--device`), or why they cannot run here.
pub fn profile_device(profile: &Profile, explicit: Option<&str>) -> Result<tch::Device> {
    use baddiffusion::device::{resolve, CudaState, Wants};
    let wants = Wants::Profile {
        name: &profile.name,
        device: profile.device.as_deref(),
    };
    resolve(wants, explicit, CudaState::probe())
}

pub fn run(args: Args) -> Result<()> {
    let root = std::env::current_dir()?;
    let profile = Profile::load(&root, &args.profile)?;
    let device = match profile_device(&profile, args.device.as_deref()) {
        Ok(device) => device,
        // Runs no stage, so needs no GPU: a Slurm login node asks which cells have work left.
        Err(_) if args.cached_only => tch::Device::Cpu,
        Err(e) => return Err(e),
    };
    if let (tch::Device::Cpu, Some(n)) = (device, profile.threads) {
        tch::set_num_threads(n as i32);
    }
    let cells = profile.cells(&Filter::default())?;
    let mut left = 0;
    for id in &args.cell {
        let cell = cells.iter().find(|c| &c.id == id);
        if id != "base" && cell.is_none() {
            bail!(
                "profile `{}` has no cell `{id}`: `baddiff plan --profile {}` lists them",
                profile.name,
                args.profile
            );
        }
        let ctx = Cells {
            store: StageStore {
                cached_only: args.cached_only,
                ..StageStore::new(args.stages.clone().unwrap_or_else(StageStore::default_root))
            },
            device,
            run_id: args
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            run_dir: args.run_dir.clone(),
            progress: args.progress,
            retrain_base: args.retrain_base,
            profile: match cell {
                Some(c) => profile.for_experiment(&c.experiment),
                None => profile.clone(),
            },
        };
        let outcome = match cell {
            None => ctx.base().map(|(base, rec)| {
                eprintln!(
                    "base model {} ({:.1} s)",
                    base.model_dir.display(),
                    rec.wall_s
                )
            }),
            Some(cell) => ctx.run_cell(cell).map(|result| {
                let ran = result.stages.iter().filter(|s| s.ran).count();
                eprintln!(
                    "cell {}: {} rows, {} of {} stages ran",
                    cell.id,
                    result.rows.len(),
                    ran,
                    result.stages.len()
                )
            }),
        };
        if let Err(e) = outcome {
            match e.downcast_ref::<NotCached>() {
                Some(nc) => {
                    println!("{NOT_CACHED_PREFIX}{id}: {nc}");
                    left += 1;
                }
                None => return Err(e),
            }
        }
    }
    if left > 0 {
        std::process::exit(NOT_CACHED_EXIT);
    }
    Ok(())
}
