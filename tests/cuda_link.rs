//! The built `baddiff` loads libtorch's CUDA library whenever its libtorch has one (build.rs
//! keeps the linker from dropping it), and a GPU profile refuses to start where no GPU is
//! usable instead of running on the CPU.
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn baddiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baddiff"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn env_json(args: &[&str]) -> Value {
    let out = baddiff(args);
    assert!(
        out.status.success(),
        "baddiff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn baddiff_loads_the_cuda_library_of_a_cuda_libtorch() {
    let lib = Path::new(env!("BADDIFF_LIBTORCH_LIB"));
    let env = env_json(&["env"]);
    if !lib.join("libtorch_cuda.so").exists() {
        eprintln!(
            "skipped: {} has no libtorch_cuda.so (a CPU-only libtorch has no CUDA library to load)",
            lib.display()
        );
        assert_eq!(env["libtorch_has_cuda"], false, "{env}");
        return;
    }
    assert_eq!(env["libtorch_has_cuda"], true, "{env}");
    assert_eq!(
        env["cuda_backend_loaded"],
        true,
        "{} has libtorch_cuda.so but baddiff does not load it: the linker dropped it \
         (build.rs must link it with --no-as-needed), so baddiff sees no GPU anywhere; {env}",
        lib.display()
    );
    // The JSON keeps its older fields beside the new ones.
    for key in [
        "baddiffusion",
        "libtorch",
        "device",
        "cuda_devices",
        "cudnn",
        "threads",
    ] {
        assert!(env.get(key).is_some(), "`baddiff env` lost `{key}`: {env}");
    }
}

#[test]
fn a_gpu_profile_refuses_at_once_without_a_usable_gpu() {
    let env = env_json(&["env"]);
    let usable = env["cuda_backend_loaded"] == true && env["cuda_devices"].as_u64() > Some(0);
    if usable {
        let checked = env_json(&["env", "--profile", "paper"]);
        assert_eq!(checked["profile_device"], "Cuda(0)", "{checked}");
        return;
    }
    let out = baddiff(&["env", "--profile", "paper"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("profile `paper`"), "{err}");
    assert!(err.contains("0 GPUs visible"), "{err}");
    assert!(err.contains("`--device cpu`"), "{err}");

    // `baddiff cell` refuses before touching any input or stage.
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let stages = tmp.path().join("stages");
    let out = baddiff(&[
        "cell",
        "--profile",
        "kick-the-tires",
        "--cell",
        "base",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--stages",
        stages.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("profile `kick-the-tires`"), "{err}");
    assert!(!stages.exists(), "the refused cell touched its stage cache");

    // `--device cpu` forces the CPU; the CPU profile needs nothing.
    let forced = env_json(&["env", "--profile", "paper", "--device", "cpu"]);
    assert_eq!(forced["profile_device"], "Cpu", "{forced}");
    let smoke = env_json(&["env", "--profile", "smoke"]);
    assert_eq!(smoke["profile_device"], "Cpu", "{smoke}");
    let out = baddiff(&["env", "--profile", "smoke", "--device", "cuda"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("device `cuda` asked for"), "{err}");
}
