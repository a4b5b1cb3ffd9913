//! `baddiff-report`: renders a run's paper report and diffs two runs. `cargo xtask report` and
//! `cargo xtask diff` run it.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use report::{diff, report as rep};

#[derive(Parser)]
#[command(
    name = "baddiff-report",
    about = "Paper report and run diffs for the BadDiffusion harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render every figure and table, report.md and report.html of a run directory.
    Render {
        /// The run directory (results/runs/<run-id>/ with metrics.parquet).
        run_dir: PathBuf,
        /// Output directory [default: RUN_DIR/report].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Tab. 1 images (triggers/*.png, targets/*.png) [default: RUN_DIR/gallery].
        #[arg(long)]
        gallery: Option<PathBuf>,
        /// Sample images (<cell>/{clean,backdoor}/*.png) [default: RUN_DIR/samples].
        #[arg(long)]
        samples: Option<PathBuf>,
        /// The authors' released scores [default: paper/released_scores.toml].
        #[arg(long)]
        released: Option<PathBuf>,
        /// Also copy report.md, report.html, figures/ and tables/ into this directory (e.g. paper/).
        #[arg(long)]
        publish: Option<PathBuf>,
    },
    /// Collect a run's cells (cells/*/result.json) into metrics.parquet and metrics.csv.
    Frame {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Judge the paper's claims against a run's frame; writes RUN/claims.json and prints one
    /// line per claim with what its verdict rests on.
    Claims {
        /// The run directory (metrics.parquet; manifest.json says the profile and its scale).
        run_dir: PathBuf,
        /// The claims file [default: paper/claims.toml].
        #[arg(long)]
        claims: Option<PathBuf>,
    },
    /// Write the built-in fixture run (a small complete frame with images) to try the report on.
    Fixture {
        /// Directory to create.
        dir: PathBuf,
    },
    /// Compare run B against baseline run A; exits 1 when a metric regresses beyond tolerance.
    Diff {
        /// Baseline run directory (or its metrics.parquet).
        run_a: PathBuf,
        /// New run directory (or its metrics.parquet).
        run_b: PathBuf,
        /// Tolerances [default: results/tolerances.toml].
        #[arg(long)]
        tolerances: Option<PathBuf>,
        /// Also write diff.md and diff.json into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Accept measurements whose protocol (N, weights, sampler, steps) changed: list them
        /// without failing. Without it such rows fail the diff, since they were not compared.
        #[arg(long)]
        allow_protocol_change: bool,
    },
}

fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Render {
            run_dir,
            out,
            gallery,
            samples,
            released,
            publish,
        } => {
            let mut opts = rep::RenderOptions::for_run(&run_dir);
            if let Some(out) = out {
                opts.out_dir = out;
            }
            opts.gallery_dir = gallery;
            opts.samples_dir = samples;
            opts.released_scores = released;
            let r = rep::render(&run_dir, &opts)?;
            for n in &r.not_run {
                eprintln!("not run: {n}");
            }
            if let Some(dest) = publish {
                rep::publish(&opts.out_dir, &dest)?;
                println!("published to {}", dest.display());
            }
            println!("{}\n{}", r.report_md.display(), r.report_html.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Frame { run_dir } => {
            let n = report::collect::write_frame(&run_dir)?;
            println!(
                "{n} rows -> {}",
                run_dir.join(report::schema::FRAME_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Claims { run_dir, claims } => {
            let rows = report::schema::read_rows(&run_dir.join(report::schema::FRAME_FILE))?;
            let path = claims.unwrap_or_else(report::claims::default_claims_file);
            let verdicts = report::claims::judge_run(&run_dir, &path, &rows)?;
            for line in report::claims::terminal_lines(&verdicts) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fixture { dir } => {
            report::fixture::write_run_dir(&dir)?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            run_a,
            run_b,
            tolerances,
            out,
            json,
            allow_protocol_change,
        } => {
            let tol_path = tolerances.unwrap_or_else(diff::default_tolerances_path);
            let tol = diff::Tolerances::read(&tol_path)?;
            let (name_a, a) = diff::read_run(&run_a)?;
            let (name_b, b) = diff::read_run(&run_b)?;
            let d = diff::diff(&name_a, &a, &name_b, &b, &tol)
                .allowing_protocol_change(allow_protocol_change);
            let md = d.markdown();
            if json {
                println!("{}", d.json());
            } else {
                print!("{md}");
            }
            if let Some(out) = out {
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                for (name, text) in [("diff.md", md), ("diff.json", d.json())] {
                    let path = out.join(name);
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
            Ok(if d.regressed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
