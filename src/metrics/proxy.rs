//! A proxy for FID where pytorch-fid's Inception weights cannot be had (offline machines): the
//! Fréchet distance on penultimate features of a small CNN classifier trained once on the
//! dataset itself (e.g. Fashion-MNIST). Its numbers are not FID and are never named so: the
//! metric is `proxy_FD[<name>]`, and its protocol carries the classifier's weights sha256.
pub mod fmnist;

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::fid::FeatureNet;
use super::image_set::Channels;
use crate::rng::Rng;

/// Shape of the proxy classifier.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Short name that identifies the proxy in metric names, e.g. `fmnist-cnn`.
    pub name: String,
    pub channels: i64,
    /// Images are resized (bilinear) to this size first, so any sample size can be measured.
    pub image_size: i64,
    pub classes: i64,
}

/// conv(16) → pool → conv(32) → pool → flatten → linear(128) → linear(classes); the 128-d
/// hidden layer (after its ReLU) is the feature vector, the counterpart of Inception's pool3.
/// Small on purpose: it trains to > 80 % Fashion-MNIST test accuracy in seconds on two cores.
pub struct ProxyClassifier {
    pub cfg: ProxyConfig,
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    hidden: nn::Linear,
    fc: nn::Linear,
    weights_sha256: Option<String>,
    /// Facts carried into every metric row (e.g. the test accuracy reached).
    notes: Vec<String>,
}

/// Dimension of the proxy's features.
pub const PROXY_DIM: i64 = 128;

/// What training reached, for the record.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub final_loss: f64,
    pub train_accuracy: f64,
}

impl ProxyClassifier {
    /// A freshly initialised classifier (the initial weights are drawn from `rng`).
    pub fn new(cfg: ProxyConfig, device: Device, rng: &mut Rng) -> Self {
        rng.with(|| Self::build(cfg, device, true))
    }

    /// The layers; `random` selects PyTorch's default initialisers, else zeros (placeholders
    /// that a weights file overwrites, so loading never touches the random generator).
    fn build(cfg: ProxyConfig, device: Device, random: bool) -> Self {
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let mut conv_cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut lin_cfg = nn::LinearConfig::default();
        if !random {
            conv_cfg.ws_init = nn::Init::Const(0.);
            conv_cfg.bs_init = nn::Init::Const(0.);
            lin_cfg.ws_init = nn::Init::Const(0.);
            lin_cfg.bs_init = Some(nn::Init::Const(0.));
        }
        let conv1 = nn::conv2d(&p / "conv1", cfg.channels, 16, 3, conv_cfg);
        let conv2 = nn::conv2d(&p / "conv2", 16, 32, 3, conv_cfg);
        assert!(
            cfg.image_size >= 4,
            "proxy `{}`: images of {} px are too small (at least 4)",
            cfg.name,
            cfg.image_size
        );
        let side = cfg.image_size / 4;
        let hidden = nn::linear(&p / "hidden", 32 * side * side, PROXY_DIM, lin_cfg);
        let fc = nn::linear(&p / "fc", PROXY_DIM, cfg.classes, lin_cfg);
        ProxyClassifier {
            cfg,
            vs,
            conv1,
            conv2,
            hidden,
            fc,
            weights_sha256: None,
            notes: Vec::new(),
        }
    }

    fn prepare(&self, images01: &Tensor) -> Tensor {
        let x = images01.to_device(self.vs.device()).to_kind(Kind::Float);
        let s = self.cfg.image_size;
        let x = if x.size()[2..] == [s, s] {
            x
        } else {
            x.upsample_bilinear2d([s, s], false, None, None)
        };
        x * 2.0 - 1.0
    }

    fn trunk(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(x).relu().max_pool2d_default(2);
        let h = self.conv2.forward(&h).relu().max_pool2d_default(2);
        self.hidden.forward(&h.flatten(1, -1)).relu()
    }

    /// Class logits of images in [0, 1].
    pub fn logits(&self, images01: &Tensor) -> Tensor {
        self.fc.forward(&self.trunk(&self.prepare(images01)))
    }

    /// Trains with Adam on images `[N, C, H, W]` in [0, 1] and integer labels `[N]`,
    /// shuffling each epoch from `rng`.
    pub fn train(
        &mut self,
        images01: &Tensor,
        labels: &Tensor,
        epochs: usize,
        batch: i64,
        lr: f64,
        rng: &mut Rng,
    ) -> Result<TrainReport> {
        let n = images01.size()[0];
        ensure!(
            labels.size() == [n],
            "labels {:?} do not match {n} images",
            labels.size()
        );
        ensure!(
            images01.dim() == 4 && images01.size()[1] == self.cfg.channels,
            "proxy `{}` expects [N, {}, H, W] images, got {:?}",
            self.cfg.name,
            self.cfg.channels,
            images01.size()
        );
        let max_label = labels.max().int64_value(&[]);
        ensure!(
            max_label < self.cfg.classes,
            "label {max_label} is out of range for {} classes",
            self.cfg.classes
        );
        let mut opt = nn::Adam::default().build(&self.vs, lr)?;
        let labels = labels.to_kind(Kind::Int64);
        let mut last = f64::NAN;
        for _ in 0..epochs {
            let order = rng.with(|| Tensor::randperm(n, (Kind::Int64, Device::Cpu)));
            let mut start = 0;
            while start < n {
                let idx = order.narrow(0, start, batch.min(n - start));
                let x = images01.index_select(0, &idx);
                let y = labels.index_select(0, &idx).to_device(self.vs.device());
                let loss = self.logits(&x).cross_entropy_for_logits(&y);
                opt.backward_step(&loss);
                last = loss.double_value(&[]);
                start += batch;
            }
        }
        let accuracy = tch::no_grad(|| self.accuracy(images01, &labels));
        self.weights_sha256 = None;
        Ok(TrainReport {
            epochs,
            final_loss: last,
            train_accuracy: accuracy,
        })
    }

    /// Records facts that every metric row measured with this classifier carries.
    pub fn set_notes(&mut self, notes: Vec<String>) {
        self.notes = notes;
    }

    /// Fraction of images classified as their label (in chunks, so memory stays bounded).
    pub fn accuracy(&self, images01: &Tensor, labels: &Tensor) -> f64 {
        let n = images01.size()[0];
        let labels = labels.to_kind(Kind::Int64).to_device(Device::Cpu);
        let correct: i64 = tch::no_grad(|| {
            (0..n)
                .step_by(1000)
                .map(|start| {
                    let len = 1000.min(n - start);
                    let pred = self
                        .logits(&images01.narrow(0, start, len))
                        .argmax(-1, false)
                        .to_device(Device::Cpu);
                    pred.eq_tensor(&labels.narrow(0, start, len))
                        .sum(Kind::Int64)
                        .int64_value(&[])
                })
                .sum()
        });
        correct as f64 / n.max(1) as f64
    }

    /// Saves the weights as safetensors and returns their sha256 (the feature cache key).
    pub fn save(&mut self, path: &Path) -> Result<String> {
        self.vs
            .save(path)
            .with_context(|| format!("writing proxy weights {}", path.display()))?;
        let sha = super::sha256_hex(&std::fs::read(path)?);
        self.weights_sha256 = Some(sha.clone());
        Ok(sha)
    }

    /// Loads weights saved by [`Self::save`].
    pub fn load(cfg: ProxyConfig, path: &Path, device: Device) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading proxy weights {}", path.display()))?;
        let mut net = ProxyClassifier::build(cfg, device, false);
        net.vs.load(path).with_context(|| {
            format!(
                "{} does not hold this proxy classifier's weights",
                path.display()
            )
        })?;
        net.weights_sha256 = Some(super::sha256_hex(&bytes));
        Ok(net)
    }
}

impl FeatureNet for ProxyClassifier {
    fn metric_name(&self) -> String {
        format!("proxy_FD[{}]", self.cfg.name)
    }
    fn implementation(&self) -> String {
        format!(
            "baddiffusion proxy: Fréchet distance on {PROXY_DIM}-d features of the `{}` CNN classifier (not FID, not comparable with it)",
            self.cfg.name
        )
    }
    fn weights_sha256(&self) -> Result<String> {
        self.weights_sha256.clone().with_context(|| {
            format!(
                "proxy `{}` has unsaved weights: save it first so features can be cached",
                self.cfg.name
            )
        })
    }
    fn channels(&self) -> Channels {
        if self.cfg.channels == 1 {
            Channels::Native
        } else {
            Channels::Rgb
        }
    }
    fn input_channels(&self) -> Option<usize> {
        Some(self.cfg.channels as usize)
    }
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
    fn resize(&self) -> Option<String> {
        Some(format!(
            "bilinear to {0}x{0}, align_corners=False, then 2x-1",
            self.cfg.image_size
        ))
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn features(&self, images01: &Tensor) -> Tensor {
        tch::no_grad(|| self.trunk(&self.prepare(images01)).to_device(Device::Cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::frechet::{frechet_distance, Statistics};

    /// Four classes of 1×12×12 images: a bright quadrant per class, plus noise.
    fn toy_data(rng: &mut Rng, n: i64) -> (Tensor, Tensor) {
        let labels = rng.randint(4, &[n]);
        let noise = rng.rand(&[n, 1, 12, 12]) * 0.3;
        let mut images = noise;
        for i in 0..n {
            let k = labels.int64_value(&[i]);
            let _ = images
                .get(i)
                .narrow(1, (k / 2) * 6, 6)
                .narrow(2, (k % 2) * 6, 6)
                .g_add_scalar_(0.6);
        }
        images = images.clamp(0.0, 1.0);
        (images, labels)
    }

    #[test]
    fn trains_on_tensors_and_separates_classes_by_features() {
        let mut rng = Rng::seeded(71);
        let (x, y) = toy_data(&mut rng, 256);
        let cfg = ProxyConfig {
            name: "toy-cnn".into(),
            channels: 1,
            image_size: 12,
            classes: 4,
        };
        let mut net = ProxyClassifier::new(cfg.clone(), Device::Cpu, &mut rng);
        let report = net.train(&x, &y, 6, 32, 3e-3, &mut rng).unwrap();
        assert!(report.train_accuracy > 0.9, "{report:?}");
        assert!(net.weights_sha256().is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.safetensors");
        let sha = net.save(&path).unwrap();
        let loaded = ProxyClassifier::load(cfg, &path, Device::Cpu).unwrap();
        assert_eq!(loaded.weights_sha256().unwrap(), sha);
        assert!(loaded
            .features(&x)
            .allclose(&net.features(&x), 1e-6, 1e-6, false));
        assert_eq!(loaded.features(&x).size(), [256, PROXY_DIM]);
        assert!(!loaded.metric_name().contains("FID"));

        // Same class split in two halves is closer than two different classes.
        let of_class = |k: i64| x.index_select(0, &y.eq(k).nonzero().squeeze_dim(1));
        let stats = |t: &Tensor| Statistics::from_features(&loaded.features(t)).unwrap();
        let c0 = of_class(0);
        let h = c0.size()[0] / 2;
        let within =
            frechet_distance(&stats(&c0.narrow(0, 0, h)), &stats(&c0.narrow(0, h, h))).unwrap();
        let between = frechet_distance(&stats(&c0), &stats(&of_class(3))).unwrap();
        assert!(between > 5.0 * within, "between {between} within {within}");
    }

    #[test]
    fn bad_training_input_is_refused() {
        let mut rng = Rng::seeded(72);
        let cfg = ProxyConfig {
            name: "toy".into(),
            channels: 1,
            image_size: 12,
            classes: 4,
        };
        let mut net = ProxyClassifier::new(cfg.clone(), Device::Cpu, &mut rng);
        let x = rng.rand(&[8, 3, 12, 12]);
        let err = net
            .train(
                &x,
                &Tensor::zeros([8], (Kind::Int64, Device::Cpu)),
                1,
                4,
                1e-3,
                &mut rng,
            )
            .unwrap_err();
        assert!(err.to_string().contains("expects [N, 1, H, W]"), "{err}");
        let x = rng.rand(&[8, 1, 12, 12]);
        let err = net
            .train(
                &x,
                &Tensor::full([8], 7, (Kind::Int64, Device::Cpu)),
                1,
                4,
                1e-3,
                &mut rng,
            )
            .unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("wrong.safetensors");
        Tensor::write_safetensors(
            &[("x", &Tensor::zeros([1], (Kind::Float, Device::Cpu)))],
            &wrong,
        )
        .unwrap();
        let err = format!(
            "{:#}",
            ProxyClassifier::load(cfg, &wrong, Device::Cpu)
                .err()
                .unwrap()
        );
        assert!(err.contains("wrong.safetensors"), "{err}");
    }
}
