use std::path::Path;

use super::*;
use crate::Row;

pub(crate) fn row(cell: &str, samples: &str, metric: &str, value: f64) -> Row {
    Row {
        run_id: "r".into(),
        cell: cell.into(),
        experiment: "E1".into(),
        dataset: "fashion-mnist".into(),
        image_size: 16,
        channels: 1,
        trigger: "BOX_14".into(),
        target: "Corner".into(),
        poison_rate: 0.5,
        training: "finetune".into(),
        epochs: 1.0,
        schedule_share: 1.0,
        seed: 0,
        defense: "none".into(),
        defense_param: String::new(),
        defense_epoch: None,
        sampler: "ddpm".into(),
        steps: 100,
        clip: "none".into(),
        corruption: "none".into(),
        samples: samples.into(),
        metric: metric.into(),
        value,
        n_generated: 256,
        n_reference: 1,
        protocol: "{}".into(),
    }
}

const SUCCESS: &str = r#"
[success]
reason = "test"
mse_ratio = "<= 0.1"
hit_rate = "> 0.5"
"#;

fn history(holds: &str, partly: Option<&str>) -> String {
    format!(
        "[[claim.check.history]]\ndate = \"2026-12-06\"\nholds = \"{holds}\"\n{}reason = \"test\"\nbaseline = \"none\"\n",
        partly.map(|p| format!("partly = \"{p}\"\n")).unwrap_or_default()
    )
}

fn file(claim: &str) -> ClaimsFile {
    ClaimsFile::parse(&format!("{SUCCESS}{claim}")).unwrap()
}

fn judge(claim: &str, rows: &[Row]) -> ClaimVerdict {
    file(claim).judge(rows, &RunInfo::default()).remove(0)
}

const MOST: &str = r#"
[[claim]]
id = "C2"
quote = "5% poison rate is sufficient ... in most of the trigger-target settings"
section = "§4.2"
figure = "Fig. 2a"
experiments = ["E1"]
reading = "most pairs succeed at 5 %"
[[claim.check]]
name = "share of pairs whose backdoor succeeds at 5 %"
reason = "most = more than half"
op = "share_successful"
a = { experiment = "E1", training = "finetune", poison_rate = "0.05" }
holds = "> 0.5"
"#;

/// Five trigger–target pairs at 5 %: the first `ok` succeed (MSE far below the clean model's,
/// most trigger samples on the target), the others do not.
fn pairs(ok: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 0..5 {
        let target = format!("T{i}");
        let good = i < ok;
        let mut clean_model = row(&format!("clean.{i}"), "backdoor", "MSE", 0.1);
        clean_model.training = "pretrained".into();
        clean_model.poison_rate = 0.0;
        clean_model.target = target.clone();
        let mut mse = row(
            &format!("bd.{i}"),
            "backdoor",
            "MSE",
            if good { 0.001 } else { 0.09 },
        );
        mse.poison_rate = 0.05;
        mse.target = target.clone();
        let mut hits = mse.clone();
        hits.metric = "MSE_threshold_rate".into();
        hits.value = if good { 0.97 } else { 0.02 };
        rows.extend([clean_model, mse, hits]);
    }
    rows
}

#[test]
fn a_most_pairs_claim_holds_with_three_of_five_and_fails_with_two() {
    let c = format!("{MOST}{}", history("> 0.5", None));
    let v = judge(&c, &pairs(3));
    assert_eq!(v.verdict, Verdict::Holds, "{v:#?}");
    assert_eq!(v.checks[0].value, Some(0.6));
    let detail = &v.checks[0].settings[0].units[0].detail;
    assert_eq!(detail.len(), 5);
    assert_eq!(detail.iter().filter(|d| d.starts_with('✓')).count(), 3);
    assert_eq!(judge(&c, &pairs(2)).verdict, Verdict::Fails);
    // No 5 % cell: not run, and the reason names the missing selection.
    let mut at_10: Vec<Row> = pairs(5);
    for r in &mut at_10 {
        if r.poison_rate == 0.05 {
            r.poison_rate = 0.1;
        }
    }
    let v = judge(&c, &at_10);
    assert_eq!(v.verdict, Verdict::NotRun);
    assert!(
        v.limits.iter().any(|l| l.contains("poison_rate = 0.05")),
        "{:?}",
        v.limits
    );
}

const CLIPPING: &str = r#"
[[claim]]
id = "C7"
quote = "large MSE"
section = "§4.6.2"
figure = "Fig. 5a"
experiments = ["E4"]
reading = "clipping raises backdoor MSE"
[[claim.check]]
name = "backdoor MSE with / without clipping"
reason = "large = 10x"
op = "ratio"
a = { samples = "backdoor", metric = "MSE", clip = "x0" }
b = { samples = "backdoor", metric = "MSE", clip = "none" }
per = ["trigger", "target", "poison_rate"]
holds = ">= 10"
partly = "> 1"
"#;

fn seeds(clipped: &[f64]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (s, v) in clipped.iter().enumerate() {
        let mut none = row("c", "backdoor", "MSE", 0.001);
        none.seed = s as i64;
        let mut x0 = none.clone();
        x0.clip = "x0".into();
        x0.value = *v;
        rows.extend([none, x0]);
    }
    rows
}

#[test]
fn an_interval_straddling_a_bound_is_inconclusive() {
    let c = format!("{CLIPPING}{}", history(">= 10", Some("> 1")));
    let v = judge(&c, &seeds(&[0.05, 0.02, 0.03]));
    assert_eq!(v.verdict, Verdict::Holds);
    assert_eq!(v.basis.seeds, vec![0, 1, 2]);
    assert!(!v.basis.single_run);
    // 5x and 20x: one seed below the holds bound, one above.
    let v = judge(&c, &seeds(&[0.005, 0.02]));
    assert_eq!(v.verdict, Verdict::Inconclusive);
    assert_eq!(v.checks[0].interval, Some([5.0, 20.0]));
    // Wholly between the bounds: partly; wholly outside: fails; straddling partly: inconclusive.
    assert_eq!(judge(&c, &seeds(&[0.005, 0.003])).verdict, Verdict::Partly);
    assert_eq!(judge(&c, &seeds(&[0.0005, 0.0009])).verdict, Verdict::Fails);
    assert_eq!(
        judge(&c, &seeds(&[0.0005, 0.005])).verdict,
        Verdict::Inconclusive
    );
    // One seed: a point, labelled as a single run.
    let v = judge(&c, &seeds(&[0.05]));
    assert!(
        v.basis.single_run && v.basis.label.contains("single run"),
        "{:?}",
        v.basis
    );
    assert!(v.limits.iter().any(|l| l.contains("single run")));
}

#[test]
fn a_setting_that_fails_fails_an_always_claim() {
    let c = format!("{CLIPPING}{}", history(">= 10", Some("> 1")));
    let mut rows = seeds(&[0.05]);
    let mut other = seeds(&[0.0005]);
    for r in &mut other {
        r.target = "Hat".into();
    }
    rows.extend(other);
    let v = judge(&c, &rows);
    assert_eq!(v.verdict, Verdict::Fails);
    assert_eq!(v.checks[0].settings.len(), 2);
    assert_eq!(v.checks[0].settings[0].verdict, Verdict::Holds);
}

const ANP: &str = r#"
[[claim]]
id = "C9"
quote = "MSE explodes when we slightly increase the learning rate from 1e-4 to 2e-4"
section = "§4.6.1"
figure = "ANP"
experiments = ["anp"]
reading = "the trajectory's end"
[[claim.check]]
name = "final-epoch ANP MSE, lr 2e-4 / lr 1e-4"
reason = "explodes = 10x at the end of the run"
op = "ratio"
a = { defense = "anp", defense_param = "lr=0.0002,budget=4", samples = "clean", metric = "MSE", agg = "last" }
b = { defense = "anp", defense_param = "lr=0.0001,budget=4", samples = "clean", metric = "MSE", agg = "last" }
per = ["trigger", "target", "poison_rate"]
holds = ">= 10"
partly = "> 1"
"#;

fn trajectory(lr2: &[f64]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (e, v) in lr2.iter().enumerate() {
        for (param, value) in [
            ("lr=0.0001,budget=4", 0.08 - 0.01 * e as f64),
            ("lr=0.0002,budget=4", *v),
        ] {
            let mut r = row("anp", "clean", "MSE", value);
            r.experiment = "anp".into();
            r.defense = "anp".into();
            r.defense_param = param.into();
            r.defense_epoch = Some(e as i64 + 1);
            rows.push(r);
        }
    }
    rows
}

#[test]
fn anp_reads_the_trajectory_explosion_holds_and_flat_fails() {
    let c = format!("{ANP}{}", history(">= 10", Some("> 1")));
    // Same start (the same model), then lr 2e-4 runs away: the minimum over epochs would not see it.
    let v = judge(&c, &trajectory(&[0.08, 0.3, 0.9, 1.5]));
    assert_eq!(v.verdict, Verdict::Holds, "{v:#?}");
    assert!((v.checks[0].value.unwrap() - 1.5 / 0.05).abs() < 1e-9);
    let v = judge(&c, &trajectory(&[0.08, 0.07, 0.06, 0.05]));
    assert_eq!(v.verdict, Verdict::Fails);
}

#[test]
fn calibrated_clean_hits_are_judged_and_a_leak_is_not_judged() {
    let claim = r#"
[[claim]]
id = "C1"
quote = "samples from clean noise stay clean"
section = "§3"
figure = "Fig. 2a"
experiments = ["E1"]
reading = "clean hits per trigger hit"
[[claim.check]]
name = "clean samples on the target / trigger samples on the target"
reason = "one per ten"
op = "ratio"
a = { training = "finetune", samples = "clean", metric = "MSE_calibrated_rate" }
b = { training = "finetune", samples = "backdoor", metric = "MSE_calibrated_rate" }
per = ["trigger", "target", "poison_rate"]
holds = "<= 0.1"
"#;
    let c = format!("{claim}{}", history("<= 0.1", None));
    let cdf = crate::calibrate::tests::cdf_rows;
    let clean_model: Vec<f64> = (0..100).map(|i| 0.05 + 0.0005 * i as f64).collect();
    let mut rows = cdf("base", "pretrained", "clean", &clean_model);
    let leaky: Vec<f64> = (0..100).map(|i| if i < 2 { 1e-4 } else { 0.07 }).collect();
    rows.extend(cdf("bd", "finetune", "clean", &leaky));
    rows.extend(cdf("bd", "finetune", "backdoor", &[1e-4; 100]));
    let (derived, _) = crate::calibrate::derive(&rows);
    rows.extend(derived);
    let v = judge(&c, &rows);
    assert_eq!(v.verdict, Verdict::Holds, "{v:#?}");
    assert!((v.checks[0].value.unwrap() - 0.02).abs() < 1e-12);

    // The clean model itself sits on the target: no threshold, so the check is not judged.
    let mut rows = cdf("base", "pretrained", "clean", &[1e-6; 100]);
    rows.extend(cdf("bd", "finetune", "clean", &leaky));
    let (derived, _) = crate::calibrate::derive(&rows);
    rows.extend(derived);
    let v = judge(&c, &rows);
    assert_eq!(v.verdict, Verdict::NotJudged);
    assert!(
        v.checks[0]
            .note
            .as_deref()
            .unwrap()
            .contains("no threshold"),
        "{v:#?}"
    );
}

#[test]
fn a_bound_changed_without_its_history_entry_is_refused() {
    let c = format!("{CLIPPING}{}", history(">= 10", Some("> 1")));
    assert!(ClaimsFile::parse(&format!("{SUCCESS}{c}")).is_ok());
    // The bound moved to 5, the history still says 10.
    let moved = c.replacen("holds = \">= 10\"", "holds = \">= 5\"", 1);
    let err = format!(
        "{:#}",
        ClaimsFile::parse(&format!("{SUCCESS}{moved}")).unwrap_err()
    );
    assert!(err.contains("history") && err.contains("C7"), "{err}");
    // With its entry, the move is accepted and both values stay on record.
    let recorded = format!("{moved}{}", history(">= 5", Some("> 1")));
    let f = ClaimsFile::parse(&format!("{SUCCESS}{recorded}")).unwrap();
    assert_eq!(f.claims[0].checks[0].history.len(), 2);
    // No history at all is refused too.
    let err = format!(
        "{:#}",
        ClaimsFile::parse(&format!("{SUCCESS}{CLIPPING}")).unwrap_err()
    );
    assert!(err.contains("history"), "{err}");
}

#[test]
fn typos_in_closed_sets_are_errors_not_not_run() {
    let c = format!("{CLIPPING}{}", history(">= 10", Some("> 1")))
        .replace("clip = \"x0\"", "clip = \"x1\"");
    let err = format!(
        "{:#}",
        ClaimsFile::parse(&format!("{SUCCESS}{c}")).unwrap_err()
    );
    assert!(err.contains("x1") && err.contains("xt"), "{err}");
}

#[test]
fn the_committed_claims_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../paper/claims.toml");
    let f = ClaimsFile::load(&path).unwrap();
    assert!(f.claims.len() >= 9);
    for c in &f.claims {
        assert!(!c.reading.trim().is_empty(), "{}", c.id);
        for k in &c.checks {
            assert!(!k.reason.trim().is_empty(), "{} {}", c.id, k.name);
        }
    }
}

#[test]
fn a_scale_model_outside_its_regime_labels_every_verdict_so() {
    let mut rows = pairs(5);
    for (samples, value) in [("backdoor", 1.0), ("clean", 0.1)] {
        let mut r = row(
            "bd.top",
            samples,
            &crate::calibrate::cdf_metric(0.01),
            value,
        );
        r.poison_rate = 0.5;
        rows.push(r);
    }
    let miniature = RunInfo {
        profile: "smoke".into(),
        scale: Some(Scale {
            fidelity: Fidelity::Miniature,
            dataset: "fashion-mnist".into(),
            image_size: 28,
            channels: 1,
            timesteps: Some(100),
            unet_parameters: None,
            n: 256,
            n_by_experiment: vec![],
            seeds: vec![0],
            quality: "proxy".into(),
        }),
    };
    let claims = file(&format!("{MOST}{}", history("> 0.5", None)));
    let v = claims.judge(&rows, &miniature).remove(0);
    assert!(
        v.limits[0].starts_with("outside the scale model's regime")
            && v.limits[0].contains("10.0 % [")
            && v.basis.label.contains("outside the scale model's regime"),
        "{:?} {}",
        v.limits,
        v.basis.label
    );
    // 1 clean hit in 256: its interval straddles 2 %, so the regime is not established.
    rows.last_mut().unwrap().value = 1.0 / 256.0;
    let v = claims.judge(&rows, &miniature).remove(0);
    assert!(
        v.basis
            .label
            .contains("the scale model's regime not established"),
        "{}",
        v.basis.label
    );
    // In the regime, or at the paper's scale, nothing is added.
    rows.last_mut().unwrap().value = 0.0;
    let v = claims.judge(&rows, &miniature).remove(0);
    assert!(
        v.limits.iter().all(|l| !l.contains("regime")),
        "{:?}",
        v.limits
    );
}

/// A dress rehearsal's checks run, but no claim holds or fails on its numbers.
#[test]
fn a_rehearsal_withholds_every_verdict() {
    let rows = pairs(5);
    let claims = file(&format!("{MOST}{}", history("> 0.5", None)));
    let plain = claims.judge(&rows, &RunInfo::default()).remove(0);
    assert_eq!(plain.verdict, Verdict::Holds);
    let rehearsal = RunInfo {
        profile: "kick-the-tires-shrunk".into(),
        scale: Some(Scale {
            fidelity: Fidelity::Rehearsal,
            dataset: "cifar10".into(),
            image_size: 32,
            channels: 3,
            timesteps: Some(1000),
            unet_parameters: None,
            n: 4,
            n_by_experiment: vec![],
            seeds: vec![0],
            quality: "FID".into(),
        }),
    };
    let v = claims.judge(&rows, &rehearsal).remove(0);
    assert_eq!(v.verdict, Verdict::NotJudged);
    assert_eq!(v.checks, plain.checks, "the checks still ran");
    assert!(
        v.limits.iter().any(|l| l.contains("dress rehearsal")),
        "{:?}",
        v.limits
    );
}

/// E6: a synthetic checkpoint series whose backdoor first succeeds at 40 % of the fine-tune
/// (MSE far below the clean model's, most trigger samples on the target). "Some settings
/// succeed by 20 %" fails, "by 40 %" holds; a selection that names no share sees only the
/// finished model.
#[test]
fn a_checkpoint_series_is_judged_at_its_first_successful_share() {
    let mut clean_model = row("clean", "backdoor", "MSE", 0.1);
    clean_model.training = "pretrained".into();
    clean_model.poison_rate = 0.0;
    let mut rows = vec![clean_model];
    for (share, mse, hits) in [
        (0.2, 0.05, 0.1),
        (0.4, 0.005, 0.9),
        (0.6, 0.002, 0.95),
        (1.0, 0.001, 0.99),
    ] {
        let mut m = row("bd", "backdoor", "MSE", mse);
        m.schedule_share = share;
        m.epochs = 20.0 * share;
        let mut h = m.clone();
        h.metric = "MSE_threshold_rate".into();
        h.value = hits;
        rows.extend([m, h]);
    }
    let claim = |share: &str| {
        format!(
            r#"
[[claim]]
id = "C12"
quote = "in some cases it only requires 10 epochs"
section = "§4"
figure = "E6"
experiments = ["E1"]
reading = "some setting succeeds early"
[[claim.check]]
name = "share of settings that succeed early"
reason = "some = at least one"
op = "share_successful"
a = {{ experiment = "E1", training = "finetune"{share} }}
holds = "> 0"
{}"#,
            history("> 0", None)
        )
    };
    let early = judge(&claim(r#", schedule_share = "<= 0.2""#), &rows);
    assert_eq!(early.verdict, Verdict::Fails, "{early:#?}");
    assert_eq!(early.checks[0].value, Some(0.0));
    let by_40 = judge(&claim(r#", schedule_share = "<= 0.4""#), &rows);
    assert_eq!(by_40.verdict, Verdict::Holds, "{by_40:#?}");
    assert_eq!(
        by_40.checks[0].value,
        Some(0.5),
        "two settings, one succeeds"
    );
    let finished = judge(&claim(""), &rows);
    assert_eq!(finished.verdict, Verdict::Holds);
    assert_eq!(finished.checks[0].settings[0].units[0].detail.len(), 1);
}

/// `settings = "most"` ("usually"): holds when more than half the settings hold, fails when
/// they cannot, and takes no partly band.
#[test]
fn a_most_settings_check_counts_settings() {
    let claim = |extra: &str| {
        format!(
            r#"
[[claim]]
id = "C13"
quote = "usually lower"
section = "§4.6.1"
figure = "ANP"
experiments = ["E1"]
reading = "lower for most targets"
[[claim.check]]
name = "a / b per target"
reason = "usually = most"
op = "ratio"
a = {{ samples = "backdoor", metric = "MSE" }}
b = {{ samples = "clean", metric = "MSE" }}
per = ["target"]
settings = "most"
holds = "< 1"
{extra}{}"#,
            history("< 1", None)
        )
    };
    let rows = |ratios: &[f64]| -> Vec<Row> {
        ratios
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                let mut a = row("c", "backdoor", "MSE", *r);
                a.target = format!("T{i}");
                let mut b = row("c", "clean", "MSE", 1.0);
                b.target = format!("T{i}");
                [a, b]
            })
            .collect()
    };
    assert_eq!(
        judge(&claim(""), &rows(&[0.5, 0.8, 1.5])).verdict,
        Verdict::Holds
    );
    assert_eq!(
        judge(&claim(""), &rows(&[0.5, 1.2, 1.5])).verdict,
        Verdict::Fails
    );
    let e = ClaimsFile::parse(&format!("{SUCCESS}{}", claim("partly = \"< 2\"\n")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("most") && e.contains("partly"), "{e}");
}

/// `value` reads a selection per setting; `auroc` pools a seed's models, backdoored against
/// clean, in the detection score's direction; both refuse a `b`, and `auroc` a non-score metric.
#[test]
fn value_and_auroc_checks() {
    let claim = |op: &str, a: &str, per: &str, holds: &str| {
        format!(
            "[[claim]]\nid = \"L\"\nquote = \"q\"\nsection = \"s\"\nfigure = \"f\"\nexperiments = [\"later\"]\nreading = \"r\"\n[[claim.check]]\nname = \"n\"\nreason = \"r\"\nop = \"{op}\"\na = {a}\n{per}holds = \"{holds}\"\n{}",
            history(holds, None)
        )
    };
    let later = |rate: f64, seed: i64, defense: &str, samples: &str, metric: &str, value: f64| {
        let mut r = row(&format!("later.{rate}.{seed}"), samples, metric, value);
        (r.experiment, r.defense, r.poison_rate, r.seed) =
            ("later".into(), defense.into(), rate, seed);
        r
    };
    let rows = vec![
        later(0.5, 0, "terd", "backdoor", "input_flagged_rate", 1.0),
        later(0.05, 0, "terd", "backdoor", "input_flagged_rate", 0.9),
        later(0.0, 0, "terd", "none", "terd_kl_mean", 0.01),
        later(0.5, 0, "terd", "none", "terd_kl_mean", 0.3),
        later(0.05, 0, "terd", "none", "terd_kl_mean", 0.005),
        later(0.0, 1, "terd", "none", "terd_kl_mean", 0.01),
        later(0.5, 1, "terd", "none", "terd_kl_mean", 0.3),
    ];
    let value = claim(
        "value",
        "{ experiment = \"later\", defense = \"terd\", samples = \"backdoor\", metric = \"input_flagged_rate\", poison_rate = \"> 0\" }",
        "per = [\"poison_rate\"]\n",
        ">= 0.995",
    );
    let v = judge(&value, &rows);
    assert_eq!(v.verdict, Verdict::Fails, "{v:?}");
    let verdicts: Vec<Verdict> = v.checks[0].settings.iter().map(|s| s.verdict).collect();
    assert_eq!(verdicts, [Verdict::Fails, Verdict::Holds]);
    let auroc = claim(
        "auroc",
        "{ experiment = \"later\", defense = \"terd\", metric = \"terd_kl_mean\" }",
        "",
        "= 1",
    );
    // Seed 0: the 5 % model scores below the clean one (AUROC 0.5); seed 1 separates (1).
    let v = judge(&auroc, &rows);
    assert_eq!(v.checks[0].interval, Some([0.5, 1.0]));
    assert_eq!(v.verdict, Verdict::Inconclusive);
    let seed1: Vec<Row> = rows.iter().filter(|r| r.seed == 1).cloned().collect();
    assert_eq!(judge(&auroc, &seed1).verdict, Verdict::Holds);
    let not_a_score = auroc.replace("terd_kl_mean", "MSE");
    let e = ClaimsFile::parse(&format!("{SUCCESS}{not_a_score}")).unwrap_err();
    assert!(format!("{e:#}").contains("detection score"), "{e:#}");
}

/// A run manifest written before experiments could set their own N still reads, and a scale
/// with such experiments names them beside the profile's N.
#[test]
fn scale_lines_name_experiments_with_their_own_n() {
    let old = r#"{"fidelity": "miniature", "dataset": "fashion-mnist", "image_size": 28,
        "channels": 1, "timesteps": 100, "unet_parameters": null, "n": 256, "seeds": [0],
        "quality": "proxy"}"#;
    let mut s: Scale = serde_json::from_str(old).unwrap();
    assert!(s.n_by_experiment.is_empty());
    assert!(
        s.summary().contains("N = 256 samples per set, 1 seed"),
        "{}",
        s.summary()
    );
    s.n_by_experiment = vec![("E1".into(), 1024)];
    assert!(
        s.summary()
            .contains("N = 256 samples per set (E1: 1,024), 1 seed"),
        "{}",
        s.summary()
    );
    let back: Scale = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
