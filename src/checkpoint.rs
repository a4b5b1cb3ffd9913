//! diffusers model directories: load a `UNet2DModel` checkpoint (bare UNet folder or
//! `DDPMPipeline` folder) and save what we trained in the pipeline layout diffusers reads.
//!
//! Weights are read from safetensors only. A `.bin` (a PyTorch pickle) is converted once by the
//! project's Python environment (`python/convert_bin.py`, `torch.load(weights_only=True)`), and
//! the sha256 of both files is recorded in a sidecar next to the converted file, so every run
//! can name the exact bytes it started from.
use crate::files::temp_path;
pub use crate::files::{sha256_file, write_atomic};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tch::{nn, Device, Tensor};

use crate::unet::config::DIFFUSERS_VERSION;
use crate::unet::{Fill, UNet2DConfig, UNet2DModel};

/// diffusers' file names.
pub const WEIGHTS_SAFETENSORS: &str = "diffusion_pytorch_model.safetensors";
pub const WEIGHTS_BIN: &str = "diffusion_pytorch_model.bin";
pub const CONFIG: &str = "config.json";
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";
pub const MODEL_INDEX: &str = "model_index.json";
/// Where a `.bin` is converted to, and the record of that conversion.
pub const CONVERTED_SAFETENSORS: &str = "diffusion_pytorch_model.converted.safetensors";
pub const CONVERTED_RECORD: &str = "diffusion_pytorch_model.converted.json";

/// The two directory layouts diffusers writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `config.json` + weights (+ `scheduler_config.json`) in one folder: `UNet2DModel.save_pretrained`.
    Bare,
    /// `model_index.json`, `unet/`, `scheduler/`: `DDPMPipeline.save_pretrained`.
    Pipeline,
}

/// A file and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// The weights a model was loaded from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Weights {
    /// The safetensors file read.
    pub safetensors: WeightFile,
    /// The `.bin` it was converted from, if any.
    pub converted_from: Option<WeightFile>,
}

/// A loaded checkpoint. The model's variables live in `vs` (at its root).
pub struct Checkpoint {
    pub vs: nn::VarStore,
    pub model: UNet2DModel,
    pub config: UNet2DConfig,
    /// `scheduler_config.json` as found, for the scheduler module to interpret.
    pub scheduler_config: Option<Value>,
    pub weights: Weights,
    pub layout: Layout,
}

/// Where the parts of a model directory are.
#[derive(Debug, Clone)]
pub struct Located {
    pub layout: Layout,
    pub unet_dir: PathBuf,
    pub scheduler_config: Option<PathBuf>,
}

/// Finds the UNet and scheduler in `dir`, in either layout.
pub fn locate(dir: &Path) -> Result<Located> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let index = dir.join(MODEL_INDEX);
    if index.is_file() && dir.join("unet").is_dir() {
        let v = read_json(&index)?;
        match v.get("unet") {
            Some(Value::Array(a)) if a.get(1).and_then(Value::as_str) == Some("UNet2DModel") => {}
            Some(other) => bail!(
                "{}: `unet` is {other}, expected [\"diffusers\", \"UNet2DModel\"]",
                index.display()
            ),
            None => bail!(
                "{}: no `unet` entry; this is not a UNet2DModel pipeline",
                index.display()
            ),
        }
        let sched = dir.join("scheduler").join(SCHEDULER_CONFIG);
        return Ok(Located {
            layout: Layout::Pipeline,
            unet_dir: dir.join("unet"),
            scheduler_config: sched.is_file().then_some(sched),
        });
    }
    if dir.join(CONFIG).is_file() {
        let sched = dir.join(SCHEDULER_CONFIG);
        return Ok(Located {
            layout: Layout::Bare,
            unet_dir: dir.to_path_buf(),
            scheduler_config: sched.is_file().then_some(sched),
        });
    }
    bail!(
        "{} is not a diffusers model directory: expected either {MODEL_INDEX} with unet/ and scheduler/ \
         (DDPMPipeline.save_pretrained) or {CONFIG} with {WEIGHTS_SAFETENSORS} or {WEIGHTS_BIN} (UNet2DModel.save_pretrained)",
        dir.display()
    )
}

/// Loads a diffusers model directory onto `device`.
pub fn load(dir: &Path, device: Device) -> Result<Checkpoint> {
    let located = locate(dir)?;
    let config_path = located.unet_dir.join(CONFIG);
    let config_json = read_json(&config_path)?;
    if let Some(class) = config_json.get("_class_name").and_then(Value::as_str) {
        if class != "UNet2DModel" {
            bail!(
                "{} describes a {class}, not a UNet2DModel",
                config_path.display()
            );
        }
    }
    let config = UNet2DConfig::from_json_value(config_json)
        .with_context(|| format!("UNet config {}", config_path.display()))?;
    let scheduler_config = located
        .scheduler_config
        .as_deref()
        .map(read_json)
        .transpose()?;
    let weights = safetensors_for(&located.unet_dir)?;

    let vs = nn::VarStore::new(device);
    // Zero-filled, then overwritten: building does not touch the random generator.
    let model = UNet2DModel::build(vs.root(), &config, Fill::Zeros)
        .with_context(|| format!("building the UNet of {}", config_path.display()))?;
    load_weights(&vs, &weights.safetensors.path)?;
    Ok(Checkpoint {
        vs,
        model,
        config,
        scheduler_config,
        weights,
        layout: located.layout,
    })
}

/// The safetensors weights of a UNet folder, converting a `.bin` once if that is all there is.
pub fn safetensors_for(unet_dir: &Path) -> Result<Weights> {
    let st = unet_dir.join(WEIGHTS_SAFETENSORS);
    if st.is_file() {
        return Ok(Weights {
            safetensors: WeightFile {
                sha256: sha256_file(&st)?,
                path: st,
            },
            converted_from: None,
        });
    }
    let bin = unet_dir.join(WEIGHTS_BIN);
    if !bin.is_file() {
        if unet_dir
            .join(format!("{WEIGHTS_SAFETENSORS}.index.json"))
            .is_file()
        {
            bail!(
                "{}: sharded weights are not supported; re-save the model unsharded",
                unet_dir.display()
            );
        }
        bail!(
            "{}: no {WEIGHTS_SAFETENSORS} or {WEIGHTS_BIN}",
            unet_dir.display()
        );
    }
    let bin_sha = sha256_file(&bin)?;
    let converted = unet_dir.join(CONVERTED_SAFETENSORS);
    let record_path = unet_dir.join(CONVERTED_RECORD);
    let existing = if converted.is_file() && record_path.is_file() {
        Some((read_json(&record_path)?, sha256_file(&converted)?))
    } else {
        None
    };
    let conv_sha = match existing {
        Some((record, sha))
            if record["source_sha256"] == bin_sha.as_str() && record["sha256"] == sha.as_str() =>
        {
            sha
        }
        _ => {
            let torch =
                crate::python::run("convert_bin.py", &[bin.as_os_str(), converted.as_os_str()])
                    .with_context(|| format!("converting {} to safetensors", bin.display()))?;
            let sha = sha256_file(&converted)?;
            let record = json!({
                "source": WEIGHTS_BIN,
                "source_sha256": bin_sha,
                "file": CONVERTED_SAFETENSORS,
                "sha256": sha,
                "converter": "python/convert_bin.py: torch.load(weights_only=True) -> safetensors",
                "torch": torch.trim(),
            });
            write_atomic(&record_path, &pretty(&record))?;
            sha
        }
    };
    Ok(Weights {
        safetensors: WeightFile {
            path: converted,
            sha256: conv_sha,
        },
        converted_from: Some(WeightFile {
            path: bin,
            sha256: bin_sha,
        }),
    })
}

/// diffusers' renames of the attention block's old parameter names (applied on load there too).
const DEPRECATED_ATTENTION_NAMES: [(&str, &str); 4] = [
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

/// Maps `…attentions.N.query.weight` etc. to the current names, where the model expects them.
fn rename_deprecated_keys(
    state: &mut BTreeMap<String, Tensor>,
    expected: &HashMap<String, Tensor>,
) {
    let keys: Vec<String> = state.keys().cloned().collect();
    for key in keys {
        for (old, new) in DEPRECATED_ATTENTION_NAMES {
            for leaf in ["weight", "bias"] {
                let Some(prefix) = key.strip_suffix(&format!(".{old}.{leaf}")) else {
                    continue;
                };
                let renamed = format!("{prefix}.{new}.{leaf}");
                if expected.contains_key(&renamed) && !state.contains_key(&renamed) {
                    let t = state.remove(&key).expect("key listed");
                    state.insert(renamed, t);
                }
            }
        }
    }
}

/// Copies a safetensors state dict into `vs`, which must match it exactly (after the
/// deprecated-name mapping): every mismatch is listed in one error.
pub fn load_weights(vs: &nn::VarStore, file: &Path) -> Result<()> {
    let tensors = crate::tensor_io::read_safetensors(file).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable safetensors file (corrupt or truncated?): {e:#}",
            file.display()
        )
    })?;
    refuse_non_finite(file, &tensors)?;
    let mut state: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let vars = vs.variables();
    rename_deprecated_keys(&mut state, &vars);

    let mut missing: Vec<&String> = vars.keys().filter(|k| !state.contains_key(*k)).collect();
    let unexpected: Vec<&String> = state.keys().filter(|k| !vars.contains_key(*k)).collect();
    let mut shapes: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = state.get(k)?;
            (t.size() != v.size())
                .then(|| format!("{k}: file {:?}, model {:?}", t.size(), v.size()))
        })
        .collect();
    missing.sort();
    shapes.sort();
    if !(missing.is_empty() && unexpected.is_empty() && shapes.is_empty()) {
        let mut msg = format!("{} does not match the model's config:", file.display());
        if !missing.is_empty() {
            msg += &format!(
                "\n  missing tensors ({}): {}",
                missing.len(),
                join(&missing)
            );
        }
        if !unexpected.is_empty() {
            msg += &format!(
                "\n  unexpected tensors ({}): {}",
                unexpected.len(),
                join(&unexpected)
            );
        }
        if !shapes.is_empty() {
            msg += &format!(
                "\n  wrongly shaped tensors ({}): {}",
                shapes.len(),
                shapes.join("; ")
            );
        }
        msg += "\n  (is config.json the one these weights were saved with?)";
        bail!(msg);
    }
    tch::no_grad(|| {
        for (k, mut v) in vars {
            v.copy_(&state[&k]);
        }
    });
    Ok(())
}

/// NaN or infinite weights (a diverged run, a corrupt file) sample black or NaN images without
/// a word downstream, so they are refused here, naming the file and the tensors.
fn refuse_non_finite(file: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let bad: Vec<&String> = tensors
        .iter()
        .filter(|(_, t)| t.is_floating_point() && t.isfinite().all().int64_value(&[]) == 0)
        .map(|(k, _)| k)
        .collect();
    ensure!(
        bad.is_empty(),
        "{}: weights are not finite (NaN or inf) in {} tensor(s): {}; the model it holds cannot \
         sample (a diverged training run or a corrupt file)",
        file.display(),
        bad.len(),
        join(&bad[..bad.len().min(8)])
    );
    Ok(())
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Saves `vs` (a `UNet2DModel` built at the store's root) as a `DDPMPipeline` folder:
/// `model_index.json`, `unet/config.json`, `unet/diffusion_pytorch_model.safetensors`,
/// `scheduler/scheduler_config.json`. Each file is written atomically. Returns the weights'
/// file and sha256.
pub fn save_pipeline(
    dir: &Path,
    vs: &nn::VarStore,
    config: &UNet2DConfig,
    scheduler_config: &Value,
) -> Result<WeightFile> {
    let Some(sched_class) = scheduler_config.get("_class_name").and_then(Value::as_str) else {
        bail!("the scheduler config has no `_class_name` (e.g. \"DDPMScheduler\"); diffusers needs it to load the pipeline");
    };
    let unet_dir = dir.join("unet");
    let sched_dir = dir.join("scheduler");
    for d in [&unet_dir, &sched_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let weights = unet_dir.join(WEIGHTS_SAFETENSORS);
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = temp_path(&weights);
    Tensor::write_safetensors(&named, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &weights)
        .with_context(|| format!("renaming {} to {}", tmp.display(), weights.display()))?;
    crate::files::failpoint("model.weights")?;
    write_atomic(&unet_dir.join(CONFIG), &pretty(&config.to_json_value()))?;
    write_atomic(&sched_dir.join(SCHEDULER_CONFIG), &pretty(scheduler_config))?;
    let index = json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", sched_class],
        "unet": ["diffusers", "UNet2DModel"],
    });
    write_atomic(&dir.join(MODEL_INDEX), &pretty(&index))?;
    Ok(WeightFile {
        sha256: sha256_file(&weights)?,
        path: weights,
    })
}

/// JSON as diffusers writes it (two-space indent, trailing newline).
fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).expect("JSON value serialises");
    s.push('\n');
    s.into_bytes()
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

#[cfg(test)]
mod tests;
