use super::*;

fn cell() -> AttackConfig {
    AttackConfig {
        data: DataConfig {
            dataset: "fashion-mnist".into(),
            dir: None,
            split: "train".into(),
            channels: 1,
            size: 16,
            limit: Some(128),
        },
        backdoor: BackdoorConfig {
            trigger: "BOX_14".into(),
            target: "CORNER".into(),
            poison_rate: 0.5,
            sources: Some(crate::testing::official_images()),
        },
        model: ModelConfig::Scratch {
            unet: "scale".into(),
            scheduler: scale_scheduler(),
        },
        train: TrainSettings {
            epochs: 1,
            batch: 32,
            effective_batch: 64,
            learning_rate: 1e-3,
            warmup_steps: 2,
            grad_clip: 1.0,
            save_every_epochs: 1,
            seed: 3,
            steps: None,
            mixed_precision: None,
            keep_epochs: vec![],
        },
    }
}

fn scale_scheduler() -> serde_json::Value {
    serde_json::json!({"_class_name": "DDPMScheduler", "num_train_timesteps": 100, "beta_start": 0.001,
        "beta_end": 0.2, "beta_schedule": "linear", "variance_type": "fixed_large", "clip_sample": false})
}

fn err(cfg: &AttackConfig, out: &Path) -> String {
    format!("{:#}", train(cfg, out, Device::Cpu, false).unwrap_err())
}

#[test]
fn a_short_cell_trains_saves_a_diffusers_model_and_is_not_redone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cell();
    let out = dir.path().join("run");
    let s = train(&cfg, &out, Device::Cpu, false).unwrap();
    assert_eq!((s.n_samples, s.n_poisoned, s.iterations), (128, 64, 4));
    let ck = checkpoint::load(&s.model_dir, Device::Cpu).unwrap();
    assert_eq!(ck.weights.safetensors.sha256, s.weights_sha256);
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    // Only an unfinished run needs its resume state.
    assert!(!out.join("state").exists());
    // A finished cell is returned as it is, without training again.
    let again = train(&cfg, &out, Device::Cpu, false).unwrap();
    assert_eq!(again.weights_sha256, s.weights_sha256);
    assert_eq!(again.seconds, s.seconds);
    // ... and other settings in the same directory are refused, leaving it intact.
    let mut other = cfg.clone();
    other.backdoor.poison_rate = 0.1;
    assert!(err(&other, &out).contains("other settings"));
    assert!(out.join("model").is_dir() && out.join("train.json").is_file());
}

#[test]
fn the_config_round_trips_through_toml_and_rejects_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cell();
    let path = dir.path().join("cell.toml");
    std::fs::write(&path, toml::to_string_pretty(&cfg).unwrap()).unwrap();
    assert_eq!(AttackConfig::from_toml_file(&path).unwrap(), cfg);
    std::fs::write(
        &path,
        toml::to_string_pretty(&cfg)
            .unwrap()
            .replace("[train]", "[train]\nepochz = 3"),
    )
    .unwrap();
    let e = format!("{:#}", AttackConfig::from_toml_file(&path).unwrap_err());
    assert!(e.contains("epochz"), "{e}");
}

#[test]
fn bad_cells_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = cell();
    c.backdoor.trigger = "TRIANGLE".into();
    let e = err(&c, &out);
    assert!(
        e.contains("TRIANGLE") && e.contains("BOX_14") && e.contains("STOP_SIGN_14"),
        "{e}"
    );

    let mut c = cell();
    c.backdoor.poison_rate = 1.5;
    assert!(err(&c, &out).contains("outside [0, 1]"));

    let mut c = cell();
    c.model = ModelConfig::Scratch {
        unet: "cifar10_32".into(),
        scheduler: scale_scheduler(),
    };
    let e = err(&c, &out);
    assert!(
        e.contains("3 channel(s) at 32×32") && e.contains("data.channels"),
        "{e}"
    );

    let mut c = cell();
    c.data.dataset = "cifar10".into();
    c.data.dir = Some(dir.path().join("no-such-dir"));
    assert!(err(&c, &out).contains("no-such-dir"));

    let mut c = cell();
    c.data.dataset = "imagenet".into();
    let e = err(&c, &out);
    assert!(e.contains("imagenet") && e.contains("fashion-mnist"), "{e}");

    let mut c = cell();
    c.data.size = 2;
    assert!(err(&c, &out).contains("size"));
}

mod resume;

/// E6: the models after the epochs of `keep_epochs` are kept as pipelines of their own, listed in
/// the summary; a finished run whose kept model is gone trains again and keeps the same weights
/// (every draw is seeded); the last epoch cannot be kept (it is the model itself).
#[test]
fn kept_epochs_are_pipelines_of_their_own_and_a_lost_one_is_retrained() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cell();
    cfg.train.epochs = 3;
    cfg.train.save_every_epochs = 3;
    cfg.train.keep_epochs = vec![2, 1];
    let out = dir.path().join("run");
    let s = train(&cfg, &out, Device::Cpu, false).unwrap();
    assert_eq!(s.kept.iter().map(|k| k.epoch).collect::<Vec<_>>(), [1, 2]);
    let hashes: Vec<&str> = s.kept.iter().map(|k| k.weights_sha256.as_str()).collect();
    assert!(hashes[0] != hashes[1] && hashes[1] != s.weights_sha256);
    for k in &s.kept {
        let ck = checkpoint::load(&k.model_dir, Device::Cpu).unwrap();
        assert_eq!(ck.weights.safetensors.sha256, k.weights_sha256);
    }
    std::fs::remove_dir_all(&s.kept[0].model_dir).unwrap();
    let again = train(&cfg, &out, Device::Cpu, false).unwrap();
    assert_eq!(again.kept, s.kept);
    assert_eq!(again.weights_sha256, s.weights_sha256);
    assert!(again.seconds != s.seconds, "trained again, not read back");

    cfg.train.keep_epochs = vec![3];
    let e = err(&cfg, &dir.path().join("other"));
    assert!(e.contains("keep_epochs") && e.contains("last epoch"), "{e}");
    // A run cut short by `steps` (4 iterations per epoch here) cannot keep epoch 2.
    cfg.train.keep_epochs = vec![2];
    cfg.train.steps = Some(5);
    let e = err(&cfg, &dir.path().join("short"));
    assert!(e.contains("stops after 5"), "{e}");
}
