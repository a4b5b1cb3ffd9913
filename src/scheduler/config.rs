//! A diffusers `scheduler_config.json`, read strictly.
//!
//! diffusers builds every scheduler class from the same config (`from_config`), each class taking
//! the fields it knows and falling back to its own defaults for the rest. [`SchedulerConfig`]
//! therefore keeps what the file says (`None` = absent) and [`SchedulerConfig::resolve`] fills in
//! the defaults of the sampler that will use it. A field we do not implement, or a value that
//! would change the maths in a way we do not reproduce, is an error naming the field: silently
//! ignoring it would make our samples differ from diffusers' without anyone noticing.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use super::SamplerKind;

/// How the betas are laid out over the training timesteps (`beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)` in float32: the DDPM paper's and the official code's schedule (`model.py:587-588`).
    Linear,
    /// `linspace(√beta_start, √beta_end, T)²` (latent diffusion).
    ScaledLinear,
    /// The cosine ᾱ of improved DDPM, discretised in float64, betas capped at 0.999.
    SquaredcosCapV2,
}

/// The variance σ_t² of DDPM's ancestral step (`variance_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    /// σ² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (clamped ≥ 1e-20).
    FixedSmall,
    /// σ = exp(½·log β̃_t): the same as `FixedSmall` up to rounding.
    FixedSmallLog,
    /// σ² = β_t: `google/ddpm-cifar10-32`'s setting.
    FixedLarge,
}

/// What the network predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
}

/// How fewer inference steps are spread over the training timesteps (`timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// DPM-Solver's formulation (`algorithm_type`): noise prediction or data prediction (++).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgorithmType {
    DpmSolver,
    DpmSolverPlusPlus,
}

/// DPM-Solver's second-order update rule (`solver_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// The σ after the last DPM-Solver step (`final_sigmas_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The spelling diffusers uses in `scheduler_config.json`.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
            fn parse(field: &str, s: &str, extra_help: &str) -> Result<Self> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => bail!(
                        "scheduler config: {field} \"{s}\" is not supported; use one of {}{extra_help}",
                        [$($name),+].join(", ")
                    ),
                }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(stringify!($ty), s, "")
            }
        }
    };
}
names!(BetaSchedule { Linear = "linear", ScaledLinear = "scaled_linear", SquaredcosCapV2 = "squaredcos_cap_v2" });
names!(VarianceType { FixedSmall = "fixed_small", FixedSmallLog = "fixed_small_log", FixedLarge = "fixed_large" });
names!(PredictionType { Epsilon = "epsilon", Sample = "sample", VPrediction = "v_prediction" });
names!(TimestepSpacing { Leading = "leading", Trailing = "trailing", Linspace = "linspace" });
names!(AlgorithmType { DpmSolver = "dpmsolver", DpmSolverPlusPlus = "dpmsolver++" });
names!(SolverType { Midpoint = "midpoint", Heun = "heun" });
names!(FinalSigmasType { Zero = "zero", SigmaMin = "sigma_min" });

/// What a `scheduler_config.json` says; `None` where the file is silent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: recorded only; any sampler may be built from any config, as in diffusers.
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: Option<VarianceType>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub prediction_type: Option<PredictionType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<i64>,
    pub set_alpha_to_one: Option<bool>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<AlgorithmType>,
    pub solver_type: Option<SolverType>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub final_sigmas_type: Option<FinalSigmasType>,
    pub lambda_min_clipped: Option<f64>,
}

/// Fields that describe the file, not the maths.
const METADATA: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_use_default_values",
    "tensor_format",
];

/// Fields that only matter for a feature we refuse elsewhere (thresholding, flow sigmas, the
/// official code's `clip_defense`, whose range its vendored diffusers saves in every scheduler
/// config: `scheduling_ddpm.py:137-138` of IBM/BadDiffusion).
const INERT: &[&str] = &[
    "clip_defense_range",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "flow_shift",
    "time_shift_type",
];

/// Fields accepted only at the value that leaves the maths as we implement it.
const MUST_BE: &[(&str, Value)] = &[
    ("thresholding", Value::Bool(false)),
    ("rescale_betas_zero_snr", Value::Bool(false)),
    ("use_karras_sigmas", Value::Bool(false)),
    ("use_exponential_sigmas", Value::Bool(false)),
    ("use_beta_sigmas", Value::Bool(false)),
    ("use_lu_lambdas", Value::Bool(false)),
    ("use_flow_sigmas", Value::Bool(false)),
    ("use_dynamic_shifting", Value::Bool(false)),
    ("clip_defense", Value::Bool(false)),
];

impl SchedulerConfig {
    /// Reads `scheduler_config.json` (diffusers writes `-Infinity` for `lambda_min_clipped`, which
    /// is not JSON; it is accepted here).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(&quote_non_finite(text))
            .context("scheduler config is not valid JSON")?;
        Self::from_json(&value)
    }

    /// Reads a parsed config object, refusing anything that would change the maths unseen.
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| anyhow!("scheduler config must be a JSON object, got {value}"))?;
        let mut c = SchedulerConfig::default();
        for (key, v) in obj {
            let k = key.as_str();
            if METADATA.contains(&k) {
                if k == "_class_name" {
                    c.class_name = v.as_str().map(str::to_owned);
                }
                continue;
            }
            if INERT.contains(&k) {
                continue;
            }
            if let Some((_, want)) = MUST_BE.iter().find(|(name, _)| *name == k) {
                if v != want && !v.is_null() {
                    bail!("scheduler config: {k} = {v} is not supported (only {want}); remove the field or set it to {want}");
                }
                continue;
            }
            match k {
                "num_train_timesteps" => c.num_train_timesteps = Some(uint(k, v)? as usize),
                "beta_start" => c.beta_start = Some(num(k, v)?),
                "beta_end" => c.beta_end = Some(num(k, v)?),
                "beta_schedule" => {
                    c.beta_schedule = Some(BetaSchedule::parse(k, string(k, v)?, "")?)
                }
                "trained_betas" if v.is_null() => {}
                "trained_betas" => {
                    let arr = v.as_array().ok_or_else(|| {
                        anyhow!("scheduler config: trained_betas must be a list of numbers or null")
                    })?;
                    c.trained_betas = Some(arr.iter().map(|b| num(k, b)).collect::<Result<_>>()?);
                }
                "variance_type" if v.is_null() => {}
                "variance_type" => {
                    let help = "; fixed_large_log gives NaN in diffusers and the learned variants need a 2C-channel model";
                    c.variance_type = Some(VarianceType::parse(k, string(k, v)?, help)?)
                }
                "clip_sample" => c.clip_sample = Some(boolean(k, v)?),
                "clip_sample_range" => c.clip_sample_range = Some(num(k, v)?),
                "prediction_type" => {
                    c.prediction_type = Some(PredictionType::parse(k, string(k, v)?, "")?)
                }
                "timestep_spacing" => {
                    c.timestep_spacing = Some(TimestepSpacing::parse(k, string(k, v)?, "")?)
                }
                "steps_offset" => c.steps_offset = Some(uint(k, v)? as i64),
                "set_alpha_to_one" => c.set_alpha_to_one = Some(boolean(k, v)?),
                "solver_order" => c.solver_order = Some(uint(k, v)? as usize),
                "algorithm_type" => {
                    let help = " (the SDE variants are not implemented)";
                    c.algorithm_type = Some(AlgorithmType::parse(k, string(k, v)?, help)?)
                }
                "solver_type" => c.solver_type = Some(SolverType::parse(k, string(k, v)?, "")?),
                "lower_order_final" => c.lower_order_final = Some(boolean(k, v)?),
                "euler_at_final" => c.euler_at_final = Some(boolean(k, v)?),
                "final_sigmas_type" => {
                    c.final_sigmas_type = Some(FinalSigmasType::parse(k, string(k, v)?, "")?)
                }
                "lambda_min_clipped" if v.is_null() => {}
                "lambda_min_clipped" => c.lambda_min_clipped = Some(num(k, v)?),
                _ => bail!(
                    "scheduler config: field \"{k}\" is not supported by this implementation; \
                     it may change the sampler's maths, so remove it only if you know it does not"
                ),
            }
        }
        Ok(c)
    }

    /// This config as `kind` sees it: the file's values, the class defaults of diffusers'
    /// scheduler for the rest, and the checks diffusers' constructor makes.
    pub fn resolve(&self, kind: SamplerKind) -> Result<ResolvedConfig> {
        let dpm = matches!(kind, SamplerKind::DpmSolver);
        let r = ResolvedConfig {
            kind,
            num_train_timesteps: self.num_train_timesteps.unwrap_or(1000),
            beta_start: self.beta_start.unwrap_or(0.0001),
            beta_end: self.beta_end.unwrap_or(0.02),
            beta_schedule: self.beta_schedule.unwrap_or(BetaSchedule::Linear),
            trained_betas: self.trained_betas.clone(),
            variance_type: self.variance_type.unwrap_or(VarianceType::FixedSmall),
            clip_sample: if dpm {
                false
            } else {
                self.clip_sample.unwrap_or(true)
            },
            clip_sample_range: self.clip_sample_range.unwrap_or(1.0),
            prediction_type: self.prediction_type.unwrap_or(PredictionType::Epsilon),
            timestep_spacing: self.timestep_spacing.unwrap_or(if dpm {
                TimestepSpacing::Linspace
            } else {
                TimestepSpacing::Leading
            }),
            steps_offset: self.steps_offset.unwrap_or(0),
            set_alpha_to_one: self.set_alpha_to_one.unwrap_or(true),
            solver_order: self.solver_order.unwrap_or(2),
            algorithm_type: self
                .algorithm_type
                .unwrap_or(AlgorithmType::DpmSolverPlusPlus),
            solver_type: self.solver_type.unwrap_or(SolverType::Midpoint),
            lower_order_final: self.lower_order_final.unwrap_or(true),
            euler_at_final: self.euler_at_final.unwrap_or(false),
            final_sigmas_type: self.final_sigmas_type.unwrap_or(FinalSigmasType::Zero),
            lambda_min_clipped: self.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
        };
        if r.num_train_timesteps == 0 {
            bail!("scheduler config: num_train_timesteps must be at least 1");
        }
        if let Some(b) = &r.trained_betas {
            if b.len() != r.num_train_timesteps {
                bail!(
                    "scheduler config: trained_betas has {} values but num_train_timesteps is {}",
                    b.len(),
                    r.num_train_timesteps
                );
            }
        }
        if dpm {
            if !(1..=2).contains(&r.solver_order) {
                bail!(
                    "scheduler config: solver_order {} is not supported for DPM-Solver; use 1 or 2",
                    r.solver_order
                );
            }
            if r.algorithm_type == AlgorithmType::DpmSolver
                && r.final_sigmas_type == FinalSigmasType::Zero
            {
                bail!(
                    "scheduler config: final_sigmas_type \"zero\" is not supported with algorithm_type \"dpmsolver\" \
                     (diffusers refuses it too); set final_sigmas_type to \"sigma_min\""
                );
            }
        }
        Ok(r)
    }
}

/// A config with every field the sampler uses filled in: what a run record stores.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    pub kind: SamplerKind,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub set_alpha_to_one: bool,
    pub solver_order: usize,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmasType,
    pub lambda_min_clipped: f64,
}

impl ResolvedConfig {
    /// The config in diffusers' spelling, with only the fields `kind`'s scheduler reads, under the
    /// diffusers class name; loading it with that class reproduces our sampler.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("_class_name".into(), json!(self.kind.diffusers_class()));
        m.insert(
            "num_train_timesteps".into(),
            json!(self.num_train_timesteps),
        );
        m.insert("beta_start".into(), json!(self.beta_start));
        m.insert("beta_end".into(), json!(self.beta_end));
        m.insert("beta_schedule".into(), json!(self.beta_schedule.name()));
        m.insert("trained_betas".into(), json!(self.trained_betas));
        m.insert("prediction_type".into(), json!(self.prediction_type.name()));
        m.insert("thresholding".into(), json!(false));
        m.insert(
            "timestep_spacing".into(),
            json!(self.timestep_spacing.name()),
        );
        m.insert("steps_offset".into(), json!(self.steps_offset));
        match self.kind {
            SamplerKind::Ddpm => {
                m.insert("variance_type".into(), json!(self.variance_type.name()));
                m.insert("clip_sample".into(), json!(self.clip_sample));
                m.insert("clip_sample_range".into(), json!(self.clip_sample_range));
            }
            SamplerKind::Ddim { .. } => {
                m.insert("clip_sample".into(), json!(self.clip_sample));
                m.insert("clip_sample_range".into(), json!(self.clip_sample_range));
                m.insert("set_alpha_to_one".into(), json!(self.set_alpha_to_one));
            }
            SamplerKind::DpmSolver => {
                m.insert("solver_order".into(), json!(self.solver_order));
                m.insert("algorithm_type".into(), json!(self.algorithm_type.name()));
                m.insert("solver_type".into(), json!(self.solver_type.name()));
                m.insert("lower_order_final".into(), json!(self.lower_order_final));
                m.insert("euler_at_final".into(), json!(self.euler_at_final));
                m.insert(
                    "final_sigmas_type".into(),
                    json!(self.final_sigmas_type.name()),
                );
                // JSON has no infinities; diffusers' own default is -inf, written here as null.
                let l = self.lambda_min_clipped;
                m.insert(
                    "lambda_min_clipped".into(),
                    if l.is_finite() { json!(l) } else { Value::Null },
                );
            }
        }
        Value::Object(m)
    }
}

fn num(k: &str, v: &Value) -> Result<f64> {
    match v.as_str() {
        Some("-Infinity") => return Ok(f64::NEG_INFINITY),
        Some("Infinity") => return Ok(f64::INFINITY),
        _ => {}
    }
    v.as_f64()
        .ok_or_else(|| anyhow!("scheduler config: {k} must be a number, got {v}"))
}

fn uint(k: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| anyhow!("scheduler config: {k} must be a non-negative integer, got {v}"))
}

fn boolean(k: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| anyhow!("scheduler config: {k} must be true or false, got {v}"))
}

fn string<'a>(k: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| anyhow!("scheduler config: {k} must be a string, got {v}"))
}

/// Python's `json` writes ±Infinity and NaN bare, which is not JSON: quote them (outside
/// strings) so that serde_json parses the file and [`num`] reads them back as numbers.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    'scan: while let Some(ch) = rest.chars().next() {
        if in_string {
            in_string = !(ch == '"' && !escaped);
            escaped = ch == '\\' && !escaped;
        } else if ch == '"' {
            in_string = true;
        } else {
            for word in ["-Infinity", "Infinity", "NaN"] {
                if let Some(tail) = rest.strip_prefix(word) {
                    out.push_str(&format!("\"{word}\""));
                    rest = tail;
                    continue 'scan;
                }
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;

    /// `google/ddpm-cifar10-32`'s scheduler config as its `scheduler_config.json` gives it.
    const CIFAR10: &str = r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
        "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true, "num_train_timesteps": 1000,
        "trained_betas": null, "variance_type": "fixed_large"}"#;

    #[test]
    fn reads_the_cifar10_checkpoint_config() {
        let c = SchedulerConfig::from_json_str(CIFAR10).unwrap();
        assert_eq!(c.class_name.as_deref(), Some("DDPMScheduler"));
        assert_eq!(c.variance_type, Some(VarianceType::FixedLarge));
        assert_eq!(c.clip_sample, Some(true));
        let r = c.resolve(SamplerKind::Ddpm).unwrap();
        assert_eq!(
            (r.num_train_timesteps, r.beta_schedule),
            (1000, BetaSchedule::Linear)
        );
        assert_eq!(r.timestep_spacing, TimestepSpacing::Leading);
        // diffusers' DPM-Solver class defaults apply when the same config builds it.
        let d = c.resolve(SamplerKind::DpmSolver).unwrap();
        assert_eq!(d.timestep_spacing, TimestepSpacing::Linspace);
        assert_eq!(
            (d.solver_order, d.algorithm_type),
            (2, AlgorithmType::DpmSolverPlusPlus)
        );
        assert!(!d.clip_sample);
    }

    #[test]
    fn accepts_python_infinity() {
        let c = SchedulerConfig::from_json_str(
            r#"{"lambda_min_clipped": -Infinity, "_class_name": "Infinity"}"#,
        )
        .unwrap();
        assert_eq!(c.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(c.class_name.as_deref(), Some("Infinity"));
    }

    fn err(json: &str) -> String {
        format!("{:#}", SchedulerConfig::from_json_str(json).unwrap_err())
    }

    #[test]
    fn refuses_what_would_change_the_maths() {
        assert!(err(r#"{"beta_schedule": "sigmoidal"}"#).contains("beta_schedule \"sigmoidal\""));
        assert!(err(r#"{"thresholding": true}"#).contains("thresholding"));
        assert!(err(r#"{"use_karras_sigmas": true}"#).contains("use_karras_sigmas"));
        assert!(err(r#"{"variance_type": "learned_range"}"#)
            .contains("variance_type \"learned_range\""));
        assert!(err(r#"{"algorithm_type": "sde-dpmsolver++"}"#).contains("SDE"));
        assert!(err(r#"{"karras_rho": 7}"#).contains("field \"karras_rho\""));
        assert!(err(r#"{"clip_sample": "yes"}"#).contains("clip_sample must be true or false"));
        // Settings that only exist together with a refused feature pass untouched.
        SchedulerConfig::from_json_str(r#"{"thresholding": false, "sample_max_value": 1.0}"#)
            .unwrap();
    }

    #[test]
    fn refuses_inconsistent_resolutions() {
        let c = SchedulerConfig::from_json_str(r#"{"algorithm_type": "dpmsolver"}"#).unwrap();
        let e = format!("{:#}", c.resolve(SamplerKind::DpmSolver).unwrap_err());
        assert!(e.contains("final_sigmas_type"), "{e}");
        let c = SchedulerConfig::from_json_str(r#"{"solver_order": 3}"#).unwrap();
        assert!(
            format!("{:#}", c.resolve(SamplerKind::DpmSolver).unwrap_err())
                .contains("solver_order 3")
        );
        let c = SchedulerConfig::from_json_str(
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#,
        )
        .unwrap();
        assert!(format!("{:#}", c.resolve(SamplerKind::Ddpm).unwrap_err())
            .contains("trained_betas has 2"));
    }

    #[test]
    fn resolved_json_round_trips() {
        let c = SchedulerConfig::from_json_str(CIFAR10).unwrap();
        // What a run record stores reads back as the same sampler settings.
        for kind in [
            SamplerKind::Ddpm,
            SamplerKind::Ddim { eta: 0.5 },
            SamplerKind::DpmSolver,
        ] {
            let written = c.resolve(kind).unwrap().to_json();
            let back = SchedulerConfig::from_json(&written)
                .unwrap()
                .resolve(kind)
                .unwrap();
            assert_eq!(back.to_json(), written);
        }
    }
}
