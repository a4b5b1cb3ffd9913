//! The optimizer half of one training iteration, as accelerate and the official loop do it:
//! backpropagate loss / accumulation (scaled first in float16), and on a sync iteration unscale
//! the gradients, clip their norm, take an Adam step and drop them. The trainer, `baddiff bench`
//! and the criterion benches all call this one piece, so what is timed is what trains.
use tch::{nn, Tensor};

use super::adam::{clip_grad_norm, Adam};
use super::grad_scaler::GradScaler;

/// What one call of [`Update::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Not a sync iteration: the gradients were only accumulated.
    Accumulated,
    /// An optimizer step, with the gradient norm before clipping.
    Taken { grad_norm: f64 },
    /// Loss scaling found an inf or NaN gradient: no step, the scale backed off.
    Skipped,
}

impl Step {
    pub fn grad_norm(self) -> Option<f64> {
        match self {
            Step::Taken { grad_norm } => Some(grad_norm),
            _ => None,
        }
    }
}

pub struct Update {
    params: Vec<Tensor>,
    /// Its moments go into the training checkpoint.
    pub adam: Adam,
    grad_clip: f64,
    accumulation: i64,
}

impl Update {
    /// Updates the trainable variables of `vs`; gradients are averaged over `accumulation`
    /// micro-batches and clipped to the norm `grad_clip`.
    pub fn new(vs: &nn::VarStore, grad_clip: f64, accumulation: i64) -> Update {
        let params = vs.trainable_variables();
        let adam = Adam::new(params.iter().map(|p| p.shallow_clone()).collect());
        Update {
            params,
            adam,
            grad_clip,
            accumulation,
        }
    }

    pub fn zero_grad(&mut self) {
        self.adam.zero_grad();
    }

    /// Backward of one micro-batch's `loss`; when `sync`, the optimizer step at learning rate
    /// `lr`. With loss scaling, a step whose gradients overflowed is skipped and the scale backs
    /// off, as `torch.amp.GradScaler.step` does.
    pub fn apply(
        &mut self,
        loss: &Tensor,
        lr: f64,
        sync: bool,
        scaler: Option<&mut GradScaler>,
    ) -> Step {
        let accumulation = self.accumulation as f64;
        match &scaler {
            Some(s) => (s.scale_loss(loss) / accumulation).backward(),
            None => (loss / accumulation).backward(),
        }
        if !sync {
            return Step::Accumulated;
        }
        let overflow = scaler.as_ref().is_some_and(|s| s.unscale(&self.params));
        let step = if overflow {
            Step::Skipped
        } else {
            let grad_norm = clip_grad_norm(&self.params, self.grad_clip);
            self.adam.step(lr);
            Step::Taken { grad_norm }
        };
        if let Some(s) = scaler {
            s.update(overflow);
        }
        self.adam.zero_grad();
        step
    }
}
