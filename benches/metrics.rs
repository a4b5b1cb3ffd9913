//! Inner kernels of the metrics: Inception pool3 features (images/s), SSIM, Fréchet distance.
//!
//! The Inception network runs with seeded random parameters of a trained network's scale (the
//! real weights are not on this machine): its cost depends on the shapes, not the values.
use baddiffusion::metrics::frechet::{frechet_distance, Statistics};
use baddiffusion::metrics::inception::FidInceptionV3;
use baddiffusion::metrics::ssim::{ssim_per_image, SsimConfig};
use baddiffusion::rng::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tch::{Device, Kind};

fn inception(c: &mut Criterion) {
    let mut rng = Rng::seeded(1);
    let mut net = FidInceptionV3::new(Device::Cpu);
    net.randomize(&mut rng);
    let images = rng.rand(&[4, 3, 32, 32]);
    drop(rng);
    let mut g = c.benchmark_group("inception_pool3");
    g.sample_size(10);
    g.throughput(Throughput::Elements(4));
    g.bench_function("batch4_32px", |b| b.iter(|| net.pool3(&images)));
    g.finish();
}

fn ssim(c: &mut Criterion) {
    let mut rng = Rng::seeded(2);
    let (x, y) = (rng.rand(&[64, 3, 32, 32]), rng.rand(&[64, 3, 32, 32]));
    drop(rng);
    let cfg = SsimConfig::default();
    let mut g = c.benchmark_group("ssim");
    g.throughput(Throughput::Elements(64));
    g.bench_function("64x3x32x32", |b| {
        b.iter(|| ssim_per_image(&x, &y, &cfg).unwrap())
    });
    g.finish();
}

fn frechet(c: &mut Criterion) {
    let mut rng = Rng::seeded(3);
    let a = Statistics::from_features(&rng.randn(&[512, 256]).to_kind(Kind::Double)).unwrap();
    let b =
        Statistics::from_features(&(rng.randn(&[512, 256]) * 1.1).to_kind(Kind::Double)).unwrap();
    drop(rng);
    let mut g = c.benchmark_group("frechet");
    g.sample_size(10);
    g.bench_function("d256", |bch| bch.iter(|| frechet_distance(&a, &b).unwrap()));
    g.finish();
}

criterion_group!(benches, inception, ssim, frechet);
criterion_main!(benches);
