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
pub mod device;
pub mod files;
pub mod gpu_check;
pub mod inpainting;
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
pub mod stats;
pub mod tensor_io;
#[cfg(test)]
pub mod testing;
pub mod training;
pub mod triggers;
pub mod unet;
pub mod validate;

/// CUDA when a GPU is usable (CUDA backend loaded and a GPU visible), else the CPU.
pub fn default_device() -> tch::Device {
    device::resolve(device::Wants::Any, None, device::CudaState::probe())
        .unwrap_or(tch::Device::Cpu)
}

/// The libtorch release this build links against (read from the torch install at build time).
pub const LIBTORCH_VERSION: &str = env!("BADDIFF_LIBTORCH_VERSION");

/// What this process runs on, recorded with every result so numbers can be traced to a setup.
/// `cuda_backend_loaded` and `cuda_devices` are separate: a binary that does not load libtorch's
/// CUDA library sees 0 GPUs on any machine (see [`device::cuda_backend_loaded`]).
pub fn runtime_info() -> serde_json::Value {
    let cuda = device::CudaState::probe();
    serde_json::json!({
        "baddiffusion": env!("CARGO_PKG_VERSION"),
        "libtorch": LIBTORCH_VERSION,
        "device": format!("{:?}", default_device()),
        "cuda_devices": cuda.gpus,
        "cuda_backend_loaded": cuda.backend_loaded,
        "libtorch_has_cuda": device::libtorch_has_cuda(),
        "libtorch_lib": device::LIBTORCH_LIB,
        "cudnn": tch::Cuda::cudnn_is_available(),
        "threads": tch::get_num_threads(),
    })
}

/// `cpu`, `cuda`, `cuda:N`, or `auto`/`None` for [`default_device`] (a command's own
/// `--device`; a profile's cells use [`device::resolve`] with [`device::Wants::Profile`]).
/// `cuda` without a usable GPU is an error that says why.
pub fn parse_device(name: Option<&str>) -> anyhow::Result<tch::Device> {
    device::resolve(device::Wants::Any, name, device::CudaState::probe())
}

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
