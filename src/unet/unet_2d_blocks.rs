//! The blocks of diffusers' `unet_2d_blocks.py` that the DDPM checkpoints use. Down blocks return
//! every intermediate state for the skip connections; up blocks consume them last-first.
use anyhow::Result;
use tch::{nn, Tensor};

use super::attention::Attention;
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetOpts, Upsample2D};
use super::{Fill, PerturbConv2d};

/// Settings shared by every block of one UNet.
#[derive(Debug, Clone, Copy)]
pub struct BlockOpts {
    pub resnet: ResnetOpts,
    /// `attention_head_dim` of the config; `None` means one head spanning all channels.
    pub attention_head_dim: Option<i64>,
    pub downsample_padding: i64,
}

impl BlockOpts {
    fn head_dim(&self, channels: i64) -> i64 {
        self.attention_head_dim.unwrap_or(channels)
    }
}

/// `DownBlock2D`: `num_layers` ResNet blocks, then an optional stride-2 downsample.
#[derive(Debug)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    pub fn new(
        p: nn::Path,
        in_ch: i64,
        out_ch: i64,
        num_layers: i64,
        add_downsample: bool,
        o: &BlockOpts,
        fill: Fill,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    if i == 0 { in_ch } else { out_ch },
                    out_ch,
                    o.resnet,
                    fill,
                )
            })
            .collect();
        let downsampler = add_downsample.then(|| {
            Downsample2D::new(&p / "downsamplers" / 0, out_ch, o.downsample_padding, fill)
        });
        DownBlock2D {
            resnets,
            downsampler,
        }
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        for r in &self.resnets {
            r.convs(out);
        }
        if let Some(d) = &self.downsampler {
            d.convs(out);
        }
    }

    pub fn forward_t(&self, x: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut h = x.shallow_clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for r in &self.resnets {
            h = r.forward_t(&h, temb, train);
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h);
            states.push(h.shallow_clone());
        }
        (h, states)
    }
}

/// `AttnDownBlock2D`: like `DownBlock2D` with an attention block after every ResNet block.
#[derive(Debug)]
pub struct AttnDownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    downsampler: Option<Downsample2D>,
}

impl AttnDownBlock2D {
    pub fn new(
        p: nn::Path,
        in_ch: i64,
        out_ch: i64,
        num_layers: i64,
        add_downsample: bool,
        o: &BlockOpts,
        fill: Fill,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            resnets.push(ResnetBlock2D::new(
                &p / "resnets" / i,
                if i == 0 { in_ch } else { out_ch },
                out_ch,
                o.resnet,
                fill,
            ));
            attentions.push(Attention::new(
                &p / "attentions" / i,
                out_ch,
                o.head_dim(out_ch),
                Some(o.resnet.groups),
                o.resnet.eps,
                o.resnet.output_scale_factor,
                fill,
            )?);
        }
        let downsampler = add_downsample.then(|| {
            Downsample2D::new(&p / "downsamplers" / 0, out_ch, o.downsample_padding, fill)
        });
        Ok(AttnDownBlock2D {
            resnets,
            attentions,
            downsampler,
        })
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        for r in &self.resnets {
            r.convs(out);
        }
        if let Some(d) = &self.downsampler {
            d.convs(out);
        }
    }

    pub fn forward_t(&self, x: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut h = x.shallow_clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            h = a.forward(&r.forward_t(&h, temb, train));
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h);
            states.push(h.shallow_clone());
        }
        (h, states)
    }
}

/// `UNetMidBlock2D` with one layer: resnet, (attention), resnet, all scaled by
/// `mid_block_scale_factor`.
#[derive(Debug)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl UNetMidBlock2D {
    /// `attn_groups`: the config's `attn_norm_num_groups`, defaulting to the ResNet groups.
    pub fn new(
        p: nn::Path,
        channels: i64,
        o: &BlockOpts,
        attn_groups: Option<i64>,
        add_attention: bool,
        fill: Fill,
    ) -> Result<Self> {
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::new(&p / "resnets" / i, channels, channels, o.resnet, fill))
            .collect();
        let attention = if add_attention {
            Some(Attention::new(
                &p / "attentions" / 0,
                channels,
                o.head_dim(channels),
                Some(attn_groups.unwrap_or(o.resnet.groups)),
                o.resnet.eps,
                o.resnet.output_scale_factor,
                fill,
            )?)
        } else {
            None
        };
        Ok(UNetMidBlock2D { resnets, attention })
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        for r in &self.resnets {
            r.convs(out);
        }
    }

    pub fn forward_t(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let mut h = self.resnets[0].forward_t(x, temb, train);
        if let Some(a) = &self.attention {
            h = a.forward(&h);
        }
        self.resnets[1].forward_t(&h, temb, train)
    }
}

/// Input channels of an up block's `i`-th ResNet: the running state concatenated with one skip.
fn up_resnet_in(i: i64, num_layers: i64, in_ch: i64, prev_out_ch: i64, out_ch: i64) -> i64 {
    let res_skip = if i == num_layers - 1 { in_ch } else { out_ch };
    let resnet_in = if i == 0 { prev_out_ch } else { out_ch };
    resnet_in + res_skip
}

/// Pops the newest skip state and concatenates it to `h` along channels.
fn cat_skip(h: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
    let s = skips
        .pop()
        .expect("the down path produced a skip state for every up-path ResNet");
    Tensor::cat(&[h, &s], 1)
}

/// `UpBlock2D`: `num_layers` ResNet blocks, each fed one skip state, then an optional upsample.
#[derive(Debug)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        in_ch: i64,
        prev_out_ch: i64,
        out_ch: i64,
        num_layers: i64,
        add_upsample: bool,
        o: &BlockOpts,
        fill: Fill,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                let c = up_resnet_in(i, num_layers, in_ch, prev_out_ch, out_ch);
                ResnetBlock2D::new(&p / "resnets" / i, c, out_ch, o.resnet, fill)
            })
            .collect();
        let upsampler = add_upsample.then(|| Upsample2D::new(&p / "upsamplers" / 0, out_ch, fill));
        UpBlock2D { resnets, upsampler }
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        for r in &self.resnets {
            r.convs(out);
        }
        if let Some(u) = &self.upsampler {
            u.convs(out);
        }
    }

    pub fn forward_t(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward_t(&cat_skip(&h, skips), temb, train);
        }
        match &self.upsampler {
            Some(u) => u.forward(&h),
            None => h,
        }
    }
}

/// `AttnUpBlock2D`: like `UpBlock2D` with an attention block after every ResNet block.
#[derive(Debug)]
pub struct AttnUpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    upsampler: Option<Upsample2D>,
}

impl AttnUpBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        in_ch: i64,
        prev_out_ch: i64,
        out_ch: i64,
        num_layers: i64,
        add_upsample: bool,
        o: &BlockOpts,
        fill: Fill,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            let c = up_resnet_in(i, num_layers, in_ch, prev_out_ch, out_ch);
            resnets.push(ResnetBlock2D::new(
                &p / "resnets" / i,
                c,
                out_ch,
                o.resnet,
                fill,
            ));
            attentions.push(Attention::new(
                &p / "attentions" / i,
                out_ch,
                o.head_dim(out_ch),
                Some(o.resnet.groups),
                o.resnet.eps,
                o.resnet.output_scale_factor,
                fill,
            )?);
        }
        let upsampler = add_upsample.then(|| Upsample2D::new(&p / "upsamplers" / 0, out_ch, fill));
        Ok(AttnUpBlock2D {
            resnets,
            attentions,
            upsampler,
        })
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    pub(crate) fn convs<'a>(&'a self, out: &mut Vec<&'a PerturbConv2d>) {
        for r in &self.resnets {
            r.convs(out);
        }
        if let Some(u) = &self.upsampler {
            u.convs(out);
        }
    }

    pub fn forward_t(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            h = a.forward(&r.forward_t(&cat_skip(&h, skips), temb, train));
        }
        match &self.upsampler {
            Some(u) => u.forward(&h),
            None => h,
        }
    }
}
