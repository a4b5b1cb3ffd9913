//! Checkpoint I/O against diffusers: both layouts and both weight formats load, old attention
//! names load, what we save diffusers loads, and bad input fails naming the problem.
use std::path::Path;

use serde_json::json;
use tch::{Device, Tensor};

use super::*;
use crate::rng::Rng;
use crate::testing::oracle;
use crate::unet::tests::{compare, inputs, make_with_oracle, Saved};

fn diffusers_made(saved: Saved) {
    let cfg = UNet2DConfig::scale(16, 3);
    let dir = tempfile::tempdir().unwrap();
    let (sample, t_batch) = inputs(&cfg, 2, 16, 3);
    let out = make_with_oracle(&cfg, dir.path(), &saved, &sample, &t_batch);
    let model_dir = dir.path().join("model");
    let ck = load(&model_dir, Device::Cpu).unwrap();
    let what = format!(
        "{} {} old-keys={}",
        saved.layout, saved.format, saved.old_keys
    );
    compare(&what, &ck.model, &sample, &t_batch, &out);

    let unet_dir = if saved.layout == "pipeline" {
        model_dir.join("unet")
    } else {
        model_dir.clone()
    };
    assert_eq!(
        ck.layout,
        if saved.layout == "pipeline" {
            Layout::Pipeline
        } else {
            Layout::Bare
        }
    );
    if saved.layout == "pipeline" {
        let sched = ck
            .scheduler_config
            .as_ref()
            .expect("pipeline has a scheduler config");
        assert_eq!(sched["_class_name"], "DDPMScheduler");
    }
    assert_eq!(
        ck.weights.safetensors.sha256,
        sha256_file(&ck.weights.safetensors.path).unwrap()
    );
    if saved.format == "bin" {
        let bin = ck
            .weights
            .converted_from
            .as_ref()
            .expect("converted from .bin");
        assert_eq!(bin.path, unet_dir.join(WEIGHTS_BIN));
        assert_eq!(bin.sha256, sha256_file(&bin.path).unwrap());
        let record: Value = serde_json::from_str(
            &std::fs::read_to_string(unet_dir.join(CONVERTED_RECORD)).unwrap(),
        )
        .unwrap();
        assert_eq!(record["source_sha256"], bin.sha256.as_str());
        assert_eq!(record["sha256"], ck.weights.safetensors.sha256.as_str());
        // Converted once: a second load reuses the file (same bytes, same modification time).
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&ck.weights.safetensors.path);
        let again = load(&model_dir, Device::Cpu).unwrap();
        assert_eq!(mtime(&again.weights.safetensors.path), before);
        assert_eq!(
            again.weights.safetensors.sha256,
            ck.weights.safetensors.sha256
        );
    } else {
        assert!(ck.weights.converted_from.is_none());
        assert_eq!(
            ck.weights.safetensors.path,
            unet_dir.join(WEIGHTS_SAFETENSORS)
        );
    }
}

#[test]
fn loads_diffusers_pipeline_safetensors() {
    diffusers_made(Saved {
        layout: "pipeline",
        format: "safetensors",
        old_keys: false,
    });
}

#[test]
fn loads_diffusers_pipeline_bin() {
    diffusers_made(Saved {
        layout: "pipeline",
        format: "bin",
        old_keys: false,
    });
}

#[test]
fn loads_old_attention_names_safetensors() {
    diffusers_made(Saved {
        layout: "bare",
        format: "safetensors",
        old_keys: true,
    });
}

#[test]
fn loads_old_attention_names_bin() {
    diffusers_made(Saved {
        layout: "bare",
        format: "bin",
        old_keys: true,
    });
}

fn ddpm_scheduler_json() -> Value {
    json!({
        "_class_name": "DDPMScheduler",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "num_train_timesteps": 1000,
        "clip_sample": true,
        "variance_type": "fixed_large",
    })
}

/// A seeded random model of `cfg`, saved by us as a pipeline in `dir`.
fn save_random(cfg: &UNet2DConfig, dir: &Path, seed: u64) -> (nn::VarStore, UNet2DModel) {
    let mut rng = Rng::seeded(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = rng.with(|| UNet2DModel::new(vs.root(), cfg).unwrap());
    save_pipeline(dir, &vs, cfg, &ddpm_scheduler_json()).unwrap();
    (vs, model)
}

#[test]
fn diffusers_loads_what_we_save() {
    let cfg = UNet2DConfig {
        attention_head_dim: Some(16),
        ..UNet2DConfig::scale(16, 3)
    };
    let dir = tempfile::tempdir().unwrap();
    let (_vs, model) = save_random(&cfg, dir.path(), 21);
    // Atomic writes leave no temporary files behind.
    for d in [
        dir.path().to_path_buf(),
        dir.path().join("unet"),
        dir.path().join("scheduler"),
    ] {
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".tmp"), "left over: {name}");
        }
    }
    let (sample, t_batch) = inputs(&cfg, 2, 16, 4);
    let ts = Tensor::from_slice(&[0i64, 1, 500, 999]);
    let m = dir.path().to_str().unwrap();
    let out = oracle(
        "unet_diffusers",
        &[
            ("sample", &sample),
            ("timesteps", &ts),
            ("t_batch", &t_batch),
        ],
        &["load", m],
    );
    compare(
        "saved by us, loaded by diffusers",
        &model,
        &sample,
        &t_batch,
        &out,
    );

    // And we read back exactly what we wrote.
    let ck = load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(ck.layout, Layout::Pipeline);
    assert_eq!(ck.scheduler_config.unwrap(), ddpm_scheduler_json());
    tch::no_grad(|| {
        let x = model.forward_t(&sample, &t_batch, false);
        assert!(x.equal(&ck.model.forward_t(&sample, &t_batch, false)));
    });
}

/// A pipeline folder saved by us with a zero model, for the bad-input tests.
fn saved_pipeline() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = UNet2DConfig::scale(8, 3);
    UNet2DModel::build(vs.root(), &cfg, crate::unet::Fill::Zeros).unwrap();
    save_pipeline(dir.path(), &vs, &cfg, &ddpm_scheduler_json()).unwrap();
    let weights = dir.path().join("unet").join(WEIGHTS_SAFETENSORS);
    (dir, weights)
}

fn load_err(dir: &Path) -> String {
    match load(dir, Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn rewrite(weights: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut t = Tensor::read_safetensors(weights).unwrap();
    edit(&mut t);
    Tensor::write_safetensors(&t, weights).unwrap();
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_listed_together() {
    let (dir, weights) = saved_pipeline();
    rewrite(&weights, |t| {
        t.retain(|(k, _)| k != "conv_out.bias" && k != "mid_block.attentions.0.to_k.weight");
        t.push((
            "extra.weight".into(),
            Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
        ));
        let (_, w) = t.iter_mut().find(|(k, _)| k == "conv_in.bias").unwrap();
        *w = Tensor::zeros([17], (tch::Kind::Float, Device::Cpu));
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("missing tensors (2): conv_out.bias, mid_block.attentions.0.to_k.weight"),
        "{e}"
    );
    assert!(e.contains("unexpected tensors (1): extra.weight"), "{e}");
    assert!(
        e.contains("wrongly shaped tensors (1): conv_in.bias: file [17], model [16]"),
        "{e}"
    );
    assert!(e.contains(WEIGHTS_SAFETENSORS), "{e}");
}

#[test]
fn config_that_does_not_fit_the_weights_is_a_shape_error() {
    let (dir, _) = saved_pipeline();
    let cfg = UNet2DConfig {
        block_out_channels: vec![16, 32, 48],
        ..UNet2DConfig::scale(8, 3)
    };
    write_atomic(
        &dir.path().join("unet").join(CONFIG),
        &pretty(&cfg.to_json_value()),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("wrongly shaped tensors") && e.contains("mid_block.resnets.0.conv1.weight"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors_names_the_file() {
    let (dir, weights) = saved_pipeline();
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(&weights.display().to_string()) && e.contains("corrupt or truncated"),
        "{e}"
    );
    std::fs::write(&weights, b"not a safetensors file").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains(&weights.display().to_string()), "{e}");
}

/// Non-finite weights sample black (or NaN) images without a word: refused, naming the file and
/// the tensors.
#[test]
fn weights_with_nan_or_inf_are_refused_naming_file_and_tensors() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let (dir, weights) = saved_pipeline();
        rewrite(&weights, |t| {
            let (_, w) = t.iter_mut().find(|(k, _)| k == "conv_in.bias").unwrap();
            *w = w.fill(bad);
        });
        let e = load_err(dir.path());
        assert!(
            e.contains(&weights.display().to_string())
                && e.contains("not finite")
                && e.contains("conv_in.bias"),
            "{e}"
        );
    }
}

#[test]
fn bad_configs_name_the_field() {
    let (dir, _) = saved_pipeline();
    let config_path = dir.path().join("unet").join(CONFIG);
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let with = |key: &str, value: Value| {
        let mut v = original.clone();
        v[key] = value;
        write_atomic(&config_path, &pretty(&v)).unwrap();
        load_err(dir.path())
    };
    let e = with(
        "down_block_types",
        json!(["DownBlock2D", "SkipDownBlock2D", "DownBlock2D"]),
    );
    assert!(
        e.contains("SkipDownBlock2D") && e.contains("down_block_types") && e.contains(CONFIG),
        "{e}"
    );
    let e = with(
        "up_block_types",
        json!(["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    );
    assert!(
        e.contains("CrossAttnUpBlock2D") && e.contains("up_block_types"),
        "{e}"
    );
    let e = with("use_linear_projection", json!(true));
    assert!(e.contains("`use_linear_projection`"), "{e}");
    let e = with("resnet_time_scale_shift", json!("scale_shift"));
    assert!(e.contains("`resnet_time_scale_shift`"), "{e}");
    let e = with("_class_name", json!("UNet2DConditionModel"));
    assert!(e.contains("UNet2DConditionModel"), "{e}");
}

#[test]
fn not_a_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("not a diffusers model directory"), "{e}");
    std::fs::write(dir.path().join(CONFIG), "{}").unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(WEIGHTS_SAFETENSORS) && e.contains(WEIGHTS_BIN),
        "{e}"
    );
}

#[test]
fn saving_needs_a_scheduler_class() {
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = UNet2DConfig::scale(8, 3);
    UNet2DModel::build(vs.root(), &cfg, crate::unet::Fill::Zeros).unwrap();
    let e =
        save_pipeline(dir.path(), &vs, &cfg, &json!({"num_train_timesteps": 1000})).unwrap_err();
    assert!(format!("{e:#}").contains("`_class_name`"), "{e:#}");
}

#[test]
fn corrupt_bin_names_the_file() {
    let (dir, _) = saved_pipeline();
    let unet = dir.path().join("unet");
    std::fs::remove_file(unet.join(WEIGHTS_SAFETENSORS)).unwrap();
    std::fs::write(unet.join(WEIGHTS_BIN), b"this is not a pickle").unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(&unet.join(WEIGHTS_BIN).display().to_string()),
        "{e}"
    );
    assert!(!unet.join(CONVERTED_RECORD).exists());
}
