//! Where a cell's FID Inception weights come from: `BADDIFF_INCEPTION_WEIGHTS` (a safetensors
//! file), else the fetched `pytorch-fid-inception` artifact, whose `.pth` pickle is converted to
//! safetensors once beside it (`python/convert_pth.py`, `torch.load(weights_only=True)`), as a
//! checkpoint's `.bin` is. The GPU profiles fetch the `.pth`; without this step their first FID
//! would stop the run asking for a file nobody had made.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::files::{sha256_file, write_atomic};

/// The manifest's artifact holding pytorch-fid's weights.
const ARTIFACT: &str = "pytorch-fid-inception";
/// The converted file's name, beside the `.pth`; `convert_pth.py` writes its record as `<name>.json`.
const CONVERTED: &str = "pt_inception.safetensors";

/// The Inception weights to use: the environment's, else the cached artifact's (converted once).
/// Resolved once per process: a cell measures many sets, and checking the conversion hashes
/// both files (about 190 MB).
pub fn default_weights() -> Result<PathBuf> {
    static RESOLVED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = RESOLVED.get() {
        return Ok(p.clone());
    }
    let path = match std::env::var_os("BADDIFF_INCEPTION_WEIGHTS").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => converted(&crate::inputs::artifact_dir(ARTIFACT).context(
            "FID with Inception needs pytorch-fid's weights: fetch them, or set BADDIFF_INCEPTION_WEIGHTS \
             to a safetensors copy (python/convert_pth.py IN.pth OUT.safetensors)",
        )?)?,
    };
    Ok(RESOLVED.get_or_init(|| path).clone())
}

/// The safetensors copy of the one `.pth` in `dir`, converted unless a record says it was made
/// from these very bytes.
fn converted(dir: &Path) -> Result<PathBuf> {
    let pth = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "pth"))
        .with_context(|| {
            format!(
                "{}: no .pth file of pytorch-fid's weights; fetch them again \
                 (`cargo xtask fetch {ARTIFACT}`)",
                dir.display()
            )
        })?;
    let out = dir.join(CONVERTED);
    let record_path = dir.join(format!("{CONVERTED}.json"));
    let source_sha = sha256_file(&pth)?;
    let current = || -> Option<bool> {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).ok()?).ok()?;
        Some(
            record["source_sha256"] == source_sha.as_str()
                && record["safetensors_sha256"] == sha256_file(&out).ok()?.as_str(),
        )
    };
    if current() != Some(true) {
        // Two cells may convert at once: each writes its own file, then renames it into place.
        let tmp = dir.join(format!("{CONVERTED}.tmp{}.safetensors", std::process::id()));
        crate::python::run("convert_pth.py", &[pth.as_os_str(), tmp.as_os_str()])
            .with_context(|| format!("converting {} to safetensors", pth.display()))?;
        let tmp_record = PathBuf::from(format!("{}.json", tmp.display()));
        let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&tmp_record)?)?;
        record["safetensors"] = CONVERTED.into();
        std::fs::rename(&tmp, &out)?;
        write_atomic(&record_path, &serde_json::to_vec_pretty(&record)?)?;
        std::fs::remove_file(&tmp_record).ok();
    }
    Ok(out)
}
