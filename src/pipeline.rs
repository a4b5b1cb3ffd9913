//! diffusers' `DDPMPipeline` for a model directory: load the checkpoint and its scheduler,
//! sample clean images (from N(0, I)) or backdoor images (from N(0, I) + trigger, as the
//! official code does, `baddiffusion.py:417`; the paper writes N(g, I)), and write them as PNGs exactly as
//! diffusers quantises them, with a JSON record of everything that produced them.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::{Device, Tensor};

use crate::checkpoint;
use crate::sampling::{self, SampleOptions, SampleRecord};
use crate::scheduler::{Clip, Overrides, Sampler, SamplerKind, SchedulerConfig};

/// How to sample from a model directory.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub sampler: SamplerKind,
    /// Inference steps; `None` = the pipelines' defaults (DDPM: all training steps, DDIM: 50,
    /// DPM-Solver: 20, the settings of the paper's sampler analysis).
    pub steps: Option<usize>,
    /// Clip mode; `None` = what the checkpoint's scheduler config says.
    pub clip: Option<Clip>,
    /// Allow settings that contradict the checkpoint's scheduler config.
    pub override_scheduler: bool,
    pub n: usize,
    pub seed: u64,
    pub batch: usize,
    pub device: Device,
    pub progress: bool,
}

/// A trigger built for a model's image shape, added to the initial noise for backdoor sampling
/// ([`crate::triggers::Trigger`] names the paper's triggers).
pub struct TriggerTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// The JSON record written next to the samples (`sample.json`).
#[derive(Debug, Serialize)]
pub struct SampleRun {
    pub model_dir: PathBuf,
    pub weights_sha256: String,
    pub unet_config: serde_json::Value,
    pub samples: &'static str,
    pub trigger: Option<String>,
    pub trigger_sha256: Option<String>,
    pub sampling: SampleRecord,
    pub png_files: usize,
    pub seconds: f64,
    pub runtime: serde_json::Value,
}

/// A loaded model with its sampler, ready to sample repeatedly.
pub struct Pipeline {
    pub checkpoint: checkpoint::Checkpoint,
    pub sampler: Sampler,
    pub model_dir: PathBuf,
}

impl Pipeline {
    pub fn load(model_dir: &Path, opts: &PipelineOptions) -> Result<Pipeline> {
        let checkpoint = checkpoint::load(model_dir, opts.device)?;
        let Some(sched_json) = &checkpoint.scheduler_config else {
            bail!(
                "{} has no scheduler config (scheduler/scheduler_config.json or scheduler_config.json): \
                 a model directory must say how it was trained to be sampled",
                model_dir.display()
            );
        };
        let config = SchedulerConfig::from_json(sched_json)
            .with_context(|| format!("the scheduler config of {}", model_dir.display()))?;
        let overrides = Overrides {
            clip: opts.clip,
            allow_contradiction: opts.override_scheduler,
            ..Overrides::default()
        };
        let sampler = Sampler::new(opts.sampler, &config, &overrides)?;
        Ok(Pipeline {
            checkpoint,
            sampler,
            model_dir: model_dir.to_path_buf(),
        })
    }

    /// (C, H, W) of the model's images.
    pub fn image_shape(&self) -> Result<[i64; 3]> {
        let c = &self.checkpoint.config;
        let (h, w) = c.sample_size.map(|s| s.hw()).with_context(|| {
            format!(
                "the UNet config of {} has no sample_size",
                self.model_dir.display()
            )
        })?;
        Ok([c.in_channels, h, w])
    }

    fn options(
        &self,
        opts: &PipelineOptions,
        offset: Option<Tensor>,
        start: Option<Tensor>,
    ) -> Result<SampleOptions> {
        let steps = opts.steps.unwrap_or(
            opts.sampler
                .default_steps(self.sampler.config().num_train_timesteps),
        );
        Ok(SampleOptions {
            n: opts.n,
            image_shape: self.image_shape()?,
            seed: opts.seed,
            batch_size: opts.batch.max(1),
            num_inference_steps: steps,
            device: opts.device,
            offset,
            start,
            progress: opts.progress,
        })
    }

    /// Samples into memory: images in [−1, 1], (n, C, H, W) on the CPU.
    pub fn sample(
        &mut self,
        opts: &PipelineOptions,
        trigger: Option<&TriggerTensor>,
    ) -> Result<sampling::Samples> {
        let sample_opts = self.options(opts, trigger.map(|t| t.tensor.shallow_clone()), None)?;
        let model = &self.checkpoint.model;
        let mut denoise = |x: &Tensor, t: &Tensor| model.forward_t(x, t, false);
        tch::no_grad(|| sampling::sample(&mut denoise, &mut self.sampler, &sample_opts))
    }

    /// Samples into `out` as PNGs (`000000.png`, ...) plus `sample.json`. The folder appears
    /// only when complete: images go first to a staging folder beside it whose name is unique
    /// to this process and call, and `out` is locked meanwhile, so parallel runs into sibling
    /// outputs never share scratch space and a second writer of `out` is refused.
    pub fn sample_to_dir(
        &mut self,
        opts: &PipelineOptions,
        trigger: Option<&TriggerTensor>,
        out: &Path,
    ) -> Result<SampleRun> {
        self.write_dir(opts, trigger, None, out)
    }

    /// [`Self::sample_to_dir`] from given x_T images (n, C, H, W) instead of drawn noise: the
    /// corrupted inputs of E7 ([`crate::inpainting`]).
    pub fn sample_from_to_dir(
        &mut self,
        opts: &PipelineOptions,
        start: &Tensor,
        out: &Path,
    ) -> Result<SampleRun> {
        self.write_dir(opts, None, Some(start), out)
    }

    fn write_dir(
        &mut self,
        opts: &PipelineOptions,
        trigger: Option<&TriggerTensor>,
        start: Option<&Tensor>,
        out: &Path,
    ) -> Result<SampleRun> {
        let _lock = crate::files::OutputLock::acquire(out)?;
        if out.exists()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            bail!(
                "{} already holds files: choose another --out or remove it",
                out.display()
            );
        }
        crate::files::remove_stale_temps(out);
        let partial = crate::files::temp_path(out);
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let result = self.sample_into(opts, trigger, start, &partial, out);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        result
    }

    /// [`Self::sample_to_dir`]'s work: fill `partial`, then rename it to `out`.
    fn sample_into(
        &mut self,
        opts: &PipelineOptions,
        trigger: Option<&TriggerTensor>,
        start: Option<&Tensor>,
        partial: &Path,
        out: &Path,
    ) -> Result<SampleRun> {
        let started = Instant::now();
        let sample_opts = self.options(
            opts,
            trigger.map(|t| t.tensor.shallow_clone()),
            start.map(Tensor::shallow_clone),
        )?;
        let model = &self.checkpoint.model;
        let mut denoise = |x: &Tensor, t: &Tensor| model.forward_t(x, t, false);
        let mut written = 0;
        let record = tch::no_grad(|| {
            sampling::sample_batches(
                &mut denoise,
                &mut self.sampler,
                &sample_opts,
                &mut |start, images| {
                    written += sampling::save_pngs(&images, partial, start)?.len();
                    Ok(())
                },
            )
        })?;
        let run = SampleRun {
            model_dir: self.model_dir.clone(),
            weights_sha256: self.checkpoint.weights.safetensors.sha256.clone(),
            unet_config: self.checkpoint.config.to_json_value(),
            samples: match (trigger, start) {
                (Some(_), _) => "backdoor",
                (None, Some(_)) => "given start",
                (None, None) => "clean",
            },
            trigger: trigger.map(|t| t.name.clone()),
            trigger_sha256: trigger.map(|t| crate::tensor_io::tensor_sha256(&t.tensor)),
            sampling: record,
            png_files: written,
            seconds: started.elapsed().as_secs_f64(),
            runtime: crate::runtime_info(),
        };
        std::fs::write(
            partial.join("sample.json"),
            serde_json::to_string_pretty(&run)?,
        )?;
        if out.exists() {
            std::fs::remove_dir(out)
                .with_context(|| format!("replacing the empty {}", out.display()))?;
        }
        std::fs::rename(partial, out)
            .with_context(|| format!("moving {} into place", partial.display()))?;
        Ok(run)
    }
}

#[cfg(test)]
mod tests;
