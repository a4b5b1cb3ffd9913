//! The noise schedule (β, ᾱ) and the inference timesteps, computed with the same float32 tensor
//! ops (and the same float64 numpy arithmetic) as diffusers, so the tables agree bit for bit.
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::config::{BetaSchedule, ResolvedConfig};

/// β_t and ᾱ_t = ∏(1−β) over the training timesteps, float32 on the CPU.
#[derive(Debug)]
pub struct NoiseSchedule {
    pub betas: Tensor,
    pub alphas_cumprod: Tensor,
}

impl NoiseSchedule {
    /// The schedule of `cfg`, as diffusers' scheduler constructors compute it.
    pub fn new(cfg: &ResolvedConfig) -> Result<Self> {
        let t = cfg.num_train_timesteps as i64;
        let opts = (Kind::Float, Device::Cpu);
        let betas = if let Some(b) = &cfg.trained_betas {
            // `torch.tensor(list_of_python_floats, dtype=float32)`: each value rounded to f32.
            Tensor::from_slice(&b.iter().map(|&x| x as f32).collect::<Vec<_>>())
        } else {
            match cfg.beta_schedule {
                BetaSchedule::Linear => Tensor::linspace(cfg.beta_start, cfg.beta_end, t, opts),
                BetaSchedule::ScaledLinear => {
                    Tensor::linspace(cfg.beta_start.powf(0.5), cfg.beta_end.powf(0.5), t, opts)
                        .pow_tensor_scalar(2)
                }
                BetaSchedule::SquaredcosCapV2 => {
                    Tensor::from_slice(&cosine_betas(cfg.num_train_timesteps))
                }
            }
        };
        if cfg.trained_betas.is_none()
            && cfg.beta_schedule != BetaSchedule::SquaredcosCapV2
            && cfg.beta_end >= 1.0
        {
            bail!(
                "scheduler config: beta_end {} must be below 1",
                cfg.beta_end
            );
        }
        let alphas_cumprod = (1f64 - &betas).cumprod(0, Kind::Float);
        Ok(NoiseSchedule {
            betas,
            alphas_cumprod,
        })
    }

    /// ᾱ as plain numbers, for the per-step scalar arithmetic of the schedulers.
    pub fn alphas_cumprod_vec(&self) -> Vec<f32> {
        Vec::<f32>::try_from(&self.alphas_cumprod).expect("alphas_cumprod is a 1-D float tensor")
    }
}

/// Improved DDPM's cosine schedule (`betas_for_alpha_bar`), in float64 then rounded to float32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `np.linspace(start, stop, num)`: `i·step + start`, with the last value set to `stop`.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = y.last_mut() {
        *last = stop;
    }
    y
}

/// `np.arange(start, stop, step)` for float steps: numpy fills `start + i·((start+step)−start)`.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 1 {
                start + step
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// Inference timesteps of DDPM and DDIM (`set_timesteps`), in sampling order (descending).
pub(crate) fn ddpm_timesteps(cfg: &ResolvedConfig, n: usize) -> Result<Vec<i64>> {
    use super::config::TimestepSpacing::*;
    let train = cfg.num_train_timesteps;
    check_steps(n, train)?;
    Ok(match cfg.timestep_spacing {
        Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .iter()
            .rev()
            .map(|x| x.round_ties_even() as i64)
            .collect(),
        Leading => {
            let ratio = (train / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| i * ratio + cfg.steps_offset)
                .collect()
        }
        Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(train as f64, 0.0, -ratio)
                .iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect()
        }
    })
}

/// Inference timesteps of DPM-Solver multistep: `n + 1` points with the final 0 dropped, over
/// the training range cut at `lambda_min_clipped`.
pub(crate) fn dpm_solver_timesteps(
    cfg: &ResolvedConfig,
    n: usize,
    alphas_cumprod: &Tensor,
) -> Result<Vec<i64>> {
    use super::config::TimestepSpacing::*;
    let train = cfg.num_train_timesteps;
    check_steps(n, train)?;
    // λ_t = log α_t − log σ_t in float32; count how many (in ascending order) lie below the clip.
    let lambda = alphas_cumprod.sqrt().log() - (1f64 - alphas_cumprod).sqrt().log();
    let lambda = Vec::<f32>::try_from(&lambda.flip([0]))?;
    let clipped = lambda
        .iter()
        .filter(|&&l| (l as f64) < cfg.lambda_min_clipped)
        .count();
    let last = (train - clipped) as i64;
    Ok(match cfg.timestep_spacing {
        Linspace => {
            let t = np_linspace(0.0, (last - 1) as f64, n + 1);
            t.iter()
                .rev()
                .take(n)
                .map(|x| x.round_ties_even() as i64)
                .collect()
        }
        Leading => {
            let ratio = last / (n as i64 + 1);
            (1..=n as i64)
                .rev()
                .map(|i| i * ratio + cfg.steps_offset)
                .collect()
        }
        Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(last as f64, 0.0, -ratio)
                .iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect()
        }
    })
}

fn check_steps(n: usize, train: usize) -> Result<()> {
    if n == 0 {
        bail!("num_inference_steps must be at least 1");
    }
    if n > train {
        bail!("num_inference_steps {n} exceeds num_train_timesteps {train}: a model can only be sampled at the timesteps it was trained on");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_helpers_follow_numpy() {
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(np_linspace(0.0, 10.0, 3), vec![0.0, 5.0, 10.0]);
        // arange with a float step keeps numpy's length rule: ceil((stop - start) / step).
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(np_arange(10.0, 0.0, -3.0).len(), 4);
    }
}
