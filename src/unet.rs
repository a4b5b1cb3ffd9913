//! diffusers' `UNet2DModel` (`unets/unet_2d.py`) in tch: the ε-prediction network of DDPM.
//!
//! Variables are created under the same dotted names as diffusers' `state_dict` keys, so
//! checkpoints map 1:1 (see `crate::checkpoint`). Only what the DDPM checkpoints and small CPU
//! variants need is implemented; anything else in a config is refused by [`UNet2DConfig`].
pub mod attention;
pub mod config;
pub mod embeddings;
pub mod perturb;
pub mod resnet;
pub mod unet_2d_blocks;

#[cfg(test)]
pub(crate) mod tests;

use anyhow::Result;
use tch::{nn, nn::Module, Kind, Tensor};

use config::{DownBlockType, UpBlockType};
pub use config::{SampleSize, UNet2DConfig};
use embeddings::{TimestepEmbedding, Timesteps};
pub use perturb::{ChannelAffine, PerturbConv2d};
use resnet::ResnetOpts;
use unet_2d_blocks::{
    AttnDownBlock2D, AttnUpBlock2D, BlockOpts, DownBlock2D, UNetMidBlock2D, UpBlock2D,
};

/// How new variables are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// PyTorch's defaults for `nn.Conv2d`/`nn.Linear` (weights and biases uniform in
    /// ±1/√fan_in), so a freshly built model is distributed like diffusers'. Draws from the
    /// global generator: hold a [`crate::rng::Rng`].
    Torch,
    /// Zeros, no random draws: for models whose weights are loaded right after.
    Zeros,
}

impl Fill {
    fn uniform(self, fan_in: i64) -> nn::Init {
        match self {
            Fill::Torch => {
                let b = 1.0 / (fan_in as f64).sqrt();
                nn::Init::Uniform { lo: -b, up: b }
            }
            Fill::Zeros => nn::Init::Const(0.0),
        }
    }

    pub(crate) fn conv2d(
        self,
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        k: i64,
        stride: i64,
        padding: i64,
    ) -> PerturbConv2d {
        let init = self.uniform(c_in * k * k);
        let cfg = nn::ConvConfig {
            stride,
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        };
        let path = p.components().collect::<Vec<_>>().join(".");
        PerturbConv2d::new(nn::conv2d(p, c_in, c_out, k, cfg), path, c_out)
    }

    pub(crate) fn linear(self, p: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
        let init = self.uniform(d_in);
        nn::linear(
            p,
            d_in,
            d_out,
            nn::LinearConfig {
                ws_init: init,
                bs_init: Some(init),
                bias: true,
            },
        )
    }

    pub(crate) fn group_norm(
        self,
        p: nn::Path,
        groups: i64,
        channels: i64,
        eps: f64,
    ) -> nn::GroupNorm {
        nn::group_norm(
            p,
            groups,
            channels,
            nn::GroupNormConfig {
                eps,
                ..Default::default()
            },
        )
    }
}

#[derive(Debug)]
enum DownBlock {
    Plain(DownBlock2D),
    Attn(AttnDownBlock2D),
}

#[derive(Debug)]
enum UpBlock {
    Plain(UpBlock2D),
    Attn(AttnUpBlock2D),
}

/// The DDPM UNet: `forward_t(x_t, t)` predicts the noise ε (same shape as `x_t`).
#[derive(Debug)]
pub struct UNet2DModel {
    config: UNet2DConfig,
    conv_in: PerturbConv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<UNetMidBlock2D>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: nn::GroupNorm,
    conv_out: PerturbConv2d,
    channels_last: bool,
}

impl UNet2DModel {
    /// A freshly initialised model (PyTorch's default initialisation): the caller must hold the
    /// [`crate::rng::Rng`], since the initialisers draw from the global generator.
    pub fn new(path: nn::Path, config: &UNet2DConfig) -> Result<Self> {
        Self::build(path, config, Fill::Torch)
    }

    /// Builds the model with the given variable initialisation (`Fill::Zeros` to load weights).
    pub fn build(path: nn::Path, config: &UNet2DConfig, fill: Fill) -> Result<Self> {
        config.validate()?;
        let c = config;
        let boc = &c.block_out_channels;
        let n = boc.len();
        let temb_dim = c.time_embed_dim();
        let opts = BlockOpts {
            resnet: ResnetOpts {
                temb_channels: temb_dim,
                groups: c.norm_num_groups,
                eps: c.norm_eps,
                dropout: c.dropout,
                output_scale_factor: 1.0,
            },
            attention_head_dim: c.attention_head_dim,
            downsample_padding: c.downsample_padding,
        };

        let conv_in = fill.conv2d(&path / "conv_in", c.in_channels, boc[0], 3, 1, 1);
        let time_proj = Timesteps {
            num_channels: boc[0],
            flip_sin_to_cos: c.flip_sin_to_cos,
            downscale_freq_shift: c.freq_shift as f64,
        };
        let time_embedding =
            TimestepEmbedding::new(&path / "time_embedding", boc[0], temb_dim, fill);

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, kind) in c.down_blocks()?.into_iter().enumerate() {
            let in_ch = out_ch;
            out_ch = boc[i];
            let last = i == n - 1;
            let p = &path / "down_blocks" / i;
            down_blocks.push(match kind {
                DownBlockType::DownBlock2D => DownBlock::Plain(DownBlock2D::new(
                    p,
                    in_ch,
                    out_ch,
                    c.layers_per_block,
                    !last,
                    &opts,
                    fill,
                )),
                DownBlockType::AttnDownBlock2D => DownBlock::Attn(AttnDownBlock2D::new(
                    p,
                    in_ch,
                    out_ch,
                    c.layers_per_block,
                    !last,
                    &opts,
                    fill,
                )?),
            });
        }

        let mid_block = match c.mid_block_type {
            Some(_) => {
                let mut mid_opts = opts;
                mid_opts.resnet.output_scale_factor = c.mid_block_scale_factor;
                Some(UNetMidBlock2D::new(
                    &path / "mid_block",
                    boc[n - 1],
                    &mid_opts,
                    c.attn_norm_num_groups,
                    c.add_attention,
                    fill,
                )?)
            }
            None => None,
        };

        let rev: Vec<i64> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, kind) in c.up_blocks()?.into_iter().enumerate() {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let last = i == n - 1;
            let p = &path / "up_blocks" / i;
            let layers = c.layers_per_block + 1;
            up_blocks.push(match kind {
                UpBlockType::UpBlock2D => UpBlock::Plain(UpBlock2D::new(
                    p, in_ch, prev_out, out_ch, layers, !last, &opts, fill,
                )),
                UpBlockType::AttnUpBlock2D => UpBlock::Attn(AttnUpBlock2D::new(
                    p, in_ch, prev_out, out_ch, layers, !last, &opts, fill,
                )?),
            });
        }

        let conv_norm_out = fill.group_norm(
            &path / "conv_norm_out",
            c.norm_num_groups,
            boc[0],
            c.norm_eps,
        );
        let conv_out = fill.conv2d(&path / "conv_out", boc[0], c.out_channels, 3, 1, 1);
        Ok(UNet2DModel {
            config: c.clone(),
            conv_in,
            time_proj,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            channels_last: false,
        })
    }

    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// Every convolution of the model, in state-dict order of construction (the hooks of the
    /// ANP defenses).
    pub fn convs(&self) -> Vec<&PerturbConv2d> {
        let mut out = vec![&self.conv_in];
        for b in &self.down_blocks {
            match b {
                DownBlock::Plain(b) => b.convs(&mut out),
                DownBlock::Attn(b) => b.convs(&mut out),
            }
        }
        if let Some(m) = &self.mid_block {
            m.convs(&mut out);
        }
        for b in &self.up_blocks {
            match b {
                UpBlock::Plain(b) => b.convs(&mut out),
                UpBlock::Attn(b) => b.convs(&mut out),
            }
        }
        out.push(&self.conv_out);
        out
    }

    /// Removes every conv's affine: the model computes exactly its weights again.
    pub fn clear_perturbations(&self) {
        for c in self.convs() {
            c.set_affine(None);
        }
    }

    /// Predicts ε for `sample` (B, C, H, W) at `timesteps`: a 0-dim tensor (one timestep for
    /// the whole batch) or one per sample, integer or fractional. `train` enables dropout.
    pub fn forward_t(&self, sample: &Tensor, timesteps: &Tensor, train: bool) -> Tensor {
        let batch = sample.size()[0];
        let sample = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };

        // Broadcast to the batch as diffusers does (a scalar becomes one per sample).
        let t = if timesteps.dim() == 0 {
            timesteps.unsqueeze(0)
        } else {
            timesteps.shallow_clone()
        };
        let t = t.to_device(sample.device()) * Tensor::ones([batch], (t.kind(), sample.device()));
        let t_emb = self.time_proj.forward(&t).to_kind(sample.kind());
        let emb = self.time_embedding.forward(&t_emb);

        let sample = if self.channels_last {
            to_channels_last(&sample)
        } else {
            sample
        };
        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, states) = match block {
                DownBlock::Plain(b) => b.forward_t(&h, &emb, train),
                DownBlock::Attn(b) => b.forward_t(&h, &emb, train),
            };
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward_t(&h, &emb, train);
        }
        for block in &self.up_blocks {
            h = match block {
                UpBlock::Plain(b) => b.forward_t(&h, &mut skips, &emb, train),
                UpBlock::Attn(b) => b.forward_t(&h, &mut skips, &emb, train),
            };
        }
        debug_assert!(skips.is_empty());
        let h = resnet::silu(self.conv_norm_out.forward(&h));
        let out = self.conv_out.forward(&h);
        if self.channels_last {
            out.contiguous()
        } else {
            out
        }
    }

    /// Runs the activations in channels-last layout (NHWC strides, same NCHW shape and values up
    /// to rounding), where oneDNN's convolutions need no layout conversions. Weights and outputs
    /// keep the standard layout, so checkpoints and callers see no difference.
    pub fn set_channels_last(&mut self, on: bool) {
        self.channels_last = on;
    }

    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// `forward_t` at one integer timestep for the whole batch.
    pub fn forward_at(&self, sample: &Tensor, timestep: i64, train: bool) -> Tensor {
        self.forward_t(
            sample,
            &Tensor::scalar_tensor(timestep, (Kind::Int64, tch::Device::Cpu)),
            train,
        )
    }
}

/// Whether the reproduction runs UNet activations channels-last on `device` (see
/// [`UNet2DModel::set_channels_last`]). Off: on the 2-core CPU `cargo xtask bench` measured no
/// gain for the training step or sampling (the option stays for GPUs, where it is untested).
pub fn channels_last_default(device: tch::Device) -> bool {
    let _ = device;
    false
}

/// The same (B, C, H, W) tensor stored channels-last (strides of NHWC), which libtorch's
/// layout-aware kernels keep through the network.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Number of scalar parameters in a variable store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
