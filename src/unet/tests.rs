//! Forward parity with diffusers: the oracle builds a random `UNet2DModel` from our config,
//! saves it as diffusers does and runs it; we load the folder and run the same inputs.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::*;
use crate::checkpoint;
use crate::rng::Rng;
use crate::testing::{assert_close, oracle};

/// Timesteps run one at a time (as Python ints in the oracle).
const TIMESTEPS: [i64; 4] = [0, 1, 500, 999];

/// Options for [`parity`]: the folder layout and weight format the oracle writes.
pub(crate) struct Saved<'a> {
    pub layout: &'a str,
    pub format: &'a str,
    pub old_keys: bool,
}

pub(crate) const BARE_SAFETENSORS: Saved = Saved {
    layout: "bare",
    format: "safetensors",
    old_keys: false,
};

/// Random inputs for a model: (sample, per-sample timesteps).
pub(crate) fn inputs(cfg: &UNet2DConfig, batch: i64, size: i64, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::seeded(seed);
    (
        rng.randn(&[batch, cfg.in_channels, size, size]),
        rng.randint(1000, &[batch]),
    )
}

/// Runs our forward at every oracle timestep and compares with diffusers' outputs.
pub(crate) fn compare(
    what: &str,
    model: &UNet2DModel,
    sample: &Tensor,
    t_batch: &Tensor,
    out: &std::collections::HashMap<String, Tensor>,
) {
    tch::no_grad(|| {
        for (k, &t) in TIMESTEPS.iter().enumerate() {
            let ours = model.forward_at(sample, t, false);
            assert_close(
                &format!("{what}, t = {t}"),
                &ours,
                &out[&format!("out_scalar_{k}")],
                1e-4,
            );
        }
        let ours = model.forward_t(sample, t_batch, false);
        assert_close(
            &format!("{what}, per-sample t {t_batch:?}"),
            &ours,
            &out["out_batch"],
            1e-4,
        );
    });
}

/// Has the oracle make a model folder from `cfg` in `dir/model`, and returns its outputs.
pub(crate) fn make_with_oracle(
    cfg: &UNet2DConfig,
    dir: &Path,
    saved: &Saved,
    sample: &Tensor,
    t_batch: &Tensor,
) -> std::collections::HashMap<String, Tensor> {
    let cfg_path = dir.join("config_in.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string(&cfg.to_json_value()).unwrap(),
    )
    .unwrap();
    let model_dir = dir.join("model");
    let (c, m) = (cfg_path.to_str().unwrap(), model_dir.to_str().unwrap());
    let mut args = vec!["make", c, m, saved.layout, saved.format];
    if saved.old_keys {
        args.push("old-keys");
    }
    let ts = Tensor::from_slice(&TIMESTEPS);
    oracle(
        "unet_diffusers",
        &[("sample", sample), ("timesteps", &ts), ("t_batch", t_batch)],
        &args,
    )
}

fn parity(what: &str, cfg: &UNet2DConfig, batch: i64, size: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (sample, t_batch) = inputs(cfg, batch, size, 11);
    let out = make_with_oracle(cfg, dir.path(), &BARE_SAFETENSORS, &sample, &t_batch);
    let ck = checkpoint::load(&dir.path().join("model"), Device::Cpu).unwrap();
    assert_eq!(
        &ck.config,
        &UNet2DConfig {
            diffusers_version: ck.config.diffusers_version.clone(),
            ..cfg.clone()
        }
    );
    compare(what, &ck.model, &sample, &t_batch, &out);
}

#[test]
fn parity_cifar10_32() {
    parity("CIFAR-10 config", &UNet2DConfig::cifar10_32(), 2, 32);
}

#[test]
fn parity_celebahq_256_at_64px() {
    parity(
        "CelebA-HQ config at 64 px",
        &UNet2DConfig::celebahq_256(),
        2,
        64,
    );
}

#[test]
fn parity_scale_config() {
    parity("scale config", &UNet2DConfig::scale(16, 3), 3, 16);
}

#[test]
fn parity_multi_head_attention() {
    let cfg = UNet2DConfig {
        attention_head_dim: Some(8),
        ..UNet2DConfig::scale(16, 3)
    };
    parity("scale config, 8-channel heads", &cfg, 2, 16);
}

#[test]
fn parity_one_channel_and_other_options() {
    // Also the diffusers defaults the DDPM checkpoints do not use: cos first, freq_shift 0,
    // symmetric downsample padding, a mid-block scale, centring, separate attention groups.
    let cfg = UNet2DConfig {
        flip_sin_to_cos: true,
        freq_shift: 0,
        downsample_padding: 1,
        mid_block_scale_factor: 1.4142,
        center_input_sample: true,
        attn_norm_num_groups: Some(4),
        norm_eps: 1e-5,
        time_embedding_dim: Some(48),
        ..UNet2DConfig::scale(16, 1)
    };
    parity("1-channel scale config with other options", &cfg, 2, 16);
}

#[test]
fn parity_without_mid_attention() {
    let cfg = UNet2DConfig {
        add_attention: false,
        dropout: 0.1,
        ..UNet2DConfig::scale(8, 3)
    };
    parity("scale config, no mid attention, dropout (eval)", &cfg, 2, 8);
}

#[test]
fn scale_config_parameter_counts_match_diffusers() {
    // diffusers' UNet2DModel with the same configs counts these (sum of `p.numel()`); the smoke
    // profile's model is the 1-channel one. Image size does not change the count.
    for (channels, expected) in [(1, 280_177), (3, 280_755)] {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        UNet2DModel::build(vs.root(), &UNet2DConfig::scale(16, channels), Fill::Zeros).unwrap();
        assert_eq!(parameter_count(&vs), expected, "scale(16, {channels})");
    }
}

#[test]
fn cifar10_parameter_count_matches_the_checkpoint() {
    // google/ddpm-cifar10-32 has 35.7M parameters.
    let vs = tch::nn::VarStore::new(Device::Cpu);
    UNet2DModel::build(vs.root(), &UNet2DConfig::cifar10_32(), Fill::Zeros).unwrap();
    assert_eq!(parameter_count(&vs), 35_746_307);
}

#[test]
fn fresh_init_is_seeded_and_pytorch_like() {
    let cfg = UNet2DConfig::scale(8, 3);
    let build = |seed| {
        let mut rng = Rng::seeded(seed);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = rng.with(|| UNet2DModel::new(vs.root(), &cfg).unwrap());
        let x = rng.randn(&[1, 3, 8, 8]);
        (vs, tch::no_grad(|| m.forward_at(&x, 10, false)))
    };
    let (vs, a) = build(5);
    let (_, b) = build(5);
    let (_, c) = build(6);
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
    // PyTorch's default: conv weights uniform in ±1/sqrt(fan_in).
    let w = &vs.variables()["conv_in.weight"];
    let bound = 1.0 / 27f64.sqrt();
    assert!(w.abs().max().double_value(&[]) <= bound);
    assert!(w.abs().max().double_value(&[]) > 0.9 * bound);
    assert_eq!(a.kind(), Kind::Float);
}

/// Relative max difference of two tensors (to the larger's magnitude).
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = a.abs().max().double_value(&[]).max(1e-12);
    crate::testing::max_abs_diff(a, b) / scale
}

/// Channels-last activations (a speed option) compute what the standard layout computes, up to
/// rounding, forward and backward; the output comes back in the standard layout.
#[test]
fn channels_last_matches_the_standard_layout() {
    let mut rng = Rng::seeded(5);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut model = rng
        .with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::scale(16, 1)))
        .unwrap();
    let x = rng.randn(&[4, 1, 16, 16]);
    let t = rng.randint(100, &[4]);
    drop(rng);
    let params = vs.trainable_variables();
    let run = |model: &UNet2DModel| {
        let out = model.forward_t(&x, &t, true);
        let loss = out.square().mean(Kind::Float);
        let grads = Tensor::run_backward(&[&loss], &params, false, false);
        (out.detach(), grads)
    };
    let (plain, plain_grads) = run(&model);
    model.set_channels_last(true);
    let (cl, cl_grads) = run(&model);
    assert!(
        cl.is_contiguous(),
        "the output must be in the standard layout"
    );
    let d = rel_diff(&plain, &cl);
    assert!(d < 1e-5, "outputs differ by {d:e}");
    for (i, (a, b)) in plain_grads.iter().zip(&cl_grads).enumerate() {
        let d = rel_diff(a, b);
        assert!(d < 1e-4, "gradient {i} ({:?}) differs by {d:e}", a.size());
    }
}

/// The no-grad path (in-place activations) gives bit-identical outputs to the graph-building one.
#[test]
fn inference_without_grad_is_bit_identical() {
    let mut rng = Rng::seeded(6);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = rng
        .with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::scale(16, 1)))
        .unwrap();
    let x = rng.randn(&[3, 1, 16, 16]);
    let t = rng.randint(100, &[3]);
    drop(rng);
    let with_graph = model.forward_t(&x, &t, false);
    assert!(with_graph.requires_grad());
    let without = tch::no_grad(|| model.forward_t(&x, &t, false));
    assert!(with_graph.detach().equal(&without));
}
