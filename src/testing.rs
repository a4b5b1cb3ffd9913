//! Test support: run a Python oracle on tensors and compare results (parity tests), and the
//! trained-model fixtures shared by tests that need a model ([`fixtures`]).
//!
//! An oracle is a script in `python/oracles/` run by the project's pinned environment. It is
//! called as `python oracles/NAME.py IN.safetensors OUT.safetensors [args...]`, reads its input
//! tensors with safetensors, and writes its output tensors the same way.
pub mod fixtures;

use std::collections::HashMap;
use std::ffi::OsStr;

use tch::Tensor;

/// Runs `python/oracles/<name>.py` on `inputs` and returns the tensors it wrote.
pub fn oracle(name: &str, inputs: &[(&str, &Tensor)], args: &[&str]) -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let owned: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(k, t)| (*k, t.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&owned, &inp).expect("writing oracle inputs");
    let mut argv: Vec<&OsStr> = vec![inp.as_os_str(), out.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    crate::python::run(&format!("oracles/{name}.py"), &argv)
        .unwrap_or_else(|e| panic!("oracle {name}: {e:#}"));
    Tensor::read_safetensors(&out)
        .expect("reading oracle outputs")
        .into_iter()
        .collect()
}

/// Largest absolute element-wise difference, in float64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let d = (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max();
    d.double_value(&[])
}

/// Asserts `max |a - b| <= tol`, naming what was compared.
#[track_caller]
pub fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tol: f64) {
    let d = max_abs_diff(ours, theirs);
    assert!(d <= tol, "{what}: max abs difference {d:e} exceeds {tol:e}");
}

/// The official trigger and target source images (IBM/BadDiffusion `static/`), from the fetch
/// cache like any other input: `cargo xtask test` fetches them first (`--mirror DIR` offline).
pub fn official_images() -> std::path::PathBuf {
    crate::inputs::artifact_dir("baddiffusion-static").unwrap_or_else(|e| {
        panic!("{e:#}\n(`cargo xtask test` fetches the tests' inputs before running them)")
    })
}

/// The exact reference tensors of the official triggers and targets, where this checkout has
/// them beside it (`$BADDIFF_SHARED/baddiffusion-assets`, else `../shared/baddiffusion-assets`):
/// an extra comparison, never a requirement.
pub fn reference_tensors() -> Option<std::path::PathBuf> {
    let shared = std::env::var_os("BADDIFF_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::python::project_root().join("../shared"));
    Some(shared.join("baddiffusion-assets")).filter(|d| d.join("trigger_BOX_14_32.npy").is_file())
}
