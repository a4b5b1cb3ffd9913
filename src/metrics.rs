//! The paper's metrics (paper §4; official `baddiffusion.py:477-551`, `measure`): FID (pytorch-fid's Inception, Fréchet distance of pool3
//! statistics, or a clearly named proxy where the Inception weights are unavailable), MSE to the
//! backdoor target and its threshold rate, and SSIM. Every number leaves
//! this module as a [`MetricRow`] carrying the [`Protocol`] that produced it.
pub mod fid;
pub mod frechet;
pub mod image_set;
pub mod inception;
pub mod mse;
pub mod protocol;
pub mod proxy;
pub mod reference;
pub mod ssim;

pub use protocol::{MetricRow, Protocol};

pub use crate::files::{hex, sha256_hex};

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

/// Reads a backdoor target (values in [−1, 1], `[C, H, W]` or `[1, C, H, W]`) from `.npy` or
/// `.safetensors` (a single tensor, or one named `target`), with the file's sha256.
pub fn load_target(path: &Path) -> Result<(Tensor, String)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading target {}", path.display()))?;
    let t = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => crate::tensor_io::parse_npy(&bytes)
            .with_context(|| format!("target {} is not a valid .npy file", path.display()))?,
        Some("safetensors") => {
            let mut all = crate::tensor_io::parse_safetensors(&bytes).with_context(|| {
                format!("target {} is not a valid safetensors file", path.display())
            })?;
            match all.iter().position(|(k, _)| k == "target") {
                Some(i) => all.swap_remove(i).1,
                None if all.len() == 1 => all.remove(0).1,
                None => bail!(
                    "target {} holds several tensors and none is named `target`",
                    path.display()
                ),
            }
        }
        _ => bail!(
            "target {} must be a .npy or .safetensors file",
            path.display()
        ),
    };
    let t = if t.dim() == 4 && t.size()[0] == 1 {
        t.squeeze_dim(0)
    } else {
        t
    };
    ensure!(
        t.dim() == 3,
        "target {} must be one image [C, H, W], got shape {:?}",
        path.display(),
        t.size()
    );
    Ok((t.to_kind(Kind::Float), sha256_hex(&bytes)))
}

/// The backdoor metrics of samples against their target (official `baddiffusion.py:477-551`, `measure`): `MSE`,
/// `MSE_threshold_rate` and `SSIM`, each a row with its protocol.
pub fn target_metrics(
    samples: &image_set::ImageSet,
    target: &Tensor,
    target_sha256: &str,
    ssim_cfg: &ssim::SsimConfig,
    threshold: f64,
) -> Result<Vec<MetricRow>> {
    let s = samples.images.size();
    let t = target.size();
    // One target for every sample, or one per sample (E7's unpoisoned inputs, scored against
    // their own uncorrupted image).
    let per_sample = t.len() == 4 && t[0] == s[0];
    ensure!(
        t[t.len().saturating_sub(3)..] == s[1..] && (t.len() == 3 || per_sample),
        "samples in {} are {:?} (C, H, W) but the target is {:?}: use the target made for this dataset's image \
         size and channels",
        samples.dir.display(),
        &s[1..],
        target.size()
    );
    let y01 = mse::target_to_unit(target);
    // PNG bytes / 255 in float64 for MSE, float32 for SSIM as torchmetrics sees them.
    let per_image = mse::per_image_mse(&(samples.images.to_kind(Kind::Double) / 255.0), &y01)?;
    // Scale models' images (8 px) are smaller than SSIM's window: their rows say SSIM is missing.
    let (h, w) = (s[2], s[3]);
    let ssim_value = match h.min(w) >= ssim_cfg.window() {
        true => Some(ssim::ssim(&samples.to_unit(), &y01, ssim_cfg)?),
        false => None,
    };
    let warnings = match ssim_value {
        Some(_) => vec![],
        None => vec![format!(
            "no SSIM: {h}×{w} images are smaller than its {0}×{0} window",
            ssim_cfg.window()
        )],
    };
    let protocol = |implementation: String, dtype: &str| Protocol {
        implementation,
        version: env!("CARGO_PKG_VERSION").into(),
        weights_sha256: None,
        n_generated: s[0],
        n_reference: if per_sample { t[0] } else { 1 },
        reference_split: Some(if per_sample {
            "each sample's uncorrupted input image".into()
        } else {
            "backdoor target".into()
        }),
        reference_hash: Some(target_sha256.into()),
        resize: None,
        image_format: "png (8-bit) / 255 vs target clamp(y/2+0.5, 0, 1) unquantised".into(),
        dtype: dtype.into(),
        device: "Cpu".into(),
        warnings: warnings.clone(),
    };
    let mse_impl = "baddiffusion MSE (official measure: mean over N·C·H·W)".to_string();
    let mut rows = vec![MetricRow {
        metric: "MSE".into(),
        value: mse::mse(&per_image),
        protocol: protocol(mse_impl, "float64"),
    }];
    // Against each sample's own image only MSE and SSIM mean something, as the follow-up code
    // scores its unpoisoned inputs: no hit rate and no CDF (calibrations read the CDF as
    // distances to the target).
    if !per_sample {
        rows.push(MetricRow {
            metric: "MSE_threshold_rate".into(),
            value: mse::mse_threshold_rate(&per_image, threshold),
            protocol: protocol(
                format!("baddiffusion MSE threshold rate (per-image MSE < {threshold})"),
                "float64",
            ),
        });
    }
    rows.extend(ssim_value.map(|value| MetricRow {
            metric: "SSIM".into(),
            value,
            protocol: protocol(
                format!(
                    "baddiffusion SSIM (torchmetrics defaults, data_range 1, window {}, sigma {}, border: {})",
                    ssim_cfg.window(),
                    ssim_cfg.sigma,
                    ssim_cfg.border.describe()
                ),
                "float32",
            ),
        }));
    // The empirical CDF of per-image MSE on a fixed grid: the report calibrates "on the target"
    // for clean samples from the clean model's CDF (frame::calibrate).
    let cdf_impl = "baddiffusion share of samples with per-image MSE below the named threshold";
    let grid = if per_sample {
        vec![]
    } else {
        frame::calibrate::grid()
    };
    rows.extend(grid.into_iter().map(|tau| MetricRow {
        metric: frame::calibrate::cdf_metric(tau),
        value: mse::mse_threshold_rate(&per_image, tau),
        protocol: protocol(cdf_impl.to_string(), "float64"),
    }));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::image_set::{tests::write_pngs, Channels, ImageSet};
    use crate::rng::Rng;

    /// A `.npy` whose header claims more data than the file holds is refused, naming the file
    /// (tch's reader copied past the end of the data: heap bytes as a target, or a segfault).
    #[test]
    fn a_lying_npy_target_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lying.npy");
        Tensor::zeros([3, 4, 4], (Kind::Float, tch::Device::Cpu))
            .write_npy(&path)
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(7).position(|w| w == b"(3,4,4,").unwrap();
        bytes[at..at + 7].copy_from_slice(b"(3,9,9,");
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", load_target(&path).unwrap_err());
        assert!(
            err.contains("lying.npy") && err.contains("[3, 9, 9]"),
            "{err}"
        );
    }

    /// `convert_pth.py` turns a real `torch.save` pickle into safetensors our loader reads.
    #[test]
    fn convert_pth_then_load_target_and_measure() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::seeded(61);
        let target = rng.rand(&[3, 16, 16]) * 2.0 - 1.0;
        let pth = dir.path().join("target.pth");
        let py = format!("import torch; from safetensors.torch import load_file; torch.save({{'target': load_file('{0}')['target']}}, '{1}')", "IN", pth.display());
        let input = dir.path().join("in.safetensors");
        Tensor::write_safetensors(&[("target", &target)], &input).unwrap();
        let status = std::process::Command::new(crate::python::interpreter().unwrap())
            .args(["-c", &py.replace("IN", input.to_str().unwrap())])
            .status()
            .unwrap();
        assert!(status.success());
        let out = dir.path().join("target.safetensors");
        crate::python::run("convert_pth.py", &[pth.as_os_str(), out.as_os_str()]).unwrap();
        let (loaded, sha) = load_target(&out).unwrap();
        assert!(loaded.equal(&target));
        assert_eq!(sha, sha256_hex(&std::fs::read(&out).unwrap()));

        let samples = dir.path().join("samples");
        write_pngs(
            &samples,
            &(rng.rand(&[5, 3, 16, 16]) * 255.0).to_kind(Kind::Uint8),
        );
        let set = ImageSet::read_png_dir(&samples, None, Channels::Native).unwrap();
        let rows = target_metrics(&set, &loaded, &sha, &ssim::SsimConfig::default(), 0.1).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names[..3], ["MSE", "MSE_threshold_rate", "SSIM"]);
        // The CDF grid: one row per threshold, monotone.
        let cdf: Vec<f64> = rows[3..].iter().map(|r| r.value).collect();
        assert_eq!(cdf.len(), frame::calibrate::grid().len());
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]), "{cdf:?}");
        let per = mse::per_image_mse(
            &(set.images.to_kind(Kind::Double) / 255.0),
            &mse::target_to_unit(&loaded),
        )
        .unwrap();
        assert_eq!(rows[0].value, mse::mse(&per));
        for (i, tau) in frame::calibrate::grid().into_iter().enumerate() {
            assert_eq!(rows[3 + i].value, mse::mse_threshold_rate(&per, tau));
        }
        assert!(rows
            .iter()
            .all(|r| r.protocol.n_generated == 5
                && r.protocol.reference_hash.as_deref() == Some(&sha)));
        assert!(rows.iter().all(|r| !r.metric.contains("FID")));

        let gray = Tensor::zeros([1, 16, 16], (Kind::Float, tch::Device::Cpu));
        let err = target_metrics(&set, &gray, "x", &ssim::SsimConfig::default(), 0.1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("samples") && err.contains("target"), "{err}");
        let bad = dir.path().join("t.txt");
        std::fs::write(&bad, "x").unwrap();
        assert!(load_target(&bad).unwrap_err().to_string().contains("t.txt"));
    }
}
