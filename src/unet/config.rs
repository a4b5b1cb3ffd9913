//! `UNet2DConfig`: the fields of a diffusers `UNet2DModel` `config.json`, with diffusers' defaults.
//!
//! A checkpoint's behaviour is fully determined by this file, so we read every field diffusers
//! writes and refuse any we do not know or whose value we do not implement, naming the field:
//! silently ignoring one would give a model that loads but computes something else.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The diffusers release whose `UNet2DModel` this port follows (written into saved configs).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// `sample_size` is an int or an `[height, width]` pair in diffusers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(i64),
    Rect([i64; 2]),
}

impl SampleSize {
    /// (height, width).
    pub fn hw(self) -> (i64, i64) {
        match self {
            SampleSize::Square(s) => (s, s),
            SampleSize::Rect([h, w]) => (h, w),
        }
    }
}

/// Mirrors the keyword arguments of diffusers' `UNet2DModel.__init__` (same names, same defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNet2DConfig {
    /// Metadata written by diffusers; carried along, never interpreted.
    #[serde(
        rename = "_class_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub class_name: Option<String>,
    #[serde(
        rename = "_diffusers_version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub diffusers_version: Option<String>,
    #[serde(
        rename = "_name_or_path",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub name_or_path: Option<String>,

    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_3")]
    pub in_channels: i64,
    #[serde(default = "d_3")]
    pub out_channels: i64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    #[serde(default)]
    pub freq_shift: i64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_block_out_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_2")]
    pub layers_per_block: i64,
    #[serde(default = "d_1f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_1")]
    pub downsample_padding: i64,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: Option<i64>,
    #[serde(default = "d_32")]
    pub norm_num_groups: i64,
    #[serde(default)]
    pub attn_norm_num_groups: Option<i64>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    /// Only read by the "learned" time embedding, which we refuse; accepted for any value.
    #[serde(default)]
    pub num_train_timesteps: Option<i64>,
}

fn d_1() -> i64 {
    1
}
fn d_2() -> i64 {
    2
}
fn d_3() -> i64 {
    3
}
fn d_32() -> i64 {
    32
}
fn d_1f() -> f64 {
    1.0
}
fn d_eps() -> f64 {
    1e-5
}
fn d_true() -> bool {
    true
}
fn d_head_dim() -> Option<i64> {
    Some(8)
}
fn d_positional() -> String {
    "positional".into()
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_mid_block() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn d_down_blocks() -> Vec<String> {
    strings(&[
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ])
}
fn d_up_blocks() -> Vec<String> {
    strings(&[
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    ])
}
fn d_block_out_channels() -> Vec<i64> {
    vec![224, 448, 672, 896]
}
fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The down block kinds we implement (diffusers' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlockType {
    DownBlock2D,
    AttnDownBlock2D,
}

/// The up block kinds we implement (diffusers' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlockType {
    UpBlock2D,
    AttnUpBlock2D,
}

impl Default for UNet2DConfig {
    /// diffusers' `UNet2DModel()` with no arguments.
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl UNet2DConfig {
    /// `google/ddpm-cifar10-32` (its `unet/config.json`).
    pub fn cifar10_32() -> Self {
        UNet2DConfig {
            sample_size: Some(SampleSize::Square(32)),
            block_out_channels: vec![128, 256, 256, 256],
            down_block_types: strings(&[
                "DownBlock2D",
                "AttnDownBlock2D",
                "DownBlock2D",
                "DownBlock2D",
            ]),
            up_block_types: strings(&["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
            ..Self::ddpm_common()
        }
    }

    /// `google/ddpm-ema-celebahq-256` (its `unet/config.json`).
    pub fn celebahq_256() -> Self {
        UNet2DConfig {
            sample_size: Some(SampleSize::Square(256)),
            block_out_channels: vec![128, 128, 256, 256, 512, 512],
            down_block_types: strings(&[
                "DownBlock2D",
                "DownBlock2D",
                "DownBlock2D",
                "DownBlock2D",
                "AttnDownBlock2D",
                "DownBlock2D",
            ]),
            up_block_types: strings(&[
                "UpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
                "UpBlock2D",
                "UpBlock2D",
                "UpBlock2D",
            ]),
            ..Self::ddpm_common()
        }
    }

    /// A small model for CPU runs with the CIFAR-10 model's structure (plain, attention, plain
    /// levels; attention at the middle resolution and in the mid block) and ~0.28M parameters.
    pub fn scale(sample_size: i64, channels: i64) -> Self {
        UNet2DConfig {
            sample_size: Some(SampleSize::Square(sample_size)),
            in_channels: channels,
            out_channels: channels,
            block_out_channels: vec![16, 32, 32],
            layers_per_block: 1,
            norm_num_groups: 8,
            down_block_types: strings(&["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]),
            up_block_types: strings(&["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
            ..Self::ddpm_common()
        }
    }

    /// The settings the original DDPM checkpoints share (their `unet/config.json`).
    fn ddpm_common() -> Self {
        UNet2DConfig {
            class_name: Some("UNet2DModel".into()),
            freq_shift: 1,
            flip_sin_to_cos: false,
            downsample_padding: 0,
            norm_eps: 1e-6,
            norm_num_groups: 32,
            attention_head_dim: None,
            act_fn: "silu".into(),
            mid_block_scale_factor: 1.0,
            ..Self::default()
        }
    }

    /// Parses a diffusers `config.json` text and checks it (see [`Self::validate`]).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        Self::from_json_value(value)
    }

    /// Reads and checks a diffusers `config.json`.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("UNet config {}", path.display()))
    }

    /// Deserialises, naming the offending field when a value has the wrong type.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self> {
        let serde_json::Value::Object(map) = &value else {
            bail!("a UNet config must be a JSON object")
        };
        let cfg: UNet2DConfig = match serde_json::from_value(value.clone()) {
            Ok(c) => c,
            Err(e) => {
                // serde reports unknown fields by name but type errors only by position: find the field.
                for (k, v) in map {
                    let one =
                        serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
                    if let Err(fe) = serde_json::from_value::<UNet2DConfig>(one) {
                        if fe.to_string().starts_with("unknown field") {
                            bail!("unsupported UNet2DModel config field `{k}` ({fe}); remove it or use a model without it");
                        }
                        bail!("config field `{k}` has an invalid value {v}: {fe}");
                    }
                }
                return Err(e.into());
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses values we do not implement, naming the field and the values we accept.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("config field `block_out_channels` is empty");
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!(
                "config fields `down_block_types` ({}), `up_block_types` ({}) and `block_out_channels` ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        self.down_blocks()?;
        self.up_blocks()?;
        let want = |field: &str, got: &str, ok: &[&str]| -> Result<()> {
            if ok.contains(&got) {
                Ok(())
            } else {
                bail!("unsupported value {got:?} for config field `{field}`: supported {ok:?}")
            }
        };
        want(
            "time_embedding_type",
            &self.time_embedding_type,
            &["positional"],
        )?;
        want("downsample_type", &self.downsample_type, &["conv"])?;
        want("upsample_type", &self.upsample_type, &["conv"])?;
        want("act_fn", &self.act_fn, &["silu", "swish"])?;
        want(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            &["default"],
        )?;
        if let Some(m) = &self.mid_block_type {
            want("mid_block_type", m, &["UNetMidBlock2D"])?;
        }
        if let Some(c) = &self.class_embed_type {
            bail!("unsupported value {c:?} for config field `class_embed_type`: class embeddings are not implemented (use null)");
        }
        if let Some(c) = self.num_class_embeds {
            bail!("unsupported value {c} for config field `num_class_embeds`: class embeddings are not implemented (use null)");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!(
                "config field `dropout` must be in [0, 1), got {}",
                self.dropout
            );
        }
        let positive = |field: &str, v: i64| -> Result<()> {
            if v > 0 {
                Ok(())
            } else {
                bail!("config field `{field}` must be positive, got {v}")
            }
        };
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("layers_per_block", self.layers_per_block)?;
        positive("norm_num_groups", self.norm_num_groups)?;
        for &c in &self.block_out_channels {
            positive("block_out_channels", c)?;
            if c % self.norm_num_groups != 0 {
                bail!("config field `block_out_channels` entry {c} is not divisible by `norm_num_groups` {}", self.norm_num_groups);
            }
        }
        if let Some(h) = self.attention_head_dim {
            positive("attention_head_dim", h)?;
        }
        if let Some(g) = self.attn_norm_num_groups {
            positive("attn_norm_num_groups", g)?;
            let c = self.block_out_channels[n - 1];
            if c % g != 0 {
                bail!("config field `attn_norm_num_groups` {g} does not divide the mid block's {c} channels");
            }
        }
        if let Some(d) = self.time_embedding_dim {
            positive("time_embedding_dim", d)?;
        }
        Ok(())
    }

    /// The down block kinds, in order.
    pub fn down_blocks(&self) -> Result<Vec<DownBlockType>> {
        self.down_block_types
            .iter()
            .map(|t| match strip_unet_res(t) {
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                "AttnDownBlock2D" => Ok(DownBlockType::AttnDownBlock2D),
                _ => bail!("unknown block type {t:?} in config field `down_block_types`: supported DownBlock2D, AttnDownBlock2D"),
            })
            .collect()
    }

    /// The up block kinds, in order.
    pub fn up_blocks(&self) -> Result<Vec<UpBlockType>> {
        self.up_block_types
            .iter()
            .map(|t| match strip_unet_res(t) {
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                "AttnUpBlock2D" => Ok(UpBlockType::AttnUpBlock2D),
                _ => bail!("unknown block type {t:?} in config field `up_block_types`: supported UpBlock2D, AttnUpBlock2D"),
            })
            .collect()
    }

    /// Width of the timestep embedding MLP.
    pub fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// The config as diffusers' `save_pretrained` writes it (every field, with class and version).
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut c = self.clone();
        c.class_name = Some("UNet2DModel".into());
        c.diffusers_version
            .get_or_insert_with(|| DIFFUSERS_VERSION.into());
        serde_json::to_value(&c).expect("config serialises")
    }
}

/// diffusers accepts the legacy `UNetRes` prefix on block names.
fn strip_unet_res(t: &str) -> &str {
    t.strip_prefix("UNetRes").unwrap_or(t)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_configs_validate() {
        for c in [
            UNet2DConfig::cifar10_32(),
            UNet2DConfig::celebahq_256(),
            UNet2DConfig::scale(16, 3),
        ] {
            c.validate().unwrap();
            let back = UNet2DConfig::from_json_value(c.to_json_value()).unwrap();
            assert_eq!(back.block_out_channels, c.block_out_channels);
            assert_eq!(back.down_block_types, c.down_block_types);
        }
    }

    #[test]
    fn missing_fields_take_diffusers_defaults() {
        let c = UNet2DConfig::from_json_str(r#"{"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "_name_or_path": "x"}"#).unwrap();
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        assert_eq!(c.attention_head_dim, Some(8));
        assert!(c.flip_sin_to_cos);
        assert_eq!(c.freq_shift, 0);
        assert_eq!(c.downsample_padding, 1);
        assert_eq!(c.norm_eps, 1e-5);
    }

    fn err(json: &str) -> String {
        format!("{:#}", UNet2DConfig::from_json_str(json).unwrap_err())
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(r#"{"sample_size": 32, "frobnicate": true}"#);
        assert!(e.contains("`frobnicate`"), "{e}");
    }

    #[test]
    fn unknown_block_type_is_named() {
        let e = err(
            r#"{"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
        );
        assert!(
            e.contains("CrossAttnDownBlock2D") && e.contains("down_block_types"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_values_are_named() {
        let e = err(r#"{"resnet_time_scale_shift": "scale_shift"}"#);
        assert!(
            e.contains("`resnet_time_scale_shift`") && e.contains("scale_shift"),
            "{e}"
        );
        let e = err(r#"{"class_embed_type": "timestep"}"#);
        assert!(e.contains("`class_embed_type`"), "{e}");
        let e = err(r#"{"num_class_embeds": 10}"#);
        assert!(e.contains("`num_class_embeds`"), "{e}");
        let e = err(r#"{"time_embedding_type": "fourier"}"#);
        assert!(e.contains("`time_embedding_type`"), "{e}");
        let e = err(r#"{"layers_per_block": "two"}"#);
        assert!(e.contains("`layers_per_block`"), "{e}");
    }
}
