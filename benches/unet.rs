//! UNet kernels: inference at the CIFAR-10 checkpoint's size, the backdoor loss with its backward
//! pass, and one training step as the trainer takes it, for the smoke profile's scale model.
//! `cargo bench --bench unet -- --test` runs each once as a smoke test; the side-by-side
//! comparison with PyTorch is `cargo xtask bench`.
use criterion::{criterion_group, criterion_main, Criterion};
use tch::{nn, Kind, Tensor};

use baddiffusion::backdoor_loss::{backdoor_loss, BackdoorSchedule};
use baddiffusion::bench::random_poison_batch;
use baddiffusion::poison::PoisonBatch;
use baddiffusion::rng::Rng;
use baddiffusion::training::update::Update;
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

/// The smoke profile's model and one batch of it: scale(16, 1), T = 100 linear betas, batch 64
/// (10 % poisoned) with its noise and timesteps.
struct ScaleSetup {
    vs: nn::VarStore,
    model: UNet2DModel,
    schedule: BackdoorSchedule,
    batch: PoisonBatch,
    noise: Tensor,
    t: Tensor,
}

fn scale_setup() -> ScaleSetup {
    let device = baddiffusion::default_device();
    let mut rng = Rng::seeded(0);
    let vs = nn::VarStore::new(device);
    let model = rng.with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::scale(16, 1)).unwrap());
    let betas = Tensor::linspace(0.001, 0.2, 100, (Kind::Float, tch::Device::Cpu));
    ScaleSetup {
        schedule: BackdoorSchedule::from_betas(&betas),
        batch: random_poison_batch(&mut rng, 64, [1, 16, 16], 0.1).to_device(device),
        noise: rng.randn(&[64, 1, 16, 16]).to_device(device),
        t: rng.randint(100, &[64]).to_device(device),
        vs,
        model,
    }
}

impl ScaleSetup {
    fn loss(&self) -> Tensor {
        backdoor_loss(
            &self.schedule,
            &|x, t| self.model.forward_t(x, t, true),
            &self.batch,
            &self.t,
            &self.noise,
        )
        .unwrap()
    }
}

fn loss_scale(c: &mut Criterion) {
    let setup = scale_setup();
    let mut g = c.benchmark_group("backdoor_loss");
    g.sample_size(10);
    g.bench_function("scale(16, 1) batch 64 forward + backward", |b| {
        b.iter(|| {
            let loss = setup.loss();
            loss.backward();
            loss.double_value(&[])
        })
    });
    g.finish();
}

fn train_step_scale(c: &mut Criterion) {
    let setup = scale_setup();
    let mut update = Update::new(&setup.vs, 1.0, 1);
    let mut g = c.benchmark_group("unet");
    g.sample_size(10);
    g.bench_function(
        "train step scale(16, 1) batch 64 (backdoor loss, backward, clip, Adam)",
        |b| {
            b.iter(|| {
                let loss = setup.loss();
                let value = loss.double_value(&[]);
                update.apply(&loss, 1e-4, true, None);
                value
            })
        },
    );
    g.finish();
}

criterion_group!(benches, forward_cifar10, loss_scale, train_step_scale);
criterion_main!(benches);
