//! The backdoor loss (paper eq. 6–10; official `loss.py:257-305`, `p_losses_diffuser`).
//!
//! The backdoored forward process puts the poisoned image r into the mean:
//! x′_t = √ᾱ_t·y + (1−√ᾱ_t)·R + √(1−ᾱ_t)·ε, so that x′_T → N(r, I), and the network is trained to
//! predict ε + R_t·R with R_t = (1−√α_t)·√(1−ᾱ_t)/(1−α_t) = √(1−ᾱ_t)/(1+√α_t). Clean samples have
//! R = 0 and y = x, where this is exactly the DDPM loss; clean and poisoned samples share one MSE
//! (mean over every element of the mixed batch, no per-group weighting).
//!
//! The per-timestep coefficients are computed the official way, in float32 with the unsimplified
//! R_t formula (whose float32 cancellation makes R_0 differ from the closed form by up to ~0.1%);
//! the noisy input follows diffusers' `add_noise` and then adds (1−√ᾱ_t)·R.
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use crate::poison::PoisonBatch;

/// The noise schedule's per-timestep α_t and ᾱ_t (float32), from which the loss takes its
/// coefficients.
#[derive(Debug)]
pub struct BackdoorSchedule {
    pub alphas: Tensor,
    pub alphas_cumprod: Tensor,
}

impl BackdoorSchedule {
    /// From β_t as diffusers' `DDPMScheduler` does it: α = 1 − β, ᾱ = cumprod(α), float32. This
    /// reproduces the official coefficients bit for bit.
    pub fn from_betas(betas: &Tensor) -> BackdoorSchedule {
        let alphas = 1f64 - betas.to_kind(Kind::Float);
        let alphas_cumprod = alphas.cumprod(0, Kind::Float);
        BackdoorSchedule {
            alphas,
            alphas_cumprod,
        }
    }

    /// From ᾱ_t alone (what a scheduler exposes), recovering α_t = ᾱ_t/ᾱ_{t−1} (α_0 = ᾱ_0); within
    /// float32 rounding of [`BackdoorSchedule::from_betas`].
    pub fn from_alphas_cumprod(alphas_cumprod: &Tensor) -> BackdoorSchedule {
        let ac = alphas_cumprod.to_kind(Kind::Float);
        let n = ac.size()[0];
        let prev = Tensor::cat(&[ac.narrow(0, 0, 1).ones_like(), ac.narrow(0, 0, n - 1)], 0);
        BackdoorSchedule {
            alphas: &ac / prev,
            alphas_cumprod: ac,
        }
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.alphas_cumprod.size()[0]
    }

    /// R_t for every timestep, as `q_sample_diffuser` computes it:
    /// `(1 − α_t ** 0.5) * (1 − ᾱ_t) ** 0.5 / (1 − α_t)`.
    pub fn r_coef(&self) -> Tensor {
        let sqrt_one_minus_ac = (1f64 - &self.alphas_cumprod).pow_tensor_scalar(0.5);
        (1f64 - self.alphas.pow_tensor_scalar(0.5)) * sqrt_one_minus_ac / (1f64 - &self.alphas)
    }
}

/// `(B,) → (B, 1, 1, 1)` (as many trailing ones as `like` has dimensions after the batch).
fn per_sample(t: Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim() - 1));
    t.reshape(shape)
}

/// `q_sample_diffuser`: the noisy input x′_t and the network's regression target ε + R_t·R.
/// `y`, `r`, `noise` are B×C×H×W on one device; `timesteps` int64 B (0-indexed).
pub fn q_sample_backdoor(
    sched: &BackdoorSchedule,
    y: &Tensor,
    r: &Tensor,
    timesteps: &Tensor,
    noise: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let b = y.size()[0];
    ensure!(
        r.size() == y.size() && noise.size() == y.size(),
        "target {:?}, pixel values {:?} and noise {:?} must have one shape",
        y.size(),
        r.size(),
        noise.size()
    );
    ensure!(
        timesteps.size() == [b],
        "expected {b} timesteps, got shape {:?}",
        timesteps.size()
    );
    let t_max = sched.num_train_timesteps();
    let (lo, hi) = (
        timesteps.min().int64_value(&[]),
        timesteps.max().int64_value(&[]),
    );
    ensure!(
        lo >= 0 && hi < t_max,
        "timesteps must lie in [0, {t_max}), got [{lo}, {hi}]"
    );
    let (dev, kind) = (y.device(), y.kind());
    let t = timesteps.to_device(dev).to_kind(Kind::Int64);
    let ac = sched
        .alphas_cumprod
        .to_device(dev)
        .to_kind(kind)
        .index_select(0, &t);
    let alphas = sched
        .alphas
        .to_device(dev)
        .to_kind(kind)
        .index_select(0, &t);
    let sqrt_ac = ac.pow_tensor_scalar(0.5);
    let sqrt_one_minus_ac = (1f64 - &ac).pow_tensor_scalar(0.5);
    let r_coef = (1f64 - alphas.pow_tensor_scalar(0.5)) * &sqrt_one_minus_ac / (1f64 - &alphas);
    // diffusers' add_noise, then the backdoor's mean shift.
    let noisy =
        per_sample(sqrt_ac.shallow_clone(), y) * y + per_sample(sqrt_one_minus_ac, y) * noise;
    let x_noisy = noisy + (1f64 - per_sample(sqrt_ac, y)) * r;
    let target = per_sample(r_coef, y) * r + noise;
    Ok((x_noisy, target))
}

/// The BadDiffusion training loss on a mixed batch: `mse(ε + R_t·R, ε_θ(x′_t, t))`, averaged
/// over all elements. The batch, timesteps and noise must be on the denoiser's device.
pub fn backdoor_loss(
    sched: &BackdoorSchedule,
    // ε_θ(x_t, t): the UNet in training, any closure in tests.
    denoiser: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    batch: &PoisonBatch,
    timesteps: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let (x_noisy, target) =
        q_sample_backdoor(sched, &batch.target, &batch.pixel_values, timesteps, noise)?;
    let predicted = denoiser(&x_noisy.contiguous(), &timesteps.contiguous());
    ensure!(
        predicted.size() == target.size(),
        "the denoiser returned shape {:?} for inputs of shape {:?}",
        predicted.size(),
        target.size()
    );
    Ok(target.mse_loss(&predicted, tch::Reduction::Mean))
}

#[cfg(test)]
mod tests;
