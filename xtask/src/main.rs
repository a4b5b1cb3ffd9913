//! `cargo xtask`: the project's thin orchestrator. It compiles fast (no tch, no polars, no HTTP
//! client) and only prepares environments and starts other programs; the library, `baddiff` and
//! `baddiff-fetch` do the computing and the downloading.
mod artifacts;
mod bars;
mod bench;
mod binaries;
mod cluster;
mod doctor;
mod gpu_check;
mod pyenv;
mod rehearse;
mod reproduce;
mod slurm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "BadDiffusion reproduction harness: project tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum ClusterAction {
    Up,
    Down,
    Status,
}

#[derive(Subcommand)]
enum Command {
    /// Make the project's Python environment (.venv) from python/requirements.lock; a no-op when current.
    Setup {
        /// Re-resolve python/requirements.in into a new hash-pinned python/requirements.lock first.
        #[arg(long)]
        relock: bool,
    },
    /// Check the toolchain, libtorch, the Python environment, GPUs, caches and disk; print fixes.
    Doctor,
    /// Download the manifest's artifacts (all, the NAMEs given, or a profile's) into the verified cache.
    Fetch {
        /// Artifact names from the manifest.
        names: Vec<String>,
        /// Also fetch every artifact of this profile (smoke, kick-the-tires, paper, released).
        #[arg(long)]
        profile: Option<String>,
        /// Another manifest instead of artifacts/manifest.toml.
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
        /// A directory or base URL holding copies, tried in order before upstream (repeatable).
        #[arg(long = "mirror", value_name = "DIR|URL")]
        mirrors: Vec<String>,
        /// Never touch the network; list what is missing.
        #[arg(long)]
        offline: bool,
        /// Files fetched at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
    },
    /// The main job: run a profile's experiment matrix, judge the paper's claims, write the frame and the report.
    Reproduce(reproduce::Args),
    /// The GPU profiles' dress rehearsal on this CPU, without network: stand-ins of their inputs
    /// served from 127.0.0.1 through the real fetch path, then each profile shrunk
    /// (`reproduce --shrink --device cpu`) end to end through the report.
    Rehearse(rehearse::Args),
    /// Time our implementation against PyTorch eager, diffusers and pytorch-fid (alternating,
    /// same libtorch, shapes and threads); writes results/bench/<stamp>.{md,json}.
    Bench(bench::Args),
    /// The day a GPU is at hand (under 8 minutes): CUDA-vs-CPU parity, 200 fp16 training steps,
    /// throughput against the peers, the fastest sampling batch; one table, written to
    /// results/gpu-check/<stamp>.{md,json}, whose rates the GPU profiles' plan then uses.
    /// Refuses on a machine without a usable GPU.
    GpuCheck(gpu_check::Args),
    /// A local one-node Slurm cluster (Debian's packages, on 127.0.0.1) for trying and testing
    /// `reproduce --executor slurm`; prints the SLURM_CONF to use.
    Cluster {
        #[arg(value_enum)]
        action: ClusterAction,
        /// Its state directory [default: target/slurm-cluster].
        #[arg(long)]
        state: Option<std::path::PathBuf>,
    },
    /// Re-hash the artifact cache; corrupt entries are quarantined and never used again.
    Verify,
    /// Render the paper report of a run (default: the newest under results/runs/) and publish it to paper/.
    Report {
        /// The run directory.
        run: Option<std::path::PathBuf>,
    },
    /// Compare run B against baseline run A; exits non-zero when a metric regresses beyond tolerance.
    Diff {
        run_a: std::path::PathBuf,
        run_b: std::path::PathBuf,
        /// Tolerances file [default: results/tolerances.toml].
        #[arg(long)]
        tolerances: Option<std::path::PathBuf>,
        /// Print the diff as JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Also write diff.md and diff.json into this directory.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Accept measurements whose protocol changed instead of failing on them.
        #[arg(long)]
        allow_protocol_change: bool,
    },
    /// The README's test command: set up what the tests need, build, and run the whole test suite.
    Test {
        /// A directory or base URL holding copies of the tests' inputs (the official trigger and
        /// target images), tried before upstream (repeatable; needed without network).
        #[arg(long = "mirror", value_name = "DIR|URL")]
        mirrors: Vec<String>,
        /// Also run the slow tier, which CI leaves out for time: retraining the smoke profile's
        /// shipped clean base to its pinned hash (about 30 minutes on 2 cores).
        #[arg(long)]
        slow: bool,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            use clap::CommandFactory;
            Cli::command().print_help().ok();
            Ok(())
        }
        Some(Command::Setup { relock }) => pyenv::setup(relock).map(|_| ()),
        Some(Command::Doctor) => doctor::run(),
        Some(Command::Test {
            mirrors,
            slow,
            cargo_args,
        }) => test(&mirrors, slow, &cargo_args),
        Some(Command::Fetch {
            names,
            profile,
            manifest,
            mirrors,
            offline,
            jobs,
        }) => artifacts::fetch(artifacts::FetchArgs {
            names,
            profile,
            manifest,
            mirrors,
            offline,
            jobs,
        }),
        Some(Command::Verify) => artifacts::verify(),
        Some(Command::Cluster { action, state }) => {
            let state = state.unwrap_or_else(cluster::default_state);
            match action {
                ClusterAction::Up => cluster::up(&state).map(|c| {
                    // Leave it running for the user.
                    std::mem::forget(c);
                    println!(
                        "Slurm is up: export SLURM_CONF={}",
                        cluster::conf(&state).display()
                    );
                }),
                ClusterAction::Down => cluster::down(&state),
                ClusterAction::Status => {
                    println!("{}", cluster::status(&state));
                    Ok(())
                }
            }
        }
        Some(Command::Reproduce(args)) => reproduce::run(args),
        Some(Command::Rehearse(args)) => rehearse::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::GpuCheck(args)) => gpu_check::run(args),
        Some(Command::Report { run }) => report(run),
        Some(Command::Diff {
            run_a,
            run_b,
            tolerances,
            json,
            out,
            allow_protocol_change,
        }) => diff(run_a, run_b, tolerances, json, out, allow_protocol_change),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// The manifest's artifacts the tests read (through the cache, like a run).
const TEST_INPUTS: &[&str] = &["baddiffusion-static"];

/// Runs the whole suite exactly as CI does: environment first, then `cargo test` over the workspace.
fn test(mirrors: &[String], slow: bool, extra: &[String]) -> Result<()> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(project_root());
    pyenv::setup(false)?;
    // Fashion-MNIST (the SHOE target and the CPU profile's data) comes from Debian's package; the
    // report's PNG figures are labelled with DejaVu Sans.
    ensure_debian_packages(&["dataset-fashion-mnist", "fonts-dejavu-core"])?;
    // The tests' pinned inputs, before the long build, so a missing one fails in seconds.
    artifacts::fetch(artifacts::FetchArgs {
        names: TEST_INPUTS.iter().map(|s| s.to_string()).collect(),
        profile: None,
        manifest: None,
        mirrors: mirrors.to_vec(),
        offline: false,
        jobs: 4,
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}: the tests need {} from artifacts/manifest.toml; without network pass \
             `--mirror DIR` with a copy of its files",
            TEST_INPUTS.join(", ")
        )
    })?;
    // --no-fail-fast: one failing test binary must not hide the others' results.
    xshell::cmd!(
        sh,
        "cargo test --workspace --all-targets --locked --no-fail-fast -- {extra...}"
    )
    .run()?;
    // Doc tests are not part of --all-targets.
    xshell::cmd!(sh, "cargo test --workspace --doc --locked").run()?;
    // The GPU profiles' dress rehearsal: stand-in inputs through the real fetch path, each
    // profile shrunk end to end on this CPU.
    rehearse::run(rehearse::Args {
        mirrors: mirrors.to_vec(),
        ..Default::default()
    })?;
    if slow {
        xshell::cmd!(
            sh,
            "cargo test --locked -p baddiffusion --lib -- --ignored retraining_the_shipped_base"
        )
        .run()?;
    }
    // The Slurm executor against a real one-node cluster, started here and stopped after (by
    // its pid files; one that was already up is left running). Its daemons need root.
    let state = cluster::default_state();
    if !is_root() && !cluster::running(&state) {
        eprintln!(
            "NOTE: the Slurm executor tests did not run: starting the local cluster needs root. \
             Run them with `sudo -E cargo xtask cluster up`, then `cargo xtask test` again."
        );
        return Ok(());
    }
    let cluster = cluster::up(&state)?;
    let _conf = sh.push_env("SLURM_CONF", cluster::conf(&cluster.state));
    xshell::cmd!(
        sh,
        "cargo test --locked --workspace --test slurm -- --ignored {extra...}"
    )
    .run()?;
    drop(cluster);
    Ok(())
}

/// The newest run directory under results/runs/.
fn newest_run() -> Result<std::path::PathBuf> {
    let runs = project_root().join("results/runs");
    let newest = std::fs::read_dir(&runs)
        .map_err(|e| {
            anyhow::anyhow!(
                "no runs under {} ({e}); run `cargo xtask reproduce` first",
                runs.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max();
    newest.map(|(_, p)| p).ok_or_else(|| {
        anyhow::anyhow!(
            "no runs under {}; run `cargo xtask reproduce` first",
            runs.display()
        )
    })
}

/// Renders a run's report into the run directory and publishes it to paper/.
pub fn report(run: Option<std::path::PathBuf>) -> Result<()> {
    let run = match run {
        Some(r) => std::path::absolute(r)?,
        None => newest_run()?,
    };
    let status = binaries::report(&[
        "render".into(),
        run.into_os_string(),
        "--publish".into(),
        project_root().join("paper").into_os_string(),
    ])?;
    anyhow::ensure!(status.success(), "rendering the report failed ({status})");
    Ok(())
}

/// Diffs two runs; the binary's exit status (1 = regression) becomes ours.
fn diff(
    a: std::path::PathBuf,
    b: std::path::PathBuf,
    tolerances: Option<std::path::PathBuf>,
    json: bool,
    out: Option<std::path::PathBuf>,
    allow_protocol_change: bool,
) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "diff".into(),
        std::path::absolute(a)?.into(),
        std::path::absolute(b)?.into(),
    ];
    for (flag, path) in [("--tolerances", tolerances), ("--out", out)] {
        if let Some(p) = path {
            args.push(flag.into());
            args.push(std::path::absolute(p)?.into());
        }
    }
    if json {
        args.push("--json".into());
    }
    if allow_protocol_change {
        args.push("--allow-protocol-change".into());
    }
    let status = binaries::report(&args)?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(2));
    }
    Ok(())
}

/// Installs the Debian packages the tests need that `dpkg -s` does not report as installed: with
/// apt-get when running as root, otherwise by printing the command to run and failing.
/// The last `n` lines of a log file, indented for an error message (empty if unreadable).
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let installed = |p: &str| {
        std::process::Command::new("dpkg")
            .args(["-s", p])
            .output()
            .map(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
            })
            .unwrap_or(false)
    };
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        anyhow::bail!(
            "the tests need the Debian package(s) {list}; install them with:\n  sudo apt-get update && sudo apt-get install -y {list}"
        );
    }
    eprintln!("installing Debian package(s) the tests need: {list}");
    let sh = xshell::Shell::new()?;
    sh.set_var("DEBIAN_FRONTEND", "noninteractive");
    xshell::cmd!(sh, "apt-get update -qq").run()?;
    xshell::cmd!(sh, "apt-get install -y -qq {missing...}").run()?;
    Ok(())
}

pub use fetch::hash::sha256_hex;

pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo puts what it builds: $CARGO_TARGET_DIR (relative to the project root when
/// relative), else `target/`.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

/// `git ARGS` in the repository, its trimmed output; `None` when git is missing or fails.
pub(crate) fn git(args: &[&str]) -> Option<String> {
    let o = std::process::Command::new("git")
        .current_dir(project_root())
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
