//! Diffusion schedulers (samplers): DDPM, DDIM and DPM-Solver multistep, ported from diffusers so
//! that a checkpoint samples the same here as in diffusers (the checkpoints' `scheduler_config.json`; official `model.py:586-588`).
//!
//! A [`Sampler`] is built from a checkpoint's [`SchedulerConfig`], a [`SamplerKind`] and the
//! caller's [`Overrides`], then used as diffusers' schedulers are: `set_timesteps(n)`, and for each
//! of `timesteps()` a `step(model_output, t, sample, rng)`. The sampling loop is in
//! [`crate::sampling`].
pub mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod scalar;
mod schedule;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use tch::Tensor;

pub use config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, ResolvedConfig, SchedulerConfig,
    SolverType, TimestepSpacing, VarianceType,
};
pub use schedule::NoiseSchedule;

use crate::rng::Rng;

/// Which scheduler samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Ancestral DDPM (`DDPMScheduler`), what the paper samples with (the official pipeline's 1000 steps).
    Ddpm,
    /// DDIM (`DDIMScheduler`) with its η.
    Ddim { eta: f64 },
    /// DPM-Solver multistep (`DPMSolverMultistepScheduler`), settings from the config.
    DpmSolver,
}

impl SamplerKind {
    /// The diffusers scheduler class this kind mirrors.
    pub fn diffusers_class(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "DDPMScheduler",
            SamplerKind::Ddim { .. } => "DDIMScheduler",
            SamplerKind::DpmSolver => "DPMSolverMultistepScheduler",
        }
    }

    /// The command-line name: `ddpm`, `ddim` or `dpm-solver`.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim { .. } => "ddim",
            SamplerKind::DpmSolver => "dpm-solver",
        }
    }
}

impl SamplerKind {
    /// Inference steps when none are asked for: the diffusers pipelines' defaults (DDPM: every
    /// training step; DDIM 50; DPM-Solver 20).
    pub fn default_steps(self, train_timesteps: usize) -> usize {
        match self {
            SamplerKind::Ddpm => train_timesteps,
            SamplerKind::Ddim { .. } => 50,
            SamplerKind::DpmSolver => 20,
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Written by name (`ddpm`, `ddim`, `dpm-solver`), as profiles and stage keys spell it; a DDIM
/// with η ≠ 0 has no name and is refused rather than written as plain `ddim`.
impl serde::Serialize for SamplerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SamplerKind::Ddim { eta } if *eta != 0.0 => Err(serde::ser::Error::custom(format!(
                "DDIM with eta {eta} has no name to write (only eta 0 is `ddim`)"
            ))),
            k => s.serialize_str(k.name()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SamplerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for SamplerKind {
    type Err = anyhow::Error;
    /// `ddpm`, `ddim` (η = 0; set `eta` afterwards) or `dpm-solver`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "ddim" => Ok(SamplerKind::Ddim { eta: 0.0 }),
            "dpm-solver" | "dpmsolver" => Ok(SamplerKind::DpmSolver),
            _ => bail!("unknown sampler \"{s}\": use ddpm, ddim or dpm-solver"),
        }
    }
}

/// Where sampling clamps values to [−1, 1] (official `--fclip`, clamping x̂₀; paper §4.6.2, clamping x_t).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clip {
    /// No clamping: the paper's "without clipping" (`--fclip o`).
    None,
    /// Clamp the predicted x̂₀ to ±`clip_sample_range` each step: diffusers' `clip_sample`, what
    /// the official code's `--fclip w` does and what produced the released numbers.
    X0,
    /// Clamp the sample x_{t−1} to [−1, 1] after each step: the paper's inference-time clipping
    /// defense (§4.6.2). diffusers has no such option.
    Xt,
}

impl Clip {
    pub fn name(self) -> &'static str {
        match self {
            Clip::None => "none",
            Clip::X0 => "x0",
            Clip::Xt => "xt",
        }
    }
}

impl fmt::Display for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Clip {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Clip::None),
            "x0" => Ok(Clip::X0),
            "xt" => Ok(Clip::Xt),
            _ => bail!("unknown clip mode \"{s}\": use none, x0 or xt"),
        }
    }
}

/// Settings the caller asks for on top of the checkpoint's scheduler config. A request that
/// contradicts a value the config states is refused unless `allow_contradiction` is set, so that
/// sampling a checkpoint differently from how it was published is always a deliberate choice.
/// Fields the config leaves out may be set freely.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `None` follows the config: x0 when `clip_sample` is true (DDPM, DDIM), else none.
    pub clip: Option<Clip>,
    pub variance_type: Option<VarianceType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub algorithm_type: Option<AlgorithmType>,
    pub solver_order: Option<usize>,
    pub solver_type: Option<SolverType>,
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// Accept requests that contradict the config (recorded in the run's resolved config).
    pub allow_contradiction: bool,
}

/// Sets `slot` to `want`, refusing to overwrite a different stated value without permission.
fn apply<T: PartialEq + Copy + fmt::Debug>(
    field: &str,
    slot: &mut Option<T>,
    want: Option<T>,
    show: impl Fn(T) -> String,
    allow: bool,
) -> Result<()> {
    if let Some(w) = want {
        if let Some(have) = *slot {
            if have != w && !allow {
                bail!(
                    "requested {field} {} contradicts the checkpoint's scheduler config ({field} = {}); \
                     pass the override flag to sample against the config anyway",
                    show(w),
                    show(have)
                );
            }
        }
        *slot = Some(w);
    }
    Ok(())
}

#[derive(Debug)]
enum Inner {
    Ddpm(ddpm::Ddpm),
    Ddim(ddim::Ddim),
    DpmSolver(dpm_solver::DpmSolver),
}

/// One of the three schedulers plus the clipping mode, with diffusers' scheduler API.
#[derive(Debug)]
pub struct Sampler {
    kind: SamplerKind,
    clip: Clip,
    config: ResolvedConfig,
    inner: Inner,
}

impl Sampler {
    /// Builds `kind` from a checkpoint's config and the caller's overrides.
    pub fn new(kind: SamplerKind, config: &SchedulerConfig, overrides: &Overrides) -> Result<Self> {
        let ov = overrides;
        let allow = ov.allow_contradiction;
        let mut c = config.clone();
        let dpm = kind == SamplerKind::DpmSolver;
        if ov.variance_type.is_some() && kind != SamplerKind::Ddpm {
            bail!(
                "variance_type only applies to the ddpm sampler, not {}",
                kind.name()
            );
        }
        let dpm_only = [
            ov.algorithm_type.is_some(),
            ov.solver_order.is_some(),
            ov.solver_type.is_some(),
        ];
        if !dpm && (dpm_only.contains(&true) || ov.final_sigmas_type.is_some()) {
            bail!("algorithm_type, solver_order, solver_type and final_sigmas_type only apply to the dpm-solver sampler");
        }
        apply(
            "variance_type",
            &mut c.variance_type,
            ov.variance_type,
            |v| v.name().into(),
            allow,
        )?;
        apply(
            "timestep_spacing",
            &mut c.timestep_spacing,
            ov.timestep_spacing,
            |v| v.name().into(),
            allow,
        )?;
        apply(
            "algorithm_type",
            &mut c.algorithm_type,
            ov.algorithm_type,
            |v| v.name().into(),
            allow,
        )?;
        apply(
            "solver_order",
            &mut c.solver_order,
            ov.solver_order,
            |v| v.to_string(),
            allow,
        )?;
        apply(
            "solver_type",
            &mut c.solver_type,
            ov.solver_type,
            |v| v.name().into(),
            allow,
        )?;
        apply(
            "final_sigmas_type",
            &mut c.final_sigmas_type,
            ov.final_sigmas_type,
            |v| v.name().into(),
            allow,
        )?;
        let clip = if dpm {
            // diffusers' DPM-Solver ignores clip_sample, so the config cannot be contradicted.
            match ov.clip.unwrap_or(Clip::None) {
                Clip::X0 => bail!(
                    "clip x0 is not available for dpm-solver (diffusers' DPMSolverMultistepScheduler has no \
                     clip_sample); use clip none or xt"
                ),
                other => other,
            }
        } else {
            let stated = c.clip_sample.unwrap_or(true);
            let clip = ov
                .clip
                .unwrap_or(if stated { Clip::X0 } else { Clip::None });
            let want = Some(clip == Clip::X0);
            apply(
                "clip_sample",
                &mut c.clip_sample,
                want,
                |v| v.to_string(),
                allow,
            )
            .map_err(|e| {
                e.context(format!(
                    "clip mode {clip} sets clip_sample to {}",
                    clip == Clip::X0
                ))
            })?;
            clip
        };
        let config = c.resolve(kind)?;
        let schedule = NoiseSchedule::new(&config)?;
        let inner = match kind {
            SamplerKind::Ddpm => Inner::Ddpm(ddpm::Ddpm::new(config.clone(), &schedule)),
            SamplerKind::Ddim { eta } => {
                Inner::Ddim(ddim::Ddim::new(config.clone(), eta, &schedule)?)
            }
            SamplerKind::DpmSolver => {
                Inner::DpmSolver(dpm_solver::DpmSolver::new(config.clone(), &schedule))
            }
        };
        Ok(Sampler {
            kind,
            clip,
            config,
            inner,
        })
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    pub fn clip(&self) -> Clip {
        self.clip
    }

    /// The config this sampler runs with, every field resolved.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// Chooses `n` inference timesteps (diffusers' spacing rules) and resets any solver state.
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        match &mut self.inner {
            Inner::Ddpm(s) => s.set_timesteps(n),
            Inner::Ddim(s) => s.set_timesteps(n),
            Inner::DpmSolver(s) => s.set_timesteps(n),
        }
    }

    /// The inference timesteps in sampling order (descending); empty before `set_timesteps`.
    pub fn timesteps(&self) -> &[i64] {
        match &self.inner {
            Inner::Ddpm(s) => s.timesteps(),
            Inner::Ddim(s) => s.timesteps(),
            Inner::DpmSolver(s) => s.timesteps(),
        }
    }

    /// DPM-Solver's σ at each inference timestep plus the final σ; `None` for the other kinds.
    pub fn dpm_sigmas(&self) -> Option<&[f32]> {
        match &self.inner {
            Inner::DpmSolver(s) => Some(s.sigmas()),
            _ => None,
        }
    }

    /// x_t → x_{t'}: one scheduler step, then the `xt` clamp if that mode is on. Variance noise
    /// (DDPM at t > 0, DDIM with η > 0) is drawn from `rng` on the CPU, shaped like `model_output`.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        t: i64,
        sample: &Tensor,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if model_output.size() != sample.size() {
            bail!(
                "model output shape {:?} differs from the sample's {:?}",
                model_output.size(),
                sample.size()
            );
        }
        let prev = match &mut self.inner {
            Inner::Ddpm(s) => s.step(model_output, t, sample, rng)?,
            Inner::Ddim(s) => s.step(model_output, t, sample, rng)?,
            Inner::DpmSolver(s) => s.step(model_output, t, sample)?,
        };
        Ok(match self.clip {
            Clip::Xt => prev.clamp(-1.0, 1.0),
            Clip::None | Clip::X0 => prev,
        })
    }
}
