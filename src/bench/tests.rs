use super::*;

#[test]
fn workload_names_round_trip_and_unknown_names_list_the_choices() {
    for w in Workload::ALL {
        assert_eq!(w.name().parse::<Workload>().unwrap(), w);
    }
    let err = "train-step".parse::<Workload>().unwrap_err().to_string();
    assert!(
        err.contains("train-step") && err.contains("sample-scale") && err.contains("matmul"),
        "{err}"
    );
}

#[test]
fn specs_follow_the_smoke_profile_and_survive_json() {
    for w in Workload::ALL {
        let spec = w.spec().unwrap();
        assert_eq!(spec.workload, w.name());
        let text = serde_json::to_string(&spec).unwrap();
        let back: WorkloadSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }
    let sample = Workload::SampleScale.spec().unwrap();
    let profile = Profile::load(crate::python::project_root(), "smoke").unwrap();
    assert_eq!(sample.n, Some(profile.measure.n as i64));
    assert_eq!(sample.batch, profile.measure.batch as i64);
    let unet = UNet2DConfig::from_json_value(sample.unet.clone().unwrap()).unwrap();
    assert_eq!(
        unet,
        UNet2DConfig::from_json_value(
            UNet2DConfig::scale(profile.data.size as i64, profile.data.channels as i64)
                .to_json_value()
        )
        .unwrap()
    );
    let cifar = Workload::TrainStepCifar10.spec().unwrap();
    assert_eq!(cifar.batch, 16);
    assert_eq!(cifar.image_shape, Some([3, 32, 32]));
    // The GPU-sized ones: the GPU profiles' training and sampling batches.
    let kick = Profile::load(crate::python::project_root(), "kick-the-tires").unwrap();
    let train = Workload::TrainStepCifar10Gpu.spec().unwrap();
    assert_eq!(train.batch, kick.finetune.as_ref().unwrap().batch);
    let sample = Workload::SampleCifar10.spec().unwrap();
    assert_eq!(sample.batch, kick.measure.batch as i64);
    assert_eq!(sample.unet, cifar.unet);
    assert_eq!(Workload::MatmulGpu.spec().unwrap().matmul_n, Some(8192));
}

/// Each workload shrunk to seconds (the CIFAR-10 UNet keeps its size: batch 1), so that this
/// checks the code paths and the JSON, not the speed.
fn small(w: Workload) -> WorkloadSpec {
    let mut spec = w.spec().unwrap();
    match w {
        Workload::TrainStepCifar10 => spec.batch = 1,
        Workload::TrainStepScale => spec.batch = 4,
        Workload::SampleScale => {
            spec.n = Some(3);
            spec.batch = 2;
            spec.steps = Some(3);
        }
        Workload::FidFeatures => {
            spec.n = Some(3);
            spec.batch = 2;
        }
        Workload::Matmul | Workload::MatmulGpu => spec.matmul_n = Some(64),
        Workload::TrainStepCifar10Gpu => spec.batch = 1,
        Workload::SampleCifar10 => {
            spec.n = Some(2);
            spec.batch = 2;
            spec.steps = Some(2);
        }
    }
    spec
}

#[test]
fn each_workload_runs_and_its_json_parses() {
    let opts = BenchOptions {
        reps: 2,
        threads: None,
        device: Device::Cpu,
        amp: false,
        channels_last: None,
    };
    for w in Workload::ALL {
        let spec = small(w);
        let m = run(&spec, &opts).unwrap_or_else(|e| panic!("{w}: {e:#}"));
        let back: Measurement = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.workload, w.name());
        assert_eq!(m.side, "ours");
        assert_eq!(m.device, "cpu");
        assert_eq!(m.times_s.len(), 2);
        assert!(m.times_s.iter().all(|t| *t > 0.0), "{w}: {:?}", m.times_s);
        assert!(m.min_s <= m.median_s && m.median_s <= m.max_s, "{w}");
        assert_eq!(m.spec, spec);
        assert_eq!(
            m.flops.is_some(),
            matches!(w, Workload::Matmul | Workload::MatmulGpu),
            "{w}"
        );
    }
}

#[test]
fn matmul_flops_are_two_n_cubed() {
    let opts = BenchOptions {
        reps: 1,
        threads: Some(1),
        device: Device::Cpu,
        amp: false,
        channels_last: None,
    };
    let m = run(&small(Workload::Matmul), &opts).unwrap();
    assert_eq!(m.flops, Some(2.0 * 64f64.powi(3)));
    assert_eq!(m.threads, 1);
}

#[test]
fn bad_options_are_clear_errors() {
    let spec = small(Workload::Matmul);
    let opts = BenchOptions {
        reps: 0,
        threads: None,
        device: Device::Cpu,
        amp: false,
        channels_last: None,
    };
    let err = run(&spec, &opts).unwrap_err().to_string();
    assert!(err.contains("--reps"), "{err}");
    let mut bad = spec.clone();
    bad.dtype = "float16".into();
    let err = run(&bad, &BenchOptions { reps: 1, ..opts })
        .unwrap_err()
        .to_string();
    assert!(err.contains("float16") && err.contains("float32"), "{err}");
}

/// The peer script prints the same JSON object as our side, for every workload.
#[test]
fn peer_script_prints_the_same_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    for w in Workload::ALL {
        let spec = small(w);
        let path = dir.path().join(format!("{w}.json"));
        std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
        let out = crate::python::run(
            "bench/peer.py",
            &[
                path.as_os_str(),
                "--reps".as_ref(),
                "1".as_ref(),
                "--threads".as_ref(),
                "1".as_ref(),
                "--count-flops".as_ref(),
            ],
        )
        .unwrap_or_else(|e| panic!("{w}: {e:#}"));
        let m: Measurement = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{w}: peer output is not a Measurement ({e}): {out}"));
        assert_eq!(m.side, "peer");
        assert_eq!(m.workload, w.name());
        assert_eq!(m.threads, 1);
        assert_eq!(m.times_s.len(), 1);
        assert_eq!(m.spec, spec);
        assert!(m.flops.unwrap_or(0.0) > 0.0, "{w}: no FLOP count");
    }
}
