//! The paper's triggers and targets (Tab. 1), built exactly as the official `Backdoor` class does.
//!
//! Every tensor is float32 C×S×S in [−1, 1] with −1 as "black". A trigger's −1 entries mean "leave
//! the clean pixel alone" (the mask is element-wise, per channel); a target's background is the
//! −0.4 grey of `bg2grey`. Image triggers and targets go through the official torchvision chain
//! (`convert` → PIL bilinear `Resize` → `ToTensor` → `normalize` with its 1e-5 eps), reproduced
//! bit for bit in [`crate::pil`], so they equal the official tensors to float32 precision.
//!
//! **Sizes.** At S ≥ 32 the pixel geometry is the official code's, verbatim: it never scales it
//! (a BOX_14 at 256 px is still 14 px with a 2 px margin). Below 32 px those lengths would fill
//! the image or not fit, so for S < 32 every official pixel length — box and stop-sign side, the
//! 2 px margin, the 10 px corner square, the (−3, −5) shift — is scaled by S/32, rounded half away
//! from zero, and kept ≥ 1 in magnitude. GLASSES (0.625·S), HAT, CAT and SHOE (resized to S×S) are
//! already relative to S and need no rule. One channel follows the official `Grayscale` path
//! (PIL `convert("L")`).
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::pil::{self, ImageU8};

/// Value of "black" / "no change" (the official `vmin`).
pub const VMIN: f64 = -1.0;
/// The official `vmax`.
pub const VMAX: f64 = 1.0;
/// `GREY_BG_RATIO`: target backgrounds are lifted to `(vmax − vmin)·0.3 + vmin` = −0.4.
pub const GREY_BG_RATIO: f64 = 0.3;
/// Image-trigger elements at or above this value are removed (set to −1), per channel.
pub const WHITE_THRESHOLD: f64 = 0.999;
/// Image size at which the official pixel lengths are defined (see the module doc).
pub const REFERENCE_SIZE: usize = 32;

/// One of the official source images (`IBM/BadDiffusion@717b321:static/`), pinned by sha256.
#[derive(Clone, Copy, Debug)]
pub struct SourceImage {
    pub file: &'static str,
    pub sha256: &'static str,
}

pub const STOP_SIGN_IMAGE: SourceImage = SourceImage {
    file: "stop_sign_wo_bg.png",
    sha256: "3b82ee4df1ed8b602f781d0634288423b52fcecbe221ab447debfc2382a7b103",
};
pub const GLASSES_IMAGE: SourceImage = SourceImage {
    file: "glasses.png",
    sha256: "9e1a1ca228202277e84f58bb31673ebc8881340fbafdf83505e7ad66bfcad2e6",
};
pub const HAT_IMAGE: SourceImage = SourceImage {
    file: "fedora-hat.png",
    sha256: "271a37da9650f3068f1688ee975da7acbac97ace7502ccdb65ae311e0532c9be",
};
pub const CAT_IMAGE: SourceImage = SourceImage {
    file: "cat_wo_bg.png",
    sha256: "f335c4df8c019a5e11487bec5fa193c72b3ce1d12dead8bcb9da2b9c41ae6d4f",
};

/// Where triggers and targets read their inputs: the directory holding the official source
/// images, and the Fashion-MNIST idx files (for SHOE).
#[derive(Clone, Debug)]
pub struct SourceImages {
    pub dir: PathBuf,
    pub fashion_mnist_dir: PathBuf,
}

impl SourceImages {
    /// Images from `dir`; Fashion-MNIST from Debian's location.
    pub fn new(dir: impl Into<PathBuf>) -> SourceImages {
        SourceImages {
            dir: dir.into(),
            fashion_mnist_dir: PathBuf::from(crate::datasets::idx::DEBIAN_FASHION_MNIST_DIR),
        }
    }

    pub fn with_fashion_mnist(mut self, dir: impl Into<PathBuf>) -> SourceImages {
        self.fashion_mnist_dir = dir.into();
        self
    }

    /// Reads one source image after checking its sha256 against the pinned value.
    pub fn load(&self, img: SourceImage) -> Result<ImageU8> {
        let path = self.dir.join(img.file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading source image {} (fetch the official static/ images into {})",
                path.display(),
                self.dir.display()
            )
        })?;
        let actual = crate::files::sha256_hex(&bytes);
        ensure!(
            actual == img.sha256,
            "source image {} has sha256 {actual}, expected {}: the file is not the official one (replace it with \
             IBM/BadDiffusion@717b321:static/{})",
            path.display(),
            img.sha256,
            img.file
        );
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .with_context(|| format!("decoding {}", path.display()))?;
        pil::from_dynamic(decoded).with_context(|| format!("image {}", path.display()))
    }
}

/// Channels and side length of the square images a trigger or target is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub size: usize,
}

impl ImageShape {
    pub fn new(channels: usize, size: usize) -> Result<ImageShape> {
        ensure!(
            channels == 1 || channels == 3,
            "images have 1 or 3 channels, not {channels}"
        );
        ensure!(
            size >= 4,
            "image size {size} is too small for any trigger (at least 4 px)"
        );
        Ok(ImageShape { channels, size })
    }

    /// An official pixel length at this size (see the module doc for the rule).
    pub fn scaled(&self, len: i64) -> i64 {
        if self.size >= REFERENCE_SIZE {
            return len;
        }
        let v = (len as f64 * self.size as f64 / REFERENCE_SIZE as f64).round() as i64;
        if v == 0 {
            len.signum()
        } else {
            v
        }
    }

    fn full(&self, value: f64) -> Tensor {
        let s = self.size as i64;
        Tensor::full(
            [self.channels as i64, s, s],
            value,
            (Kind::Float, Device::Cpu),
        )
    }
}

/// The paper's triggers; `Box(n)` and `StopSign(n)` take n ∈ {4, 8, 11, 14, 18}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// "Grey Box" (paper) = BOX_14: a grey n×n square at the bottom right, 2 px from the edges.
    Box(u32),
    /// "Stop Sign" (paper) = STOP_SIGN_14: the stop-sign image shrunk to n×n at the bottom right.
    StopSign(u32),
    /// "Eyeglasses" (CelebA-HQ): glasses.png at 0.625·S, centred.
    Glasses,
    /// No trigger: all −1 (stamping changes nothing).
    None,
}

impl Trigger {
    /// The triggers of the paper's Tab. 1: Grey Box and Stop Sign (CIFAR-10), Eyeglasses
    /// (CelebA-HQ).
    pub const PAPER: [Trigger; 3] = [Trigger::Box(14), Trigger::StopSign(14), Trigger::Glasses];
}

/// Trigger sizes the official code defines.
pub const TRIGGER_SIZES: [u32; 5] = [4, 8, 11, 14, 18];

/// The paper's targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// "NoShift" (code TRIGGER): the trigger itself on a grey background.
    NoShift,
    /// "Shift": the trigger moved up 3 and left 5 (with wrap-around), on grey.
    Shift,
    /// "Corner" (original runs: BOX): a grey 10×10 square at the top left, on grey.
    Corner,
    /// "Shoe" (original runs: FASHION): Fashion-MNIST train[0], an ankle boot.
    Shoe,
    /// "Hat" (original runs: FEDORA_HAT): fedora-hat.png.
    Hat,
    /// "Cat" (CelebA-HQ): cat_wo_bg.png.
    Cat,
}

/// Upper-case, with `-` and spaces read as `_`, so "grey-box" and "Grey Box" both parse.
fn canonical(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace(['-', ' '], "_")
}

const TRIGGER_NAMES: &str = "BOX_{4,8,11,14,18}, STOP_SIGN_{4,8,11,14,18}, GLASSES, NONE; paper names GREY_BOX \
     (= BOX_14), STOP_SIGN (= STOP_SIGN_14), EYEGLASSES; original-run names {BIG,SM,XSM,XXSM,XXXSM}_BOX_MED and \
     {BIG,SM,XSM,XXSM,XXXSM}_STOP_SIGN";
const TARGET_NAMES: &str =
    "TRIGGER (= NOSHIFT), SHIFT, CORNER (= BOX), SHOE (= FASHION), HAT (= FEDORA_HAT), CAT";

impl FromStr for Trigger {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Trigger> {
        let c = canonical(name);
        let size_prefix = |p: &str| match p {
            "BIG" => Some(18),
            "SM" => Some(14),
            "XSM" => Some(11),
            "XXSM" => Some(8),
            "XXXSM" => Some(4),
            _ => None,
        };
        let sized = |n: &str| n.parse::<u32>().ok().filter(|n| TRIGGER_SIZES.contains(n));
        let found = match c.as_str() {
            "GREY_BOX" | "GRAY_BOX" => Some(Trigger::Box(14)),
            "STOP_SIGN" => Some(Trigger::StopSign(14)),
            "GLASSES" | "EYEGLASSES" => Some(Trigger::Glasses),
            "NONE" => Some(Trigger::None),
            _ => {
                if let Some(n) = c.strip_prefix("BOX_") {
                    sized(n).map(Trigger::Box)
                } else if let Some(n) = c.strip_prefix("STOP_SIGN_") {
                    sized(n).map(Trigger::StopSign)
                } else if let Some(p) = c.strip_suffix("_BOX_MED") {
                    size_prefix(p).map(Trigger::Box)
                } else if let Some(p) = c.strip_suffix("_STOP_SIGN") {
                    size_prefix(p).map(Trigger::StopSign)
                } else {
                    None
                }
            }
        };
        found.with_context(|| format!("unknown trigger {name:?}; known triggers: {TRIGGER_NAMES}"))
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Target> {
        Ok(match canonical(name).as_str() {
            "TRIGGER" | "NOSHIFT" | "NO_SHIFT" => Target::NoShift,
            "SHIFT" => Target::Shift,
            "CORNER" | "BOX" => Target::Corner,
            "SHOE" | "FASHION" => Target::Shoe,
            "HAT" | "FEDORA_HAT" => Target::Hat,
            "CAT" => Target::Cat,
            _ => bail!("unknown target {name:?}; known targets: {TARGET_NAMES}"),
        })
    }
}

impl fmt::Display for Trigger {
    /// The official code's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Box(n) => write!(f, "BOX_{n}"),
            Trigger::StopSign(n) => write!(f, "STOP_SIGN_{n}"),
            Trigger::Glasses => f.write_str("GLASSES"),
            Trigger::None => f.write_str("NONE"),
        }
    }
}

impl fmt::Display for Target {
    /// The official code's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::NoShift => "TRIGGER",
            Target::Shift => "SHIFT",
            Target::Corner => "CORNER",
            Target::Shoe => "SHOE",
            Target::Hat => "HAT",
            Target::Cat => "CAT",
        })
    }
}

impl Trigger {
    /// Every trigger the paper and the official code define.
    pub fn all() -> Vec<Trigger> {
        let mut v: Vec<Trigger> = TRIGGER_SIZES.iter().map(|&n| Trigger::Box(n)).collect();
        v.extend(TRIGGER_SIZES.iter().map(|&n| Trigger::StopSign(n)));
        v.extend([Trigger::Glasses, Trigger::None]);
        v
    }

    /// The name the paper uses, where it has one.
    pub fn paper_name(&self) -> Option<&'static str> {
        match self {
            Trigger::Box(14) => Some("Grey Box"),
            Trigger::StopSign(14) => Some("Stop Sign"),
            Trigger::Glasses => Some("Eyeglasses"),
            _ => None,
        }
    }

    /// The trigger tensor g (float32, C×S×S, CPU), as `Backdoor.get_trigger` builds it.
    pub fn build(&self, shape: ImageShape, src: &SourceImages) -> Result<Tensor> {
        let s = shape.size as i64;
        let gap = shape.scaled(2);
        match *self {
            Trigger::None => Ok(shape.full(VMIN)),
            Trigger::Box(n) => {
                let n = shape.scaled(n as i64);
                ensure!(
                    n + gap <= s,
                    "trigger {self} ({n} px + {gap} px margin) does not fit a {s}×{s} image"
                );
                let g = shape.full(VMIN);
                // g[:, −(n+gap):−gap, −(n+gap):−gap] = (vmin + vmax)/2
                let _ = g
                    .narrow(1, s - n - gap, n)
                    .narrow(2, s - n - gap, n)
                    .fill_((VMIN + VMAX) / 2.0);
                Ok(g)
            }
            Trigger::StopSign(n) => {
                let n = shape.scaled(n as i64);
                ensure!(
                    n + gap <= s,
                    "trigger {self} ({n} px + {gap} px margin) does not fit a {s}×{s} image"
                );
                let (l, t) = (s - n - gap, s - n - gap);
                image_trigger(&src.load(STOP_SIGN_IMAGE)?, shape, n as usize, l, t)
            }
            Trigger::Glasses => {
                let n = (shape.size as f64 * 0.625) as i64;
                let l = (s - n) / 2;
                image_trigger(&src.load(GLASSES_IMAGE)?, shape, n as usize, l, l)
            }
        }
    }
}

/// `__get_img_trigger`: convert → `Resize(n)` (shorter side) → ToTensor → normalize → pad with −1
/// to S×S with the image's top-left corner at (t, l) → elements ≥ 0.999 set to −1.
fn image_trigger(img: &ImageU8, shape: ImageShape, n: usize, l: i64, t: i64) -> Result<Tensor> {
    let img = pil::convert_channels(img, shape.channels)?;
    let (w, h) = pil::shorter_side_size(img.width, img.height, n);
    let small = pil::resize_bilinear(&img, w, h)?;
    let s = shape.size as i64;
    ensure!(
        l + w as i64 <= s && t + h as i64 <= s,
        "a {w}×{h} trigger image at ({l}, {t}) does not fit a {s}×{s} image"
    );
    let g = shape.full(VMIN);
    g.narrow(1, t, h as i64)
        .narrow(2, l, w as i64)
        .copy_(&pil::to_normalized_tensor(&small));
    let white = g.ge(WHITE_THRESHOLD);
    Ok(g.masked_fill(&white, VMIN))
}

/// `__bg2grey`: every element ≤ −0.4 becomes −0.4.
pub fn bg2grey(t: &Tensor) -> Tensor {
    let thres = (VMAX - VMIN) * GREY_BG_RATIO + VMIN;
    t.masked_fill(&t.le(thres), thres)
}

/// `torch.roll(x, shifts=(dy, dx))` over the last two dimensions (wrap-around).
pub fn roll(x: &Tensor, dy: i64, dx: i64) -> Tensor {
    let d = x.dim() as i64;
    x.roll([dy, dx], [d - 2, d - 1])
}

impl Target {
    pub fn all() -> [Target; 6] {
        [
            Target::NoShift,
            Target::Shift,
            Target::Corner,
            Target::Shoe,
            Target::Hat,
            Target::Cat,
        ]
    }

    /// The name the paper uses.
    pub fn paper_name(&self) -> &'static str {
        match self {
            Target::NoShift => "NoShift",
            Target::Shift => "Shift",
            Target::Corner => "Corner",
            Target::Shoe => "Shoe",
            Target::Hat => "Hat",
            Target::Cat => "Cat",
        }
    }

    /// The target tensor y (float32, C×S×S, CPU) for `trigger` (as built by [`Trigger::build`],
    /// whose shape it takes), as `Backdoor.get_target` builds it.
    pub fn build(&self, trigger: &Tensor, src: &SourceImages) -> Result<Tensor> {
        let size = trigger.size();
        ensure!(
            size.len() == 3 && size[1] == size[2] && trigger.kind() == Kind::Float,
            "a trigger is a float32 C×S×S tensor, got {:?} {:?}",
            trigger.kind(),
            size
        );
        let shape = ImageShape::new(size[0] as usize, size[1] as usize)?;
        match self {
            Target::NoShift => Ok(bg2grey(&trigger.to_device(Device::Cpu))),
            Target::Shift => Ok(bg2grey(&roll(
                &trigger.to_device(Device::Cpu),
                shape.scaled(-3),
                shape.scaled(-5),
            ))),
            Target::Corner => {
                let c = shape.scaled(10);
                let t = shape.full(VMIN);
                let _ = t.narrow(1, 0, c).narrow(2, 0, c).fill_((VMIN + VMAX) / 2.0);
                Ok(bg2grey(&t))
            }
            Target::Shoe => image_target(&fashion_mnist_shoe(&src.fashion_mnist_dir)?, shape),
            Target::Hat => image_target(&src.load(HAT_IMAGE)?, shape),
            Target::Cat => image_target(&src.load(CAT_IMAGE)?, shape),
        }
    }
}

/// `__get_img_target`: convert → `Resize([S, S])` → ToTensor → normalize → bg2grey.
fn image_target(img: &ImageU8, shape: ImageShape) -> Result<Tensor> {
    let img = pil::convert_channels(img, shape.channels)?;
    let small = pil::resize_bilinear(&img, shape.size, shape.size)?;
    Ok(bg2grey(&pil::to_normalized_tensor(&small)))
}

/// Fashion-MNIST train[0] (an ankle boot, label 9) as a 1×28×28 'L' image.
fn fashion_mnist_shoe(dir: &Path) -> Result<ImageU8> {
    use crate::datasets::idx;
    let images = idx::find(dir, "train-images-idx3-ubyte")?;
    let labels = idx::find(dir, "train-labels-idx1-ubyte")?;
    let first = idx::read_images(&images)?.get(0);
    let label = idx::read_labels(&labels)?.int64_value(&[0]);
    ensure!(
        label == 9,
        "{}: train[0] has label {label}, but Fashion-MNIST's first training image is an ankle boot (label 9): \
         is this Fashion-MNIST? (Debian: apt-get install dataset-fashion-mnist)",
        labels.display()
    );
    ImageU8::from_tensor(&first)
}

/// The mask M = 1[g == −1] (official `get_mask`: `where(g > vmin, 0, 1)`), element-wise per
/// channel, as a bool tensor.
pub fn mask(trigger: &Tensor) -> Tensor {
    trigger.le(VMIN)
}

/// The poisoned image r = M⊙x + (1−M)⊙g: trigger elements other than −1 replace the clean ones.
/// `x` is C×S×S or N×C×S×S (the trigger broadcasts).
pub fn stamp(x: &Tensor, trigger: &Tensor) -> Result<Tensor> {
    let (xs, gs) = (x.size(), trigger.size());
    ensure!(
        xs.len() >= 3 && gs.len() == 3 && xs[xs.len() - 3..] == gs[..],
        "cannot stamp a trigger of shape {gs:?} onto images of shape {xs:?}: channels and size must match"
    );
    let g = trigger.to_device(x.device()).to_kind(x.kind());
    Ok(x.where_self(&mask(&g), &g))
}

#[cfg(test)]
mod tests;
