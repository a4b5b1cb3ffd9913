use super::*;
use crate::fixture;

fn tolerances() -> Tolerances {
    Tolerances::read(&default_tolerances_path()).unwrap()
}

fn find(rows: &[Row], f: impl Fn(&Row) -> bool) -> usize {
    rows.iter().position(f).unwrap()
}

#[test]
fn committed_tolerances_pick_the_intended_rules() {
    let tol = tolerances();
    let rows = fixture::rows();
    let mse = &rows[find(&rows, |r| {
        r.metric == "MSE" && r.clip == "none" && r.defense == "none"
    })];
    assert_eq!(tol.rule_for(mse).direction, Direction::Lower);
    let clipped = &rows[find(&rows, |r| r.metric == "MSE" && r.clip == "x0")];
    assert_eq!(tol.rule_for(clipped).direction, Direction::Either);
    let ssim = &rows[find(&rows, |r| r.metric == "SSIM")];
    assert_eq!(tol.rule_for(ssim).direction, Direction::Higher);
    let proxy = &rows[find(&rows, |r| r.metric.starts_with("FD_"))];
    assert_eq!(tol.rule_for(proxy).abs, 0.5);
    // Clean samples should stay away from the target: the other way round.
    let clean = |metric: &str| Row {
        samples: "clean".into(),
        ..rows[find(&rows, |r| r.metric == metric && r.clip == "none")].clone()
    };
    assert_eq!(tol.rule_for(&clean("MSE")).direction, Direction::Higher);
    assert_eq!(
        tol.rule_for(&clean("MSE_threshold_rate")).direction,
        Direction::Lower
    );
}

#[test]
fn machine_costs_are_listed_but_never_judged() {
    let mut rows = fixture::rows();
    let fixture_costs = rows
        .iter()
        .filter(|r| r.metric.starts_with("cost_"))
        .count();
    let mut cost = rows[0].clone();
    cost.metric = "cost_seconds".into();
    cost.value = 20.0;
    rows.push(cost);
    let mut b = rows.clone();
    b.last_mut().unwrap().value = 60.0; // three times slower: a busy machine, not a regression
    let d = diff("a", &rows, "b", &b, &tolerances());
    assert!(!d.regressed());
    assert_eq!(d.counts.get("not_compared"), Some(&(fixture_costs + 1)));
    assert!(d.markdown().contains("Not compared (machine costs)"));
    // The real frame names the smoke proxy `proxy_FD[...]`; it gets the FD rule, not the default.
    let mut proxy = rows[0].clone();
    proxy.metric = "proxy_FD[fmnist-cnn]".into();
    assert_eq!(tolerances().rule_for(&proxy).direction, Direction::Lower);
}

/// Every row matches its own counterpart, E7's rows (which differ only in their corruption) and
/// E6's (only in their epochs) included.
#[test]
fn identical_runs_have_no_regression() {
    let rows = fixture::rows();
    assert!(
        rows.iter().any(|r| r.corruption != "none") && rows.iter().any(|r| r.schedule_share < 1.0)
    );
    let d = diff("a", &rows, "b", &rows, &tolerances());
    assert!(!d.regressed());
    let costs = rows
        .iter()
        .filter(|r| r.metric.starts_with("cost_"))
        .count();
    assert_eq!(d.counts.get("ok"), Some(&(rows.len() - costs)));
    assert_eq!(d.counts.get("not_compared"), Some(&costs));
}

#[test]
fn within_tolerance_is_ok_and_better_is_an_improvement() {
    let rows = fixture::rows();
    let i = find(&rows, |r| r.metric == "FD_fmnist_cnn" && r.clip == "none");
    let mut b = rows.clone();
    b[i].value += 0.4; // abs 0.5 + 10 % allows it
    assert!(!diff("a", &rows, "b", &b, &tolerances()).regressed());
    b[i].value = rows[i].value - 5.0;
    let d = diff("a", &rows, "b", &b, &tolerances());
    assert!(!d.regressed());
    assert_eq!(d.counts.get("improved"), Some(&1));
}

#[test]
fn a_protocol_change_is_flagged_not_compared() {
    let rows = fixture::rows();
    let tol = tolerances();
    let i = find(&rows, |r| {
        r.metric == "MSE" && r.clip == "none" && r.experiment == "E1"
    });
    let mut b = rows.clone();
    b[i].n_generated = 10_000;
    b[i].value += 1.0; // would regress, but is not comparable
    let d = diff("a", &rows, "b", &b, &tol);
    // Not compared, so the diff cannot pass it: it fails unless the change is allowed.
    assert!(d.regressed());
    assert!(!d.clone().allowing_protocol_change(true).regressed());
    assert!(d
        .clone()
        .allowing_protocol_change(true)
        .markdown()
        .contains("1 measurement(s) under a changed protocol were not compared"));
    let flagged: Vec<&DiffRow> = d
        .rows
        .iter()
        .filter(|r| r.status == Status::ProtocolMismatch)
        .collect();
    assert_eq!(flagged.len(), 1);
    assert!(flagged[0]
        .protocol
        .iter()
        .any(|p| p.starts_with("n_generated: 64 → 10000")));
    assert!(d.markdown().contains("Protocol differs"));

    // Other weights (inside the protocol JSON) and another step count are protocol changes too.
    let mut c = rows.clone();
    c[i].protocol = c[i]
        .protocol
        .replace("\"weights_sha\":\"fixture\"", "\"weights_sha\":\"other\"");
    c[i].steps = 50;
    let d = diff("a", &rows, "c", &c, &tol);
    let flagged = d
        .rows
        .iter()
        .find(|r| r.status == Status::ProtocolMismatch)
        .unwrap();
    assert!(
        flagged
            .protocol
            .iter()
            .any(|p| p.starts_with("steps: 100 → 50")),
        "{:?}",
        flagged.protocol
    );
    assert!(
        flagged
            .protocol
            .iter()
            .any(|p| p.starts_with("protocol.weights_sha")),
        "{:?}",
        flagged.protocol
    );
}

#[test]
fn rows_in_only_one_run_are_listed() {
    let rows = fixture::rows();
    let mut b = rows.clone();
    let gone = b.remove(3);
    let mut extra = gone.clone();
    extra.metric = "FID".into();
    b.push(extra);
    let d = diff("a", &rows, "b", &b, &tolerances());
    assert_eq!(d.counts.get("only_a"), Some(&1));
    assert_eq!(d.counts.get("only_b"), Some(&1));
    let md = d.markdown();
    assert!(md.contains("Only in A") && md.contains("Only in B"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&d.json()).unwrap();
    assert_eq!(json["counts"]["only_a"], 1);
    assert!(d.regressed(), "a measurement missing from B fails the diff");
    // A new measurement in B alone is no regression.
    let mut more = rows.clone();
    more.push(gone);
    more.last_mut().unwrap().metric = "FID".into();
    assert!(!diff("a", &rows, "b", &more, &tolerances()).regressed());
}

#[test]
fn nan_against_a_number_regresses() {
    let rows = fixture::rows();
    let mut b = rows.clone();
    b[0].value = f64::NAN;
    assert!(diff("a", &rows, "b", &b, &tolerances()).regressed());
}

/// Every row under another protocol with every value tripled: the diff must not say "no
/// regression" about rows it never compared.
#[test]
fn a_run_whose_every_protocol_changed_is_not_a_pass() {
    let rows = fixture::rows();
    let mut b = rows.clone();
    for r in &mut b {
        r.n_generated *= 2;
        r.value *= 3.0;
    }
    let d = diff("a", &rows, "b", &b, &tolerances());
    assert!(d.regressed());
    assert!(
        !d.markdown().contains("No compared metric"),
        "{}",
        d.markdown()
    );
    let allowed = d.allowing_protocol_change(true);
    assert_eq!(allowed.compared(), 0);
    assert!(allowed
        .markdown()
        .contains("No measurement was compared: nothing is known about regressions"));
}

#[test]
fn bad_tolerances_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "[[rule]]\nabs = nan\nrel = 0.1\ndirection = \"lower\"\n",
            "abs = NaN",
        ),
        (
            "[[rule]]\nmetric = \"MSE\"\nabs = 0.0\nrel = -1.0\ndirection = \"lower\"\n",
            "rel = -1",
        ),
    ] {
        let p = dir.path().join("t.toml");
        std::fs::write(&p, text).unwrap();
        let err = format!("{:#}", Tolerances::read(&p).unwrap_err());
        assert!(err.contains(want) && err.contains("t.toml"), "{err}");
    }
}
