use anyhow::Result;
use baddiffusion::device::CudaState;
use baddiffusion::gpu_check::{self, ParityOptions};
use serde_json::json;

/// One part of `cargo xtask gpu-check`, which runs them all and writes the report.
#[derive(clap::Args)]
pub struct Args {
    /// parity (CUDA against the CPU), fp16 (float16 training steps), sampling-sweep (images/s
    /// by sampling batch) or defenses (every defense kind once, at toy amounts, on the GPU).
    #[arg(value_parser = ["parity", "fp16", "sampling-sweep", "defenses"])]
    part: String,
    /// fp16: training steps.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// fp16: images per step [default: the GPU profiles' training batch].
    #[arg(long)]
    batch: Option<i64>,
    /// sampling-sweep: the batch sizes [default: 64, 128, ..., 1024].
    #[arg(long, value_delimiter = ',')]
    batches: Vec<i64>,
    /// sampling-sweep: denoising steps timed at each batch size.
    #[arg(long, default_value_t = 10)]
    sweep_steps: i64,
}

pub fn run(a: Args) -> Result<()> {
    if a.part == "parity" && std::env::var("NVIDIA_TF32_OVERRIDE").as_deref() != Ok("0") {
        // Before any CUDA library starts: cuBLAS and cuDNN read it when they create a handle.
        // With TF32 (10-bit mantissa) float32 parity would fail by design.
        std::env::set_var("NVIDIA_TF32_OVERRIDE", "0");
    }
    let cuda = CudaState::probe();
    let device = gpu_check::require_cuda(cuda)?;
    let out = match a.part.as_str() {
        "parity" => json!({
            "part": "parity",
            "tf32": "off (NVIDIA_TF32_OVERRIDE=0)",
            "checks": gpu_check::parity(device, &ParityOptions::default())?,
        }),
        "fp16" => {
            let batch = match a.batch {
                Some(b) => b,
                None => {
                    baddiffusion::bench::Workload::TrainStepCifar10Gpu
                        .spec()?
                        .batch
                }
            };
            anyhow::ensure!(batch > 0, "--batch must be at least 1, got {batch}");
            json!({
                "part": "fp16",
                "report": gpu_check::fp16_training(device, a.steps, batch)?,
            })
        }
        "defenses" => {
            let dir = std::env::temp_dir()
                .join(format!("baddiff-gpu-check-defenses-{}", std::process::id()));
            let runs = gpu_check::defenses::defenses(device, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            json!({"part": "defenses", "runs": runs?})
        }
        _ => {
            let batches = if a.batches.is_empty() {
                gpu_check::doubling(64, 1024)
            } else {
                a.batches.clone()
            };
            anyhow::ensure!(
                batches.iter().all(|b| *b > 0) && a.sweep_steps > 0,
                "--batches and --sweep-steps must be positive, got {batches:?} and {}",
                a.sweep_steps
            );
            json!({
                "part": "sampling-sweep",
                "steps": a.sweep_steps,
                "sweep": gpu_check::sampling_sweep(device, &batches, a.sweep_steps)?,
            })
        }
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
