//! Bakes libtorch's directory into our binaries' rpath (nobody sets LD_LIBRARY_PATH by hand) and
//! records the libtorch version we were built against, for `baddiff --version` and run records.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
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
