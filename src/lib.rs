//! BadDiffusion reproduction harness: the library that computes.
//!
//! Data flows fetch → train → sample → measure → frames → report; each module is one concept of
//! the paper, named as the paper (or the diffusers code we port) names it.
pub mod attack;
pub mod backdoor_loss;
pub mod bench;
pub mod checkpoint;
pub mod datasets;
pub mod defenses;
pub mod files;
pub mod inputs;
pub mod matrix;
pub mod metrics;
pub mod pil;
pub mod pipeline;
pub mod poison;
pub mod progress;
pub mod python;
pub mod rng;
pub mod sampling;
pub mod scheduler;
#[cfg(test)]
pub mod testing;
pub mod training;
pub mod triggers;
pub mod unet;

/// CUDA when a GPU is visible, else the CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// The libtorch release this build links against (read from the torch install at build time).
pub const LIBTORCH_VERSION: &str = env!("BADDIFF_LIBTORCH_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn python_oracle_round_trip() {
        let x = tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu)).reshape([2, 3]);
        let out = crate::testing::oracle("identity", &[("x", &x)], &[]);
        crate::testing::assert_close("x + 1", &out["plus_one"], &(&x + 1), 0.0);
        crate::testing::assert_close("x * 2", &out["twice"], &(&x * 2), 0.0);
    }
}

/// What this process runs on, recorded with every result so numbers can be traced to a setup.
pub fn runtime_info() -> serde_json::Value {
    serde_json::json!({
        "baddiffusion": env!("CARGO_PKG_VERSION"),
        "libtorch": LIBTORCH_VERSION,
        "device": format!("{:?}", default_device()),
        "cuda_devices": tch::Cuda::device_count(),
        "cudnn": tch::Cuda::cudnn_is_available(),
        "threads": tch::get_num_threads(),
    })
}

/// `cpu`, `cuda`, `cuda:N`, or `None` for [`default_device`].
pub fn parse_device(name: Option<&str>) -> anyhow::Result<tch::Device> {
    Ok(match name {
        None | Some("auto") => default_device(),
        Some("cpu") => tch::Device::Cpu,
        Some("cuda") => tch::Device::Cuda(0),
        Some(s) => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => anyhow::bail!("unknown device `{s}`: use cpu, cuda or cuda:N"),
        },
    })
}
