//! A folder of images (CelebA-HQ 256: the official code loads `datasets/celeba_hq_256` as an
//! image folder). Files are taken in name order; each is converted to RGB (or L) and resized to
//! S×S with Pillow's bilinear filter, as the official transform does (a no-op at native size).
//!
//! Only PNG is decoded: JPEG decoders differ from Pillow's libjpeg in the last bit, so JPEG
//! copies must be converted to PNG once (losslessly from what Pillow decodes) to keep pixel
//! parity. All images are held in memory as uint8 (30,000 × 3 × 256² ≈ 5.9 GB for CelebA-HQ;
//! use `limit` for subsets).
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tch::Tensor;

use super::Dataset;
use crate::pil;

/// The image files of `dir` (png, jpg, jpeg, any case), sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())
                })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads up to `limit` images of `dir` as `channels`×`size`×`size`, labels −1 (as the official
/// loader sets them for unlabelled sets).
pub fn load(dir: &Path, channels: usize, size: usize, limit: Option<usize>) -> Result<Dataset> {
    let mut files = list_images(dir)?;
    ensure!(
        !files.is_empty(),
        "image folder {} holds no .png/.jpg images",
        dir.display()
    );
    if let Some(n) = limit {
        files.truncate(n);
    }
    let mut data = Vec::with_capacity(files.len() * channels * size * size);
    for f in &files {
        let ext = f
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext != "png" {
            bail!(
                "{}: only PNG images are read (JPEG decoders differ from Pillow's); convert the folder to PNG first",
                f.display()
            );
        }
        let img = pil::read_png(f)?;
        let img = pil::convert_channels(&img, channels)
            .with_context(|| format!("image {}", f.display()))?;
        let img = pil::resize_bilinear(&img, size, size)
            .with_context(|| format!("image {}", f.display()))?;
        data.extend_from_slice(&img.data);
    }
    let n = files.len() as i64;
    let images = Tensor::from_slice(&data).reshape([n, channels as i64, size as i64, size as i64]);
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    Dataset::new(
        &name,
        images,
        Tensor::full([n], -1, (tch::Kind::Int64, tch::Device::Cpu)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
        let buf = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([
                (x * 7 + seed as u32) as u8,
                (y * 13) as u8,
                seed,
                if x % 2 == 0 { 255 } else { 0 },
            ])
        });
        buf.save(path).unwrap();
    }

    #[test]
    fn loads_sorted_converted_and_resized() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("b.png"), 8, 8, 2);
        write_png(&dir.path().join("a.png"), 12, 6, 1);
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let ds = load(dir.path(), 3, 8, None).unwrap();
        assert_eq!(ds.images.size(), [2, 3, 8, 8]);
        // b.png is native size, so its RGB bytes pass through (alpha dropped, not composited).
        let b = ds.images.get(1);
        assert_eq!(
            (
                b.int64_value(&[0, 0, 3]),
                b.int64_value(&[1, 2, 0]),
                b.int64_value(&[2, 5, 5])
            ),
            (23, 26, 2)
        );
        // a.png was resized by Pillow's filter: compare with our resampler directly.
        let a = pil::convert_rgb(&pil::read_png(&dir.path().join("a.png")).unwrap()).unwrap();
        let expect = pil::resize_bilinear(&a, 8, 8).unwrap().to_tensor();
        assert!(ds.images.get(0).equal(&expect));
        assert_eq!(
            load(dir.path(), 1, 8, Some(1)).unwrap().images.size(),
            [1, 1, 8, 8]
        );
    }

    #[test]
    fn empty_unreadable_and_jpeg_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", load(dir.path(), 3, 8, None).unwrap_err()).contains("holds no"));
        std::fs::write(dir.path().join("broken.png"), b"\x89PNG not really").unwrap();
        let err = format!("{:#}", load(dir.path(), 3, 8, None).unwrap_err());
        assert!(err.contains("broken.png"), "{err}");
        std::fs::remove_file(dir.path().join("broken.png")).unwrap();
        std::fs::write(dir.path().join("x.jpg"), b"").unwrap();
        let err = format!("{:#}", load(dir.path(), 3, 8, None).unwrap_err());
        assert!(err.contains("x.jpg") && err.contains("PNG"), "{err}");
    }
}
