//! DDIM (Song et al. 2021), as diffusers' `DDIMScheduler.step`.
//!
//! x_{t'} = √ᾱ_{t'}·x̂₀ + √(1−ᾱ_{t'}−σ²)·ε̂ + σ·z with σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_{t'})).
//! η = 0 is deterministic; η > 0 draws noise at every step (even the last, where σ may be 0), as
//! diffusers does, so the random stream stays aligned with it. Like diffusers, the previous
//! timestep is `t − T/n` whatever the spacing.
use anyhow::{bail, Result};
use tch::Tensor;

use super::config::{PredictionType, ResolvedConfig};
use super::scalar::{pow, sqrt};
use super::schedule::{ddpm_timesteps, NoiseSchedule};
use crate::rng::Rng;

#[derive(Debug)]
pub struct Ddim {
    cfg: ResolvedConfig,
    eta: f64,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<i64>,
}

impl Ddim {
    pub fn new(cfg: ResolvedConfig, eta: f64, schedule: &NoiseSchedule) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            bail!("DDIM eta {eta} is outside [0, 1] (0 is deterministic DDIM, 1 is DDPM-like)");
        }
        let alphas_cumprod = schedule.alphas_cumprod_vec();
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Ddim {
            cfg,
            eta,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: Vec::new(),
        })
    }

    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.timesteps = ddpm_timesteps(&self.cfg, n)?;
        Ok(())
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn step(
        &self,
        model_output: &Tensor,
        t: i64,
        sample: &Tensor,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if self.timesteps.is_empty() {
            bail!("DDIM step before set_timesteps");
        }
        let table = &self.alphas_cumprod;
        let prev_t = t - (self.cfg.num_train_timesteps / self.timesteps.len()) as i64;
        let Some(&a_t) = table.get(t as usize).filter(|_| t >= 0) else {
            bail!(
                "timestep {t} is outside the {} training timesteps",
                table.len()
            );
        };
        let a_prev = if prev_t >= 0 {
            table[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;

        let (mut x0, eps) = match self.cfg.prediction_type {
            PredictionType::Epsilon => (
                (sample - model_output * sqrt(b_t) as f64) / sqrt(a_t) as f64,
                model_output.shallow_clone(),
            ),
            PredictionType::Sample => {
                let eps = (sample - model_output * sqrt(a_t) as f64) / sqrt(b_t) as f64;
                (model_output.shallow_clone(), eps)
            }
            PredictionType::VPrediction => (
                sample * sqrt(a_t) as f64 - model_output * sqrt(b_t) as f64,
                model_output * sqrt(a_t) as f64 + sample * sqrt(b_t) as f64,
            ),
        };
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev);
        let std = self.eta as f32 * sqrt(variance);
        let direction = eps * sqrt(1.0 - a_prev - pow(std, 2.0)) as f64;
        let prev = x0 * sqrt(a_prev) as f64 + direction;
        if self.eta <= 0.0 {
            return Ok(prev);
        }
        let noise = rng
            .randn(&model_output.size())
            .to_device(model_output.device());
        Ok(prev + noise * std as f64)
    }
}
