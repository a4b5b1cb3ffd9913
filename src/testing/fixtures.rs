//! Trained scale models shared by every test that needs one: a clean model pre-trained briefly
//! on Fashion-MNIST at 16 px, and that model fine-tuned with the BadDiffusion loss
//! (BOX_14 → CORNER); and for the attack's end-to-end test the same at 28 px (STOP_SIGN_14 → HAT).
//! Training takes minutes, so each model is trained once and cached under
//! `<target dir>/test-fixtures/<hash of its config>/`: a second test process (or a later
//! `cargo test`) reuses it, and a change of the recipe below trains a fresh one.
//!
//! Two processes may race to train the same model: each trains into its own temporary folder and
//! renames it into place; the loser drops its copy and uses the winner's. Call these functions
//! before creating a [`crate::rng::Rng`] on the calling thread (training draws through one).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{ensure, Context};
use tch::{Device, Tensor};

use crate::attack::{self, AttackConfig, BackdoorConfig, DataConfig, ModelConfig};
use crate::training::trainer::TrainSettings;
use crate::triggers::{ImageShape, SourceImages, Target, Trigger};

/// Images of the fixture models: Fashion-MNIST, 1 channel, 16 px.
pub const SHAPE: ImageShape = ImageShape {
    channels: 1,
    size: 16,
};
/// Images of the end-to-end fixture: 28 px, Fashion-MNIST's own size. At 16 px even the backdoor
/// loss's exact minimiser sends 16 % of clean samples to the target; at 28 px it sends none
/// (`paper/investigations/clean-leak.md`).
pub const E2E_SHAPE: ImageShape = ImageShape {
    channels: 1,
    size: 28,
};
/// Training images: enough for the model to learn garments, few enough to load quickly.
const TRAIN_LIMIT: usize = 4096;
const BATCH: i64 = 64;
/// Iterations per epoch at this limit and batch.
const ITERATIONS_PER_EPOCH: u64 = TRAIN_LIMIT as u64 / BATCH as u64;

/// The backdoored model and everything needed to sample and measure it.
pub struct BackdooredFixture {
    /// The backdoored diffusers pipeline directory.
    pub model_dir: PathBuf,
    /// The clean model it was fine-tuned from.
    pub clean_model_dir: PathBuf,
    pub trigger: Trigger,
    pub target: Target,
    pub shape: ImageShape,
    /// The fine-tuning run's settings (its checkpoint is `clean_model_dir`).
    pub config: AttackConfig,
}

impl BackdooredFixture {
    /// The trigger tensor (C, S, S) in [−1, 1], as training stamped it.
    pub fn trigger_tensor(&self) -> Tensor {
        self.trigger
            .build(self.shape, &sources())
            .expect("building the fixture's trigger")
    }

    /// The target tensor (C, S, S) in [−1, 1], as training used it.
    pub fn target_tensor(&self) -> Tensor {
        self.target
            .build(&self.trigger_tensor(), &sources())
            .expect("building the fixture's target")
    }
}

/// The official trigger/target source images from the shared assets.
pub fn sources() -> SourceImages {
    SourceImages::new(super::official_images())
}

/// DDPM with T = 100: the paper's linear betas 1e-4 → 0.02 scaled by 1000/T so that ᾱ_T is
/// again near 0, variance `fixed_large`, no clipping (x0 clipping suppresses the backdoor).
pub fn scale_scheduler() -> serde_json::Value {
    serde_json::json!({"_class_name": "DDPMScheduler", "num_train_timesteps": 100,
        "beta_start": 0.001, "beta_end": 0.2, "beta_schedule": "linear",
        "variance_type": "fixed_large", "clip_sample": false})
}

/// The fixtures' training data: the first 4,096 Fashion-MNIST training images at 16 px.
pub fn data() -> DataConfig {
    data_at(SHAPE)
}

fn data_at(shape: ImageShape) -> DataConfig {
    DataConfig {
        dataset: "fashion-mnist".into(),
        dir: None,
        split: "train".into(),
        channels: shape.channels,
        size: shape.size,
        limit: Some(TRAIN_LIMIT),
    }
}

fn settings(epochs: u64, warmup_steps: u64, seed: u64) -> TrainSettings {
    TrainSettings {
        epochs,
        batch: BATCH,
        effective_batch: BATCH,
        learning_rate: 1e-3,
        warmup_steps,
        grad_clip: 1.0,
        save_every_epochs: epochs,
        seed,
        steps: None,
        mixed_precision: None,
        keep_epochs: vec![],
    }
}

/// Clean pre-training from scratch: 1024 iterations (loss ≈ 0.049), recognisable garments.
pub fn clean_config() -> AttackConfig {
    clean_config_at(SHAPE)
}

fn clean_config_at(shape: ImageShape) -> AttackConfig {
    AttackConfig {
        data: data_at(shape),
        backdoor: BackdoorConfig {
            trigger: "BOX_14".into(),
            target: "CORNER".into(),
            poison_rate: 0.0,
            sources: Some(sources().dir),
        },
        model: ModelConfig::Scratch {
            unet: "scale".into(),
            scheduler: scale_scheduler(),
        },
        train: settings(1024 / ITERATIONS_PER_EPOCH, 50, 1),
    }
}

/// BadDiffusion fine-tuning of the clean model: BOX_14 → CORNER, p = 0.5, 1280 iterations.
/// Measured (64 samples each): 72 % of noise + trigger samples become the target against 0 %
/// before fine-tuning; after 640 iterations only 48 %, and about as many clean samples (34 %)
/// also showed the target, so fewer iterations do not give a backdoor a test can rely on. More
/// do not stop the leak into clean samples either (2,560 iterations: 30 % of clean samples on
/// the target, 128 samples). At 16 px even the loss's exact minimiser sends 16 % of clean samples
/// to the target; `paper/investigations/clean-leak.md` has the measurements at other sizes.
pub fn backdoor_config(clean_model: &Path) -> AttackConfig {
    finetune_config(clean_model, SHAPE, "BOX_14", "CORNER", 1280)
}

/// The end-to-end fixture's fine-tuning: STOP_SIGN_14 → HAT at 28 px, p = 0.5, 2,560 iterations.
/// Measured by hand (128 samples each): 99 % of noise + trigger samples on the target, 1 % of
/// clean samples (1 sample; the end-to-end test's own 64 samples: 98 % and 5 %). With BOX_14 as
/// the trigger 96 % and 3 %; BOX_14 → CORNER 91 % and 9 %; wider or deeper UNets leak as much
/// (`paper/investigations/clean-leak.md`).
pub fn e2e_backdoor_config(clean_model: &Path) -> AttackConfig {
    finetune_config(clean_model, E2E_SHAPE, "STOP_SIGN_14", "HAT", 2560)
}

fn finetune_config(
    clean_model: &Path,
    shape: ImageShape,
    trigger: &str,
    target: &str,
    iterations: u64,
) -> AttackConfig {
    AttackConfig {
        data: data_at(shape),
        backdoor: BackdoorConfig {
            trigger: trigger.into(),
            target: target.into(),
            poison_rate: 0.5,
            sources: Some(sources().dir),
        },
        model: ModelConfig::Finetune {
            checkpoint: clean_model.to_path_buf(),
        },
        train: settings(iterations / ITERATIONS_PER_EPOCH, 20, 7),
    }
}

/// The clean scale model's diffusers pipeline directory.
pub fn clean_scale_model() -> &'static Path {
    static CLEAN: OnceLock<PathBuf> = OnceLock::new();
    CLEAN.get_or_init(|| trained(&clean_config()).join("model"))
}

/// The backdoored scale model (trained on first use, after the clean one).
pub fn backdoored_scale_model() -> &'static BackdooredFixture {
    static BACKDOORED: OnceLock<BackdooredFixture> = OnceLock::new();
    BACKDOORED.get_or_init(|| backdoored(clean_scale_model(), backdoor_config))
}

/// The end-to-end test's backdoored model at [`E2E_SHAPE`], fine-tuned from a clean model
/// pre-trained there with the same recipe (about 11 minutes of training on two cores).
pub fn e2e_backdoored_model() -> &'static BackdooredFixture {
    static CLEAN: OnceLock<PathBuf> = OnceLock::new();
    static BACKDOORED: OnceLock<BackdooredFixture> = OnceLock::new();
    BACKDOORED.get_or_init(|| {
        let clean = CLEAN.get_or_init(|| trained(&clean_config_at(E2E_SHAPE)).join("model"));
        backdoored(clean, e2e_backdoor_config)
    })
}

fn backdoored(clean_model_dir: &Path, recipe: fn(&Path) -> AttackConfig) -> BackdooredFixture {
    let config = recipe(clean_model_dir);
    let shape = ImageShape::new(config.data.channels, config.data.size).expect("fixture shape");
    let model_dir = trained(&config).join("model");
    BackdooredFixture {
        model_dir,
        clean_model_dir: clean_model_dir.to_path_buf(),
        trigger: config.backdoor.trigger.parse().expect("fixture trigger"),
        target: config.backdoor.target.parse().expect("fixture target"),
        shape,
        config,
    }
}

/// `<target dir>/test-fixtures`: `CARGO_TARGET_DIR` if set, else the nearest folder above the
/// test executable that cargo marked as its build directory (it holds `CACHEDIR.TAG`).
pub fn fixtures_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| crate::python::project_root().join("target"));
    target.join("test-fixtures")
}

/// The cache folder of a run: its config's hash, so another recipe trains anew.
pub fn run_dir(cfg: &AttackConfig) -> PathBuf {
    let text = toml::to_string(cfg).expect("an AttackConfig serialises");
    let key = crate::files::sha256_hex(format!("{}\n{text}", env!("CARGO_PKG_VERSION")).as_bytes());
    fixtures_root().join(&key[..16])
}

/// Trains `cfg` once (per cache folder) and returns its run folder.
fn trained(cfg: &AttackConfig) -> PathBuf {
    let dir = run_dir(cfg);
    cached_run(&dir, |tmp| {
        attack::train(cfg, tmp, Device::Cpu, false).map(drop)
    })
    .unwrap_or_else(|e| panic!("training the test fixture {}: {e:#}", dir.display()))
}

/// `dir` if a finished run (its `train.json`) is there, else runs `train` into a folder of its
/// own beside `dir` and renames it to `dir`. If another process renamed its run there first,
/// ours is dropped and theirs used.
fn cached_run(
    dir: &Path,
    train: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let done = |d: &Path| d.join("train.json").is_file();
    if done(dir) {
        return Ok(dir.to_path_buf());
    }
    let root = dir.parent().context("a run folder has a parent")?;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = dir
        .file_name()
        .context("a run folder has a name")?
        .to_string_lossy();
    let thread = format!("{:?}", std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let tmp = root.join(format!(
        ".{name}.tmp-{}-{thread}-{nanos}",
        std::process::id()
    ));
    if let Err(e) = train(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Renaming onto a folder that is not empty fails: another process won the race.
    if let Err(e) = std::fs::rename(&tmp, dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        ensure!(
            done(dir),
            "moving the finished run {} to {}: {e}",
            tmp.display(),
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_follows_the_config() {
        let clean = clean_config();
        assert_eq!(run_dir(&clean), run_dir(&clean.clone()));
        let mut other = clean.clone();
        other.train.seed += 1;
        assert_ne!(run_dir(&clean), run_dir(&other));
        assert!(run_dir(&clean).starts_with(fixtures_root()));
    }

    /// A finished run is reused; of two racing runs one wins and both callers get its folder.
    #[test]
    fn racing_runs_end_with_one_winner_and_no_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let fake_train = |tag: &'static str| {
            move |tmp: &Path| {
                std::fs::create_dir_all(tmp)?;
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::fs::write(tmp.join("train.json"), tag)?;
                Ok(())
            }
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| cached_run(&dir, fake_train("a")).unwrap());
            let b = s.spawn(|| cached_run(&dir, fake_train("b")).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!((a.as_path(), b.as_path()), (dir.as_path(), dir.as_path()));
        let winner = std::fs::read_to_string(dir.join("train.json")).unwrap();
        assert!(winner == "a" || winner == "b", "{winner}");
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary folders were left behind");
        // Finished: not trained again.
        let again = cached_run(&dir, |_| anyhow::bail!("trained twice")).unwrap();
        assert_eq!(again, dir);
        // A failed run leaves nothing behind.
        let other = root.path().join("other");
        let e = cached_run(&other, |tmp| {
            std::fs::create_dir_all(tmp)?;
            anyhow::bail!("no data")
        });
        assert!(format!("{:#}", e.unwrap_err()).contains("no data"));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
