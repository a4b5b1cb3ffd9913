//! Inference-time clipping as a defense (paper §4.6.2, Fig. 5; the official code's `--fclip`): the same backdoored model sampled
//! without clipping, with the official code's x̂₀ clamp (`--fclip w`) and with the paper's
//! x_{t−1} clamp. The paper finds clipping makes the backdoor ineffective (large MSE to the
//! target) while clean samples stay alike; both sides are measured here.
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::{clock, defense_rows, measure, set_clip, Backdoor, Cost, DefenseRow, MeasureOptions};
use crate::pipeline::Pipeline;
use crate::scheduler::Clip;

/// The outcome per clip mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClipResult {
    pub modes: Vec<String>,
    pub cost: Cost,
    pub rows: Vec<DefenseRow>,
}

/// Samples backdoor (trigger) and clean noise under each clip mode and measures both against
/// the target. `defense_param` is `clip=<mode>`.
pub fn clip_defense(
    pipeline: &mut Pipeline,
    backdoor: &Backdoor,
    modes: &[Clip],
    measure_opts: &MeasureOptions,
) -> Result<ClipResult> {
    ensure!(
        !modes.is_empty(),
        "no clip modes to compare: give none, x0 and/or xt"
    );
    measure_opts.validate()?;
    let started = clock();
    let mut rows = Vec::new();
    for &mode in modes {
        set_clip(pipeline, mode)?;
        let param = format!("clip={}", mode.name());
        let (bd, _) = measure(pipeline, measure_opts, Some(&backdoor.trigger), backdoor)?;
        rows.extend(defense_rows(bd, "clip", &param, None, "backdoor"));
        let (clean, _) = measure(pipeline, measure_opts, None, backdoor)?;
        rows.extend(defense_rows(clean, "clip", &param, None, "clean"));
    }
    let cost = Cost {
        seconds: started.elapsed().as_secs_f64(),
        optimiser_steps: 0,
        sampled_images: 2 * modes.len() as u64 * measure_opts.n as u64,
    };
    let param = modes.iter().map(|m| m.name()).collect::<Vec<_>>().join("+");
    rows.extend(cost.rows("clip", &format!("clip={param}"), measure_opts.device));
    Ok(ClipResult {
        modes: modes.iter().map(|m| m.name().to_string()).collect(),
        cost,
        rows,
    })
}

/// The value of `metric` for clip mode `mode` and sample kind `samples` among `rows`.
pub fn row_value(rows: &[DefenseRow], mode: Clip, samples: &str, metric: &str) -> Option<f64> {
    let param = format!("clip={}", mode.name());
    rows.iter()
        .find(|r| r.defense_param == param && r.samples == samples && r.row.metric == metric)
        .map(|r| r.row.value)
}
