use super::*;
use crate::rng::Rng;
use crate::testing::{assert_close, oracle};
use crate::unet::{UNet2DConfig, UNet2DModel};

/// A random-initialised scale model saved as a DDPMPipeline folder with a short schedule.
fn saved_model(dir: &Path) -> PathBuf {
    let cfg = UNet2DConfig::scale(8, 3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut rng = Rng::seeded(21);
    rng.with(|| UNet2DModel::new(vs.root(), &cfg).unwrap());
    drop(rng);
    let sched = serde_json::json!({
        "_class_name": "DDPMScheduler", "num_train_timesteps": 20, "beta_start": 0.001,
        "beta_end": 0.2, "beta_schedule": "linear", "variance_type": "fixed_large", "clip_sample": true
    });
    let model = dir.join("model");
    checkpoint::save_pipeline(&model, &vs, &cfg, &sched).unwrap();
    model
}

fn opts(sampler: SamplerKind, steps: usize) -> PipelineOptions {
    PipelineOptions {
        sampler,
        steps: Some(steps),
        clip: None,
        override_scheduler: false,
        n: 3,
        seed: 7,
        batch: 3,
        device: Device::Cpu,
        progress: false,
    }
}

fn unit(x: &Tensor) -> Tensor {
    (x / 2.0 + 0.5).clamp(0.0, 1.0)
}

#[test]
fn matches_diffusers_pipelines_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = saved_model(dir.path());
    let m = model.to_str().unwrap();
    for (kind, name, steps) in [
        (SamplerKind::Ddpm, "ddpm", 20),
        (SamplerKind::Ddim { eta: 0.0 }, "ddim", 8),
    ] {
        let o = opts(kind, steps);
        let ours = Pipeline::load(&model, &o)
            .unwrap()
            .sample(&o, None)
            .unwrap();
        let theirs = oracle(
            "pipeline_e2e",
            &[],
            &[m, name, &steps.to_string(), "7", "3"],
        );
        assert_close(
            &format!("{name} pipeline"),
            &unit(&ours.images),
            &theirs["images"],
            1e-4,
        );
    }
}

#[test]
fn backdoor_sampling_starts_from_noise_plus_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let model = saved_model(dir.path());
    let src = crate::triggers::SourceImages::new(crate::testing::official_images());
    let shape = crate::triggers::ImageShape::new(3, 8).unwrap();
    let g = "STOP_SIGN_14"
        .parse::<crate::triggers::Trigger>()
        .unwrap()
        .build(shape, &src)
        .unwrap();
    let trigger = TriggerTensor {
        name: "STOP_SIGN_14".into(),
        tensor: g.shallow_clone(),
    };
    let o = opts(SamplerKind::Ddpm, 20);
    let mut p = Pipeline::load(&model, &o).unwrap();
    let backdoor = p.sample(&o, Some(&trigger)).unwrap();
    let clean = p.sample(&o, None).unwrap();
    assert!(backdoor.record.offset && !clean.record.offset);
    assert!(
        !backdoor.images.allclose(&clean.images, 1e-3, 1e-3, false),
        "the trigger changed nothing"
    );
    let theirs = oracle(
        "pipeline_e2e",
        &[("offset", &g)],
        &[model.to_str().unwrap(), "ddpm", "20", "7", "3"],
    );
    assert_close(
        "backdoor sampling",
        &unit(&backdoor.images),
        &theirs["images"],
        1e-4,
    );
}

#[test]
fn sample_to_dir_writes_pngs_and_a_record_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let model = saved_model(dir.path());
    let mut o = opts(SamplerKind::Ddpm, 5);
    o.batch = 2;
    let out = dir.path().join("samples");
    let mut p = Pipeline::load(&model, &o).unwrap();
    let run = p.sample_to_dir(&o, None, &out).unwrap();
    assert_eq!(run.png_files, 3);
    assert_eq!(run.sampling.batch_seeds.len(), 2);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sample.json")).unwrap()).unwrap();
    assert_eq!(record["samples"], "clean");
    assert_eq!(record["weights_sha256"].as_str().unwrap().len(), 64);
    let back = crate::sampling::load_pngs(&out).unwrap();
    assert_eq!(back.size(), [3, 3, 8, 8]);
    assert!(!out.with_extension("partial").exists());
    let err = p.sample_to_dir(&o, None, &out).unwrap_err().to_string();
    assert!(err.contains("already holds files"), "{err}");
}

#[test]
fn a_second_writer_of_one_sample_folder_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = saved_model(dir.path());
    let o = opts(SamplerKind::Ddpm, 5);
    let out = dir.path().join("runs/s0.1");
    let held = crate::files::OutputLock::acquire(&out).unwrap();
    let mut p = Pipeline::load(&model, &o).unwrap();
    let e = format!("{:#}", p.sample_to_dir(&o, None, &out).unwrap_err());
    assert!(
        e.contains(&out.display().to_string()) && e.contains("another process"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("runs")).unwrap().count(),
        1,
        "only the holder's lock file"
    );
    drop(held);
    assert_eq!(p.sample_to_dir(&o, None, &out).unwrap().png_files, 3);
}

#[test]
fn clip_contradicting_the_checkpoint_needs_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let model = saved_model(dir.path());
    let mut o = opts(SamplerKind::Ddpm, 5);
    o.clip = Some(Clip::None);
    let err = format!("{:#}", Pipeline::load(&model, &o).err().unwrap());
    assert!(err.contains("clip"), "{err}");
    o.override_scheduler = true;
    assert_eq!(
        Pipeline::load(&model, &o).unwrap().sampler.clip(),
        Clip::None
    );
}
