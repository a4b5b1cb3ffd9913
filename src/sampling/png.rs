//! Samples to PNG files and back, quantised exactly as diffusers' pipelines do it
//! (`(x/2+0.5).clamp(0,1)`, then `numpy_to_pil`: `(x*255).round()` half-to-even, as uint8). The
//! metrics read the PNGs back (official `baddiffusion.py`, `measure`), so the quantisation is part of the measured result.
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use image::{ExtendedColorType, ImageEncoder};
use tch::{Device, Kind, Tensor};

/// Images in [−1, 1] (any leading shape, channels third from last) → uint8 in [0, 255].
pub fn to_u8(images: &Tensor) -> Tensor {
    let x = images.to_device(Device::Cpu).to_kind(Kind::Float);
    ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
}

/// The file name of image `index`: zero-padded so that names sort in sample order.
pub fn png_name(index: usize) -> String {
    format!("{index:06}.png")
}

/// One (C, H, W) image in [−1, 1] as PNG bytes: greyscale for C = 1 (diffusers writes mode "L"),
/// RGB for C = 3.
pub fn to_png_bytes(image: &Tensor) -> Result<Vec<u8>> {
    let size = image.size();
    let [c, h, w] = size[..] else {
        bail!("an image to save must be (C, H, W), got shape {size:?}");
    };
    let color = match c {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        _ => {
            bail!("cannot save a {c}-channel image as PNG: only 1 (greyscale) or 3 (RGB) channels")
        }
    };
    let hwc = to_u8(image).permute([1, 2, 0]).contiguous();
    let pixels = Vec::<u8>::try_from(hwc.view([-1]))?;
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(&pixels, w as u32, h as u32, color)?;
    Ok(bytes)
}

/// Writes (N, C, H, W) images in [−1, 1] to `dir` (created if missing) as
/// `png_name(start_index + i)`; returns the paths written.
pub fn save_pngs(images: &Tensor, dir: &Path, start_index: usize) -> Result<Vec<PathBuf>> {
    ensure!(
        images.dim() == 4,
        "images to save must be (N, C, H, W), got shape {:?}",
        images.size()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut paths = Vec::new();
    for i in 0..images.size()[0] {
        let path = dir.join(png_name(start_index + i as usize));
        let bytes = to_png_bytes(&images.get(i))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Every `*.png` in `dir`, in file-name order, as uint8 (N, C, H, W) with C = 1 (greyscale) or
/// 3 (RGB). All images must share one shape.
pub fn load_pngs_u8(dir: &Path) -> Result<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no .png files in {}", dir.display());
    let mut shape = None;
    let mut data = Vec::new();
    for f in &files {
        let img = image::open(f).with_context(|| format!("decoding {}", f.display()))?;
        let dims = (img.width(), img.height());
        let (c, bytes) = match img {
            image::DynamicImage::ImageLuma8(g) => (1, g.into_raw()),
            image::DynamicImage::ImageRgb8(rgb) => (3, rgb.into_raw()),
            other => bail!(
                "{}: {:?} PNGs are not supported; samples are 8-bit greyscale or RGB",
                f.display(),
                other.color()
            ),
        };
        let this = (c, dims);
        match shape {
            None => shape = Some(this),
            Some(s) if s != this => bail!(
                "{}: {} channels of {}x{} differ from the first image's {} channels of {}x{}",
                f.display(),
                this.0,
                this.1 .1,
                this.1 .0,
                s.0,
                s.1 .1,
                s.1 .0
            ),
            Some(_) => {}
        }
        data.extend(bytes);
    }
    let (c, (w, h)) = shape.expect("at least one file");
    let n = files.len() as i64;
    Ok(Tensor::from_slice(&data)
        .view([n, h as i64, w as i64, c])
        .permute([0, 3, 1, 2])
        .contiguous())
}

/// [`load_pngs_u8`] as float32 in [0, 1] (value / 255), what the metrics consume.
pub fn load_pngs(dir: &Path) -> Result<Tensor> {
    Ok(load_pngs_u8(dir)?.to_kind(Kind::Float) / 255.0)
}
