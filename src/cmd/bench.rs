use anyhow::Result;
use baddiffusion::bench::{self, BenchOptions, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// train-step-cifar10, train-step-scale, sample-scale, fid-features or matmul.
    workload: Workload,
    /// Print the measurement as one JSON object (what `cargo xtask bench` reads).
    #[arg(long)]
    json: bool,
    /// Timed repetitions after one warm-up [default: the workload's, 1 to 5].
    #[arg(long)]
    reps: Option<usize>,
    /// Intra-op threads [default: libtorch's].
    #[arg(long)]
    threads: Option<i32>,
    /// cpu, cuda or cuda:N [default: CUDA when visible].
    #[arg(long)]
    device: Option<String>,
    /// Mixed precision (autocast) on CUDA.
    #[arg(long)]
    amp: bool,
    /// UNet activations channels-last: on or off [default: what the reproduction does here].
    #[arg(long)]
    channels_last: Option<bool>,
    /// Print the workload's specification (shapes, configs: what the peer script runs) and exit.
    #[arg(long)]
    spec: bool,
    /// Run this specification (a JSON file as `--spec` prints) instead of the built-in one.
    #[arg(long, conflicts_with = "spec")]
    spec_file: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let spec = match &a.spec_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let spec: bench::WorkloadSpec = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a workload spec ({e}); `baddiff bench WORKLOAD --spec` prints one",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                spec.workload == a.workload.name(),
                "{} specifies workload {}, not {}",
                path.display(),
                spec.workload,
                a.workload
            );
            spec
        }
        None => a.workload.spec()?,
    };
    if a.spec {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(());
    }
    let opts = BenchOptions {
        reps: a.reps.unwrap_or(a.workload.default_reps()),
        threads: a.threads,
        device: baddiffusion::parse_device(a.device.as_deref())?,
        amp: a.amp,
        channels_last: a.channels_last,
    };
    let m = bench::run(&spec, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!(
            "{}: median {:.4} s over {} reps (min {:.4}, max {:.4}) on {} with {} threads",
            m.workload,
            m.median_s,
            m.times_s.len(),
            m.min_s,
            m.max_s,
            m.device,
            m.threads
        );
        if let Some(f) = m.flops {
            println!("  {:.2} GFLOP/s", f / m.median_s / 1e9);
        }
    }
    Ok(())
}
