//! A folder of PNG images read as one tensor, with a content hash per image and per set.
//!
//! Hashes are of the decoded pixels (size, channels, bytes), not of the files, so the same
//! images written with another PNG compression level are the same set. The set hash is over the
//! sorted per-image hashes: FID does not depend on order, so neither does the cache key.
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

/// How many channels images are read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// Grayscale PNGs as 1 channel, everything else as RGB (what the samplers wrote).
    Native,
    /// Always RGB, grayscale replicated: PIL's `convert('RGB')`, as pytorch-fid reads images.
    Rgb,
}

/// Decoded images `[N, C, H, W]` (uint8) with their files and content hashes.
#[derive(Debug)]
pub struct ImageSet {
    /// The folder read, or the dataset the images were built from.
    pub dir: PathBuf,
    /// One file per image; empty for a set built in memory ([`ImageSet::from_tensor`]).
    pub files: Vec<PathBuf>,
    pub images: Tensor,
    pub image_hashes: Vec<[u8; 32]>,
}

/// Numbered files (`0.png`, `2.png`, `10.png`) in numeric order first, then the rest by name,
/// so that "the first N samples" means what a sampler numbered 0..N.
fn natural_order(a: &Path, b: &Path) -> Ordering {
    let num = |p: &Path| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.file_name().cmp(&b.file_name()),
    }
}

/// The PNG files of `dir`, in natural order.
pub fn list_pngs(dir: &Path) -> Result<Vec<PathBuf>> {
    ensure!(
        dir.is_dir(),
        "image folder {} does not exist or is not a directory",
        dir.display()
    );
    let mut files = Vec::new();
    let mut others = 0usize;
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("listing image folder {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("listing image folder {}", dir.display()))?
            .path();
        if !path.is_file() {
            continue;
        }
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "png" => files.push(path),
            _ => others += 1,
        }
    }
    if files.is_empty() {
        bail!(
            "image folder {} holds no .png images ({others} other files): samples and reference sets are read \
             as lossless PNG",
            dir.display()
        );
    }
    files.sort_by(|a, b| natural_order(a, b));
    Ok(files)
}

fn image_hash(width: u32, height: u32, channels: u32, pixels: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in [width, height, channels] {
        h.update(v.to_le_bytes());
    }
    h.update(pixels);
    h.finalize().into()
}

impl ImageSet {
    /// Reads the first `limit` PNGs of `dir` (all when None). Every image must have the same
    /// size and channel count; an unreadable file is an error naming it.
    pub fn read_png_dir(dir: &Path, limit: Option<usize>, channels: Channels) -> Result<Self> {
        let mut files = list_pngs(dir)?;
        if let Some(n) = limit {
            ensure!(
                n <= files.len(),
                "image folder {} holds {} PNGs, fewer than the {n} requested",
                dir.display(),
                files.len()
            );
            files.truncate(n);
        }
        let mut data = Vec::new();
        let mut hashes = Vec::with_capacity(files.len());
        let mut shape: Option<(u32, u32, u32, &Path)> = None;
        for file in &files {
            let img = image::open(file)
                .with_context(|| format!("cannot read image {}", file.display()))?;
            let gray = channels == Channels::Native && !img.color().has_color();
            let (w, h, c, pixels) = if gray {
                let g = img.to_luma8();
                (g.width(), g.height(), 1, g.into_raw())
            } else {
                let rgb = img.to_rgb8();
                (rgb.width(), rgb.height(), 3, rgb.into_raw())
            };
            match shape {
                None => shape = Some((w, h, c, file)),
                Some((w0, h0, c0, first)) if (w0, h0, c0) != (w, h, c) => bail!(
                    "mixed image sizes in {}: {} is {w}×{h} px with {c} channels but {} is {w0}×{h0} px with {c0}",
                    dir.display(),
                    file.display(),
                    first.display()
                ),
                Some(_) => {}
            }
            hashes.push(image_hash(w, h, c, &pixels));
            // HWC → CHW per image while appending.
            let hw = (w * h) as usize;
            let start = data.len();
            data.resize(start + pixels.len(), 0u8);
            for (i, px) in pixels.chunks_exact(c as usize).enumerate() {
                for (ch, v) in px.iter().enumerate() {
                    data[start + ch * hw + i] = *v;
                }
            }
        }
        let (w, h, c, _) = shape.expect("at least one image");
        let images =
            Tensor::from_slice(&data).reshape([files.len() as i64, c as i64, h as i64, w as i64]);
        Ok(ImageSet {
            dir: dir.to_path_buf(),
            files,
            images,
            image_hashes: hashes,
        })
    }

    /// A set of images already in memory (`[N, C, H, W]` uint8, C = 1 or 3), hashed exactly as
    /// [`Self::read_png_dir`] hashes the same pixels read from PNG: a dataset and its lossless
    /// PNG copy are the same set and share every cache entry.
    pub fn from_tensor(images: Tensor, origin: &Path) -> Result<Self> {
        let s = images.size();
        ensure!(
            s.len() == 4 && images.kind() == Kind::Uint8 && (s[1] == 1 || s[1] == 3),
            "images from {} must be uint8 [N, 1 or 3, H, W], got {:?} {s:?}",
            origin.display(),
            images.kind()
        );
        ensure!(s[0] > 0, "no images in {}", origin.display());
        let images = images.to_device(tch::Device::Cpu).contiguous();
        let hwc = Vec::<u8>::try_from(images.permute([0, 2, 3, 1]).contiguous().flatten(0, -1))?;
        let (c, h, w) = (s[1] as u32, s[2] as u32, s[3] as u32);
        let image_hashes = hwc
            .chunks_exact((c * h * w) as usize)
            .map(|px| image_hash(w, h, c, px))
            .collect();
        Ok(ImageSet {
            dir: origin.to_path_buf(),
            files: Vec::new(),
            images,
            image_hashes,
        })
    }

    pub fn len(&self) -> usize {
        self.image_hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_hashes.is_empty()
    }

    /// (channels, height, width) of every image.
    pub fn image_shape(&self) -> (i64, i64, i64) {
        let s = self.images.size();
        (s[1], s[2], s[3])
    }

    /// Images as float32 in [0, 1] (`ToTensor`).
    pub fn to_unit(&self) -> Tensor {
        self.images.to_kind(Kind::Float) / 255.0
    }

    /// sha256 (hex) of the set: of its sorted per-image hashes.
    pub fn set_hash(&self) -> String {
        set_hash(&self.image_hashes)
    }
}

/// sha256 (hex) of a set of image hashes, independent of their order.
pub fn set_hash(hashes: &[[u8; 32]]) -> String {
    let mut sorted = hashes.to_vec();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for x in &sorted {
        h.update(x);
    }
    super::hex(&h.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `images` (`[N, C, H, W]` uint8) as `0.png`, `1.png`, ... into `dir`.
    pub fn write_pngs(dir: &Path, images: &Tensor) {
        std::fs::create_dir_all(dir).unwrap();
        let s = images.size();
        for i in 0..s[0] {
            let hwc = images.get(i).permute([1, 2, 0]).contiguous();
            let bytes = Vec::<u8>::try_from(hwc.flatten(0, -1)).unwrap();
            let color = if s[1] == 1 {
                image::ExtendedColorType::L8
            } else {
                image::ExtendedColorType::Rgb8
            };
            image::save_buffer(
                dir.join(format!("{i}.png")),
                &bytes,
                s[3] as u32,
                s[2] as u32,
                color,
            )
            .unwrap();
        }
    }

    #[test]
    fn reads_back_what_was_written_in_natural_order() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = Tensor::arange(12 * 3 * 5 * 4, (Kind::Int64, tch::Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8);
        let imgs = imgs.reshape([12, 3, 5, 4]);
        write_pngs(dir.path(), &imgs);
        let set = ImageSet::read_png_dir(dir.path(), None, Channels::Native).unwrap();
        assert!(set.images.equal(&imgs));
        assert_eq!(set.files[10].file_name().unwrap(), "10.png");
        let first = ImageSet::read_png_dir(dir.path(), Some(3), Channels::Native).unwrap();
        assert!(first.images.equal(&imgs.narrow(0, 0, 3)));
        assert_ne!(first.set_hash(), set.set_hash());
        assert_eq!(
            set_hash(&set.image_hashes.iter().rev().cloned().collect::<Vec<_>>()),
            set.set_hash()
        );
    }

    #[test]
    fn grayscale_is_one_channel_natively_and_replicated_as_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = Tensor::arange(2 * 6 * 6, (Kind::Int64, tch::Device::Cpu))
            .to_kind(Kind::Uint8)
            .reshape([2, 1, 6, 6]);
        write_pngs(dir.path(), &imgs);
        assert!(ImageSet::read_png_dir(dir.path(), None, Channels::Native)
            .unwrap()
            .images
            .equal(&imgs));
        let rgb = ImageSet::read_png_dir(dir.path(), None, Channels::Rgb).unwrap();
        assert!(rgb.images.equal(&imgs.expand([2, 3, 6, 6], false)));
    }

    #[test]
    fn bad_folders_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageSet::read_png_dir(dir.path(), None, Channels::Rgb)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no .png images") && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        let missing = dir.path().join("nope");
        assert!(format!(
            "{:#}",
            ImageSet::read_png_dir(&missing, None, Channels::Rgb).unwrap_err()
        )
        .contains("nope"));

        write_pngs(
            &dir.path().join("mixed"),
            &Tensor::zeros([2, 3, 8, 8], (Kind::Uint8, tch::Device::Cpu)),
        );
        write_pngs(
            &dir.path().join("mixed/x"),
            &Tensor::zeros([1, 3, 9, 8], (Kind::Uint8, tch::Device::Cpu)),
        );
        std::fs::rename(
            dir.path().join("mixed/x/0.png"),
            dir.path().join("mixed/2.png"),
        )
        .unwrap();
        let err = ImageSet::read_png_dir(&dir.path().join("mixed"), None, Channels::Rgb)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mixed image sizes") && err.contains("2.png"),
            "{err}"
        );

        let broken = dir.path().join("broken");
        write_pngs(
            &broken,
            &Tensor::zeros([2, 3, 8, 8], (Kind::Uint8, tch::Device::Cpu)),
        );
        std::fs::write(broken.join("1.png"), b"not a png at all").unwrap();
        let err = format!(
            "{:#}",
            ImageSet::read_png_dir(&broken, None, Channels::Rgb).unwrap_err()
        );
        assert!(
            err.contains("cannot read image") && err.contains("1.png"),
            "{err}"
        );

        let err = ImageSet::read_png_dir(&broken, Some(5), Channels::Rgb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fewer than the 5 requested"), "{err}");
    }
}
