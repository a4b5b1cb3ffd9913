//! The convolution every layer of the UNet uses, with an optional per-output-channel affine
//! after it: `y = conv(x)·scale + shift`. This is the hook of the ANP defenses (paper §4.6.1; official `anp_model.py`: the
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::unet::{UNet2DConfig, UNet2DModel};
    use tch::{Device, Kind};

    #[test]
    fn every_conv_is_hooked_by_its_state_dict_name_and_is_exact_when_unperturbed() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut rng = Rng::seeded(1);
        let model = rng
            .with(|| UNet2DModel::new(vs.root(), &UNet2DConfig::scale(16, 1)))
            .unwrap();
        let x = rng.randn(&[2, 1, 16, 16]);
        drop(rng);
        let vars = vs.variables();
        let mut conv_weights: Vec<&String> = vars
            .iter()
            .filter(|(_, t)| t.dim() == 4)
            .map(|(k, _)| k)
            .collect();
        conv_weights.sort();
        let convs = model.convs();
        let mut hooked: Vec<String> = convs
            .iter()
            .map(|c| format!("{}.weight", c.path()))
            .collect();
        hooked.sort();
        assert_eq!(hooked.iter().collect::<Vec<_>>(), conv_weights);
        for c in &convs {
            assert_eq!(
                vars[&format!("{}.weight", c.path())].size()[0],
                c.out_channels()
            );
        }

        let run = || tch::no_grad(|| model.forward_at(&x, 7, false));
        let plain = run();
        // γ = 1, β = 0 everywhere changes nothing.
        for c in &convs {
            let n = c.out_channels();
            c.set_affine(Some(ChannelAffine {
                scale: Tensor::ones([n], (Kind::Float, Device::Cpu)),
                shift: Tensor::zeros([n], (Kind::Float, Device::Cpu)),
            }));
        }
        assert!(run().equal(&plain));
        model.clear_perturbations();
        // The output conv is last: its affine acts on the model's output directly.
        let out = convs.last().unwrap();
        assert_eq!(out.path(), "conv_out");
        out.set_affine(Some(ChannelAffine {
            scale: Tensor::from_slice(&[2.0f32]),
            shift: Tensor::from_slice(&[0.5f32]),
        }));
        assert!(run().equal(&(&plain * 2.0 + 0.5)));
        model.clear_perturbations();
        assert!(run().equal(&plain));
    }
}
