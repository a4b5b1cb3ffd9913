"""Oracle for src/backdoor_loss.rs: the official BadDiffusion loss (loss.py q_sample_diffuser +
p_losses_diffuser) with diffusers' DDPMScheduler, on a fixed batch and a fixed analytic denoiser.

Inputs: y (target), R (pixel_values), timesteps (int64), noise. Args: T beta_start beta_end.
Denoiser (same in the Rust test): eps(x, t) = 0.5 * tanh(x) + 1e-3 * t.
Outputs: loss, x_noisy, target, r_coef (per timestep, all T), alphas_cumprod.
"""
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from oracle_io import io

inputs, save, args = io()
T, beta_start, beta_end = int(args[0]), float(args[1]), float(args[2])
sched = DDPMScheduler(num_train_timesteps=T, beta_start=beta_start, beta_end=beta_end, beta_schedule="linear")
y, R, timesteps, noise = inputs["y"], inputs["R"], inputs["timesteps"], inputs["noise"]


def per_sample(v):
    return v.reshape(len(y), *([1] * (y.dim() - 1)))


alphas_cumprod = sched.alphas_cumprod.to(dtype=y.dtype)
alphas = sched.alphas.to(dtype=y.dtype)
sqrt_ac_t = per_sample(alphas_cumprod[timesteps] ** 0.5)
r_coef_all = (1 - alphas**0.5) * (1 - alphas_cumprod) ** 0.5 / (1 - alphas)
r_coef_t = per_sample(r_coef_all[timesteps])

x_noisy = sched.add_noise(y, noise, timesteps) + (1 - sqrt_ac_t) * R
target = r_coef_t * R + noise
predicted = 0.5 * torch.tanh(x_noisy) + 1e-3 * per_sample(timesteps.to(y.dtype))
loss = F.mse_loss(target, predicted)

save({"loss": loss, "x_noisy": x_noisy, "target": target, "r_coef": r_coef_all, "alphas_cumprod": alphas_cumprod})
