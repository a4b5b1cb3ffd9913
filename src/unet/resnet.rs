//! diffusers `resnet.py` (and the `Downsample2D`/`Upsample2D` of `downsampling.py`/`upsampling.py`)
//! as `UNet2DModel` uses them: pre-norm residual blocks with an additive timestep embedding.
use tch::{nn, nn::Module, Tensor};

use super::{Fill, PerturbConv2d};

/// `ResnetBlock2D` with `time_embedding_norm="default"` and `pre_norm=True`:
/// `(shortcut(x) + conv2(drop(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb))))))) / scale`.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: PerturbConv2d,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: PerturbConv2d,
    conv_shortcut: Option<PerturbConv2d>,
    dropout: f64,
    output_scale_factor: f64,
}

/// Everything a `ResnetBlock2D` takes besides its channel counts.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOpts {
    pub temb_channels: i64,
    pub groups: i64,
    pub eps: f64,
    pub dropout: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        o: ResnetOpts,
        fill: Fill,
    ) -> Self {
        ResnetBlock2D {
            norm1: fill.group_norm(&p / "norm1", o.groups, in_channels, o.eps),
            conv1: fill.conv2d(&p / "conv1", in_channels, out_channels, 3, 1, 1),
            time_emb_proj: fill.linear(&p / "time_emb_proj", o.temb_channels, out_channels),
            norm2: fill.group_norm(&p / "norm2", o.groups, out_channels, o.eps),
            conv2: fill.conv2d(&p / "conv2", out_channels, out_channels, 3, 1, 1),
            // diffusers adds a 1x1 projection exactly when the channel count changes.
            conv_shortcut: (in_channels != out_channels)
                .then(|| fill.conv2d(&p / "conv_shortcut", in_channels, out_channels, 1, 1, 0)),
            dropout: o.dropout,
            output_scale_factor: o.output_scale_factor,
        }
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        out.push(&self.conv1);
        out.push(&self.conv2);
        out.extend(&self.conv_shortcut);
    }

    /// Same arithmetic as diffusers; the steps that cannot change a value are skipped (dropout
    /// with p = 0, division by a scale factor of 1) and fresh intermediates are updated in place.
    pub fn forward_t(&self, input: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = self.conv1.forward(&silu(self.norm1.forward(input)));
        let t = self
            .time_emb_proj
            .forward(&temb.silu())
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = silu(self.norm2.forward(&(h + t)));
        let h = if self.dropout > 0.0 {
            h.dropout(self.dropout, train)
        } else {
            h
        };
        // A conv output is fresh and its backward does not read it, so the residual sum may
        // overwrite it (a + b == b + a exactly).
        let mut out = self.conv2.forward(&h);
        match &self.conv_shortcut {
            Some(c) => out += c.forward(input),
            None => out += input,
        }
        if self.output_scale_factor != 1.0 {
            out /= self.output_scale_factor;
        }
        out
    }
}

/// SiLU, in place when no gradient flows through `x` (a fresh activation nobody else holds).
pub(crate) fn silu(mut x: Tensor) -> Tensor {
    if x.requires_grad() {
        x.silu()
    } else {
        let _ = x.silu_();
        x
    }
}

/// `Downsample2D(use_conv=True, name="op")`: a stride-2 3×3 conv. With `padding == 0` diffusers
/// pads only right and bottom by one (the original TensorFlow DDPM's "SAME" padding).
#[derive(Debug)]
pub struct Downsample2D {
    conv: PerturbConv2d,
    padding: i64,
}

impl Downsample2D {
    pub fn new(p: nn::Path, channels: i64, padding: i64, fill: Fill) -> Self {
        Downsample2D {
            conv: fill.conv2d(&p / "conv", channels, channels, 3, 2, padding),
            padding,
        }
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        out.push(&self.conv);
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.padding == 0 {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour ×2, then a 3×3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: PerturbConv2d,
}

impl Upsample2D {
    pub fn new(p: nn::Path, channels: i64, fill: Fill) -> Self {
        Upsample2D {
            conv: fill.conv2d(&p / "conv", channels, channels, 3, 1, 1),
        }
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        out.push(&self.conv);
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        self.conv
            .forward(&x.upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn downsample_padding_zero_pads_right_and_bottom_only() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut d = Downsample2D::new(vs.root() / "d", 1, 0, Fill::Zeros);
        tch::no_grad(|| {
            // An all-ones 3x3 kernel sums each window: with right/bottom padding the top-left
            // output window covers rows/cols 0..3 of a 4x4 input, fully inside.
            let _ = d.conv.conv.ws.fill_(1.0);
            let x = Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu));
            let y = d.forward(&x);
            assert_eq!(y.size(), [1, 1, 2, 2]);
            assert_eq!(y.double_value(&[0, 0, 0, 0]), 9.0);
            assert_eq!(y.double_value(&[0, 0, 1, 1]), 4.0);
        });
    }

    #[test]
    fn dropout_only_in_training() {
        let vs = nn::VarStore::new(Device::Cpu);
        let o = ResnetOpts {
            temb_channels: 4,
            groups: 2,
            eps: 1e-6,
            dropout: 0.5,
            output_scale_factor: 1.0,
        };
        let mut rng = crate::rng::Rng::seeded(0);
        let r = rng.with(|| ResnetBlock2D::new(vs.root(), 4, 4, o, Fill::Torch));
        let x = rng.randn(&[2, 4, 4, 4]);
        let t = rng.randn(&[2, 4]);
        let a = r.forward_t(&x, &t, false);
        assert!(a.equal(&r.forward_t(&x, &t, false)));
        assert!(!a.equal(&r.forward_t(&x, &t, true)));
    }
}
