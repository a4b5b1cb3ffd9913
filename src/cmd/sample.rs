use std::path::PathBuf;

use anyhow::Result;
use baddiffusion::pipeline::{Pipeline, PipelineOptions, TriggerTensor};
use baddiffusion::scheduler::{Clip, SamplerKind};
use baddiffusion::triggers::ImageShape;

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers model directory (pipeline layout or a bare UNet folder with its scheduler config).
    #[arg(long)]
    model: PathBuf,
    /// Number of images.
    #[arg(long, value_parser = baddiffusion::validate::count)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ddpm, ddim or dpm-solver.
    #[arg(long, default_value = "ddpm")]
    sampler: SamplerKind,
    /// Inference steps (default: DDPM all training steps, DDIM 50, DPM-Solver 20).
    #[arg(long, value_parser = baddiffusion::validate::count)]
    steps: Option<usize>,
    /// none, x0 (clamp the predicted x0: the official --fclip w) or xt (clamp x_{t-1}: the
    /// paper's inference-time clipping). Default: what the checkpoint's scheduler says.
    #[arg(long)]
    clip: Option<Clip>,
    /// Allow settings that contradict the checkpoint's scheduler config.
    #[arg(long)]
    override_scheduler: bool,
    /// Backdoor sampling: start from noise + this trigger (e.g. BOX_14, STOP_SIGN_14).
    #[arg(long)]
    trigger: Option<String>,
    /// The official source images (default: the cached `baddiffusion-static` artifact).
    #[arg(long)]
    sources: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_parser = baddiffusion::validate::count)]
    batch: usize,
    /// Output folder for the PNGs and sample.json; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let opts = PipelineOptions {
        sampler: a.sampler,
        steps: a.steps,
        clip: a.clip,
        override_scheduler: a.override_scheduler,
        n: a.n,
        seed: a.seed,
        batch: a.batch,
        device: baddiffusion::default_device(),
        progress: true,
    };
    let mut pipeline = Pipeline::load(&a.model, &opts)?;
    let trigger = match &a.trigger {
        None => None,
        Some(name) => {
            let [c, h, w] = pipeline.image_shape()?;
            anyhow::ensure!(
                h == w,
                "triggers are defined for square images, the model makes {h}×{w}"
            );
            let shape = ImageShape::new(c as usize, h as usize)?;
            let sources = baddiffusion::inputs::source_images(a.sources.as_deref())?;
            let tensor = name
                .parse::<baddiffusion::triggers::Trigger>()?
                .build(shape, &sources)?;
            Some(TriggerTensor {
                name: name.clone(),
                tensor,
            })
        }
    };
    let run = pipeline.sample_to_dir(&opts, trigger.as_ref(), &a.out)?;
    eprintln!(
        "wrote {} {} samples to {} in {:.1} s",
        run.png_files,
        run.samples,
        a.out.display(),
        run.seconds
    );
    Ok(())
}
