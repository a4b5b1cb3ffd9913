//! The numeric checks of a cell config, run where it is read (`AttackConfig::from_toml_file`,
//! and again after the command line's overrides).
use anyhow::{ensure, Context, Result};

use super::{AttackConfig, BackdoorConfig, DataConfig, ModelConfig};
use crate::validate::{at_least_one, unit_interval};

impl AttackConfig {
    pub fn validate(&self) -> Result<()> {
        self.data.validate().context("in [data]")?;
        self.backdoor.validate().context("in [backdoor]")?;
        self.train.validate().context("in [train]")?;
        if let ModelConfig::Scratch { unet, .. } = &self.model {
            super::unet_config(unet, &self.data).context("in [model]")?;
        }
        Ok(())
    }
}

impl DataConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.channels == 1 || self.channels == 3,
            "channels = {} is out of range: it must be 1 (grayscale) or 3 (RGB)",
            self.channels
        );
        at_least_one("size", self.size as u64)?;
        if let Some(limit) = self.limit {
            at_least_one("limit", limit as u64)?;
        }
        Ok(())
    }
}

impl BackdoorConfig {
    pub fn validate(&self) -> Result<()> {
        unit_interval("poison_rate", self.poison_rate)
    }
}

/// A valid cell config, the base of the tests.
#[cfg(test)]
const CELL: &str = r#"
[data]
dataset = "fashion-mnist"
channels = 1
size = 16
limit = 128
[backdoor]
trigger = "BOX_14"
target = "CORNER"
poison_rate = 0.5
[model]
init = "scratch"
unet = "scale"
scheduler = { _class_name = "DDPMScheduler", num_train_timesteps = 20 }
[train]
epochs = 1
batch = 32
effective_batch = 64
learning_rate = 1e-3
grad_clip = 1.0
save_every_epochs = 1
steps = 10
"#;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests {
    use super::*;

    /// Every numeric setting's bad values are refused where the file is read, naming the field
    /// and its range (before: a zero batch panicked, a negative learning rate trained backwards
    /// and exited 0, a zero clip learnt nothing).
    #[test]
    fn bad_numbers_in_a_cell_config_are_refused_naming_field_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.toml");
        std::fs::write(&path, CELL).unwrap();
        AttackConfig::from_toml_file(&path).unwrap();
        let cases = [
            ("epochs = 1", "epochs = 0", "epochs = 0", "at least 1"),
            ("batch = 32", "batch = 0", "batch = 0", "at least 1"),
            ("batch = 32", "batch = -4", "batch = -4", "at least 1"),
            (
                "effective_batch = 64",
                "effective_batch = 0",
                "effective_batch = 0",
                "at least 1",
            ),
            (
                "effective_batch = 64",
                "effective_batch = -64",
                "effective_batch = -64",
                "at least 1",
            ),
            (
                "learning_rate = 1e-3",
                "learning_rate = -1e-3",
                "learning_rate = -0.001",
                "> 0",
            ),
            (
                "learning_rate = 1e-3",
                "learning_rate = 0.0",
                "learning_rate = 0",
                "> 0",
            ),
            (
                "learning_rate = 1e-3",
                "learning_rate = nan",
                "learning_rate = NaN",
                "> 0",
            ),
            (
                "learning_rate = 1e-3",
                "learning_rate = inf",
                "learning_rate = inf",
                "finite",
            ),
            ("grad_clip = 1.0", "grad_clip = 0.0", "grad_clip = 0", "> 0"),
            (
                "grad_clip = 1.0",
                "grad_clip = nan",
                "grad_clip = NaN",
                "> 0",
            ),
            (
                "save_every_epochs = 1",
                "save_every_epochs = 0",
                "save_every_epochs = 0",
                "at least 1",
            ),
            ("steps = 10", "steps = 0", "steps = 0", "at least 1"),
            (
                "poison_rate = 0.5",
                "poison_rate = 1.5",
                "poison_rate = 1.5",
                "[0, 1]",
            ),
            (
                "poison_rate = 0.5",
                "poison_rate = -0.1",
                "poison_rate = -0.1",
                "[0, 1]",
            ),
            (
                "poison_rate = 0.5",
                "poison_rate = nan",
                "poison_rate = NaN",
                "[0, 1]",
            ),
            (
                "channels = 1",
                "channels = 2",
                "channels = 2",
                "1 (grayscale) or 3",
            ),
            ("size = 16", "size = 0", "size = 0", "at least 1"),
            ("limit = 128", "limit = 0", "limit = 0", "at least 1"),
            (
                "unet = \"scale\"",
                "unet = \"scael\"",
                "scael",
                "scale, cifar10_32, celebahq_256",
            ),
        ];
        for (from, to, named, range) in cases {
            std::fs::write(&path, CELL.replacen(from, to, 1)).unwrap();
            let err = match AttackConfig::from_toml_file(&path) {
                Ok(_) => panic!("{to} was accepted"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(named) && err.contains(range) && err.contains("cell.toml"),
                "{to}: {err}"
            );
        }
    }
}
