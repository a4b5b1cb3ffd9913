//! Loss scaling for float16 mixed precision, as `torch.amp.GradScaler` does it (the
//! official code trains under accelerate's `mixed_precision="fp16"`): the loss is multiplied by
//! a large scale before backward so small float16 gradients do not flush to zero; before the
//! optimizer step the gradients are divided by it again and checked. A step whose gradients hold
//! an inf or NaN is skipped and the scale halved; after `growth_interval` clean steps in a row
//! the scale doubles.
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// torch's defaults.
const INIT_SCALE: f64 = 65_536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: u64 = 2000;

/// The scaler's whole state (saved with a training checkpoint so a resumed run matches).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: u64,
    /// Clean steps after which the scale grows.
    pub growth_interval: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: INIT_SCALE,
            growth_tracker: 0,
            growth_interval: GROWTH_INTERVAL,
        }
    }
}

impl GradScaler {
    /// The loss to call backward on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Divides every gradient by the scale in place; returns whether any is not finite (the
    /// step must then be skipped).
    pub fn unscale(&self, params: &[Tensor]) -> bool {
        let mut found_inf = false;
        for p in params {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            // In float32, as torch unscales: a float16 gradient times 1/scale may underflow.
            let _ = g.g_mul_scalar_(1.0 / self.scale);
            found_inf |= g.isfinite().all().int64_value(&[]) == 0;
        }
        found_inf
    }

    /// After each optimizer step (taken or skipped): back off on overflow, else count towards
    /// growth.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= GROWTH_FACTOR;
                self.growth_tracker = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    #[test]
    fn scaled_gradients_come_back_unscaled() {
        let s = GradScaler::default();
        let p = param(&[1.0, -2.0, 3.0]);
        s.scale_loss(&(&p * &p).sum(Kind::Float)).backward();
        assert_eq!(p.grad().double_value(&[1]), -4.0 * INIT_SCALE);
        assert!(!s.unscale(&[p.shallow_clone()]));
        let g: Vec<f32> = Vec::try_from(p.grad()).unwrap();
        assert_eq!(g, vec![2.0, -4.0, 6.0]);
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale_then_clean_steps_grow_it() {
        let mut s = GradScaler::default();
        let p = param(&[1.0]);
        (&p * f64::INFINITY).sum(Kind::Float).backward();
        let found = s.unscale(&[p.shallow_clone()]);
        assert!(found);
        s.update(found);
        assert_eq!((s.scale, s.growth_tracker), (INIT_SCALE / 2.0, 0));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!(s.scale, INIT_SCALE / 2.0);
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), (INIT_SCALE, 0));
    }

    /// Against torch.amp.GradScaler on the CPU: gradients (one step overflowing) go through both
    /// scalers with SGD at lr 1; the scale after every step and the parameters must agree.
    #[test]
    fn matches_torch_grad_scaler() {
        let grads = Tensor::from_slice(&[
            0.5f32,
            -1.0,
            0.25,
            2.0,
            f32::INFINITY,
            1.0,
            -0.5,
            0.125,
            3.0,
            1.5,
            1.0,
            -1.0,
            0.5,
            0.5,
        ])
        .view([7, 2]);
        let out = crate::testing::oracle("grad_scaler", &[("grads", &grads)], &["2"]);
        let mut s = GradScaler {
            growth_interval: 2,
            ..GradScaler::default()
        };
        let p = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut scales = Vec::new();
        for i in 0..7 {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
            s.scale_loss(&(&p * grads.get(i)).sum(Kind::Float))
                .backward();
            let found = s.unscale(&[p.shallow_clone()]);
            if !found {
                tch::no_grad(|| {
                    let _ = p.shallow_clone().g_sub_(&p.grad());
                });
            }
            s.update(found);
            scales.push(s.scale);
        }
        let theirs: Vec<f64> = Vec::try_from(&out["scales"]).unwrap();
        assert_eq!(scales, theirs);
        let (ours, theirs): (Vec<f32>, Vec<f32>) = (
            Vec::try_from(p.detach()).unwrap(),
            Vec::try_from(&out["param"]).unwrap(),
        );
        assert_eq!(ours, theirs);
    }
}
