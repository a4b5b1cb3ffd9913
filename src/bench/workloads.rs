//! The workloads themselves, built once and repeated. Each mirrors the production code path it
//! stands for (the trainer's step, the pipeline's sampling loop, FID's feature pass) so that a
//! speed-up measured here is one the reproduction gets.
use anyhow::{ensure, Context, Result};
use tch::{nn, Device, Kind, Tensor};

use super::{BenchOptions, Workload, WorkloadSpec};
use crate::backdoor_loss::{backdoor_loss, BackdoorSchedule};
use crate::metrics::inception::FidInceptionV3;
use crate::poison::PoisonBatch;
use crate::rng::{derive_seed, Rng};
use crate::sampling::{self, SampleOptions};
use crate::scheduler::{NoiseSchedule, Overrides, Sampler, SamplerKind, SchedulerConfig};
use crate::training::grad_scaler::GradScaler;
use crate::training::lr_schedule::CosineWithWarmup;
use crate::training::update::{Step, Update};
use crate::unet::{UNet2DConfig, UNet2DModel};

/// A built workload.
pub(super) trait Runner {
    /// A reduced repetition that touches every kernel (and lazily created state) once.
    fn warmup(&mut self) -> Result<()>;
    /// One timed repetition.
    fn rep(&mut self) -> Result<()>;
    /// FLOPs per repetition and how they were counted, when known on this side.
    fn flops(&self) -> Option<(f64, String)> {
        None
    }
    /// Whether a UNet runs channels-last.
    fn channels_last(&self) -> bool {
        false
    }
}

fn channels_last(opts: &BenchOptions) -> bool {
    opts.channels_last
        .unwrap_or_else(|| crate::unet::channels_last_default(opts.device))
}

pub(super) fn build(
    workload: Workload,
    spec: &WorkloadSpec,
    opts: &BenchOptions,
) -> Result<Box<dyn Runner>> {
    Ok(match workload {
        Workload::TrainStepCifar10 | Workload::TrainStepScale | Workload::TrainStepCifar10Gpu => {
            Box::new(TrainStep::new(spec, opts)?)
        }
        Workload::SampleScale | Workload::SampleCifar10 => Box::new(Sample::new(spec, opts)?),
        Workload::FidFeatures => Box::new(Features::new(spec, opts)?),
        Workload::Matmul | Workload::MatmulGpu => Box::new(Matmul::new(spec, opts)?),
    })
}

fn unet_config(spec: &WorkloadSpec) -> Result<UNet2DConfig> {
    let json = spec
        .unet
        .clone()
        .with_context(|| format!("workload {} has no `unet` config", spec.workload))?;
    UNet2DConfig::from_json_value(json)
}

fn scheduler_config(spec: &WorkloadSpec) -> Result<SchedulerConfig> {
    let json = spec
        .scheduler
        .as_ref()
        .with_context(|| format!("workload {} has no `scheduler` config", spec.workload))?;
    SchedulerConfig::from_json(json)
}

fn shape(spec: &WorkloadSpec) -> Result<[i64; 3]> {
    spec.image_shape
        .with_context(|| format!("workload {} has no `image_shape`", spec.workload))
}

/// A mixed batch as the poisoned dataset yields it: the first ⌊B·p⌋ samples poisoned (input
/// stamped with a trigger, target replaced), the rest clean (R = 0, y = x). Values are random:
/// the cost of a step does not depend on them.
pub fn random_poison_batch(
    rng: &mut Rng,
    b: i64,
    [c, h, w]: [i64; 3],
    poison_rate: f64,
) -> PoisonBatch {
    let image = rng.rand(&[b, c, h, w]) * 2.0 - 1.0;
    let trigger = rng.rand(&[1, c, h, w]) * 0.5;
    let backdoor_target = rng.rand(&[1, c, h, w]) * 2.0 - 1.0;
    let n_poisoned = (b as f64 * poison_rate).floor() as i64;
    let is_clean = Tensor::arange(b, (Kind::Int64, Device::Cpu)).ge(n_poisoned);
    let poisoned = is_clean
        .logical_not()
        .to_kind(Kind::Float)
        .view([b, 1, 1, 1]);
    let pixel_values = (&image + &trigger).clamp(-1.0, 1.0) * &poisoned;
    let target = &image * (1.0 - &poisoned) + backdoor_target * &poisoned;
    PoisonBatch {
        image,
        pixel_values,
        target,
        is_clean,
    }
}

/// The trainer's iteration (`training::trainer::train` with an effective batch equal to the
/// batch): draw noise then timesteps, the backdoor loss, its value on the host (the loss log),
/// then the trainer's own [`Update`] (backward, clip, Adam at the scheduled rate, zero the
/// gradients; with `--amp`, under a loss scaler as the trainer's float16 runs, where a
/// non-finite loss is an overflow whose step is skipped and the schedule holds, not an error).
pub(crate) struct TrainStep {
    _vs: nn::VarStore,
    model: UNet2DModel,
    update: Update,
    scaler: Option<GradScaler>,
    schedule: BackdoorSchedule,
    lr: CosineWithWarmup,
    batch: PoisonBatch,
    iteration: u64,
    /// Iterations the LR schedule held after skipped steps (the trainer's `schedule_held`).
    held: u64,
    last_skipped: bool,
    seed: u64,
    device: Device,
    amp: bool,
    rng: Rng,
}

impl TrainStep {
    pub(crate) fn new(spec: &WorkloadSpec, opts: &BenchOptions) -> Result<Self> {
        let train = spec
            .train
            .as_ref()
            .with_context(|| format!("workload {} has no `train` settings", spec.workload))?;
        let config = unet_config(spec)?;
        let resolved = scheduler_config(spec)?.resolve(SamplerKind::Ddpm)?;
        let schedule = BackdoorSchedule::from_betas(&NoiseSchedule::new(&resolved)?.betas);
        let vs = nn::VarStore::new(opts.device);
        let mut rng = Rng::seeded(spec.seed);
        let mut model = rng.with(|| UNet2DModel::new(vs.root(), &config))?;
        model.set_channels_last(channels_last(opts));
        let batch = random_poison_batch(&mut rng, spec.batch, shape(spec)?, train.poison_rate)
            .to_device(opts.device);
        let update = Update::new(&vs, train.grad_clip, 1);
        Ok(TrainStep {
            _vs: vs,
            model,
            update,
            scaler: (opts.amp && opts.device.is_cuda()).then(GradScaler::default),
            schedule,
            lr: CosineWithWarmup {
                base_lr: train.learning_rate,
                warmup: train.warmup_steps,
                total: 1_000_000,
            },
            batch,
            iteration: 0,
            held: 0,
            last_skipped: false,
            seed: spec.seed,
            device: opts.device,
            amp: opts.amp,
            rng,
        })
    }

    /// Loss scaling on whatever the device (the CPU tests of the float16 logic; autocast stays
    /// a CUDA-only no-op there, as in the trainer's tests).
    pub(crate) fn with_loss_scaling(mut self) -> Self {
        self.scaler = Some(GradScaler::default());
        self
    }

    /// A new random batch (same shapes and poison rate), as an epoch's next batch would be.
    pub(crate) fn redraw_batch(&mut self, poison_rate: f64) {
        let size = self.batch.image.size();
        let shape = [size[1], size[2], size[3]];
        self.batch =
            random_poison_batch(&mut self.rng, size[0], shape, poison_rate).to_device(self.device);
    }

    /// The loss scaler's state, when it scales.
    pub(crate) fn scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// One iteration: the loss value and what the update did.
    pub(crate) fn step(&mut self) -> Result<(f64, Step)> {
        let iteration = self.iteration;
        self.rng.reseed(derive_seed(self.seed, iteration));
        let size = self.batch.target.size();
        let noise = self.rng.randn(&size).to_device(self.device);
        let t = self
            .rng
            .randint(self.schedule.num_train_timesteps(), &[size[0]])
            .to_device(self.device);
        let model = &self.model;
        let loss = tch::autocast(self.amp, || {
            backdoor_loss(
                &self.schedule,
                &|x, t| model.forward_t(x, t, true),
                &self.batch,
                &t,
                &noise,
            )
        })?;
        let value = loss.double_value(&[]);
        ensure!(
            value.is_finite() || self.scaler.is_some(),
            "the benchmark's loss is {value} at step {iteration}"
        );
        let step = self.update.apply(
            &loss,
            self.lr.lr(iteration - self.held),
            true,
            self.scaler.as_mut(),
        );
        self.last_skipped = step == Step::Skipped;
        if self.last_skipped {
            self.held += 1;
        }
        self.iteration += 1;
        Ok((value, step))
    }
}

impl Runner for TrainStep {
    fn warmup(&mut self) -> Result<()> {
        self.step().map(drop)
    }
    fn rep(&mut self) -> Result<()> {
        self.step().map(drop)
    }
    fn channels_last(&self) -> bool {
        self.model.channels_last()
    }
}

/// `Pipeline::sample`: the DDPM loop over the UNet in no-grad mode, all batches.
struct Sample {
    _vs: nn::VarStore,
    model: UNet2DModel,
    sampler: Sampler,
    n: usize,
    steps: usize,
    image_shape: [i64; 3],
    seed: u64,
    batch: usize,
    device: Device,
    amp: bool,
}

impl Sample {
    fn new(spec: &WorkloadSpec, opts: &BenchOptions) -> Result<Self> {
        let config = unet_config(spec)?;
        let sampler = Sampler::new(
            SamplerKind::Ddpm,
            &scheduler_config(spec)?,
            &Overrides::default(),
        )?;
        let vs = nn::VarStore::new(opts.device);
        let mut model = Rng::seeded(spec.seed).with(|| UNet2DModel::new(vs.root(), &config))?;
        model.set_channels_last(channels_last(opts));
        let n = spec
            .n
            .with_context(|| format!("workload {} has no `n`", spec.workload))?;
        let steps = spec
            .steps
            .with_context(|| format!("workload {} has no `steps`", spec.workload))?;
        ensure!(
            n > 0 && steps > 0 && spec.batch > 0,
            "workload {}: n, steps and batch must be positive",
            spec.workload
        );
        Ok(Sample {
            _vs: vs,
            model,
            sampler,
            n: n as usize,
            steps: steps as usize,
            image_shape: shape(spec)?,
            seed: spec.seed,
            batch: spec.batch as usize,
            device: opts.device,
            amp: opts.amp,
        })
    }

    /// `n` images over `steps` inference steps.
    fn sample(&mut self, n: usize, steps: usize) -> Result<()> {
        let opts = SampleOptions {
            n,
            image_shape: self.image_shape,
            seed: self.seed,
            batch_size: self.batch,
            num_inference_steps: steps,
            device: self.device,
            offset: None,
            start: None,
            progress: false,
        };
        let model = &self.model;
        let amp = self.amp;
        let mut denoise =
            |x: &Tensor, t: &Tensor| tch::autocast(amp, || model.forward_t(x, t, false));
        let out = tch::no_grad(|| sampling::sample(&mut denoise, &mut self.sampler, &opts))?;
        ensure!(
            out.images.size()[0] == n as i64,
            "sampling returned {} images, asked for {n}",
            out.images.size()[0]
        );
        Ok(())
    }
}

impl Runner for Sample {
    fn warmup(&mut self) -> Result<()> {
        self.sample(self.batch.min(self.n), 2)
    }
    fn rep(&mut self) -> Result<()> {
        self.sample(self.n, self.steps)
    }
    fn channels_last(&self) -> bool {
        self.model.channels_last()
    }
}

/// FID's feature pass: pool3 features batch by batch, gathered on the CPU.
struct Features {
    net: FidInceptionV3,
    images: Tensor,
    batch: i64,
}

impl Features {
    fn new(spec: &WorkloadSpec, opts: &BenchOptions) -> Result<Self> {
        let [c, h, w] = shape(spec)?;
        let n = spec
            .n
            .with_context(|| format!("workload {} has no `n`", spec.workload))?;
        ensure!(
            spec.batch > 0,
            "workload {} has batch {}",
            spec.workload,
            spec.batch
        );
        let mut rng = Rng::seeded(spec.seed);
        let mut net = FidInceptionV3::new(opts.device);
        net.randomize(&mut rng);
        if let Some(on) = opts.channels_last {
            net.set_channels_last(on);
        }
        let images = rng.rand(&[n, c, h, w]);
        Ok(Features {
            net,
            images,
            batch: spec.batch,
        })
    }

    fn features(&self, images: &Tensor) -> Tensor {
        let n = images.size()[0];
        let rows: Vec<Tensor> = (0..n)
            .step_by(self.batch as usize)
            .map(|s| self.net.pool3(&images.narrow(0, s, self.batch.min(n - s))))
            .collect();
        Tensor::cat(&rows, 0)
    }
}

impl Runner for Features {
    fn warmup(&mut self) -> Result<()> {
        let n = self.batch.min(self.images.size()[0]);
        let _ = self.features(&self.images.narrow(0, 0, n));
        Ok(())
    }
    fn channels_last(&self) -> bool {
        self.net.channels_last()
    }
    fn rep(&mut self) -> Result<()> {
        let f = self.features(&self.images);
        ensure!(
            f.size() == [self.images.size()[0], crate::metrics::inception::POOL3_DIM],
            "features of shape {:?}",
            f.size()
        );
        Ok(())
    }
}

/// `a @ b` for two n×n float32 matrices: 2n³ FLOPs.
struct Matmul {
    a: Tensor,
    b: Tensor,
    n: i64,
}

impl Matmul {
    fn new(spec: &WorkloadSpec, opts: &BenchOptions) -> Result<Self> {
        let n = spec
            .matmul_n
            .with_context(|| format!("workload {} has no `matmul_n`", spec.workload))?;
        ensure!(n > 0, "matmul_n must be positive, got {n}");
        let mut rng = Rng::seeded(spec.seed);
        Ok(Matmul {
            a: rng.randn(&[n, n]).to_device(opts.device),
            b: rng.randn(&[n, n]).to_device(opts.device),
            n,
        })
    }
}

impl Runner for Matmul {
    fn warmup(&mut self) -> Result<()> {
        self.rep()
    }
    fn rep(&mut self) -> Result<()> {
        let _ = self.a.matmul(&self.b);
        Ok(())
    }
    fn flops(&self) -> Option<(f64, String)> {
        Some((
            2.0 * (self.n as f64).powi(3),
            "analytic: 2·n³ for an n×n by n×n matmul".into(),
        ))
    }
}
