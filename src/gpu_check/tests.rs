use super::*;

const NO_BACKEND: CudaState = CudaState {
    backend_loaded: false,
    gpus: 0,
};
const NO_GPU: CudaState = CudaState {
    backend_loaded: true,
    gpus: 0,
};

#[test]
fn refuses_without_a_usable_gpu_naming_the_reason_and_the_fix() {
    let e = format!("{:#}", require_cuda(NO_BACKEND).unwrap_err());
    assert!(e.contains("CUDA backend not loaded, 0 GPUs visible"), "{e}");
    assert!(
        e.contains("Fix:") && e.contains("cargo xtask doctor"),
        "{e}"
    );
    let e = format!("{:#}", require_cuda(NO_GPU).unwrap_err());
    assert!(e.contains("CUDA backend loaded, 0 GPUs visible"), "{e}");
    assert!(
        e.contains("nvidia-smi") && e.contains("CUDA_VISIBLE_DEVICES"),
        "{e}"
    );
    let one = CudaState {
        backend_loaded: true,
        gpus: 1,
    };
    assert_eq!(require_cuda(one).unwrap(), Device::Cuda(0));
}

#[test]
fn relative_difference_is_scaled_by_the_cpu_side_and_nan_fails() {
    let cpu = Tensor::from_slice(&[1.0f32, -4.0, 2.0]);
    let other = Tensor::from_slice(&[1.0f32, -4.0, 2.5]);
    assert!((relative_difference(&other, &cpu) - 0.125).abs() < 1e-12);
    assert_eq!(relative_difference(&cpu, &cpu), 0.0);
    let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 2.0]);
    assert!(relative_difference(&nan, &cpu).is_nan());
    let check = Check::new("x", f64::NAN, 1.0, "why");
    assert!(!check.pass, "a NaN difference must fail its bound");
}

/// The whole parity path, the CPU standing in for CUDA on a small UNet: every comparison runs,
/// and the CPU agrees with itself exactly.
#[test]
fn parity_runs_every_comparison_cpu_against_cpu() {
    let opts = ParityOptions {
        unet: UNet2DConfig::scale(16, 3),
        batch: 2,
        inception_images: 1,
        seed: 3,
    };
    let checks = parity(Device::Cpu, &opts).unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "unet forward",
            "training step: loss",
            "training step: gradients",
            "training step: gradient norm",
            "ddpm step (t = 999, 500, 1)",
            "inception pool3 features",
        ]
    );
    for c in &checks {
        assert_eq!(c.value, 0.0, "{c:?}");
        assert!(c.pass && c.bound > 0.0 && !c.why.is_empty(), "{c:?}");
    }
}

fn small_train_spec() -> WorkloadSpec {
    let mut spec = Workload::TrainStepScale.spec().unwrap();
    spec.batch = 4;
    let t = spec.train.as_mut().unwrap();
    // No warm-up, so a handful of steps move the weights.
    t.warmup_steps = 0;
    t.learning_rate = 1e-3;
    spec
}

#[test]
fn fp16_run_counts_steps_under_loss_scaling() {
    let r = fp16_run(&small_train_spec(), Device::Cpu, 8, true).unwrap();
    assert_eq!((r.steps, r.batch, r.window), (8, 4, 2));
    assert_eq!(r.losses.len(), 8);
    assert_eq!((r.skipped, r.non_finite_losses), (0, 0));
    assert_eq!(r.final_scale, Some(65_536.0));
    assert!(r.median_step_s > 0.0);
    assert!(r.first_mean_loss.is_finite() && r.last_mean_loss.is_finite());
}

#[test]
fn fp16_without_loss_scaling_is_refused() {
    let e = fp16_run(&small_train_spec(), Device::Cpu, 4, false).unwrap_err();
    assert!(format!("{e:#}").contains("needs a CUDA device"), "{e:#}");
    let e = fp16_run(&small_train_spec(), Device::Cpu, 1, true).unwrap_err();
    assert!(format!("{e:#}").contains("at least 2 steps"), "{e:#}");
}

#[test]
fn fp16_report_windows_skip_non_finite_losses() {
    let losses = vec![1.0, f64::INFINITY, 0.9, 0.8, 0.5, f64::NAN, 0.4, 0.3];
    let r = Fp16Report::new(4, losses, 2, Some(32_768.0), 0.1);
    assert_eq!(r.window, 2);
    assert_eq!((r.first_mean_loss, r.last_mean_loss), (1.0, 0.35));
    assert!(r.loss_fell && r.pass());
    assert_eq!(r.non_finite_losses, 2);
    // A non-finite loss whose step was not skipped is a failure.
    let r = Fp16Report::new(4, vec![1.0, f64::NAN, 0.5, 0.4], 0, None, 0.1);
    assert!(r.loss_fell && !r.pass());
    // Rising, or no finite loss in a window, is not falling.
    assert!(!Fp16Report::new(4, vec![0.1, 0.2, 0.3, 0.4], 0, None, 0.1).loss_fell);
    assert!(!Fp16Report::new(4, vec![f64::NAN, 0.2, 0.3, 0.1], 1, None, 0.1).loss_fell);
}

#[test]
fn sweep_times_each_batch_and_picks_the_most_images_per_second() {
    let sweep = sampling_sweep(Device::Cpu, &[1, 2], 1).unwrap();
    assert_eq!(sweep.len(), 2);
    for t in &sweep {
        assert!(t.error.is_none(), "{t:?}");
        let s = t.seconds_per_step.unwrap();
        assert!((t.images_per_s.unwrap() - t.batch as f64 / (s * 1000.0)).abs() < 1e-9);
    }
    assert_eq!(doubling(64, 1024), [64, 128, 256, 512, 1024]);
    assert_eq!(doubling(64, 100), [64]);
    let t = |batch, ips: Option<f64>| BatchTiming {
        batch,
        seconds_per_step: ips.map(|i| batch as f64 / i / 1000.0),
        images_per_s: ips,
        error: ips.is_none().then(|| "CUDA out of memory".to_string()),
    };
    let synthetic = [
        t(64, Some(10.0)),
        t(128, Some(30.0)),
        t(256, Some(25.0)),
        t(512, None),
    ];
    assert_eq!(best_batch(&synthetic).unwrap().batch, 128);
    assert!(best_batch(&[t(64, None)]).is_none());
}

#[test]
fn a_failing_batch_size_ends_the_sweep_with_its_reason() {
    // Batch 0 fails inside the sampling loop (libtorch's errors arrive as panics or errors):
    // the sweep records why and stops.
    let sweep = sampling_sweep(Device::Cpu, &[1, 0, 2], 1).unwrap();
    assert_eq!(sweep.len(), 2, "{sweep:?}");
    assert!(sweep[0].error.is_none());
    assert!(
        sweep[1].error.is_some() && sweep[1].images_per_s.is_none(),
        "{sweep:?}"
    );
}

/// The defenses part runs every defense kind at toy amounts on the real CIFAR-10 architecture;
/// on the CPU each must pass (on a GPU a failure is a device bug, not the toy's).
#[test]
fn every_defense_runs_at_toy_amounts_on_the_cifar10_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let runs = defenses::defenses(Device::Cpu, dir.path()).unwrap();
    let kinds: Vec<&str> = runs.iter().map(|r| r.defense.as_str()).collect();
    assert_eq!(kinds, ["anp", "anp-prune", "elijah", "terd", "noise-test"]);
    for r in &runs {
        assert!(r.ok && r.rows > 0 && r.error.is_none(), "{r:?}");
    }
}
