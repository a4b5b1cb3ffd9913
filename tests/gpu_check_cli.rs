//! `baddiff gpu-check` on a machine without a usable GPU (this one, in CI) refuses every part
//! before computing anything, and says why and what to do.
use std::process::Command;

#[test]
fn gpu_check_refuses_without_cuda_naming_the_reason_and_the_fix() {
    let state = baddiffusion::device::CudaState::probe();
    if state.backend_loaded && state.gpus > 0 {
        eprintln!("a GPU is usable here: nothing to refuse");
        return;
    }
    for part in ["parity", "fp16", "sampling-sweep"] {
        let out = Command::new(env!("CARGO_BIN_EXE_baddiff"))
            .args(["gpu-check", part])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{part} ran without a GPU");
        assert!(out.stdout.is_empty(), "{part} printed a result");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("gpu-check measures a CUDA GPU"), "{err}");
        assert!(
            err.contains("CUDA backend not loaded") || err.contains("0 GPUs visible"),
            "{err}"
        );
        assert!(err.contains("Fix:"), "{err}");
    }
}
