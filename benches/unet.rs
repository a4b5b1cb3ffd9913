//! UNet speed: inference at the CIFAR-10 checkpoint's size, and one training step of the small
//! CPU configuration. `cargo bench --bench unet -- --test` runs each once as a smoke test.
use criterion::{criterion_group, criterion_main, Criterion};
use tch::{nn, nn::OptimizerConfig, Kind, Reduction};

use baddiffusion::rng::Rng;
use baddiffusion::unet::{UNet2DConfig, UNet2DModel};

fn forward_cifar10(c: &mut Criterion) {
    let device = baddiffusion::default_device();
    let mut rng = Rng::seeded(0);
    let vs = nn::VarStore::new(device);
    let model = rng.with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::cifar10_32()).unwrap());
    let x = rng.randn(&[16, 3, 32, 32]).to_device(device);
    let t = rng.randint(1000, &[16]).to_device(device);
    drop(rng);
    let mut g = c.benchmark_group("unet");
    g.sample_size(10);
    g.bench_function("forward cifar10_32 batch 16 (no grad)", |b| {
        b.iter(|| {
            tch::no_grad(|| {
                model
                    .forward_t(&x, &t, false)
                    .sum(Kind::Float)
                    .double_value(&[])
            })
        })
    });
    g.finish();
}

fn train_step_scale(c: &mut Criterion) {
    let device = baddiffusion::default_device();
    let mut rng = Rng::seeded(0);
    let vs = nn::VarStore::new(device);
    let model = rng.with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::scale(16, 3)).unwrap());
    let mut opt = nn::Adam::default().build(&vs, 2e-4).unwrap();
    let x = rng.randn(&[64, 3, 16, 16]).to_device(device);
    let noise = rng.randn(&[64, 3, 16, 16]).to_device(device);
    let t = rng.randint(1000, &[64]).to_device(device);
    let mut g = c.benchmark_group("unet");
    g.sample_size(10);
    g.bench_function(
        "train step scale(16, 3) batch 64 (forward + MSE backward + Adam)",
        |b| {
            b.iter(|| {
                let loss = model
                    .forward_t(&x, &t, true)
                    .mse_loss(&noise, Reduction::Mean);
                opt.backward_step(&loss);
                loss.double_value(&[])
            })
        },
    );
    g.finish();
    drop(rng);
}

criterion_group!(benches, forward_cifar10, train_step_scale);
criterion_main!(benches);
