//! DPM-Solver multistep (Lu et al. 2022), orders 1 and 2, as diffusers'
//! `DPMSolverMultistepScheduler`.
//!
//! Works in σ-space (σ = √((1−ᾱ)/ᾱ)) and half-log-SNR λ = log α − log σ. `dpmsolver` integrates the
//! noise prediction, `dpmsolver++` the data prediction x̂₀. The second-order step reuses the
//! previous model output (multistep), and falls back to first order for the first step and, as
//! diffusers does, for the last one when `final_sigmas_type` is `zero`, `euler_at_final` is set,
//! or `lower_order_final` is set with fewer than 15 steps. It draws no random numbers.
use anyhow::{bail, Result};
use tch::Tensor;

use super::config::{AlgorithmType, FinalSigmasType, PredictionType, ResolvedConfig, SolverType};
use super::scalar::{exp, ln, pow, sqrt};
use super::schedule::{dpm_solver_timesteps, NoiseSchedule};

#[derive(Debug)]
pub struct DpmSolver {
    cfg: ResolvedConfig,
    alphas_cumprod: Tensor,
    /// σ over all training timesteps, float32.
    train_sigmas: Vec<f32>,
    timesteps: Vec<i64>,
    /// σ at each inference timestep plus the final σ.
    sigmas: Vec<f32>,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

/// (α_t, σ_t) of the VP process at noise level σ: α = 1/√(σ²+1), σ_t = σ·α.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / sqrt(pow(sigma, 2.0) + 1.0);
    (alpha, sigma * alpha)
}

fn lambda(alpha: f32, sigma: f32) -> f32 {
    ln(alpha) - ln(sigma)
}

impl DpmSolver {
    pub fn new(cfg: ResolvedConfig, schedule: &NoiseSchedule) -> Self {
        let ac = &schedule.alphas_cumprod;
        let sigmas = ((1f64 - ac) / ac).pow_tensor_scalar(0.5);
        DpmSolver {
            train_sigmas: Vec::<f32>::try_from(&sigmas).expect("1-D float tensor"),
            alphas_cumprod: ac.shallow_clone(),
            cfg,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            step_index: None,
        }
    }

    /// Sets the timesteps and σs and forgets the previous run's model outputs.
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let timesteps = dpm_solver_timesteps(&self.cfg, n, &self.alphas_cumprod)?;
        let mut sigmas = Vec::with_capacity(timesteps.len() + 1);
        for &t in &timesteps {
            match self.train_sigmas.get(t as usize) {
                Some(&s) if t >= 0 => sigmas.push(s),
                _ => bail!(
                    "timestep {t} is outside the {} training timesteps",
                    self.train_sigmas.len()
                ),
            }
        }
        sigmas.push(match self.cfg.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => self.train_sigmas[0],
        });
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.model_outputs = (0..self.cfg.solver_order).map(|_| None).collect();
        self.lower_order_nums = 0;
        self.step_index = None;
        Ok(())
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// σ at each inference timestep, then the final σ.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The model output in the form the algorithm integrates: x̂₀ for ++, ε otherwise.
    fn convert_model_output(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Tensor {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        let (alpha, sigma) = (alpha as f64, sigma as f64);
        match (self.cfg.algorithm_type, self.cfg.prediction_type) {
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::Epsilon) => {
                (sample - model_output * sigma) / alpha
            }
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::Sample) => {
                model_output.shallow_clone()
            }
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::VPrediction) => {
                sample * alpha - model_output * sigma
            }
            (AlgorithmType::DpmSolver, PredictionType::Epsilon) => model_output.shallow_clone(),
            (AlgorithmType::DpmSolver, PredictionType::Sample) => {
                (sample - model_output * alpha) / sigma
            }
            (AlgorithmType::DpmSolver, PredictionType::VPrediction) => {
                model_output * alpha + sample * sigma
            }
        }
    }

    fn first_order_update(&self, m: &Tensor, sample: &Tensor, i: usize) -> Tensor {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        match self.cfg.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => {
                sample * (sigma_t / sigma_s) as f64 - m * (alpha_t * (exp(-h) - 1.0)) as f64
            }
            AlgorithmType::DpmSolver => {
                sample * (alpha_t / alpha_s) as f64 - m * (sigma_t * (exp(h) - 1.0)) as f64
            }
        }
    }

    fn second_order_update(&self, sample: &Tensor, i: usize) -> Tensor {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (l_t, l_s0, l_s1) = (
            lambda(alpha_t, sigma_t),
            lambda(alpha_s0, sigma_s0),
            lambda(alpha_s1, sigma_s1),
        );
        let n = self.model_outputs.len();
        let m0 = self.model_outputs[n - 1]
            .as_ref()
            .expect("current output stored");
        let m1 = self.model_outputs[n - 2]
            .as_ref()
            .expect("previous output stored");
        let (h, h_0) = (l_t - l_s0, l_s0 - l_s1);
        let r0 = h_0 / h;
        let d1 = (m0 - m1) * (1.0 / r0) as f64;
        let (c_sample, c_d0, c_d1) = match (self.cfg.algorithm_type, self.cfg.solver_type) {
            (AlgorithmType::DpmSolverPlusPlus, solver) => {
                let e = alpha_t * (exp(-h) - 1.0);
                let c_d1 = match solver {
                    SolverType::Midpoint => -(0.5 * e),
                    SolverType::Heun => alpha_t * ((exp(-h) - 1.0) / h + 1.0),
                };
                (sigma_t / sigma_s0, e, c_d1)
            }
            (AlgorithmType::DpmSolver, solver) => {
                let e = sigma_t * (exp(h) - 1.0);
                let c_d1 = match solver {
                    SolverType::Midpoint => -(0.5 * e),
                    SolverType::Heun => -(sigma_t * ((exp(h) - 1.0) / h - 1.0)),
                };
                (alpha_t / alpha_s0, e, c_d1)
            }
        };
        // diffusers: A·x − B·D0 ∓ C·D1; subtracting C·D1 equals adding (−C)·D1 exactly.
        sample * c_sample as f64 - m0 * c_d0 as f64 + d1 * c_d1 as f64
    }

    pub fn step(&mut self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        if self.timesteps.is_empty() {
            bail!("DPM-Solver step before set_timesteps");
        }
        let len = self.timesteps.len();
        let i = match self.step_index {
            Some(i) if i < len => i,
            Some(_) => bail!(
                "DPM-Solver stepped past its {len} timesteps; call set_timesteps to start again"
            ),
            None => {
                // As diffusers: the first match, or the second when a timestep repeats.
                let hits: Vec<usize> = (0..len).filter(|&k| self.timesteps[k] == t).collect();
                match hits.len() {
                    0 => len - 1,
                    1 => hits[0],
                    _ => hits[1],
                }
            }
        };
        if self.timesteps[i] != t {
            bail!(
                "DPM-Solver step at timestep {t}, but the schedule expects {} next",
                self.timesteps[i]
            );
        }
        let cfg = &self.cfg;
        let lower_order_final = i == len - 1
            && (cfg.euler_at_final
                || (cfg.lower_order_final && len < 15)
                || cfg.final_sigmas_type == FinalSigmasType::Zero);
        let converted = self.convert_model_output(model_output, sample, i);
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(converted);
        let prev = if cfg.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            let m = self
                .model_outputs
                .last()
                .and_then(Option::as_ref)
                .expect("just stored");
            self.first_order_update(m, sample, i)
        } else {
            self.second_order_update(sample, i)
        };
        if self.lower_order_nums < self.cfg.solver_order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(prev)
    }
}
