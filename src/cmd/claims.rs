use std::path::PathBuf;

use anyhow::{Context, Result};
use baddiffusion::claims::ClaimsFile;
use baddiffusion::matrix::FrameRow;

/// Judge the paper's claims against a run: reads `RUN/cells/*/result.json`, writes `RUN/claims.json`.
#[derive(clap::Args)]
pub struct Args {
    /// The run directory.
    run_dir: PathBuf,
    /// The profile the run used (names the command per claim).
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// The claims file.
    #[arg(long, default_value = "paper/claims.toml")]
    claims: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let file = ClaimsFile::load(&args.claims)?;
    let rows = rows(&args.run_dir)?;
    let verdicts = file.judge(&rows, &args.profile)?;
    for v in &verdicts {
        eprintln!(
            "{}: {}",
            v["id"].as_str().unwrap_or(""),
            v["verdict"].as_str().unwrap_or("")
        );
    }
    baddiffusion::files::write_atomic(
        &args.run_dir.join("claims.json"),
        serde_json::to_string_pretty(&verdicts)?.as_bytes(),
    )
}

/// Every cell's rows of a run, in cell order.
fn rows(run_dir: &std::path::Path) -> Result<Vec<FrameRow>> {
    let cells = run_dir.join("cells");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cells)
        .with_context(|| format!("reading {}: is it a run directory?", cells.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let mut rows = Vec::new();
    for d in dirs {
        let path = d.join("result.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        rows.extend(serde_json::from_value::<Vec<FrameRow>>(v["rows"].clone())?);
    }
    Ok(rows)
}
