//! Timestep embeddings (diffusers `embeddings.py`): the DDPM sinusoidal projection and the MLP
//! that lifts it to the width every ResNet block adds to its features.
use tch::{nn, Kind, Tensor};

use super::Fill;

/// diffusers `get_timestep_embedding`: `[sin(t·f), cos(t·f)]` (or cos first when
/// `flip_sin_to_cos`) with frequencies `f_i = exp(-ln(10000)·i / (dim/2 − freq_shift))`.
/// `timesteps` is 1-D (one per sample) and may be fractional.
pub fn get_timestep_embedding(
    timesteps: &Tensor,
    embedding_dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> Tensor {
    assert_eq!(timesteps.dim(), 1, "timesteps must be a 1-D tensor");
    let half_dim = embedding_dim / 2;
    let exponent = Tensor::arange(half_dim, (Kind::Float, timesteps.device())) * (-(10000f64.ln()));
    let exponent = exponent / (half_dim as f64 - downscale_freq_shift);
    let freqs = exponent.exp();
    let emb = timesteps.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let emb = Tensor::cat(&[emb.sin(), emb.cos()], -1);
    let emb = if flip_sin_to_cos {
        Tensor::cat(
            &[
                emb.narrow(1, half_dim, half_dim),
                emb.narrow(1, 0, half_dim),
            ],
            -1,
        )
    } else {
        emb
    };
    if embedding_dim % 2 == 1 {
        emb.constant_pad_nd([0, 1, 0, 0])
    } else {
        emb
    }
}

/// diffusers `Timesteps`: the parameter-free sinusoidal projection.
#[derive(Debug, Clone)]
pub struct Timesteps {
    pub num_channels: i64,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn forward(&self, timesteps: &Tensor) -> Tensor {
        get_timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
        )
    }
}

/// diffusers `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
}

impl TimestepEmbedding {
    pub fn new(p: nn::Path, in_channels: i64, time_embed_dim: i64, fill: Fill) -> Self {
        TimestepEmbedding {
            linear_1: fill.linear(&p / "linear_1", in_channels, time_embed_dim),
            linear_2: fill.linear(&p / "linear_2", time_embed_dim, time_embed_dim),
        }
    }

    pub fn forward(&self, sample: &Tensor) -> Tensor {
        use tch::nn::Module;
        self.linear_2.forward(&self.linear_1.forward(sample).silu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_first_then_cos_and_flip_swaps_halves() {
        let t = Tensor::from_slice(&[0i64, 3]);
        let e = get_timestep_embedding(&t, 8, false, 1.0);
        assert_eq!(e.size(), [2, 8]);
        // t = 0: sin half is 0, cos half is 1.
        assert_eq!(
            e.get(0)
                .narrow(0, 0, 4)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(
            e.get(0).narrow(0, 4, 4).sum(Kind::Float).double_value(&[]),
            4.0
        );
        // First frequency is exp(0) = 1: sin(3).
        assert!((e.double_value(&[1, 0]) - 3f64.sin()).abs() < 1e-6);
        let f = get_timestep_embedding(&t, 8, true, 1.0);
        assert!(f.narrow(1, 0, 4).equal(&e.narrow(1, 4, 4)));
        // Odd widths are zero-padded.
        assert_eq!(get_timestep_embedding(&t, 7, false, 0.0).size(), [2, 7]);
    }
}
