//! The self-attention of diffusers' `Attention` as built with `_from_deprecated_attn_block=True`
//! and run by `AttnProcessor2_0` (`attention_processor.py`): the spatial attention block of the
//! DDPM UNet. GroupNorm → to_q/to_k/to_v → softmax(qkᵀ/√head_dim)v per head → to_out.0 →
//! + residual → / rescale_output_factor.
use anyhow::{bail, Result};
use tch::{nn, nn::Module, Tensor};

use super::Fill;

#[derive(Debug)]
pub struct Attention {
    group_norm: Option<nn::GroupNorm>,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl Attention {
    /// `channels` wide, heads of `head_dim` channels each (`channels / head_dim` heads, rounded
    /// down as diffusers does); `norm_groups = None` means no GroupNorm.
    pub fn new(
        p: nn::Path,
        channels: i64,
        head_dim: i64,
        norm_groups: Option<i64>,
        eps: f64,
        rescale_output_factor: f64,
        fill: Fill,
    ) -> Result<Self> {
        let heads = channels / head_dim;
        if heads == 0 {
            bail!("attention_head_dim {head_dim} exceeds the {channels} channels of attention block {p:?}: no head fits");
        }
        let inner = heads * head_dim;
        Ok(Attention {
            group_norm: norm_groups.map(|g| fill.group_norm(&p / "group_norm", g, channels, eps)),
            to_q: fill.linear(&p / "to_q", channels, inner),
            to_k: fill.linear(&p / "to_k", channels, inner),
            to_v: fill.linear(&p / "to_v", channels, inner),
            to_out: fill.linear(&(&p / "to_out") / "0", inner, channels),
            heads,
            rescale_output_factor,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x
            .size4()
            .expect("attention input must be (batch, channels, height, width)");
        // (B, C, H·W): GroupNorm runs on this view, as in diffusers; tokens are then (B, H·W, C).
        let seq = x.view([b, c, h * w]);
        let normed = match &self.group_norm {
            Some(g) => g.forward(&seq),
            None => seq,
        };
        let tokens = normed.transpose(1, 2);
        let split = |t: Tensor| {
            let inner = t.size()[2];
            t.view([b, -1, self.heads, inner / self.heads])
                .transpose(1, 2)
        };
        let q = split(self.to_q.forward(&tokens));
        let k = split(self.to_k.forward(&tokens));
        let v = split(self.to_v.forward(&tokens));
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let inner = o.size()[1] * o.size()[3];
        let o = o.transpose(1, 2).reshape([b, -1, inner]);
        let o = self
            .to_out
            .forward(&o)
            .transpose(-1, -2)
            .reshape([b, c, h, w]);
        let o = o + x;
        if self.rescale_output_factor != 1.0 {
            o / self.rescale_output_factor
        } else {
            o
        }
    }
}
