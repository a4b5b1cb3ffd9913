//! Bakes libtorch's directory into our binaries' rpath (nobody sets LD_LIBRARY_PATH by hand),
//! keeps libtorch's CUDA library linked when there is one, and records the libtorch version we
//! were built against, for `baddiff --version` and run records.
use std::path::Path;

/// libtorch's CUDA libraries, in the order they depend on each other (`*_cu`/`*_cpp`: the split
/// of older releases).
const CUDA_LIBS: [&str; 4] = ["torch_cuda", "torch_cuda_cu", "torch_cuda_cpp", "c10_cuda"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // Our code calls no symbol of libtorch_cuda.so: libtorch registers its CUDA backend from the
    // library's static initialisers. The linker's default --as-needed therefore drops the
    // library torch-sys asks for, and `tch::Cuda::is_available()` says false on any GPU (tch-rs
    // issues #329, #907, #980). --no-as-needed around these libraries keeps them: the cure
    // torch-sys's build.rs describes but cannot apply, since its link args do not reach
    // downstream binaries. Ours reach every binary, test and bench of this package. A CPU-only
    // libtorch has none of these libraries and links as before.
    let cuda: Vec<&str> = CUDA_LIBS
        .into_iter()
        .filter(|l| Path::new(&lib).join(format!("lib{l}.so")).exists())
        .collect();
    if !cuda.is_empty() {
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for l in &cuda {
            println!("cargo:rustc-link-arg=-l{l}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // Where that libtorch is, so `baddiff env` and tests/cuda_link.rs can tell whether the
    // binary loads the CUDA library its libtorch has.
    println!("cargo:rustc-env=BADDIFF_LIBTORCH_LIB={lib}");
    // Another libtorch in the same place (CPU-only swapped for CUDA, or back) relinks.
    println!("cargo:rerun-if-changed={lib}");
    let torch = Path::new(&lib).parent().unwrap_or(Path::new("."));
    // A PyTorch install has torch/version.py; a standalone libtorch has build-version.
    let version = std::fs::read_to_string(torch.join("version.py"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        })
        .or_else(|| {
            std::fs::read_to_string(torch.join("build-version"))
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BADDIFF_LIBTORCH_VERSION={version}");
    println!(
        "cargo:rerun-if-changed={}",
        torch.join("version.py").display()
    );
}
