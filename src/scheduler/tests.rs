//! Scheduler tables against diffusers, and the refusals of bad settings.
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use super::*;
use crate::testing::{assert_close, oracle};

/// (name, diffusers class, config, inference steps): every beta schedule and spacing, step counts
/// that divide T and that do not (numpy's float arange and round-half-even matter there).
fn table_cases() -> Vec<(String, &'static str, Value, usize)> {
    let linear = json!({"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02});
    let with = |base: &Value, extra: Value| {
        let mut m = base.as_object().unwrap().clone();
        m.extend(extra.as_object().unwrap().clone());
        Value::Object(m)
    };
    let scaled =
        json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012});
    let cosine = json!({"beta_schedule": "squaredcos_cap_v2"});
    let short = json!({"num_train_timesteps": 20});
    let mut cases = vec![];
    for n in [1, 10, 16, 50, 333, 1000] {
        cases.push((format!("ddpm_lead_{n}"), "ddpm", linear.clone(), n));
    }
    for n in [7, 16, 30] {
        cases.push((
            format!("ddpm_trail_{n}"),
            "ddpm",
            with(&linear, json!({"timestep_spacing": "trailing"})),
            n,
        ));
        cases.push((
            format!("ddpm_lin_{n}"),
            "ddpm",
            with(&linear, json!({"timestep_spacing": "linspace"})),
            n,
        ));
    }
    cases.push((
        "ddpm_offset".into(),
        "ddpm",
        with(&linear, json!({"steps_offset": 1})),
        50,
    ));
    cases.push((
        "ddpm_cosine".into(),
        "ddpm",
        with(&cosine, json!({"timestep_spacing": "linspace"})),
        25,
    ));
    cases.push(("ddpm_short".into(), "ddpm", short.clone(), 20));
    cases.push((
        "ddpm_short_trail".into(),
        "ddpm",
        with(&short, json!({"timestep_spacing": "trailing"})),
        6,
    ));
    cases.push((
        "ddpm_trained".into(),
        "ddpm",
        json!({"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4]}),
        4,
    ));
    cases.push((
        "ddim_scaled".into(),
        "ddim",
        with(
            &scaled,
            json!({"steps_offset": 1, "set_alpha_to_one": false}),
        ),
        50,
    ));
    cases.push((
        "ddim_scaled_trail".into(),
        "ddim",
        with(&scaled, json!({"timestep_spacing": "trailing"})),
        30,
    ));
    cases.push(("ddim_cosine".into(), "ddim", cosine.clone(), 40));
    for n in [7, 10, 20] {
        cases.push((format!("dpm_lin_{n}"), "dpm", linear.clone(), n));
    }
    cases.push((
        "dpm_lead".into(),
        "dpm",
        with(
            &linear,
            json!({"timestep_spacing": "leading", "steps_offset": 1}),
        ),
        20,
    ));
    cases.push((
        "dpm_trail".into(),
        "dpm",
        with(&linear, json!({"timestep_spacing": "trailing"})),
        16,
    ));
    cases.push((
        "dpm_sigma_min".into(),
        "dpm",
        with(&linear, json!({"final_sigmas_type": "sigma_min"})),
        20,
    ));
    cases.push((
        "dpm_cosine_clipped".into(),
        "dpm",
        with(&cosine, json!({"lambda_min_clipped": -5.1})),
        20,
    ));
    cases.push(("dpm_scaled".into(), "dpm", scaled, 25));
    cases
}

fn kind_of(class: &str) -> SamplerKind {
    match class {
        "ddpm" => SamplerKind::Ddpm,
        "ddim" => SamplerKind::Ddim { eta: 0.0 },
        _ => SamplerKind::DpmSolver,
    }
}

#[test]
fn tables_match_diffusers() {
    let cases = table_cases();
    let spec: Vec<Value> =
        cases.iter().map(|(name, class, cfg, n)| json!({"name": name, "class": class, "config": cfg, "steps": n})).collect();
    let arg = serde_json::to_string(&spec).unwrap();
    let theirs = oracle("scheduler_tables", &[], &[&arg]);
    for (name, class, cfg, n) in &cases {
        let config = SchedulerConfig::from_json(cfg).unwrap();
        let mut sampler = Sampler::new(kind_of(class), &config, &Overrides::default()).unwrap();
        sampler.set_timesteps(*n).unwrap();
        let schedule = NoiseSchedule::new(sampler.config()).unwrap();
        let get = |k: &str| &theirs[&format!("{name}.{k}")];
        assert_close(&format!("{name} betas"), &schedule.betas, get("betas"), 0.0);
        assert_close(
            &format!("{name} alphas_cumprod"),
            &schedule.alphas_cumprod,
            get("alphas_cumprod"),
            0.0,
        );
        let ts = Vec::<i64>::try_from(get("timesteps")).unwrap();
        assert_eq!(sampler.timesteps(), &ts[..], "{name} timesteps");
        if let Some(sigmas) = sampler.dpm_sigmas() {
            assert_close(
                &format!("{name} sigmas"),
                &Tensor::from_slice(sigmas),
                get("sigmas"),
                0.0,
            );
        }
    }
}

fn sampler_err(kind: SamplerKind, config: &str, ov: &Overrides) -> String {
    let config = SchedulerConfig::from_json_str(config).unwrap();
    format!("{:#}", Sampler::new(kind, &config, ov).unwrap_err())
}

const CIFAR10: &str = r#"{"_class_name": "DDPMScheduler", "beta_schedule": "linear", "clip_sample": true,
    "num_train_timesteps": 1000, "variance_type": "fixed_large"}"#;

#[test]
fn contradicting_the_checkpoint_needs_the_override_flag() {
    let none = Overrides {
        clip: Some(Clip::None),
        ..Default::default()
    };
    let e = sampler_err(SamplerKind::Ddpm, CIFAR10, &none);
    assert!(e.contains("clip_sample") && e.contains("override"), "{e}");
    let xt = Overrides {
        clip: Some(Clip::Xt),
        ..Default::default()
    };
    assert!(sampler_err(SamplerKind::Ddim { eta: 0.0 }, CIFAR10, &xt).contains("clip_sample"));
    let small = Overrides {
        variance_type: Some(VarianceType::FixedSmall),
        ..Default::default()
    };
    assert!(sampler_err(SamplerKind::Ddpm, CIFAR10, &small).contains("variance_type fixed_small"));

    let config = SchedulerConfig::from_json_str(CIFAR10).unwrap();
    let forced = Overrides {
        clip: Some(Clip::Xt),
        allow_contradiction: true,
        ..small
    };
    let s = Sampler::new(SamplerKind::Ddpm, &config, &forced).unwrap();
    assert_eq!(s.clip(), Clip::Xt);
    assert!(!s.config().clip_sample);
    assert_eq!(s.config().variance_type, VarianceType::FixedSmall);
    // Agreeing requests and settings the config is silent on need no flag.
    let agree = Overrides {
        clip: Some(Clip::X0),
        timestep_spacing: Some(TimestepSpacing::Trailing),
        ..Default::default()
    };
    let s = Sampler::new(SamplerKind::Ddpm, &config, &agree).unwrap();
    assert_eq!(
        (s.clip(), s.config().timestep_spacing),
        (Clip::X0, TimestepSpacing::Trailing)
    );
    // The checkpoint's own settings are the default.
    let s = Sampler::new(SamplerKind::Ddpm, &config, &Overrides::default()).unwrap();
    assert_eq!(
        (s.clip(), s.config().variance_type),
        (Clip::X0, VarianceType::FixedLarge)
    );
}

#[test]
fn bad_settings_are_refused_by_name() {
    let ov = Overrides::default();
    let e = sampler_err(SamplerKind::Ddpm, r#"{"beta_end": 1.5}"#, &ov);
    assert!(e.contains("beta_end"), "{e}");
    let x0 = Overrides {
        clip: Some(Clip::X0),
        ..Default::default()
    };
    assert!(sampler_err(SamplerKind::DpmSolver, CIFAR10, &x0)
        .contains("clip x0 is not available for dpm-solver"));
    let dpm_on_ddpm = Overrides {
        solver_order: Some(2),
        ..Default::default()
    };
    assert!(sampler_err(SamplerKind::Ddpm, CIFAR10, &dpm_on_ddpm)
        .contains("only apply to the dpm-solver"));
    assert!(sampler_err(SamplerKind::Ddim { eta: 1.5 }, CIFAR10, &ov).contains("eta 1.5"));
    let bad = SchedulerConfig::from_json_str(r#"{"beta_schedule": "sigmoid"}"#).unwrap_err();
    assert!(format!("{bad:#}").contains("beta_schedule \"sigmoid\" is not supported"));
    assert!(format!(
        "{:#}",
        SchedulerConfig::from_json_str(r#"{"thresholding": true}"#).unwrap_err()
    )
    .contains("thresholding"));
}

/// The released models' scheduler configs carry the official code's vendored `clip_defense`
/// fields (IBM/BadDiffusion `scheduling_ddpm.py:137-138`): off, they read as the plain config;
/// on, the paper's clamp is refused by name.
#[test]
fn the_official_codes_clip_defense_fields_are_read() {
    let with = CIFAR10.replacen(
        '{',
        r#"{"clip_defense": false, "clip_defense_range": 1.0, "#,
        1,
    );
    assert_eq!(
        SchedulerConfig::from_json_str(&with).unwrap(),
        SchedulerConfig::from_json_str(CIFAR10).unwrap()
    );
    let on = CIFAR10.replacen('{', r#"{"clip_defense": true, "#, 1);
    let e = format!("{:#}", SchedulerConfig::from_json_str(&on).unwrap_err());
    assert!(e.contains("clip_defense"), "{e}");
}

#[test]
fn inference_step_counts_are_checked() {
    let config = SchedulerConfig::from_json_str(CIFAR10).unwrap();
    for kind in [
        SamplerKind::Ddpm,
        SamplerKind::Ddim { eta: 0.0 },
        SamplerKind::DpmSolver,
    ] {
        let mut s = Sampler::new(kind, &config, &Overrides::default()).unwrap();
        let zero = format!("{:#}", s.set_timesteps(0).unwrap_err());
        assert!(
            zero.contains("num_inference_steps must be at least 1"),
            "{zero}"
        );
        assert!(format!("{:#}", s.set_timesteps(1001).unwrap_err())
            .contains("exceeds num_train_timesteps 1000"));
    }
}

#[test]
fn stepping_off_the_schedule_is_an_error() {
    let config = SchedulerConfig::from_json_str(CIFAR10).unwrap();
    let x = Tensor::zeros([1, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
    let mut rng = crate::rng::Rng::seeded(0);
    let mut ddpm = Sampler::new(SamplerKind::Ddpm, &config, &Overrides::default()).unwrap();
    assert!(
        ddpm.step(&x, 999, &x, &mut rng).is_err(),
        "step before set_timesteps"
    );
    ddpm.set_timesteps(10).unwrap();
    assert!(
        format!("{:#}", ddpm.step(&x, 555, &x, &mut rng).unwrap_err())
            .contains("not in the schedule")
    );
    let mut dpm = Sampler::new(SamplerKind::DpmSolver, &config, &Overrides::default()).unwrap();
    dpm.set_timesteps(5).unwrap();
    let ts = dpm.timesteps().to_vec();
    let _ = dpm.step(&x, ts[0], &x, &mut rng).unwrap();
    assert!(format!("{:#}", dpm.step(&x, ts[2], &x, &mut rng).unwrap_err()).contains("expects"));
}
