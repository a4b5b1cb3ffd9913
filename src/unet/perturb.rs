//! The convolution every layer of the UNet uses, with an optional per-output-channel affine
//! after it: `y = conv(x)·scale + shift`. This is the hook of the ANP defenses (spec §6.1: the
//! official `PerturbConv2d` is a conv followed by exactly this affine). With no affine set the
//! output is the plain convolution's, bit for bit, and the weights keep their state-dict names.
use std::sync::{Arc, Mutex};

use tch::{nn, nn::Module, Tensor};

/// A per-output-channel `scale` and `shift`, each of shape `[out_channels]`.
#[derive(Debug)]
pub struct ChannelAffine {
    pub scale: Tensor,
    pub shift: Tensor,
}

impl ChannelAffine {
    /// Applies the affine to a conv output `[B, C, H, W]`.
    pub fn apply(&self, y: &Tensor) -> Tensor {
        let scale = self.scale.reshape([1, -1, 1, 1]);
        let shift = self.shift.reshape([1, -1, 1, 1]);
        y * scale + shift
    }
}

/// `nn.Conv2d` named by its state-dict path, with a slot for a [`ChannelAffine`]. The slot is
/// shared (behind a lock) so a defense can perturb a model it only borrows.
#[derive(Debug)]
pub struct PerturbConv2d {
    pub conv: nn::Conv2D,
    path: String,
    out_channels: i64,
    affine: Arc<Mutex<Option<ChannelAffine>>>,
}

impl PerturbConv2d {
    pub fn new(conv: nn::Conv2D, path: String, out_channels: i64) -> Self {
        PerturbConv2d {
            conv,
            path,
            out_channels,
            affine: Arc::new(Mutex::new(None)),
        }
    }

    /// The state-dict prefix of the conv's variables (e.g. `down_blocks.0.resnets.0.conv1`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Sets (or with `None` removes) the affine applied after the convolution.
    pub fn set_affine(&self, affine: Option<ChannelAffine>) {
        *self.affine.lock().unwrap_or_else(|p| p.into_inner()) = affine;
    }

    pub fn is_perturbed(&self) -> bool {
        self.affine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.conv.forward(x);
        match &*self.affine.lock().unwrap_or_else(|p| p.into_inner()) {
            None => y,
            Some(a) => a.apply(&y),
        }
    }
}
