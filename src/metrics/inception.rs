//! The FID Inception network of pytorch-fid (`pytorch_fid/inception.py`), in tch.
//!
//! It is torchvision's `Inception3` (1008 classes, no aux head) with pytorch-fid's patched
//! blocks: `FIDInceptionA`/`C`/`E_1` average-pool their pool branch with
//! `count_include_pad=False` (TensorFlow's behaviour) and `FIDInceptionE_2` max-pools it. The
//! features are pool3 (2048-d, the final adaptive average pool), with the input resized to 299
//! bilinearly (align_corners=False) and scaled from [0,1] to [−1,1], exactly as
//! `InceptionV3(resize_input=True, normalize_input=True)` does. Variable names equal the keys of
//! `pt_inception-2015-12-05-6726825d.pth`, so those weights (converted once to safetensors by
//! `python/convert_pth.py`) load directly.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// Dimension of the pool3 features FID is computed on.
pub const POOL3_DIM: i64 = 2048;
/// The input size the network was trained at; every image is resized to it.
pub const INPUT_SIZE: i64 = 299;
/// Classes of the FID network's (unused) classifier head; kept so the upstream keys match.
const NUM_CLASSES: i64 = 1008;

/// BatchNorm's epsilon in torchvision's `BasicConv2d`.
const BN_EPS: f64 = 1e-3;

/// Conv (no bias) → BatchNorm(eps 1e-3, eval statistics) → ReLU: torchvision's `BasicConv2d`.
struct BasicConv2d {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
    /// The conv with the eval-mode BatchNorm folded in, (W·s, β − μ·s) with s = γ/√(σ²+ε): the
    /// same affine map in one pass over the activations instead of two. Refreshed by
    /// [`BasicConv2d::fold`] whenever the parameters change.
    folded: (Tensor, Tensor),
}

impl BasicConv2d {
    fn new(
        p: &nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: [i64; 2],
        stride: i64,
        padding: [i64; 2],
    ) -> Self {
        // Zeros: the real values always come from a weights file, so no random draw happens here.
        let conv = p.sub("conv");
        let bn = p.sub("bn");
        BasicConv2d {
            weight: conv.var(
                "weight",
                &[c_out, c_in, kernel[0], kernel[1]],
                Init::Const(0.),
            ),
            bn_weight: bn.var("weight", &[c_out], Init::Const(1.)),
            bn_bias: bn.var("bias", &[c_out], Init::Const(0.)),
            running_mean: bn.zeros_no_train("running_mean", &[c_out]),
            running_var: bn.ones_no_train("running_var", &[c_out]),
            stride: [stride, stride],
            padding,
            // Placeholders until the network folds its parameters (FidInceptionV3::new does).
            folded: (Tensor::new(), Tensor::new()),
        }
    }

    /// Recomputes [`Self::folded`] from the current parameters.
    fn fold(&mut self) {
        self.folded = tch::no_grad(|| {
            let scale = &self.bn_weight / (&self.running_var + BN_EPS).sqrt();
            let weight = &self.weight * scale.view([-1, 1, 1, 1]);
            let bias = &self.bn_bias - &self.running_mean * &scale;
            (weight, bias)
        });
    }

    fn square(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> Self {
        Self::new(p, c_in, c_out, [k, k], stride, [padding, padding])
    }

    /// Only under no-grad (the ReLU is in place, as torchvision's `inplace=True`).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (weight, bias) = &self.folded;
        let mut y = x.conv2d(weight, Some(bias), self.stride, self.padding, [1, 1], 1);
        let _ = y.relu_();
        y
    }
}

/// TensorFlow-style 3×3 average pool: padding does not count towards the average.
fn avg_pool_exclude_pad(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
}

fn max_pool_3x3_s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// `FIDInceptionA` (Mixed_5b/c/d).
struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn convs_mut(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch1x1,
            &mut self.branch5x5_1,
            &mut self.branch5x5_2,
            &mut self.branch3x3dbl_1,
            &mut self.branch3x3dbl_2,
            &mut self.branch3x3dbl_3,
            &mut self.branch_pool,
        ]
    }

    fn new(p: &nn::Path, c_in: i64, pool_features: i64) -> Self {
        InceptionA {
            branch1x1: BasicConv2d::square(&p.sub("branch1x1"), c_in, 64, 1, 1, 0),
            branch5x5_1: BasicConv2d::square(&p.sub("branch5x5_1"), c_in, 48, 1, 1, 0),
            branch5x5_2: BasicConv2d::square(&p.sub("branch5x5_2"), 48, 64, 5, 1, 2),
            branch3x3dbl_1: BasicConv2d::square(&p.sub("branch3x3dbl_1"), c_in, 64, 1, 1, 0),
            branch3x3dbl_2: BasicConv2d::square(&p.sub("branch3x3dbl_2"), 64, 96, 3, 1, 1),
            branch3x3dbl_3: BasicConv2d::square(&p.sub("branch3x3dbl_3"), 96, 96, 3, 1, 1),
            branch_pool: BasicConv2d::square(&p.sub("branch_pool"), c_in, pool_features, 1, 1, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x));
        let b3 = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)));
        let bp = self.branch_pool.forward(&avg_pool_exclude_pad(x));
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// torchvision's `InceptionB` (Mixed_6a), unpatched by pytorch-fid.
struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn convs_mut(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch3x3,
            &mut self.branch3x3dbl_1,
            &mut self.branch3x3dbl_2,
            &mut self.branch3x3dbl_3,
        ]
    }

    fn new(p: &nn::Path, c_in: i64) -> Self {
        InceptionB {
            branch3x3: BasicConv2d::square(&p.sub("branch3x3"), c_in, 384, 3, 2, 0),
            branch3x3dbl_1: BasicConv2d::square(&p.sub("branch3x3dbl_1"), c_in, 64, 1, 1, 0),
            branch3x3dbl_2: BasicConv2d::square(&p.sub("branch3x3dbl_2"), 64, 96, 3, 1, 1),
            branch3x3dbl_3: BasicConv2d::square(&p.sub("branch3x3dbl_3"), 96, 96, 3, 2, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3.forward(x);
        let bd = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)));
        Tensor::cat(&[b3, bd, max_pool_3x3_s2(x)], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b–e): factorised 7×7 convolutions.
struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    fn convs_mut(&mut self) -> Vec<&mut BasicConv2d> {
        let mut v = vec![&mut self.branch1x1, &mut self.branch_pool];
        v.extend(self.branch7x7.iter_mut());
        v.extend(self.branch7x7dbl.iter_mut());
        v
    }

    fn new(p: &nn::Path, c_in: i64, c7: i64) -> Self {
        let (row, col) = (([1, 7], [0, 3]), ([7, 1], [3, 0]));
        let conv = |name: &str, ci, co, (k, pad): ([i64; 2], [i64; 2])| {
            BasicConv2d::new(&p.sub(name), ci, co, k, 1, pad)
        };
        let one = ([1, 1], [0, 0]);
        InceptionC {
            branch1x1: conv("branch1x1", c_in, 192, one),
            branch7x7: [
                conv("branch7x7_1", c_in, c7, one),
                conv("branch7x7_2", c7, c7, row),
                conv("branch7x7_3", c7, 192, col),
            ],
            branch7x7dbl: [
                conv("branch7x7dbl_1", c_in, c7, one),
                conv("branch7x7dbl_2", c7, c7, col),
                conv("branch7x7dbl_3", c7, c7, row),
                conv("branch7x7dbl_4", c7, c7, col),
                conv("branch7x7dbl_5", c7, 192, row),
            ],
            branch_pool: conv("branch_pool", c_in, 192, one),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let chain =
            |convs: &[BasicConv2d]| convs.iter().fold(x.shallow_clone(), |h, c| c.forward(&h));
        let b1 = self.branch1x1.forward(x);
        let b7 = chain(&self.branch7x7);
        let bd = chain(&self.branch7x7dbl);
        let bp = self.branch_pool.forward(&avg_pool_exclude_pad(x));
        Tensor::cat(&[b1, b7, bd, bp], 1)
    }
}

/// torchvision's `InceptionD` (Mixed_7a), unpatched by pytorch-fid.
struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    fn convs_mut(&mut self) -> Vec<&mut BasicConv2d> {
        let mut v = vec![&mut self.branch3x3_1, &mut self.branch3x3_2];
        v.extend(self.branch7x7x3.iter_mut());
        v
    }

    fn new(p: &nn::Path, c_in: i64) -> Self {
        let sq =
            |name: &str, ci, co, k, s, pad| BasicConv2d::square(&p.sub(name), ci, co, k, s, pad);
        InceptionD {
            branch3x3_1: sq("branch3x3_1", c_in, 192, 1, 1, 0),
            branch3x3_2: sq("branch3x3_2", 192, 320, 3, 2, 0),
            branch7x7x3: [
                sq("branch7x7x3_1", c_in, 192, 1, 1, 0),
                BasicConv2d::new(&p.sub("branch7x7x3_2"), 192, 192, [1, 7], 1, [0, 3]),
                BasicConv2d::new(&p.sub("branch7x7x3_3"), 192, 192, [7, 1], 1, [3, 0]),
                sq("branch7x7x3_4", 192, 192, 3, 2, 0),
            ],
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3_2.forward(&self.branch3x3_1.forward(x));
        let b7 = self
            .branch7x7x3
            .iter()
            .fold(x.shallow_clone(), |h, c| c.forward(&h));
        Tensor::cat(&[b3, b7, max_pool_3x3_s2(x)], 1)
    }
}

/// Which pool the pool branch of an InceptionE block uses: the FID network's first E block
/// averages (excluding padding), its second max-pools (a quirk of the TensorFlow graph).
#[derive(Clone, Copy)]
enum EPool {
    AvgExcludePad,
    Max,
}

/// `FIDInceptionE_1` (Mixed_7b) and `FIDInceptionE_2` (Mixed_7c).
struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    pool: EPool,
}

impl InceptionE {
    fn convs_mut(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch1x1,
            &mut self.branch3x3_1,
            &mut self.branch3x3_2a,
            &mut self.branch3x3_2b,
            &mut self.branch3x3dbl_1,
            &mut self.branch3x3dbl_2,
            &mut self.branch3x3dbl_3a,
            &mut self.branch3x3dbl_3b,
            &mut self.branch_pool,
        ]
    }

    fn new(p: &nn::Path, c_in: i64, pool: EPool) -> Self {
        let c = |name: &str, ci, co, k: [i64; 2], pad: [i64; 2]| {
            BasicConv2d::new(&p.sub(name), ci, co, k, 1, pad)
        };
        InceptionE {
            branch1x1: c("branch1x1", c_in, 320, [1, 1], [0, 0]),
            branch3x3_1: c("branch3x3_1", c_in, 384, [1, 1], [0, 0]),
            branch3x3_2a: c("branch3x3_2a", 384, 384, [1, 3], [0, 1]),
            branch3x3_2b: c("branch3x3_2b", 384, 384, [3, 1], [1, 0]),
            branch3x3dbl_1: c("branch3x3dbl_1", c_in, 448, [1, 1], [0, 0]),
            branch3x3dbl_2: c("branch3x3dbl_2", 448, 384, [3, 3], [1, 1]),
            branch3x3dbl_3a: c("branch3x3dbl_3a", 384, 384, [1, 3], [0, 1]),
            branch3x3dbl_3b: c("branch3x3dbl_3b", 384, 384, [3, 1], [1, 0]),
            branch_pool: c("branch_pool", c_in, 192, [1, 1], [0, 0]),
            pool,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let h = self.branch3x3_1.forward(x);
        let b3 = Tensor::cat(
            &[self.branch3x3_2a.forward(&h), self.branch3x3_2b.forward(&h)],
            1,
        );
        let h = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x));
        let bd = Tensor::cat(
            &[
                self.branch3x3dbl_3a.forward(&h),
                self.branch3x3dbl_3b.forward(&h),
            ],
            1,
        );
        let pooled = match self.pool {
            EPool::AvgExcludePad => avg_pool_exclude_pad(x),
            EPool::Max => x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false),
        };
        let bp = self.branch_pool.forward(&pooled);
        Tensor::cat(&[b1, b3, bd, bp], 1)
    }
}

/// pytorch-fid's FID InceptionV3 up to pool3.
pub struct FidInceptionV3 {
    vs: nn::VarStore,
    stem: [BasicConv2d; 5],
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7b: InceptionE,
    mixed_7c: InceptionE,
    weights: Option<WeightsInfo>,
    /// Activations in channels-last layout (see [`FidInceptionV3::set_channels_last`]).
    channels_last: bool,
}

/// Where the loaded weights came from, for the protocol of every FID row.
#[derive(Clone, Debug)]
pub struct WeightsInfo {
    pub path: PathBuf,
    pub sha256: String,
}

impl FidInceptionV3 {
    /// The architecture with placeholder (zero/identity) parameters; call [`Self::load`] next.
    pub fn new(device: Device) -> Self {
        let mut vs = nn::VarStore::new(device);
        let r = vs.root();
        let stem = [
            BasicConv2d::square(&r.sub("Conv2d_1a_3x3"), 3, 32, 3, 2, 0),
            BasicConv2d::square(&r.sub("Conv2d_2a_3x3"), 32, 32, 3, 1, 0),
            BasicConv2d::square(&r.sub("Conv2d_2b_3x3"), 32, 64, 3, 1, 1),
            BasicConv2d::square(&r.sub("Conv2d_3b_1x1"), 64, 80, 1, 1, 0),
            BasicConv2d::square(&r.sub("Conv2d_4a_3x3"), 80, 192, 3, 1, 0),
        ];
        let mixed_5 = [
            InceptionA::new(&r.sub("Mixed_5b"), 192, 32),
            InceptionA::new(&r.sub("Mixed_5c"), 256, 64),
            InceptionA::new(&r.sub("Mixed_5d"), 288, 64),
        ];
        let mixed_6a = InceptionB::new(&r.sub("Mixed_6a"), 288);
        let mixed_6 = [
            InceptionC::new(&r.sub("Mixed_6b"), 768, 128),
            InceptionC::new(&r.sub("Mixed_6c"), 768, 160),
            InceptionC::new(&r.sub("Mixed_6d"), 768, 160),
            InceptionC::new(&r.sub("Mixed_6e"), 768, 192),
        ];
        let mixed_7a = InceptionD::new(&r.sub("Mixed_7a"), 768);
        let mixed_7b = InceptionE::new(&r.sub("Mixed_7b"), 1280, EPool::AvgExcludePad);
        let mixed_7c = InceptionE::new(&r.sub("Mixed_7c"), 2048, EPool::Max);
        // The classifier is never run for FID, but the upstream file holds it.
        let fc = r.sub("fc");
        let _ = fc.var("weight", &[NUM_CLASSES, POOL3_DIM], Init::Const(0.));
        let _ = fc.var("bias", &[NUM_CLASSES], Init::Const(0.));
        vs.freeze();
        let mut net = FidInceptionV3 {
            vs,
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            mixed_7a,
            mixed_7b,
            mixed_7c,
            weights: None,
            // Measured with `cargo xtask bench` on the 2-core CPU: 1.4x faster features.
            channels_last: device == Device::Cpu,
        };
        net.fold_batch_norms();
        net
    }

    /// Refolds every BatchNorm into its conv (after the parameters changed).
    fn fold_batch_norms(&mut self) {
        let mut convs: Vec<&mut BasicConv2d> = self.stem.iter_mut().collect();
        for b in &mut self.mixed_5 {
            convs.extend(b.convs_mut());
        }
        convs.extend(self.mixed_6a.convs_mut());
        for b in &mut self.mixed_6 {
            convs.extend(b.convs_mut());
        }
        convs.extend(self.mixed_7a.convs_mut());
        convs.extend(self.mixed_7b.convs_mut());
        convs.extend(self.mixed_7c.convs_mut());
        for c in convs {
            c.fold();
        }
    }

    /// Builds the network and loads a safetensors file holding pytorch-fid's state_dict keys.
    pub fn from_safetensors(path: &Path, device: Device) -> Result<Self> {
        let mut net = Self::new(device);
        net.load(path)?;
        Ok(net)
    }

    /// Loads weights strictly: every parameter present with its shape, nothing unexpected
    /// (BatchNorm's `num_batches_tracked` counters are ignored: eval mode never reads them).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let hint = "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with `python/convert_pth.py IN.pth OUT.safetensors`";
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            bail!(
                "Inception weights {} are not a .safetensors file; {hint}",
                path.display()
            );
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading Inception weights {}", path.display()))?;
        let sha256 = crate::metrics::sha256_hex(&bytes);
        let file = crate::tensor_io::parse_safetensors(&bytes).with_context(|| {
            format!(
                "Inception weights {} are not a valid safetensors file; {hint}",
                path.display()
            )
        })?;
        let mut vars = self.vs.variables();
        let ours: BTreeSet<String> = vars.keys().cloned().collect();
        let mut seen = BTreeSet::new();
        let (mut unexpected, mut wrong_shape) = (Vec::new(), Vec::new());
        tch::no_grad(|| {
            for (name, value) in &file {
                if name.ends_with("num_batches_tracked") {
                    continue;
                }
                match vars.get_mut(name) {
                    None => unexpected.push(name.clone()),
                    Some(var) if var.size() != value.size() => wrong_shape.push(format!(
                        "{name}: file {:?}, network {:?}",
                        value.size(),
                        var.size()
                    )),
                    Some(var) => {
                        var.copy_(&value.to_kind(Kind::Float));
                        seen.insert(name.clone());
                    }
                }
            }
        });
        let missing: Vec<&String> = ours.difference(&seen).collect();
        if !missing.is_empty() || !unexpected.is_empty() || !wrong_shape.is_empty() {
            let show = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            let missing: Vec<String> = missing.into_iter().cloned().collect();
            bail!(
                "{} is not pytorch-fid's FID Inception weights: {} missing [{}], {} unexpected [{}], {} wrongly shaped [{}]; {hint}",
                path.display(),
                missing.len(),
                show(&missing),
                unexpected.len(),
                show(&unexpected),
                wrong_shape.len(),
                show(&wrong_shape),
            );
        }
        self.fold_batch_norms();
        self.weights = Some(WeightsInfo {
            path: path.to_path_buf(),
            sha256,
        });
        Ok(())
    }

    /// The weights this network was loaded from (None: placeholder parameters).
    pub fn weights(&self) -> Option<&WeightsInfo> {
        self.weights.as_ref()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Fills every parameter with seeded random values of a trained network's scale (He-normal
    /// convolutions, BatchNorm scales and variances in [0.5, 1.5), small shifts and means), for
    /// speed measurements where the real weights are not at hand. Forgets any loaded weights.
    pub fn randomize(&mut self, rng: &mut crate::rng::Rng) {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (name, mut var) in vars {
                let size = var.size();
                let value = if name.ends_with("conv.weight") {
                    let fan_in: i64 = size[1..].iter().product();
                    rng.randn(&size) * (2.0 / fan_in as f64).sqrt()
                } else if name.ends_with("bn.weight") || name.ends_with("running_var") {
                    rng.rand(&size) + 0.5
                } else if name.ends_with("bn.bias") || name.ends_with("running_mean") {
                    rng.randn(&size) * 0.1
                } else {
                    rng.randn(&size) * 0.01
                };
                var.copy_(&value.to_device(var.device()));
            }
        });
        self.fold_batch_norms();
        self.weights = None;
    }

    /// Runs the activations channels-last (NHWC strides; same values up to rounding), where
    /// oneDNN's convolutions need no layout conversions.
    pub fn set_channels_last(&mut self, on: bool) {
        self.channels_last = on;
    }

    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// Pool3 features `[N, 2048]` (float32, on the CPU) of images `[N, 3, H, W]` in [0, 1].
    pub fn pool3(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = images.to_device(self.device()).to_kind(Kind::Float);
            let x = x.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None) * 2.0 - 1.0;
            let x = if self.channels_last {
                crate::unet::to_channels_last(&x)
            } else {
                x
            };
            let mut h = self.stem[0].forward(&x);
            h = self.stem[1].forward(&h);
            h = max_pool_3x3_s2(&self.stem[2].forward(&h));
            h = self.stem[3].forward(&h);
            h = max_pool_3x3_s2(&self.stem[4].forward(&h));
            for block in &self.mixed_5 {
                h = block.forward(&h);
            }
            h = self.mixed_6a.forward(&h);
            for block in &self.mixed_6 {
                h = block.forward(&h);
            }
            h = self.mixed_7a.forward(&h);
            h = self.mixed_7b.forward(&h);
            h = self.mixed_7c.forward(&h);
            h.adaptive_avg_pool2d([1, 1])
                .flatten(1, -1)
                .to_device(Device::Cpu)
        })
    }
}

mod weights;
pub use weights::default_weights;

#[cfg(test)]
mod tests;
