use std::path::PathBuf;

use anyhow::Result;
use baddiffusion::matrix::{plan, Filter, Profile, StageStore};

/// Which cells a profile runs and an estimate of their cost.
#[derive(clap::Args)]
pub struct Args {
    /// Profile name (paper/profiles/NAME.toml) or a TOML path.
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// Keep only cells matching (a part of the cell id, or KEY=VALUE); repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Keep only the experiments these claims need (ids from paper/claims.toml); repeatable.
    #[arg(long)]
    claim: Vec<String>,
    /// The stage cache consulted for measured throughput [default: $BADDIFF_CACHE/stages].
    #[arg(long)]
    stages: Option<PathBuf>,
    /// Print JSON (what `cargo xtask reproduce` reads).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let root = std::env::current_dir()?;
    let profile = Profile::load(&root, &args.profile)?;
    let filter = filter(&root, args.only, &args.claim)?;
    let store = StageStore::new(args.stages.unwrap_or_else(StageStore::default_root));
    let cells = profile.cells(&filter)?;
    let mut plan = plan::plan(&profile, cells.clone(), &store)?;
    let claims = frame::claims::ClaimsFile::load(&root.join("paper/claims.toml"))?;
    plan.claims = baddiffusion::matrix::scale::judgeable(&claims, &profile, &cells)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.text());
    }
    Ok(())
}

/// The cell filter of `--only` and `--claim` (shared by `plan` and `cell`).
pub fn filter(root: &std::path::Path, only: Vec<String>, claims: &[String]) -> Result<Filter> {
    let experiments = if claims.is_empty() {
        None
    } else {
        let file = frame::claims::ClaimsFile::load(&root.join("paper/claims.toml"))?;
        Some(file.experiments_for(claims)?)
    };
    Ok(Filter { only, experiments })
}
