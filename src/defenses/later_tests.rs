//! Tests of the defenses that came after the paper: Elijah, TERD and the input-noise test.
use tch::{Device, Kind, Tensor};

use super::elijah::{elijah, invert, total_variation, uniformity, ElijahConfig, RemovalConfig};
use super::noise_test::{calibrate, ks_statistic, noise_test, NoiseTestConfig};
use super::spec::{DefenseConfig, DefenseSpec};
use super::terd::{flagged_rate, kl_stats, reverse, terd, TerdConfig};
use super::tests::{backdoor, clean_data, load, measure_opts};
use super::*;

/// A planted trigger pattern in [−1, 1] at `shape`.
fn planted(shape: [i64; 3]) -> Tensor {
    Rng::seeded(11).rand(&shape) * 2.0 - 1.0
}

fn mean_abs(t: &Tensor) -> f64 {
    t.abs().mean(Kind::Double).double_value(&[])
}

/// A denoiser whose mean prediction on x + τ is τ − (1 − λ)g has Elijah's loss
/// (1 − λ)|τ − g|, minimised at the planted g; a clean one (ε(x) = x) at τ = 0.
/// Elijah's estimate carries the mean of its fixed noise batch (sd 1/√noises per pixel, doubled
/// by 1/(1 − λ)): the test inverts with 10,000 noises so that what remains is the optimiser's.
#[test]
fn elijah_inversion_recovers_a_planted_shift() {
    let cfg = ElijahConfig {
        noises: 10_000,
        ..ElijahConfig::default()
    };
    let shape = [1, 8, 8];
    let g = planted(shape);
    let backdoored = |x: &Tensor, _t: i64| x - &g * (1.0 - cfg.lambda);
    let (tau, _) = invert(
        &backdoored,
        shape,
        99,
        &cfg,
        &mut Rng::seeded(1),
        Device::Cpu,
    );
    let err = mean_abs(&(&tau - &g));
    eprintln!(
        "Elijah inversion: mean |tau - g| = {err:.4} (mean |g| = {:.4})",
        mean_abs(&g)
    );
    assert!(
        err < 0.1 * mean_abs(&g),
        "tau is {err} from the planted shift"
    );
    let clean = |x: &Tensor, _t: i64| x.shallow_clone();
    let (tau, _) = invert(&clean, shape, 99, &cfg, &mut Rng::seeded(1), Device::Cpu);
    assert!(
        mean_abs(&tau) < 0.1 * mean_abs(&g),
        "a clean denoiser inverts to {tau}"
    );
}

/// A denoiser exact up to a quadratic error around the planted g: TERD's difference-of-noise
/// loss is smallest where the shifted inputs sit at g, so μ moves from its start to g.
#[test]
fn terd_reversion_recovers_a_planted_shift() {
    let shape = [1, 8, 8];
    let g = planted(shape);
    let c = 0.25;
    let eps = |x: &Tensor, _t: &Tensor| {
        let d = x - &g;
        &d + d.square() * c
    };
    let ac = BackdoorSchedule::from_betas(&Tensor::linspace(
        0.001,
        0.2,
        100,
        (Kind::Float, Device::Cpu),
    ))
    .alphas_cumprod;
    let cfg = TerdConfig {
        iterations: 300,
        refine_iterations: 0,
        last_steps: 1,
        first_steps: 1,
        ..TerdConfig::default()
    };
    let start = mean_abs(&(Rng::seeded(3).rand(&shape) * -1.0 - &g));
    let mu = reverse(&eps, &ac, shape, &cfg, &mut Rng::seeded(3));
    let err = mean_abs(&(&mu - &g));
    eprintln!("TERD reversion: mean |mu - g| = {err:.4}, from {start:.4} at the start");
    assert!(err < 0.1 * start, "mu is {err} from the planted shift");
}

/// TERD's statistics and input test on hand-made μ.
#[test]
fn terd_statistics_and_input_test() {
    let mu = Tensor::from_slice(&[2.0f64, 0.0, 0.0, 0.0]).reshape([1, 2, 2]);
    let (mean, var) = kl_stats(&mu);
    assert!(
        (mean - 0.5).abs() < 1e-12 && (var - 0.75).abs() < 1e-12,
        "{mean} {var}"
    );
    let eps = Rng::seeded(4).randn(&[4000, 1, 2, 2]).to_kind(Kind::Double);
    // ε + μ: flagged when 2⟨ε + μ, μ⟩ > ‖μ‖², i.e. ε₀ > −1: Φ(1) = 0.841.
    let hit = flagged_rate(&(&eps + &mu), &mu);
    // ε: flagged when ε₀ > 1: 1 − Φ(1) = 0.159.
    let false_alarm = flagged_rate(&eps, &mu);
    assert!((hit - 0.841).abs() < 0.03, "{hit}");
    assert!((false_alarm - 0.159).abs() < 0.03, "{false_alarm}");
}

/// Clean draws exceed the calibrated threshold at the asked rate (1 %): 20,000 fresh draws, a
/// band of about four standard deviations of the two estimates together.
#[test]
fn noise_test_holds_its_false_positive_rate() {
    let cfg = NoiseTestConfig::default();
    let shape = [1i64, 16, 16];
    let threshold = calibrate(&shape, &cfg);
    let x = Rng::seeded(77).randn(&[20_000, 256]);
    let rate = ks_statistic(&x)
        .gt(threshold)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    eprintln!("noise test: threshold {threshold:.4}, clean false-positive rate {rate:.4}");
    assert!(
        (0.005..=0.015).contains(&rate),
        "false-positive rate {rate}"
    );
}

/// The statistic is scipy's `kstest(x, "norm").statistic`; the uniformity and total variation
/// are hand-checkable, and total variation is torchmetrics'.
#[test]
fn statistics_match_their_oracles() {
    let x = Rng::seeded(8).randn(&[3, 50]).to_kind(Kind::Double) * 1.3 + 0.2;
    let images = Rng::seeded(9).rand(&[5, 2, 6, 7]).to_kind(Kind::Double);
    let out = crate::testing::oracle("later_defenses", &[("x", &x), ("images", &images)], &[]);
    crate::testing::assert_close("KS statistic", &ks_statistic(&x), &out["ks"], 1e-12);
    let tv = Tensor::from(total_variation(&images));
    // torchmetrics sums in float32.
    crate::testing::assert_close("total variation", &tv.reshape([1]), &out["tv"], 1e-5);
    // Identical images are perfectly uniform; two groups of distinct ones are not.
    let same = images.get(0).unsqueeze(0).repeat([9, 1, 1, 1]);
    assert_eq!(uniformity(&same, 4).unwrap(), 0.0);
    assert!(uniformity(&images.repeat([2, 1, 1, 1]), 4).unwrap() > 0.0);
    assert!(
        uniformity(&images, 4).is_err(),
        "5 images cannot drop 4 at each end"
    );
}

/// Every field a profile gives is read, written back as given, and read again the same; bad
/// values name the field and the fix.
#[test]
fn later_defense_tables_round_trip_and_refuse_bad_values() {
    let tables = [
        serde_json::json!({"kind": "elijah", "lambda": 0.5, "lr": 0.1, "inversion_steps": 7,
            "noises": 9, "samples": 10, "remove": true, "clean_fraction": 0.2,
            "removal_epochs": 3, "removal_batch": 8, "removal_lr": 0.001, "removal_warmup": 0,
            "n": 4, "steps": 2}),
        serde_json::json!({"kind": "terd", "lr": 0.4, "iterations": 5, "refine_iterations": 0,
            "batch": 3, "weight": 0.0, "last_steps": 1, "first_steps": 2, "sampler_steps": 4,
            "inputs": 20}),
        serde_json::json!({"kind": "noise-test", "fpr": 0.05, "calibration": 400, "inputs": 30}),
    ];
    for t in &tables {
        let spec = DefenseSpec::parse(t).unwrap();
        let again: DefenseSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(&serde_json::to_value(&again).unwrap(), t);
        assert_eq!(spec.describe().1, again.describe().1);
    }
    match DefenseSpec::parse(&tables[0]).unwrap().defense {
        DefenseConfig::Elijah(c) => {
            assert_eq!((c.steps, c.noises, c.samples), (7, 9, 10));
            assert_eq!(
                (c.removal.epochs, c.removal.batch, c.removal.warmup),
                (3, 8, 0)
            );
            assert_eq!((c.removal.lr, c.removal.clean_fraction), (0.001, 0.2));
        }
        _ => panic!("not elijah"),
    }
    match DefenseSpec::parse(&tables[1]).unwrap().defense {
        DefenseConfig::Terd(c) => {
            assert_eq!((c.iterations, c.refine_iterations, c.batch), (5, 0, 3));
            assert_eq!(
                (c.last_steps, c.first_steps, c.sampler_steps, c.inputs),
                (1, 2, 4, 20)
            );
        }
        _ => panic!("not terd"),
    }
    let bad = [
        (
            serde_json::json!({"kind": "elijah", "lambda": 1.5}),
            "λ must lie in (0, 1)",
        ),
        (
            serde_json::json!({"kind": "elijah", "samples": 8}),
            "more than 8 samples",
        ),
        (
            serde_json::json!({"kind": "elijah", "remove": "yes"}),
            "remove = \"yes\" must be true or false",
        ),
        (
            serde_json::json!({"kind": "elijah", "clean_fraction": 0}),
            "clean_fraction",
        ),
        (
            serde_json::json!({"kind": "elijah", "steps_per_epoch": 3}),
            "`steps_per_epoch` is unknown",
        ),
        (
            serde_json::json!({"kind": "terd", "iterations": 0}),
            "iterations = 0 is out of range",
        ),
        (
            serde_json::json!({"kind": "terd", "weight": -1}),
            "L1 weight must be ≥ 0",
        ),
        (
            serde_json::json!({"kind": "noise-test", "fpr": 0}),
            "must lie in (0, 1)",
        ),
        (
            serde_json::json!({"kind": "noise-test", "calibration": 100}),
            "raise `calibration` to at least 1000",
        ),
        (
            serde_json::json!({"kind": "disdet"}),
            "`elijah`, `terd` or `noise-test`",
        ),
    ];
    for (t, want) in bad {
        let e = format!("{:#}", DefenseSpec::parse(&t).unwrap_err());
        assert!(e.contains(want), "{t}: {e}");
    }
}

/// The fixtures' backdoored model (BOX_14 → CORNER) and its clean parent: Elijah's inverted
/// trigger fires the backdoor, TERD's reversed trigger is larger on the backdoored model; the
/// noise test flags the trigger's inputs whatever the model.
#[test]
fn detection_separates_a_backdoored_from_a_clean_fixture_model() {
    let bd_dir = crate::testing::fixtures::backdoored_scale_model()
        .model_dir
        .clone();
    let clean_dir = crate::testing::fixtures::clean_scale_model().to_path_buf();
    let data = clean_data();
    let cfg = ElijahConfig {
        remove: false,
        ..ElijahConfig::default()
    };
    let terd_cfg = TerdConfig {
        iterations: 300,
        refine_iterations: 10,
        last_steps: 1,
        first_steps: 1,
        ..TerdConfig::default()
    };
    let mut scores = vec![];
    for dir in [&bd_dir, &clean_dir] {
        let mut p = load(dir);
        let bd = backdoor(&p);
        let out = tempfile::tempdir().unwrap();
        let e = elijah(&mut p, &data, &bd, &cfg, &measure_opts(16), out.path()).unwrap();
        let t = terd(&mut p, &data, &bd, &terd_cfg, &measure_opts(16)).unwrap();
        let of = |m: &str| {
            e.rows
                .iter()
                .find(|r| r.row.metric == m)
                .map(|r| r.row.value)
        };
        eprintln!(
            "{}: uniformity {:.5}, tv {:.3}, inverted hit rate {:?}, tau-g MSE {:?}, KL mean {:.4}, TERD input test {:.3}/{:.3}",
            dir.display(),
            e.uniformity,
            e.total_variation,
            of("MSE_threshold_rate"),
            of("elijah_trigger_mse"),
            t.kl_mean,
            t.trigger_flagged,
            t.clean_flagged
        );
        scores.push((e.uniformity, t.kl_mean, of("MSE_threshold_rate").unwrap()));
    }
    let (backdoored, clean) = (scores[0], scores[1]);
    // Elijah's inverted trigger is a trigger: it sends the backdoored model's samples to the
    // target, the clean model's mostly not. Its uniformity score does not separate these two
    // models (the clean one's samples from x + τ are near-blank, hence uniform): a finding
    // recorded in paper/deviations.md, not asserted either way.
    assert!(
        backdoored.2 >= 0.9 && clean.2 < 0.5,
        "Elijah's inverted hit rates: {backdoored:?} vs clean {clean:?}"
    );
    assert!(
        backdoored.1 > clean.1,
        "TERD: {backdoored:?} vs clean {clean:?}"
    );
    let p = load(&bd_dir);
    let r = noise_test(&backdoor(&p), &NoiseTestConfig::default()).unwrap();
    eprintln!(
        "noise test: trigger {:.3}, clean {:.3}",
        r.trigger_flagged, r.clean_flagged
    );
    assert!(r.trigger_flagged > 0.5 && r.clean_flagged < 0.03);
}

/// Elijah's removal, on the fixture's backdoored model: fewer trigger samples land on the target
/// afterwards, and the repaired model is a pipeline that loads.
#[test]
fn elijah_removal_lowers_the_fixture_hit_rate() {
    let dir = crate::testing::fixtures::backdoored_scale_model()
        .model_dir
        .clone();
    let mut p = load(&dir);
    let bd = backdoor(&p);
    let opts = measure_opts(32);
    let (before, _) = measure(&mut p, &opts, Some(&bd.trigger), &bd).unwrap();
    let cfg = ElijahConfig {
        removal: RemovalConfig {
            clean_fraction: 0.5,
            batch: 16,
            lr: 1e-3,
            warmup: 10,
            ..ElijahConfig::default().removal
        },
        ..ElijahConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let r = elijah(&mut p, &clean_data(), &bd, &cfg, &opts, out.path()).unwrap();
    let hit = |rows: &[MetricRow]| value_of(rows, "MSE_threshold_rate").unwrap();
    let after: Vec<MetricRow> = r
        .rows
        .iter()
        .filter(|x| x.samples == "backdoor" && x.defense_epoch == Some(cfg.removal.epochs))
        .map(|x| x.row.clone())
        .collect();
    eprintln!(
        "Elijah removal: hit rate {:.3} -> {:.3}, MSE {:.4} -> {:.4}",
        hit(&before),
        hit(&after),
        value_of(&before, "MSE").unwrap(),
        value_of(&after, "MSE").unwrap()
    );
    assert!(hit(&before) > 0.5, "the fixture's backdoor did not fire");
    assert!(hit(&after) < hit(&before) / 2.0);
    let repaired = load(r.repaired_dir.as_ref().unwrap());
    assert_eq!(
        repaired.checkpoint.weights.safetensors.sha256,
        r.repaired_sha256.unwrap()
    );
}

/// `--plan`'s count of a defense's work at the published settings on CIFAR-10 (T = 1000, 50,000
/// images, 128 samples per measurement), term by term.
#[test]
fn the_plan_counts_each_defense_s_model_passes() {
    let passes = |t: serde_json::Value| {
        DefenseSpec::parse(&t)
            .unwrap()
            .image_passes(1000, 50_000, 128)
    };
    // Inversion 100 steps × 100 noises × 3, 16 samples × 1000 steps; removal 11 epochs × 40
    // batches × 128 × 10; four measurements of 128 × 1000.
    let elijah = 100 * 100 * 3 + 16 * 1000 + 11 * 40 * 128 * 10 + 4 * 128 * 1000;
    assert_eq!(passes(serde_json::json!({"kind": "elijah"})), elijah);
    assert_eq!(
        passes(serde_json::json!({"kind": "elijah", "remove": false})),
        100 * 100 * 3 + 16 * 1000
    );
    // Stage 1: 3,000 × 16 × two forwards and backwards; stage 2: 1,000 × 16 × (10 sampler
    // steps and two losses of two passes, each with its backward).
    assert_eq!(
        passes(serde_json::json!({"kind": "terd"})),
        3000 * 16 * 6 + 1000 * 16 * (10 * 3 + 12)
    );
    assert_eq!(passes(serde_json::json!({"kind": "noise-test"})), 0);
}
