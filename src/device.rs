//! Which device a command computes on, and why a GPU profile refuses to start without a GPU.
//!
//! Two separate things must hold for CUDA work: this process has libtorch's CUDA backend loaded
//! (libtorch_cuda.so, which registers it), and a GPU is visible. tch's `Cuda::is_available()`
//! folds both into one `false`, which hid a binary linked without its CUDA library behind "no
//! GPU" and let GPU profiles quietly run for weeks on the CPU.
use anyhow::{bail, Result};
use tch::Device;

/// What this process can do with CUDA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaState {
    /// libtorch's CUDA backend is loaded ([`cuda_backend_loaded`]).
    pub backend_loaded: bool,
    /// GPUs libtorch sees (0 without the backend, the driver or a device).
    pub gpus: usize,
}

impl CudaState {
    /// This process's state.
    pub fn probe() -> CudaState {
        CudaState {
            backend_loaded: cuda_backend_loaded(),
            gpus: tch::Cuda::device_count().max(0) as usize,
        }
    }

    /// "CUDA backend loaded, 1 GPU visible", for error messages and `doctor`.
    pub fn describe(&self) -> String {
        format!(
            "CUDA backend {}, {} GPU{} visible",
            if self.backend_loaded {
                "loaded"
            } else {
                "not loaded"
            },
            self.gpus,
            if self.gpus == 1 { "" } else { "s" }
        )
    }
}

/// Whether libtorch's CUDA library, libtorch_cuda.so, is mapped into this process.
///
/// libtorch registers its CUDA backend from that library's static initialisers, so "mapped" is
/// "backend loaded". tch offers no call that separates this from "no GPU" (`is_available`,
/// `device_count` and `cudnn_is_available` all answer the same on a binary that dropped the
/// library and on a machine without a GPU), and a `dlopen` would load the library and so hide
/// the very fault we look for. The dynamic loader's own list, /proc/self/maps, answers without
/// side effects. Linux only, like libtorch's CUDA builds: elsewhere this says false.
pub fn cuda_backend_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps_have_cuda(&maps))
}

/// Whether a /proc/PID/maps text lists libtorch_cuda.so.
fn maps_have_cuda(maps: &str) -> bool {
    maps.lines()
        .filter_map(|l| l.rsplit('/').next())
        .any(|file| file == "libtorch_cuda.so" || file.starts_with("libtorch_cuda.so."))
}

/// The lib directory of the libtorch this binary was built against (build.rs).
pub const LIBTORCH_LIB: Option<&str> = option_env!("BADDIFF_LIBTORCH_LIB");

/// Whether that libtorch ships a CUDA library (a CUDA build of libtorch).
pub fn libtorch_has_cuda() -> bool {
    LIBTORCH_LIB.is_some_and(|lib| std::path::Path::new(lib).join("libtorch_cuda.so").exists())
}

/// Who asks for a device.
#[derive(Clone, Copy, Debug)]
pub enum Wants<'a> {
    /// A command on its own (`train`, `bench`): `auto` is a GPU when one is usable, else the CPU.
    Any,
    /// The cells of a profile (`device` is its setting): `auto`, or no setting, is the first
    /// GPU and nothing else. Its sizes and estimates assume a GPU, so without one it refuses
    /// rather than start weeks of CPU work; `--device cpu` forces the CPU.
    Profile {
        name: &'a str,
        device: Option<&'a str>,
    },
}

/// The device to compute on: `explicit` (`--device`) wins over the profile's setting. `cpu` is
/// the CPU; `cuda` and `cuda:N` need that GPU; `auto` (and no setting at all) as [`Wants`] says.
/// An error says why the device cannot be used here and how to get on.
pub fn resolve(wants: Wants, explicit: Option<&str>, cuda: CudaState) -> Result<Device> {
    let (profile, setting) = match wants {
        Wants::Any => (None, None),
        Wants::Profile { name, device } => (Some(name), device),
    };
    let setting = explicit.or(setting);
    let origin = match (explicit, profile) {
        (None, Some(p)) => format!(" (profile `{p}`)"),
        _ => String::new(),
    };
    let usable = cuda.backend_loaded && cuda.gpus > 0;
    let gpu = match setting {
        Some("cpu") => return Ok(Device::Cpu),
        None | Some("auto") => {
            if usable {
                return Ok(Device::Cuda(0));
            }
            let Some(p) = profile else {
                return Ok(Device::Cpu);
            };
            bail!(
                "profile `{p}` runs its cells on a GPU (device = \"auto\"), but no CUDA device is \
                 usable here: {}. {}Pass `--device cpu` to force a CPU run (its cells will take \
                 far longer than the profile's estimate).",
                cuda.describe(),
                fix(cuda)
            )
        }
        Some("cuda") => 0,
        Some(s) => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => bail!("unknown device `{s}`{origin}: use cpu, cuda, cuda:N or auto"),
        },
    };
    let name = setting.unwrap_or("cuda");
    if !usable {
        bail!(
            "device `{name}`{origin} asked for, but no CUDA device is usable here: {}. {}Pass \
             `--device cpu` to run on the CPU.",
            cuda.describe(),
            fix(cuda)
        );
    }
    if gpu >= cuda.gpus {
        let (visible, range) = match cuda.gpus {
            1 => ("1 GPU is".to_string(), "cuda:0".to_string()),
            n => (format!("{n} GPUs are"), format!("cuda:0 to cuda:{}", n - 1)),
        };
        bail!(
            "device `{name}`{origin} asked for, but only {visible} visible: use {range}, or \
             `--device cpu`."
        );
    }
    Ok(Device::Cuda(gpu))
}

/// What to do about an unusable CUDA state, when there is something to do here.
fn fix(cuda: CudaState) -> &'static str {
    if cuda.backend_loaded {
        "Check `nvidia-smi` and CUDA_VISIBLE_DEVICES. "
    } else {
        "`cargo xtask doctor` says whether this libtorch has CUDA at all. "
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_GPU: CudaState = CudaState {
        backend_loaded: true,
        gpus: 0,
    };
    const NO_BACKEND: CudaState = CudaState {
        backend_loaded: false,
        gpus: 0,
    };
    const TWO_GPUS: CudaState = CudaState {
        backend_loaded: true,
        gpus: 2,
    };
    const PAPER: Wants = Wants::Profile {
        name: "paper",
        device: Some("auto"),
    };

    fn err(wants: Wants, explicit: Option<&str>, cuda: CudaState) -> String {
        format!("{:#}", resolve(wants, explicit, cuda).unwrap_err())
    }

    #[test]
    fn a_gpu_profile_refuses_the_cpu_and_says_why_and_how_to_force_it() {
        for (cuda, state) in [
            (NO_GPU, "CUDA backend loaded, 0 GPUs visible"),
            (NO_BACKEND, "CUDA backend not loaded, 0 GPUs visible"),
        ] {
            for device in [Some("auto"), None] {
                let wants = Wants::Profile {
                    name: "paper",
                    device,
                };
                let e = err(wants, None, cuda);
                assert!(e.contains("profile `paper`"), "{e}");
                assert!(e.contains(state), "{e}");
                assert!(e.contains("`--device cpu`"), "{e}");
            }
        }
        assert!(err(PAPER, None, NO_BACKEND).contains("cargo xtask doctor"));
        assert!(err(PAPER, None, NO_GPU).contains("nvidia-smi"));
    }

    #[test]
    fn an_explicit_cpu_forces_a_gpu_profile_onto_the_cpu() {
        for cuda in [NO_GPU, NO_BACKEND, TWO_GPUS] {
            assert_eq!(resolve(PAPER, Some("cpu"), cuda).unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn a_gpu_profile_takes_the_first_gpu_or_the_one_asked_for() {
        assert_eq!(resolve(PAPER, None, TWO_GPUS).unwrap(), Device::Cuda(0));
        assert_eq!(
            resolve(PAPER, Some("cuda:1"), TWO_GPUS).unwrap(),
            Device::Cuda(1)
        );
        // A backend without a device, or a device without the backend, is no GPU.
        let loaded_nothing = CudaState {
            backend_loaded: false,
            gpus: 1,
        };
        assert!(resolve(PAPER, None, loaded_nothing).is_err());
    }

    #[test]
    fn a_cpu_profile_stays_on_the_cpu_unless_told_otherwise() {
        let smoke = Wants::Profile {
            name: "smoke",
            device: Some("cpu"),
        };
        assert_eq!(resolve(smoke, None, TWO_GPUS).unwrap(), Device::Cpu);
        assert_eq!(resolve(smoke, None, NO_BACKEND).unwrap(), Device::Cpu);
        assert_eq!(
            resolve(smoke, Some("cuda"), TWO_GPUS).unwrap(),
            Device::Cuda(0)
        );
    }

    #[test]
    fn auto_outside_a_profile_falls_back_to_the_cpu() {
        assert_eq!(resolve(Wants::Any, None, NO_BACKEND).unwrap(), Device::Cpu);
        assert_eq!(
            resolve(Wants::Any, Some("auto"), NO_GPU).unwrap(),
            Device::Cpu
        );
        assert_eq!(
            resolve(Wants::Any, None, TWO_GPUS).unwrap(),
            Device::Cuda(0)
        );
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_panic_later() {
        let e = err(Wants::Any, Some("cuda"), NO_BACKEND);
        assert!(e.contains("device `cuda` asked for"), "{e}");
        assert!(e.contains("CUDA backend not loaded, 0 GPUs visible"), "{e}");
        assert!(e.contains("`--device cpu`"), "{e}");
        let e = err(Wants::Any, Some("cuda:0"), NO_GPU);
        assert!(e.contains("CUDA backend loaded, 0 GPUs visible"), "{e}");
        // A profile's own `cuda` setting names the profile.
        let gpu_profile = Wants::Profile {
            name: "mine",
            device: Some("cuda"),
        };
        assert!(err(gpu_profile, None, NO_GPU).contains("device `cuda` (profile `mine`)"));
        let e = err(Wants::Any, Some("cuda:2"), TWO_GPUS);
        assert!(
            e.contains("only 2 GPUs are visible: use cuda:0 to cuda:1"),
            "{e}"
        );
        let one = CudaState {
            backend_loaded: true,
            gpus: 1,
        };
        let e = err(Wants::Any, Some("cuda:1"), one);
        assert!(e.contains("only 1 GPU is visible: use cuda:0,"), "{e}");
    }

    #[test]
    fn unknown_devices_are_named() {
        let e = err(Wants::Any, Some("gpu"), TWO_GPUS);
        assert!(e.contains("unknown device `gpu`"), "{e}");
        let e = err(Wants::Any, Some("cuda:x"), TWO_GPUS);
        assert!(e.contains("unknown device `cuda:x`"), "{e}");
    }

    #[test]
    fn the_backend_is_read_from_the_loaders_mappings() {
        let line = |f: &str| format!("7f00-7f10 r-xp 00000000 08:01 42   /opt/torch/lib/{f}\n");
        assert!(maps_have_cuda(
            &(line("libc10.so") + &line("libtorch_cuda.so"))
        ));
        assert!(maps_have_cuda(&line("libtorch_cuda.so.2")));
        assert!(!maps_have_cuda(
            &(line("libtorch_cpu.so") + &line("libc10_cuda.so"))
        ));
        assert!(!maps_have_cuda(&line("libtorch_cuda_linalg.so")));
        assert!(!maps_have_cuda(""));
    }
}
