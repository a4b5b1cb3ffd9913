//! Every random draw of the harness goes through here, from a recorded seed.
//!
//! tch exposes no per-call `torch.Generator`, only libtorch's global CPU generator. So this
//! module owns that generator: an [`Rng`] holds a process-wide lock for as long as it lives,
//! and draws on the CPU (then callers move tensors to their device), exactly as diffusers'
//! `randn_tensor` does with a CPU generator. Seeding once and drawing in diffusers' order
//! reproduces a diffusers pipeline's noise bit for bit.
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard};

use tch::{Device, Kind, Tensor};

static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

thread_local! {
    static HELD_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Exclusive use of libtorch's global generator, seeded.
pub struct Rng {
    _guard: MutexGuard<'static, ()>,
    seed: u64,
}

impl Rng {
    /// Locks the generator and seeds it. Panics (instead of deadlocking) if this thread already
    /// holds an `Rng`: pass the one you have down instead.
    pub fn seeded(seed: u64) -> Rng {
        assert!(
            !HELD_HERE.with(|h| h.get()),
            "an Rng is already held on this thread; pass it down instead of creating a second one"
        );
        let guard = GLOBAL_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        HELD_HERE.with(|h| h.set(true));
        tch::manual_seed(seed as i64);
        Rng { _guard: guard, seed }
    }

    /// The seed this generator was last seeded with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Reseeds, e.g. per training step from (run seed, step), so that a resumed run draws the
    /// same numbers as an uninterrupted one.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        tch::manual_seed(seed as i64);
    }

    /// Standard normal float32 noise drawn on the CPU: `torch.randn(shape, generator=g)`.
    pub fn randn(&mut self, shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    /// Integers uniform in [0, high): `torch.randint(0, high, shape, generator=g)`.
    pub fn randint(&mut self, high: i64, shape: &[i64]) -> Tensor {
        Tensor::randint(high, shape, (Kind::Int64, Device::Cpu))
    }

    /// Uniform floats in [0, 1): `torch.rand(shape, generator=g)`.
    pub fn rand(&mut self, shape: &[i64]) -> Tensor {
        Tensor::rand(shape, (Kind::Float, Device::Cpu))
    }

    /// Runs `f` (e.g. model construction, whose initialisers use the global generator) under
    /// this generator's lock.
    pub fn with<T>(&mut self, f: impl FnOnce() -> T) -> T {
        f()
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        HELD_HERE.with(|h| h.set(false));
    }
}

/// A well-mixed seed derived from a base seed and a counter (SplitMix64), for per-step streams.
pub fn derive_seed(base: u64, counter: u64) -> u64 {
    let mut z = base ^ counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let a = Rng::seeded(7).randn(&[4, 5]);
        let b = Rng::seeded(7).randn(&[4, 5]);
        let c = Rng::seeded(8).randn(&[4, 5]);
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }

    #[test]
    fn reseed_restarts_the_stream() {
        let mut rng = Rng::seeded(3);
        let first = rng.randn(&[16]);
        let _ = rng.randn(&[16]);
        rng.reseed(3);
        assert!(first.equal(&rng.randn(&[16])));
    }

    #[test]
    fn derived_seeds_differ_per_counter() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|k| derive_seed(42, k)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_eq!(derive_seed(42, 5), derive_seed(42, 5));
    }
}
