//! `baddiff-fetch`: downloads the selected artifacts of a manifest into the cache and prints the
//! report. `cargo xtask fetch` (and `reproduce`) run it when the cache, the mirror directories and
//! the system copies leave files missing and their hosts resolve.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "baddiff-fetch",
    about = "Fetch hash-pinned inputs into the cache"
)]
struct Args {
    /// The artifact manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// Fetch the artifacts this profile needs.
    #[arg(long)]
    profile: Option<String>,
    /// An offline copy (directory) or a base URL, tried before upstream; repeatable.
    #[arg(long = "mirror")]
    mirrors: Vec<String>,
    /// Files fetched at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Artifact names (all of the manifest's when neither these nor --profile are given).
    names: Vec<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let run = || -> Result<bool, Box<dyn std::error::Error>> {
        let manifest = fetch::Manifest::load(&a.manifest)?;
        let cache = fetch::Cache::open_default()?;
        println!("cache: {}", cache.root().display());
        let opts = fetch::FetchOptions {
            mirrors: a.mirrors.iter().map(|m| fetch::Mirror::parse(m)).collect(),
            jobs: a.jobs,
            ..Default::default()
        };
        let report = fetch::fetch(&manifest, &cache, &a.names, a.profile.as_deref(), &opts)?;
        print!("{report}");
        Ok(report.is_complete())
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "baddiff-fetch: some artifacts are not available (the report above says why)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("baddiff-fetch: {e}");
            ExitCode::FAILURE
        }
    }
}
