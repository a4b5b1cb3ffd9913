//! The experiment matrix (paper §4): profiles expand into cells; a cell runs as cached stages
//! (base → train → sample → measure → defend) and yields metric rows in the frame's long format.
//!
//! `baddiff plan` lists a profile's cells, `baddiff cell` runs one (the unit the local executor
//! runs in parallel and a cluster runs as one array task); `cargo xtask reproduce` drives both.
pub mod defend;
pub mod plan;
pub mod profile;
pub mod run;
pub mod scale;
pub mod shrink;
pub mod stage;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::scheduler::{Clip, SamplerKind};

pub use profile::{Filter, Profile};
pub use stage::{NotCached, StageKey, StageKind, StageRecord, StageStore};

/// How a cell's model was obtained (the frame's `training` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Training {
    /// The clean base model itself: the paper's 0 % poison rate.
    Pretrained,
    /// Backdoor fine-tuning of the base model (the paper's main setting).
    Finetune,
    /// Backdoor training from a fresh initialisation (Fig. 3).
    Scratch,
    /// The experiment's base checkpoint is itself a backdoored model (the authors' released
    /// ones), measured as it is; the cell's poison rate says how it was trained.
    Released,
}

impl Training {
    pub fn parse(s: &str) -> Result<Training> {
        Ok(match s {
            "finetune" => Training::Finetune,
            "scratch" => Training::Scratch,
            "pretrained" => Training::Pretrained,
            "released" => Training::Released,
            _ => bail!("training = {s:?}: use `finetune`, `scratch` or `released`"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Training::Pretrained => "pretrained",
            Training::Finetune => "finetune",
            Training::Scratch => "scratch",
            Training::Released => "released",
        }
    }

    /// Whether the cell trains a model of its own (else it measures the base checkpoint).
    pub fn trains(self) -> bool {
        matches!(self, Training::Finetune | Training::Scratch)
    }
}

/// One way of sampling and measuring a model (paper §4.6.2 and the sampler analysis): sampler, steps and clipping.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    /// `ddpm`, `ddim` or `dpm-solver`.
    #[serde(default = "default_sampler")]
    pub sampler: SamplerKind,
    /// Inference steps; default: the sampler's (DDPM: every training step).
    #[serde(default)]
    pub steps: Option<usize>,
    /// `none`, `x0` (the official code's `--fclip w`) or `xt` (the paper's defense, §4.6.2).
    #[serde(default = "default_clip")]
    pub clip: Clip,
    /// E7 (§4.7): sample from corrupted dataset images instead of noise (`inpainting`);
    /// unset: from noise, as every other experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruption: Option<crate::inpainting::Corruption>,
}

fn default_sampler() -> SamplerKind {
    SamplerKind::Ddpm
}
fn default_clip() -> Clip {
    Clip::None
}

impl Default for Eval {
    fn default() -> Eval {
        Eval {
            sampler: default_sampler(),
            steps: None,
            clip: default_clip(),
            corruption: None,
        }
    }
}

/// One cell of the matrix: one model (trigger, target, poison rate, training, seed), its
/// evaluations and its defenses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    /// Unique within the profile and safe as a file name, e.g. `E1.BOX_14.CORNER.p0.10.finetune.s0`.
    pub id: String,
    pub experiment: String,
    pub trigger: String,
    pub target: String,
    pub poison_rate: f64,
    pub training: Training,
    pub seed: u64,
    pub evals: Vec<Eval>,
    pub defenses: Vec<crate::defenses::spec::DefenseSpec>,
    /// Intermediate epochs whose kept models are measured too, with the first evaluation (E6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<u64>,
}

/// One row of the run's metric frame (one definition, in the `frame` crate).
pub use frame::Row as FrameRow;

#[cfg(test)]
pub(crate) mod props;
#[cfg(test)]
mod tests;
