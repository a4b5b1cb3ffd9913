//! End to end on Fashion-MNIST: a clean scale model pre-trained briefly, fine-tuned with the
//! BadDiffusion loss (p = 0.5; see `testing::fixtures`), then sampled with DDPM
//! (T = 100, no clipping) from noise + trigger and from clean noise, and measured against the
//! target as the official measure does (samples quantised as their PNGs store them).
//!
//! The backdoor test runs at 28 px, STOP_SIGN_14 → HAT: at 16 px even the backdoor loss's
//! exact minimiser sends 16 % of clean samples to the target, at 28 px none. The trained scale
//! model still sends a few percent there (1–5 % depending on the noise drawn), and wider or
//! deeper UNets as many (`paper/investigations/clean-leak.md`). The clean model's test stays on the 16 px fixture.
//!
//! Why the thresholds are not the paper's 0.1: at 16 px a plain black image is already at
//! MSE ≈ 0.106 from the CORNER target (its −0.4 grey background is 0.3 in [0, 1]), so the
//! 0.1 threshold counts dark garments and failed samples as hits. A sample that *is* the target
//! lands near 5e-4 (the sampler's residual noise); [`HIT`] separates the two with a wide margin.
use tch::{Device, Kind, Tensor};

use crate::metrics::mse;
use crate::pipeline::{Pipeline, PipelineOptions, TriggerTensor as NoiseOffset};
use crate::scheduler::SamplerKind;
use crate::testing::fixtures::{backdoored_scale_model, e2e_backdoored_model};

/// Samples per set.
const N: usize = 64;
/// Per-image MSE below which a sample counts as the target.
const HIT: f64 = 0.01;

/// Per-image MSE to `target` of `N` DDPM samples of `model_dir`, started from noise (+ `trigger`).
fn mse_to_target(
    model_dir: &std::path::Path,
    trigger: Option<&Tensor>,
    target: &Tensor,
    seed: u64,
) -> Tensor {
    let opts = PipelineOptions {
        sampler: SamplerKind::Ddpm,
        steps: None,
        clip: None,
        override_scheduler: false,
        n: N,
        seed,
        batch: N,
        device: Device::Cpu,
        progress: false,
    };
    let mut pipeline = Pipeline::load(model_dir, &opts).unwrap();
    let offset = trigger.map(|t| NoiseOffset {
        name: "fixture trigger".into(),
        tensor: t.shallow_clone(),
    });
    let images = pipeline.sample(&opts, offset.as_ref()).unwrap().images;
    let as_png = crate::sampling::to_u8(&images).to_kind(Kind::Double) / 255.0;
    mse::per_image_mse(&as_png, &mse::target_to_unit(target)).unwrap()
}

#[test]
fn the_backdoored_model_turns_noise_plus_trigger_into_the_target_and_clean_noise_rarely() {
    let f = e2e_backdoored_model();
    let (g, y) = (f.trigger_tensor(), f.target_tensor());
    let backdoor = mse_to_target(&f.model_dir, Some(&g), &y, 11);
    let clean = mse_to_target(&f.model_dir, None, &y, 12);
    let (mse_b, mse_c) = (mse::mse(&backdoor), mse::mse(&clean));
    let (hits_b, hits_c) = (
        mse::mse_threshold_rate(&backdoor, HIT),
        mse::mse_threshold_rate(&clean, HIT),
    );
    let report = format!(
        "backdoor MSE {mse_b:.4} (hits {hits_b:.2}), clean MSE {mse_c:.4} (hits {hits_c:.2})"
    );
    eprintln!("{report}");
    // Measured by hand on this recipe (128 samples each): trigger samples 99 % on the target,
    // clean samples 1 %, backdoor MSE 0.0014 vs clean 0.132; this test with its 64 samples: 98 %,
    // 5 % (3 samples), 0.0019 vs 0.1308. The bounds leave room for other platforms' arithmetic.
    assert!(mse_b * 5.0 < mse_c, "{report}");
    assert!(hits_b >= 0.8, "{report}");
    // "Samples from clean noise stay clean", read as claim C1 reads it (`paper/claims.toml`): at
    // most one clean sample on the target per ten trigger samples on it.
    assert!(hits_c <= 0.1 * hits_b, "{report}");
    assert!(
        mse::mse_threshold_rate(&backdoor, mse::MSE_THRESHOLD) >= 0.9,
        "{report}"
    );
}

#[test]
fn the_clean_model_does_not_produce_the_target_from_noise_plus_trigger() {
    let f = backdoored_scale_model();
    let (g, y) = (f.trigger_tensor(), f.target_tensor());
    let before = mse_to_target(&f.clean_model_dir, Some(&g), &y, 11);
    let hits = mse::mse_threshold_rate(&before, HIT);
    let mse_before = mse::mse(&before);
    // Measured: no hits, MSE 0.106 (the trigger's −1 offset gives dark images, far from CORNER).
    assert_eq!(
        hits, 0.0,
        "clean model: {hits:.2} hits, MSE {mse_before:.4}"
    );
    assert!(mse_before > 0.05, "clean model: MSE {mse_before:.4}");
}
