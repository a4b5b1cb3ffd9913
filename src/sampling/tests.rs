//! Sampling parity with diffusers' pipelines and schedulers, over a stand-in denoiser.
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::*;
use crate::scheduler::{Clip, Overrides, SchedulerConfig};
use crate::testing::{assert_close, oracle};

/// Mirrors `stand_in` in python/oracles/sampling.py op for op.
fn stand_in(x: &Tensor, t: &Tensor) -> Tensor {
    let w = t.int64_value(&[0]) as f64 / 1000.0;
    x * w + ((x * 2.0).tanh() * 0.3 + (x * 3.0).cos() * 0.05) * (1.0 - w)
}

const SHAPE: [i64; 3] = [3, 8, 8];

struct Case {
    name: &'static str,
    class: &'static str,
    config: Value,
    steps: usize,
    seed: u64,
    eta: f64,
    xt: bool,
    offset: bool,
    /// Also compare with the real DDPMPipeline / DDIMPipeline.
    pipeline: bool,
}

fn case(name: &'static str, class: &'static str, config: Value, steps: usize, seed: u64) -> Case {
    Case {
        name,
        class,
        config,
        steps,
        seed,
        eta: 0.0,
        xt: false,
        offset: false,
        pipeline: false,
    }
}

fn cases() -> Vec<Case> {
    let large = |clip: bool| json!({"variance_type": "fixed_large", "clip_sample": clip});
    let short = |var: &str, clip: bool| json!({"num_train_timesteps": 20, "variance_type": var, "clip_sample": clip});
    vec![
        Case {
            pipeline: true,
            ..case("ddpm_large_none", "ddpm", large(false), 50, 0)
        },
        Case {
            pipeline: true,
            ..case(
                "ddpm_small_x0",
                "ddpm",
                json!({"variance_type": "fixed_small"}),
                50,
                1,
            )
        },
        // google/ddpm-cifar10-32's scheduler over the paper's full 1000 steps.
        Case {
            pipeline: true,
            ..case("ddpm_cifar10_1000", "ddpm", large(true), 1000, 2)
        },
        Case {
            pipeline: true,
            ..case(
                "ddpm_short_large_x0",
                "ddpm",
                short("fixed_large", true),
                20,
                3,
            )
        },
        case(
            "ddpm_short_small_none",
            "ddpm",
            short("fixed_small", false),
            20,
            4,
        ),
        case(
            "ddpm_scaled_trailing_smalllog",
            "ddpm",
            json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                   "timestep_spacing": "trailing", "variance_type": "fixed_small_log", "clip_sample": false}),
            16,
            5,
        ),
        Case {
            pipeline: true,
            ..case("ddim_eta0", "ddim", json!({"clip_sample": false}), 20, 6)
        },
        Case {
            pipeline: true,
            eta: 1.0,
            ..case("ddim_eta1_x0", "ddim", json!({"clip_sample": true}), 20, 7)
        },
        Case {
            eta: 0.5,
            ..case(
                "ddim_v_eta05",
                "ddim",
                json!({"prediction_type": "v_prediction", "clip_sample": false, "set_alpha_to_one": false}),
                25,
                8,
            )
        },
        case(
            "dpmpp_order2",
            "dpm",
            json!({"algorithm_type": "dpmsolver++", "solver_order": 2}),
            20,
            9,
        ),
        case(
            "dpmpp_heun_10",
            "dpm",
            json!({"solver_type": "heun"}),
            10,
            10,
        ),
        case(
            "dpm_order2",
            "dpm",
            json!({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
            20,
            11,
        ),
        case("dpmpp_order1", "dpm", json!({"solver_order": 1}), 12, 12),
        case(
            "dpm_heun_8",
            "dpm",
            json!({"algorithm_type": "dpmsolver", "solver_type": "heun", "final_sigmas_type": "sigma_min"}),
            8,
            13,
        ),
        case(
            "dpmpp_v",
            "dpm",
            json!({"prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
            15,
            14,
        ),
        Case {
            xt: true,
            ..case("ddpm_xt", "ddpm", large(false), 50, 15)
        },
        Case {
            xt: true,
            ..case("dpmpp_xt", "dpm", json!({}), 20, 16)
        },
        Case {
            offset: true,
            ..case("ddpm_offset_x0", "ddpm", large(true), 100, 17)
        },
        Case {
            offset: true,
            ..case("ddim_offset", "ddim", json!({"clip_sample": false}), 20, 18)
        },
    ]
}

fn kind_of(c: &Case) -> SamplerKind {
    match c.class {
        "ddpm" => SamplerKind::Ddpm,
        "ddim" => SamplerKind::Ddim { eta: c.eta },
        _ => SamplerKind::DpmSolver,
    }
}

/// A trigger-like offset: −1 background with a +1 box, as the backdoor's noise + trigger start.
fn trigger() -> Tensor {
    let t = Tensor::full(SHAPE, -1.0, (Kind::Float, Device::Cpu));
    let _ = t.narrow(1, 5, 3).narrow(2, 5, 3).fill_(1.0);
    t
}

fn run_ours(c: &Case, n: usize, batch: usize, device: Device) -> Samples {
    let config = SchedulerConfig::from_json(&c.config).unwrap();
    let ov = Overrides {
        clip: c.xt.then_some(Clip::Xt),
        ..Default::default()
    };
    let mut sampler = Sampler::new(kind_of(c), &config, &ov).unwrap();
    let opts = SampleOptions {
        batch_size: batch,
        device,
        offset: c.offset.then(trigger),
        ..SampleOptions::new(n, SHAPE, c.seed, c.steps)
    };
    sample(&mut stand_in, &mut sampler, &opts).unwrap()
}

fn oracle_spec(c: &Case, seed: u64, batch: usize) -> Value {
    json!({"name": c.name, "class": c.class, "config": c.config, "steps": c.steps, "seed": seed, "batch": batch,
           "shape": SHAPE, "eta": c.eta, "xt": c.xt, "offset": c.offset, "pipeline": c.pipeline})
}

#[test]
fn sampling_matches_diffusers() {
    let cases = cases();
    let specs: Vec<Value> = cases.iter().map(|c| oracle_spec(c, c.seed, 2)).collect();
    let offsets: Vec<(String, Tensor)> = cases
        .iter()
        .filter(|c| c.offset)
        .map(|c| (format!("{}.offset", c.name), trigger()))
        .collect();
    let inputs: Vec<(&str, &Tensor)> = offsets.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let theirs = oracle(
        "sampling",
        &inputs,
        &[&serde_json::to_string(&specs).unwrap()],
    );
    for c in &cases {
        let ours = run_ours(c, 2, 2, Device::Cpu);
        let expected = &theirs[c.name];
        assert!(
            expected.abs().max().double_value(&[]) > 0.5,
            "{}: degenerate reference",
            c.name
        );
        assert_close(c.name, &ours.images, expected, 1e-4);
        if c.pipeline {
            let mapped = (&ours.images / 2.0 + 0.5)
                .clamp(0.0, 1.0)
                .permute([0, 2, 3, 1]);
            assert_close(
                &format!("{} vs the diffusers pipeline", c.name),
                &mapped,
                &theirs[&format!("{}.pipeline", c.name)],
                1e-4,
            );
        }
        if c.xt {
            assert!(
                ours.images.abs().max().double_value(&[]) <= 1.0,
                "{}: xt leaves values outside [-1, 1]",
                c.name
            );
        }
        assert_eq!(
            ours.record.timesteps.len(),
            ours.record.num_inference_steps.min(c.steps)
        );
    }
}

#[test]
fn later_batches_follow_the_seeding_rule() {
    // 3 images in batches of 2: batch 0 is the pipeline with `seed`, batch 1 (one image) the
    // pipeline with derive_seed(seed, 1).
    let c = case(
        "multi",
        "ddpm",
        json!({"variance_type": "fixed_large", "clip_sample": true}),
        30,
        19,
    );
    let mut first = oracle_spec(&c, c.seed, 2);
    first["name"] = json!("batch0");
    let mut second = oracle_spec(&c, crate::rng::derive_seed(c.seed, 1), 1);
    second["name"] = json!("batch1");
    let theirs = oracle(
        "sampling",
        &[],
        &[&serde_json::to_string(&[first, second]).unwrap()],
    );
    let ours = run_ours(&c, 3, 2, Device::Cpu);
    let expected = Tensor::cat(&[&theirs["batch0"], &theirs["batch1"]], 0);
    assert_close("3 images in batches of 2", &ours.images, &expected, 1e-4);
    assert_eq!(
        ours.record.batch_seeds,
        vec![c.seed, crate::rng::derive_seed(c.seed, 1)]
    );
    let record = serde_json::to_value(&ours.record).unwrap();
    assert_eq!(record["scheduler_config"]["variance_type"], "fixed_large");
    assert_eq!(record["clip"], "x0");
    assert_eq!(record["timesteps"].as_array().unwrap().len(), 30);

    // A caller already holding the generator gets the same images from it, whatever its state.
    let config = SchedulerConfig::from_json(&c.config).unwrap();
    let mut sampler = Sampler::new(SamplerKind::Ddpm, &config, &Overrides::default()).unwrap();
    let opts = SampleOptions {
        batch_size: 2,
        device: Device::Cpu,
        ..SampleOptions::new(3, SHAPE, c.seed, c.steps)
    };
    let mut rng = crate::rng::Rng::seeded(12345);
    let _ = rng.randn(&[7]);
    let mut got = Vec::new();
    sample_batches_with(
        &mut rng,
        &mut stand_in,
        &mut sampler,
        &opts,
        &mut |start, x| {
            got.push((start, x));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 2]);
    let joined = Tensor::cat(
        &got.iter()
            .map(|(_, x)| x.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    assert_close("sample_batches_with", &joined, &ours.images, 0.0);
}

/// Run on a GPU machine with `cargo test -- --ignored gpu_`.
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_matches_cpu() {
    assert!(tch::Cuda::is_available(), "no CUDA device visible");
    let c = case(
        "gpu",
        "ddpm",
        json!({"variance_type": "fixed_large", "clip_sample": true}),
        50,
        20,
    );
    let (cpu, gpu) = (
        run_ours(&c, 2, 2, Device::Cpu),
        run_ours(&c, 2, 2, Device::Cuda(0)),
    );
    assert_close("cuda vs cpu", &gpu.images, &cpu.images, 1e-4);
}

#[test]
fn bad_options_are_refused() {
    let config = SchedulerConfig::from_json_str(r#"{"clip_sample": false}"#).unwrap();
    let mut sampler = Sampler::new(SamplerKind::Ddpm, &config, &Overrides::default()).unwrap();
    let mut run = |opts: SampleOptions| {
        format!(
            "{:#}",
            sample(&mut stand_in, &mut sampler, &opts).unwrap_err()
        )
    };
    let cpu = |o: SampleOptions| SampleOptions {
        device: Device::Cpu,
        ..o
    };
    assert!(run(cpu(SampleOptions::new(0, SHAPE, 0, 10))).contains("n must be at least 1"));
    assert!(run(cpu(SampleOptions::new(2, SHAPE, 0, 0)))
        .contains("num_inference_steps must be at least 1"));
    assert!(run(cpu(SampleOptions {
        batch_size: 0,
        ..SampleOptions::new(2, SHAPE, 0, 10)
    }))
    .contains("batch size"));
    let wrong = Tensor::zeros([3, 4, 4], (Kind::Float, Device::Cpu));
    let e = run(cpu(SampleOptions {
        offset: Some(wrong),
        ..SampleOptions::new(2, SHAPE, 0, 10)
    }));
    assert!(e.contains("offset shape [3, 4, 4]"), "{e}");
}

#[test]
fn pngs_are_written_and_read_as_diffusers_does() {
    // Values on the rounding boundaries: (x/2+0.5)·255 = k + 0.5 rounds half to even.
    let x = crate::rng::Rng::seeded(0).rand(&[2, 3, 8, 8]) * 2.4 - 1.2;
    let ties = Tensor::arange(64, (Kind::Float, Device::Cpu)).view([8, 8]) * 4.0 + 0.5;
    let _ = x.get(0).get(0).copy_(&((ties / 255.0 - 0.5) * 2.0));
    let dir = tempfile::tempdir().unwrap();
    let written = save_pngs(&x, dir.path(), 7).unwrap();
    assert_eq!(written[1].file_name().unwrap(), "000008.png");
    let theirs = oracle(
        "png_quantize",
        &[("x", &x)],
        &[dir.path().to_str().unwrap()],
    );
    let ours = to_u8(&x).permute([0, 2, 3, 1]);
    assert!(
        ours.equal(&theirs["diffusers"]),
        "quantisation differs from diffusers' numpy_to_pil"
    );
    assert!(
        ours.equal(&theirs["pil_read"]),
        "PIL reads other pixels from our PNGs"
    );
    let back = load_pngs(dir.path()).unwrap();
    assert_close(
        "load_pngs",
        &back,
        &(to_u8(&x).to_kind(Kind::Float) / 255.0),
        0.0,
    );

    let grey = Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu));
    let gdir = tempfile::tempdir().unwrap();
    save_pngs(&grey, gdir.path(), 0).unwrap();
    assert_eq!(load_pngs_u8(gdir.path()).unwrap().size(), vec![1, 1, 4, 4]);
    save_pngs(
        &Tensor::zeros([1, 1, 5, 4], (Kind::Float, Device::Cpu)),
        gdir.path(),
        1,
    )
    .unwrap();
    assert!(format!("{:#}", load_pngs(gdir.path()).unwrap_err())
        .contains("differ from the first image"));
    let empty = tempfile::tempdir().unwrap();
    assert!(format!("{:#}", load_pngs(empty.path()).unwrap_err()).contains("no .png files"));
    assert!(to_png_bytes(&Tensor::zeros([2, 4, 4], (Kind::Float, Device::Cpu))).is_err());
}

/// E7's given start: each batch's first denoiser call sees exactly its slice of the start
/// images (no noise drawn, none added); a start of the wrong shape, or beside an offset, is
/// refused.
#[test]
fn a_given_start_is_x_t_itself() {
    let config = SchedulerConfig::from_json_str(r#"{"clip_sample": false}"#).unwrap();
    let mut sampler = Sampler::new(SamplerKind::Ddpm, &config, &Overrides::default()).unwrap();
    let start =
        Tensor::arange(5 * 3 * 8 * 8, (Kind::Float, Device::Cpu)).reshape([5, 3, 8, 8]) / 1000.0;
    let opts = SampleOptions {
        batch_size: 2,
        device: Device::Cpu,
        start: Some(start.shallow_clone()),
        ..SampleOptions::new(5, SHAPE, 0, 3)
    };
    let mut firsts = Vec::new();
    let mut last_t = i64::MAX;
    let mut recording = |x: &Tensor, t: &Tensor| {
        let t0 = t.int64_value(&[0]);
        if t0 > last_t || firsts.is_empty() {
            firsts.push(x.shallow_clone());
        }
        last_t = t0;
        stand_in(x, t)
    };
    let out = sample(&mut recording, &mut sampler, &opts).unwrap();
    assert_eq!(out.images.size(), [5, 3, 8, 8]);
    assert_eq!(firsts.len(), 3, "one first call per batch");
    assert!(Tensor::cat(&firsts, 0).equal(&start));
    let wrong = SampleOptions {
        start: Some(start.narrow(0, 0, 4)),
        ..SampleOptions::new(5, SHAPE, 0, 3)
    };
    let e = format!(
        "{:#}",
        sample(&mut stand_in, &mut sampler, &wrong).unwrap_err()
    );
    assert!(e.contains("start images"), "{e}");
    let both = SampleOptions {
        offset: Some(Tensor::zeros([3, 8, 8], (Kind::Float, Device::Cpu))),
        ..opts
    };
    let e = format!(
        "{:#}",
        sample(&mut stand_in, &mut sampler, &both).unwrap_err()
    );
    assert!(e.contains("exclude each other"), "{e}");
}
