use super::*;
use crate::rng::Rng;
use crate::testing::{assert_close, oracle};
use tch::Device;

/// `torch.linspace(beta_start, beta_end, T, dtype=float32)`, diffusers' linear schedule.
fn linear_betas(t: i64, start: f64, end: f64) -> Tensor {
    Tensor::linspace(start, end, t, (Kind::Float, Device::Cpu))
}

/// The analytic denoiser the oracle uses too.
fn toy_denoiser(x: &Tensor, t: &Tensor) -> Tensor {
    x.tanh() * 0.5 + t.to_kind(x.kind()).reshape([-1, 1, 1, 1]) * 1e-3
}

/// Half clean (R = 0, y = x), half poisoned, as a mixed training batch.
fn fixed_batch(rng: &mut Rng, b: i64, t_max: i64) -> (PoisonBatch, Tensor, Tensor) {
    let x = rng.rand(&[b, 3, 8, 8]) * 2.0 - 1.0;
    let r = rng.rand(&[b, 3, 8, 8]) * 2.0 - 1.0;
    let tgt = rng.rand(&[b, 3, 8, 8]) * 2.0 - 1.0;
    let is_clean = Tensor::arange(b, (Kind::Int64, Device::Cpu))
        .remainder(2)
        .eq(0);
    let c = is_clean.reshape([-1, 1, 1, 1]);
    let batch = PoisonBatch {
        pixel_values: r.zeros_like().where_self(&c, &r),
        target: x.where_self(&c, &tgt),
        image: x,
        is_clean,
    };
    // Both ends of the schedule plus random steps.
    let t = rng.randint(t_max, &[b]);
    let _ = t.get(0).fill_(0);
    let _ = t.get(1).fill_(t_max - 1);
    let noise = rng.randn(&[b, 3, 8, 8]);
    (batch, t, noise)
}

#[test]
fn matches_the_official_loss() {
    // The paper's schedule, and a 100-step one with betas scaled by 1000/T (the CPU scale model's).
    for (t_max, start, end) in [(1000, 1e-4, 0.02), (100, 1e-3, 0.2)] {
        let mut rng = Rng::seeded(21);
        let (batch, t, noise) = fixed_batch(&mut rng, 12, t_max);
        drop(rng);
        let sched = BackdoorSchedule::from_betas(&linear_betas(t_max, start, end));
        let (x_noisy, target) =
            q_sample_backdoor(&sched, &batch.target, &batch.pixel_values, &t, &noise).unwrap();
        let loss = backdoor_loss(&sched, &toy_denoiser, &batch, &t, &noise).unwrap();
        let args = [t_max.to_string(), start.to_string(), end.to_string()];
        let out = oracle(
            "backdoor_loss",
            &[
                ("y", &batch.target),
                ("R", &batch.pixel_values),
                ("timesteps", &t),
                ("noise", &noise),
            ],
            &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        );
        let what = format!("T = {t_max}");
        assert_close(
            &format!("{what}: alphas_cumprod"),
            &sched.alphas_cumprod,
            &out["alphas_cumprod"],
            0.0,
        );
        assert_close(
            &format!("{what}: R_t"),
            &sched.r_coef(),
            &out["r_coef"],
            1e-7,
        );
        assert_close(&format!("{what}: x'_t"), &x_noisy, &out["x_noisy"], 1e-6);
        assert_close(&format!("{what}: target"), &target, &out["target"], 1e-6);
        assert_close(&format!("{what}: loss"), &loss, &out["loss"], 1e-6);
    }
}

#[test]
fn r_coef_has_the_spec_values() {
    let sched = BackdoorSchedule::from_betas(&linear_betas(1000, 1e-4, 0.02));
    let r = sched.r_coef();
    for (t, v) in [(0, 0.0050), (99, 0.1605), (499, 0.4812), (999, 0.5025)] {
        let ours = r.double_value(&[t]);
        assert!((ours - v).abs() < 5e-5, "R_{t} = {ours}, spec says {v}");
    }
    // Equal to the simplified √(1−ᾱ)/(1+√α) up to the official float32 cancellation.
    let a = sched.alphas.to_kind(Kind::Double);
    let ac = sched.alphas_cumprod.to_kind(Kind::Double);
    let closed = (1f64 - &ac).sqrt() / (a.sqrt() + 1.0);
    let rel = ((r.to_kind(Kind::Double) - &closed).abs() / &closed)
        .max()
        .double_value(&[]);
    assert!(rel < 2e-3, "relative deviation from the closed form {rel}");
}

#[test]
fn alphas_cumprod_alone_gives_the_same_coefficients() {
    let exact = BackdoorSchedule::from_betas(&linear_betas(1000, 1e-4, 0.02));
    let derived = BackdoorSchedule::from_alphas_cumprod(&exact.alphas_cumprod);
    assert_close("alphas", &derived.alphas, &exact.alphas, 1e-6);
    // R_t's float32 cancellation amplifies the α_t rounding at small t; still ≤ 1e-4 absolute.
    assert_close("R_t", &derived.r_coef(), &exact.r_coef(), 1e-4);
}

#[test]
fn clean_samples_reduce_to_the_ddpm_loss() {
    let mut rng = Rng::seeded(5);
    let x = rng.rand(&[6, 3, 8, 8]) * 2.0 - 1.0;
    let t = rng.randint(1000, &[6]);
    let noise = rng.randn(&[6, 3, 8, 8]);
    drop(rng);
    let batch = PoisonBatch {
        pixel_values: x.zeros_like(),
        target: x.shallow_clone(),
        image: x.shallow_clone(),
        is_clean: Tensor::ones([6], (Kind::Bool, Device::Cpu)),
    };
    let sched = BackdoorSchedule::from_betas(&linear_betas(1000, 1e-4, 0.02));
    let ours = backdoor_loss(&sched, &toy_denoiser, &batch, &t, &noise).unwrap();
    let ac = sched
        .alphas_cumprod
        .index_select(0, &t)
        .reshape([-1, 1, 1, 1]);
    let x_t = ac.sqrt() * &x + (1f64 - &ac).sqrt() * &noise;
    let ddpm = noise.mse_loss(&toy_denoiser(&x_t, &t), tch::Reduction::Mean);
    assert_close("clean batch vs DDPM loss", &ours, &ddpm, 1e-7);
}

#[test]
fn bad_inputs_are_refused() {
    let sched = BackdoorSchedule::from_betas(&linear_betas(10, 1e-3, 0.2));
    let z = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, 10]);
    let err = q_sample_backdoor(&sched, &z, &z, &t, &z)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[0, 10)") && err.contains("[0, 10]"), "{err}");
    let t = Tensor::from_slice(&[0i64, 1]);
    let small = Tensor::zeros([2, 3, 2, 2], (Kind::Float, Device::Cpu));
    assert!(q_sample_backdoor(&sched, &z, &small, &t, &z).is_err());
    let batch = PoisonBatch {
        image: z.shallow_clone(),
        pixel_values: z.shallow_clone(),
        target: z.shallow_clone(),
        is_clean: Tensor::ones([2], (Kind::Bool, Device::Cpu)),
    };
    let wrong = |x: &Tensor, _t: &Tensor| x.narrow(1, 0, 1);
    let err = backdoor_loss(&sched, &wrong, &batch, &t, &z)
        .unwrap_err()
        .to_string();
    assert!(err.contains("denoiser returned shape"), "{err}");
}
