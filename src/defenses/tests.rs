use std::path::PathBuf;

use tch::Device;

use super::anp::{anp_probe, AnpConfig};
use super::clip::{clip_defense, row_value};
use super::prune::{anp_prune, select_channels, ConvMasks, PruneBy, PruneConfig};
use super::*;
use crate::attack;
use crate::pipeline::PipelineOptions;

/// Image size of the shared backdoored fixture (`testing::fixtures`).
const SIZE: usize = crate::testing::fixtures::SHAPE.size;

/// The shared backdoored scale model (16 px Fashion-MNIST, BOX_14 → CORNER at p = 0.5), whose
/// backdoor the attack's end-to-end test checks: the defenses are tested on a model that has one.
fn backdoored_model() -> PathBuf {
    crate::testing::fixtures::backdoored_scale_model()
        .model_dir
        .clone()
}

pub(super) fn load(dir: &Path) -> Pipeline {
    let opts = PipelineOptions {
        sampler: SamplerKind::Ddpm,
        steps: None,
        clip: None,
        override_scheduler: false,
        n: 1,
        seed: 0,
        batch: 1,
        device: Device::Cpu,
        progress: false,
    };
    Pipeline::load(dir, &opts).unwrap()
}

pub(super) fn clean_data() -> Dataset {
    let mut d = crate::testing::fixtures::data();
    d.limit = Some(256);
    attack::load_dataset(&d).unwrap()
}

pub(super) fn backdoor(p: &Pipeline) -> Backdoor {
    let sources = crate::testing::official_images();
    Backdoor::for_pipeline(p, "BOX_14", "CORNER", Some(&sources)).unwrap()
}

pub(super) fn measure_opts(n: usize) -> MeasureOptions {
    MeasureOptions {
        n,
        seed: 0,
        batch: n,
        steps: None,
        device: Device::Cpu,
    }
}

/// The model's output on a fixed input, to check a defense left the model as it found it.
fn probe_output(p: &Pipeline) -> Tensor {
    let x = Rng::seeded(5).randn(&[2, 1, SIZE as i64, SIZE as i64]);
    tch::no_grad(|| p.checkpoint.model.forward_at(&x, 50, false))
}

#[test]
fn clipping_raises_the_backdoor_mse() {
    let mut p = load(&backdoored_model());
    let bd = backdoor(&p);
    let r = clip_defense(
        &mut p,
        &bd,
        &[Clip::None, Clip::X0, Clip::Xt],
        &measure_opts(32),
    )
    .unwrap();
    let mse = |c| row_value(&r.rows, c, "backdoor", "MSE").unwrap();
    let (none, x0, xt) = (mse(Clip::None), mse(Clip::X0), mse(Clip::Xt));
    eprintln!("backdoor MSE: none {none:.5}, x0 {x0:.5}, xt {xt:.5}");
    for c in [Clip::None, Clip::X0, Clip::Xt] {
        eprintln!(
            "clean ({}) MSE to target {:.4}, pixel mean {:.4}, std {:.4}",
            c.name(),
            row_value(&r.rows, c, "clean", "MSE").unwrap(),
            row_value(&r.rows, c, "clean", "pixel_mean").unwrap(),
            row_value(&r.rows, c, "clean", "pixel_std").unwrap()
        );
    }
    // The fixture carries the backdoor when sampled unclipped: trigger noise lands far closer
    // to the target than clean noise does ...
    let clean_none = row_value(&r.rows, Clip::None, "clean", "MSE").unwrap();
    assert!(
        none < clean_none / 2.0,
        "the fixture has no backdoor: MSE to the target {none} from trigger noise, {clean_none} from clean noise"
    );
    // ... and the official code's clipping (x0) weakens it. The paper's wording (clamping x_t)
    // is measured too, but on this T = 100 scale model it collapses the samples instead (measured:
    // backdoor MSE 0.035 → 0.020, clean proxy FD 20 → 149 in the smoke run), so only its rows are
    // checked here; paper/deviations.md records this.
    assert!(x0 > 1.5 * none, "none {none}, x0 {x0}");
    assert!(xt.is_finite(), "xt {xt}");
    // Clean samples are measured under every mode, and the cost is reported.
    assert!(row_value(&r.rows, Clip::Xt, "clean", "pixel_std").unwrap() > 0.0);
    assert!(r
        .rows
        .iter()
        .any(|r| r.row.metric == "cost_seconds" && r.row.value > 0.0));
    assert_eq!(r.cost.sampled_images, 2 * 3 * 32);
}

#[test]
fn anp_probe_stays_within_budget_and_traces_every_epoch() {
    let mut p = load(&backdoored_model());
    let before = probe_output(&p);
    let bd = backdoor(&p);
    let data = clean_data();
    // A large learning rate against a small budget, so the clamp is reached.
    let cfg = AnpConfig {
        lr: 0.05,
        budget: 0.5,
        epochs: 2,
        steps_per_epoch: Some(2),
        batch: 16,
        ..AnpConfig::default()
    };
    let r = anp_probe(&mut p, &data, &bd, &cfg, &measure_opts(8)).unwrap();
    assert_eq!(r.trace.len(), 2);
    assert_eq!(r.cost.optimiser_steps, 4);
    for e in &r.trace {
        eprintln!("{e:?}");
        for v in [e.gamma_min, e.gamma_max, e.beta_min, e.beta_max] {
            assert!(v.abs() <= cfg.budget, "{v} outside ±{}", cfg.budget);
        }
        assert!(e.mse.is_finite() && e.ssim.is_finite(), "{e:?}");
    }
    // γ started at 1 > budget: the clamp brought it to the bound.
    assert_eq!(r.trace[0].gamma_max, cfg.budget);
    let epochs: Vec<Option<u64>> = r
        .rows
        .iter()
        .filter(|r| r.row.metric == "MSE")
        .map(|r| r.defense_epoch)
        .collect();
    assert_eq!(epochs, [Some(1), Some(2)]);
    let best = r.rows.iter().find(|r| r.row.metric == "MSE_best").unwrap();
    assert_eq!(
        best.row.value,
        r.trace.iter().map(|e| e.mse).fold(f64::INFINITY, f64::min)
    );
    assert!(r
        .rows
        .iter()
        .all(|r| r.defense == "anp" && r.defense_param == "lr=0.05,budget=0.5"));
    // The model is unperturbed and unchanged afterwards.
    assert!(p.checkpoint.model.convs().iter().all(|c| !c.is_perturbed()));
    assert!(probe_output(&p).equal(&before));
}

#[test]
fn anp_pruning_removes_exactly_the_requested_channels() {
    let dir = backdoored_model();
    let mut p = load(&dir);
    let bd = backdoor(&p);
    let data = clean_data();
    let out = tempfile::tempdir().unwrap();
    let cfg = PruneConfig {
        iterations: 3,
        batch: 16,
        by: PruneBy::Fraction(0.05),
        ..PruneConfig::default()
    };
    let r = anp_prune(&mut p, &data, &bd, &cfg, &measure_opts(4), out.path()).unwrap();
    // Every hidden convolution is a candidate; the output convolution (the ε prediction) is not.
    let total: usize = p
        .checkpoint
        .model
        .convs()
        .iter()
        .filter(|c| c.path() != super::OUTPUT_CONV)
        .map(|c| c.out_channels() as usize)
        .sum();
    assert_eq!(r.total_channels, total);
    assert!(r.masks.iter().all(|m| m.conv != super::OUTPUT_CONV));
    assert!(p
        .checkpoint
        .model
        .convs()
        .iter()
        .any(|c| c.path() == super::OUTPUT_CONV));
    assert_eq!(r.pruned.len(), (0.05 * total as f64).round() as usize);
    assert!(r
        .masks
        .iter()
        .flat_map(|m| &m.masks)
        .all(|&m| (0.0..=1.0).contains(&m)));
    // The masks moved, and the pruned channels are the smallest ones.
    let largest_pruned = r.pruned.iter().map(|c| c.mask).fold(f64::MIN, f64::max);
    let smaller = r
        .masks
        .iter()
        .flat_map(|m| &m.masks)
        .filter(|&&m| m < largest_pruned)
        .count();
    assert!(smaller <= r.pruned.len());
    assert!(largest_pruned < 1.0, "the masks did not move");

    // The saved model is a normal checkpoint whose all-zero output channels are exactly the
    // pruned ones (the original has none).
    let zero_channels = |pl: &Pipeline| {
        let mut z = std::collections::BTreeSet::new();
        for c in pl.checkpoint.model.convs() {
            for ch in 0..c.out_channels() {
                let w = c.conv.ws.get(ch).abs().sum(Kind::Double).double_value(&[]);
                let b = c.conv.bs.as_ref().unwrap().get(ch).abs().double_value(&[]);
                if w == 0.0 && b == 0.0 {
                    z.insert((c.path().to_string(), ch));
                }
            }
        }
        z
    };
    assert!(zero_channels(&load(&dir)).is_empty());
    let mut pruned = load(out.path());
    let want: std::collections::BTreeSet<_> = r
        .pruned
        .iter()
        .map(|c| (c.conv.clone(), c.channel))
        .collect();
    assert_eq!(zero_channels(&pruned), want);
    let s = measure(&mut pruned, &measure_opts(2), Some(&bd.trigger), &bd).unwrap();
    assert!(value_of(&s.0, "MSE").unwrap().is_finite());
    for samples in ["backdoor", "clean"] {
        assert!(r
            .rows
            .iter()
            .any(|x| x.samples == samples && x.row.metric == "MSE"));
    }
}

#[test]
fn selection_by_threshold_and_by_fraction() {
    let masks = vec![
        ConvMasks {
            conv: "a".into(),
            masks: vec![0.9, 0.1, 0.5],
        },
        ConvMasks {
            conv: "b".into(),
            masks: vec![0.05, 1.0, 0.15, 0.1],
        },
    ];
    let names = |v: Vec<super::prune::PrunedChannel>| {
        v.into_iter()
            .map(|c| (c.conv, c.channel))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(select_channels(&masks, PruneBy::Threshold(0.2)).unwrap()),
        [
            ("b".into(), 0),
            ("a".into(), 1),
            ("b".into(), 3),
            ("b".into(), 2)
        ]
    );
    assert_eq!(
        names(select_channels(&masks, PruneBy::Fraction(2.0 / 7.0)).unwrap()),
        [("b".into(), 0), ("a".into(), 1)]
    );
    assert!(select_channels(&masks, PruneBy::Fraction(0.0))
        .unwrap()
        .is_empty());
    assert_eq!(
        select_channels(&masks, PruneBy::Fraction(1.0))
            .unwrap()
            .len(),
        7
    );
}

#[test]
fn bad_input_is_refused_with_the_fix() {
    for budget in [0.0, -1.0, f64::NAN] {
        let cfg = AnpConfig {
            budget,
            ..AnpConfig::default()
        };
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(e.contains("budget") && e.contains("--budget"), "{e}");
    }
    let e = format!("{:#}", require_convs(vec![]).unwrap_err());
    assert!(e.contains("no convolutions"), "{e}");
    let e = format!(
        "{:#}",
        select_channels(&[], PruneBy::Fraction(1.5)).unwrap_err()
    );
    assert!(e.contains("fraction") && e.contains("1.5"), "{e}");
    let e = format!(
        "{:#}",
        PruneConfig {
            alpha: 2.0,
            ..PruneConfig::default()
        }
        .validate()
        .unwrap_err()
    );
    assert!(e.contains("α") && e.contains("--alpha"), "{e}");

    let mut p = load(&backdoored_model());
    let sources = crate::testing::official_images();
    let e = match Backdoor::for_pipeline(&p, "TRIANGLE", "CORNER", Some(&sources)) {
        Ok(_) => panic!("an unknown trigger was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("TRIANGLE") && e.contains("BOX_14"), "{e}");
    let bd = backdoor(&p);
    let e = format!(
        "{:#}",
        clip_defense(&mut p, &bd, &[], &measure_opts(1)).unwrap_err()
    );
    assert!(e.contains("no clip modes"), "{e}");
    let mut data = crate::testing::fixtures::data();
    data.size = 8;
    data.limit = Some(4);
    let small = attack::load_dataset(&data).unwrap();
    let e = format!(
        "{:#}",
        anp_probe(&mut p, &small, &bd, &AnpConfig::default(), &measure_opts(1)).unwrap_err()
    );
    assert!(e.contains("16×16") && e.contains("8×8"), "{e}");
}
