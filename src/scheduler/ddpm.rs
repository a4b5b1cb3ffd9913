//! DDPM's ancestral sampler (Ho et al. 2020, Alg. 2), as diffusers' `DDPMScheduler.step`.
//!
//! x̂₀ = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, optionally clamped (`clip_sample`); then
//! x_{t'} = (√ᾱ_{t'}·β/(1−ᾱ_t))·x̂₀ + (√α·(1−ᾱ_{t'})/(1−ᾱ_t))·x_t + σ·z, where t' is the previous
//! inference timestep and β = 1 − ᾱ_t/ᾱ_{t'} the effective beta of the (possibly strided) step.
//! Noise is drawn only for t > 0. Scalars are computed as diffusers does on 0-dim float32 tensors
//! (see `scalar`).
use anyhow::{bail, Result};
use tch::Tensor;

use super::config::{PredictionType, ResolvedConfig, VarianceType};
use super::scalar::{exp, ln, sqrt};
use super::schedule::{ddpm_timesteps, NoiseSchedule};
use crate::rng::Rng;

#[derive(Debug)]
pub struct Ddpm {
    cfg: ResolvedConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<i64>,
}

impl Ddpm {
    pub fn new(cfg: ResolvedConfig, schedule: &NoiseSchedule) -> Self {
        Ddpm {
            alphas_cumprod: schedule.alphas_cumprod_vec(),
            cfg,
            timesteps: Vec::new(),
        }
    }

    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.timesteps = ddpm_timesteps(&self.cfg, n)?;
        Ok(())
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The inference timestep after `t` (−1 after the last), as `previous_timestep`.
    fn previous_timestep(&self, t: i64) -> Result<i64> {
        let Some(i) = self.timesteps.iter().position(|&s| s == t) else {
            bail!("DDPM step at timestep {t}, which is not in the schedule (call set_timesteps first)");
        };
        Ok(self.timesteps.get(i + 1).copied().unwrap_or(-1))
    }

    /// ᾱ at `t`; a timestep past the table (a `steps_offset` pushing `leading` to T) is an error.
    fn alpha_cumprod(&self, t: i64) -> Result<f32> {
        match self.alphas_cumprod.get(t as usize) {
            Some(&a) if t >= 0 => Ok(a),
            _ => bail!(
                "timestep {t} is outside the {} training timesteps",
                self.alphas_cumprod.len()
            ),
        }
    }

    pub fn step(
        &self,
        model_output: &Tensor,
        t: i64,
        sample: &Tensor,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let prev_t = self.previous_timestep(t)?;
        let a_t = self.alpha_cumprod(t)?;
        let a_prev = if prev_t >= 0 {
            self.alpha_cumprod(prev_t)?
        } else {
            1.0
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;

        let mut x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => {
                (sample - model_output * sqrt(b_t) as f64) / sqrt(a_t) as f64
            }
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => {
                sample * sqrt(a_t) as f64 - model_output * sqrt(b_t) as f64
            }
        };
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let x0_coeff = (sqrt(a_prev) * cur_beta) / b_t;
        let xt_coeff = sqrt(cur_alpha) * b_prev / b_t;
        let mean = x0 * x0_coeff as f64 + sample * xt_coeff as f64;
        if t <= 0 {
            return Ok(mean);
        }
        let noise = rng
            .randn(&model_output.size())
            .to_device(model_output.device());
        let small = ((b_prev / b_t) * cur_beta).max(1e-20);
        let std = match self.cfg.variance_type {
            VarianceType::FixedSmall => sqrt(small),
            VarianceType::FixedSmallLog => exp(0.5 * ln(small)),
            VarianceType::FixedLarge => sqrt(cur_beta),
        };
        Ok(mean + noise * std as f64)
    }
}
