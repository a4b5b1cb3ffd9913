//! The few Pillow operations the official data pipeline runs, reproduced bit for bit.
//!
//! The official code builds every trigger, target and training image with torchvision transforms
//! on PIL images: `.convert("RGB")` / `.convert("L")`, `Resize` (which calls PIL's
//! `Image.resize(size, BILINEAR)`), `ToTensor` and its own `normalize`. A "close enough" bilinear
//! resize moves trigger pixels across the ≥ 0.999 white-removal threshold and changes targets by
//! whole grey levels, so this module follows Pillow's `Resample.c` exactly: a separable two-pass
//! convolution (horizontal first, into a uint8 image, then vertical) with a triangle filter whose
//! support grows with the downscale factor, coefficients rounded to 22-bit fixed point, and
//! rounding plus clipping to uint8 after each pass.
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

/// An 8-bit image stored planar (channel, row, column), as a CHW tensor would hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageU8 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `channels * height * width` bytes, channel-major.
    pub data: Vec<u8>,
}

impl ImageU8 {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<u8>) -> Result<ImageU8> {
        if data.len() != channels * height * width {
            bail!(
                "image data has {} bytes, expected {channels}×{height}×{width} = {}",
                data.len(),
                channels * height * width
            );
        }
        Ok(ImageU8 {
            channels,
            height,
            width,
            data,
        })
    }

    /// From a uint8 C×H×W tensor.
    pub fn from_tensor(t: &Tensor) -> Result<ImageU8> {
        let size = t.size();
        if size.len() != 3 || t.kind() != Kind::Uint8 {
            bail!(
                "expected a uint8 C×H×W tensor, got {:?} {:?}",
                t.kind(),
                size
            );
        }
        let t = t.to_device(Device::Cpu).contiguous();
        let mut data = vec![0u8; t.numel()];
        let n = data.len();
        t.copy_data(&mut data, n);
        ImageU8::new(size[0] as usize, size[1] as usize, size[2] as usize, data)
    }

    /// As a uint8 C×H×W tensor on the CPU.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).reshape([
            self.channels as i64,
            self.height as i64,
            self.width as i64,
        ])
    }

    fn plane(&self, c: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// Reads a PNG as Pillow opens it: L, LA, RGB or RGBA with the bytes as stored (no gamma, no
/// alpha compositing), planar.
pub fn read_png(path: &Path) -> Result<ImageU8> {
    let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?;
    from_dynamic(img).with_context(|| format!("image {}", path.display()))
}

/// Planar bytes of a decoded image in its own mode (only 8-bit modes are accepted).
pub fn from_dynamic(img: image::DynamicImage) -> Result<ImageU8> {
    use image::DynamicImage as D;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (channels, interleaved) = match img {
        D::ImageLuma8(b) => (1, b.into_raw()),
        D::ImageLumaA8(b) => (2, b.into_raw()),
        D::ImageRgb8(b) => (3, b.into_raw()),
        D::ImageRgba8(b) => (4, b.into_raw()),
        other => bail!(
            "unsupported pixel format {:?}: only 8-bit L, LA, RGB and RGBA images are read",
            other.color()
        ),
    };
    let mut data = vec![0u8; interleaved.len()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            data[c * w * h + i] = v;
        }
    }
    ImageU8::new(channels, h, w, data)
}

/// `img.convert("RGB")`: L is replicated, RGBA drops its alpha (no compositing), LA drops alpha.
pub fn convert_rgb(img: &ImageU8) -> Result<ImageU8> {
    let planes: Vec<&[u8]> = match img.channels {
        1 | 2 => vec![img.plane(0); 3],
        3 | 4 => (0..3).map(|c| img.plane(c)).collect(),
        c => bail!("cannot convert a {c}-channel image to RGB"),
    };
    ImageU8::new(3, img.height, img.width, planes.concat())
}

/// `img.convert("L")` (what torchvision's `Grayscale` does): from RGB or RGBA, Pillow's ITU-R 601-2
/// luma in 16-bit fixed point, `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`, alpha ignored.
pub fn convert_l(img: &ImageU8) -> Result<ImageU8> {
    match img.channels {
        1 => Ok(img.clone()),
        2 => ImageU8::new(1, img.height, img.width, img.plane(0).to_vec()),
        3 | 4 => {
            let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
            let data = (0..r.len())
                .map(|i| {
                    ((r[i] as u32 * 19595 + g[i] as u32 * 38470 + b[i] as u32 * 7471 + 0x8000)
                        >> 16) as u8
                })
                .collect();
            ImageU8::new(1, img.height, img.width, data)
        }
        c => bail!("cannot convert a {c}-channel image to L"),
    }
}

/// `convert_l` or `convert_rgb`, as the official code's channel transform for 1 or 3 channels.
pub fn convert_channels(img: &ImageU8, channels: usize) -> Result<ImageU8> {
    match channels {
        1 => convert_l(img),
        3 => convert_rgb(img),
        c => bail!("images have 1 or 3 channels, not {c}"),
    }
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter taps of one pass: for each output index, the first input index and its weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear (triangle) filter over
/// the whole input (box = 0..in_size).
fn bilinear_taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; both bounds are clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| {
                let d = ((x + xmin) as f64 - center + 0.5) * ss;
                let d = d.abs();
                if d < 1.0 {
                    1.0 - d
                } else {
                    0.0
                }
            })
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|w| *w /= ww);
        }
        let fixed = k
            .iter()
            .map(|&w| {
                let s = w * (1u32 << PRECISION_BITS) as f64;
                if w < 0.0 {
                    (-0.5 + s) as i32
                } else {
                    (0.5 + s) as i32
                }
            })
            .collect();
        start.push(xmin);
        weights.push(fixed);
    }
    Taps { start, weights }
}

/// Pillow's `clip8`: drop the fixed-point fraction (arithmetic shift), clamp to 0..=255.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Applies `taps` along one axis of a plane of `rows × cols` bytes (`along_rows`: resample each
/// row horizontally; otherwise resample each column vertically).
fn pass(src: &[u8], rows: usize, cols: usize, taps: &Taps, along_rows: bool) -> Vec<u8> {
    let out_n = taps.start.len();
    let init = 1i32 << (PRECISION_BITS - 1);
    if along_rows {
        let mut out = vec![0u8; rows * out_n];
        for y in 0..rows {
            let row = &src[y * cols..(y + 1) * cols];
            for (xx, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(init, |a, (i, &w)| a.wrapping_add(row[s + i] as i32 * w));
                out[y * out_n + xx] = clip8(acc);
            }
        }
        out
    } else {
        let mut out = vec![0u8; out_n * cols];
        for (yy, (s, k)) in taps.start.iter().zip(&taps.weights).enumerate() {
            for x in 0..cols {
                let acc = k.iter().enumerate().fold(init, |a, (i, &w)| {
                    a.wrapping_add(src[(s + i) * cols + x] as i32 * w)
                });
                out[yy * cols + x] = clip8(acc);
            }
        }
        out
    }
}

/// `img.resize((out_w, out_h), Image.BILINEAR)` as Pillow computes it for 8-bit modes.
pub fn resize_bilinear(img: &ImageU8, out_w: usize, out_h: usize) -> Result<ImageU8> {
    if out_w == 0 || out_h == 0 || img.width == 0 || img.height == 0 {
        bail!(
            "cannot resize a {}×{} image to {out_w}×{out_h}",
            img.width,
            img.height
        );
    }
    if (out_w, out_h) == (img.width, img.height) {
        return Ok(img.clone());
    }
    let (hx, hy) = (
        bilinear_taps(img.width, out_w),
        bilinear_taps(img.height, out_h),
    );
    // Pillow's horizontal pass only computes the rows the vertical pass will read.
    let first = hy.start[0];
    let last = hy.start[out_h - 1] + hy.weights[out_h - 1].len();
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    let mut data = Vec::with_capacity(img.channels * out_w * out_h);
    for c in 0..img.channels {
        let plane = img.plane(c);
        let (tmp, rows, vy) = if need_h {
            let band = &plane[first * img.width..last * img.width];
            let shifted = Taps {
                start: hy.start.iter().map(|s| s - first).collect(),
                weights: hy.weights.clone(),
            };
            (
                pass(band, last - first, img.width, &hx, true),
                last - first,
                shifted,
            )
        } else {
            (
                plane.to_vec(),
                img.height,
                Taps {
                    start: hy.start.clone(),
                    weights: hy.weights.clone(),
                },
            )
        };
        let out = if need_v {
            pass(&tmp, rows, out_w, &vy, false)
        } else {
            tmp
        };
        data.extend_from_slice(&out);
    }
    ImageU8::new(img.channels, out_h, out_w, data)
}

/// torchvision `Resize(n)` with an int: the shorter side becomes `n`, the longer one
/// `int(n * long / short)`; returns (width, height).
pub fn shorter_side_size(width: usize, height: usize, n: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (n as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (n, new_long)
    } else {
        (new_long, n)
    }
}

/// `ToTensor` followed by the official `util.normalize(x, 0, 1, -1, 1)`:
/// `(x/255 − 0) / (1 − 0 + 1e-5) · 2 − 1` in float32, range [−1, 0.99998].
pub fn to_normalized_tensor(img: &ImageU8) -> Tensor {
    normalize_u8(&img.to_tensor())
}

/// The same normalisation for a uint8 tensor of any shape, with libtorch's float32 kernels in the
/// official op order so that results match torch bit for bit.
pub fn normalize_u8(t: &Tensor) -> Tensor {
    let x = t.to_kind(Kind::Float) / 255.0;
    (x - 0.0) / (1.0 - 0.0 + 1e-5) * 2.0 + (-1.0)
}

#[cfg(test)]
mod tests;
