use super::*;

/// A synthetic run on an imagined GPU: every part present, one parity bound exceeded.
fn synthetic() -> Value {
    let meta = json!({
        "stamp": "20260101-000000", "command": "cargo xtask gpu-check",
        "git_commit": "0123456789abcdef", "git_dirty": false,
        "gpu": parse_gpu("NVIDIA H100 80GB HBM3, 81559, 550.54.15"),
        "rounds": 2, "wall_s": 301.5, "budget_s": BUDGET_S,
    });
    let check = |name: &str, value: f64, bound: f64| {
        json!({"name": name, "metric": "max |other - cpu| / max |cpu|", "value": value,
               "bound": bound, "why": "float32 order", "pass": value <= bound})
    };
    let parity = json!({"part": "parity", "tf32": "off", "checks": [
        check("unet forward", 3.2e-6, 1e-3),
        check("ddpm step (t = 999, 500, 1)", 4e-5, 1e-5),
    ]});
    let fp16 = json!({"part": "fp16", "report": {
        "steps": 200, "batch": 128, "skipped": 3, "non_finite_losses": 3,
        "final_scale": 8192.0, "first_mean_loss": 1.02, "last_mean_loss": 0.21,
        "window": 20, "loss_fell": true, "median_step_s": 0.071, "losses": [1.0, 0.2],
    }});
    let side =
        |imp: &str, median: f64, flops: f64, frac: f64, mib: Option<u64>, bytes: Option<f64>| {
            json!({"implementation": imp, "median_s": median, "flops_per_s": flops,
               "fraction_of_ceiling": frac, "gpu_memory_mib": mib, "peak_memory_bytes": bytes})
        };
    let throughput = json!({"ceiling_flops_per_s": 5.0e13, "workloads": [
        {"workload": "train-step-cifar10-gpu", "batch": 128, "amp": true, "ratio": 1.25,
         "ours": side("ours", 0.08, 2.0e13, 0.4, Some(6144), None),
         "peer": side("PyTorch eager", 0.1, 1.6e13, 0.32, Some(5120), Some(4.0 * (1u64 << 30) as f64))},
        {"error": "python/bench/peer.py sample-cifar10 failed: CUDA out of memory"},
    ]});
    let sampling = json!({"part": "sampling-sweep", "steps": 10, "sweep": [
        {"batch": 256, "seconds_per_step": 0.05, "images_per_s": 5.12, "error": null},
        {"batch": 512, "seconds_per_step": 0.08, "images_per_s": 6.4, "error": null},
        {"batch": 1024, "seconds_per_step": null, "images_per_s": null, "error": "CUDA out of memory"},
    ]});
    let defenses = json!({"part": "defenses", "runs": [
        {"defense": "anp", "ok": true, "seconds": 1.5, "rows": 30, "error": null},
        {"defense": "terd", "ok": false, "seconds": 0.2, "rows": 0,
         "error": "Expected all tensors to be on the same device"},
    ]});
    with_defenses(document(meta, parity, fp16, throughput, sampling), defenses)
}

#[test]
fn the_table_of_a_synthetic_run() {
    insta::assert_snapshot!(markdown(&synthetic()));
}

#[test]
fn the_verdict_names_each_problem_and_the_plan_rates_take_the_best_batch() {
    let doc = synthetic();
    assert_eq!(doc["pass"], false);
    let failures: Vec<&str> = doc["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].starts_with("parity: ddpm step"), "{failures:?}");
    assert!(
        failures[1].contains("sample-cifar10 failed"),
        "{failures:?}"
    );
    assert!(
        failures[2].starts_with("defenses: terd did not run on the GPU: Expected all tensors"),
        "{failures:?}"
    );
    assert_eq!(doc["sampling"]["best"]["batch"], 512);
    assert_eq!(
        doc["plan_rates"],
        json!({
            "device": "NVIDIA H100 80GB HBM3",
            "seconds_per_train_iteration": 0.08,
            "train_batch": 128,
            "train_source": "train-step-cifar10-gpu, ours, fp16",
            "sampling_batch": 512,
            "seconds_per_sampling_step": 0.08,
            "sampling": [
                {"batch": 256, "seconds_per_step": 0.05},
                {"batch": 512, "seconds_per_step": 0.08},
            ],
        })
    );
}

#[test]
fn fp16_failures_and_part_errors_fail_the_check() {
    let meta = json!({"gpu": null});
    let fp16 = json!({"report": {"loss_fell": false, "non_finite_losses": 2, "skipped": 1,
                                "first_mean_loss": 0.5, "last_mean_loss": 0.6}});
    let doc = document(
        meta,
        json!({"checks": []}),
        fp16,
        json!({"error": "no python"}),
        json!({"error": "baddiff gpu-check sampling-sweep failed: boom"}),
    );
    assert_eq!(doc["pass"], false);
    let text = doc["failures"].to_string();
    for needle in [
        "did not fall",
        "not skipped",
        "throughput: no python",
        "sampling-sweep: baddiff",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // Without a GPU name there is nothing for the plan to match.
    assert!(doc["plan_rates"].is_null());
    let md = markdown(&doc);
    assert!(
        md.contains("| throughput | error | no python | runs | **FAIL** |"),
        "{md}"
    );
    assert!(md.contains("Verdict: **FAIL**"), "{md}");
}

#[test]
fn gpu_lines_parse_or_are_null() {
    assert_eq!(
        parse_gpu("NVIDIA A100-SXM4-40GB, 40960, 535.104.05"),
        json!({"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960, "driver": "535.104.05"})
    );
    assert!(parse_gpu("").is_null());
    assert!(parse_gpu("No devices were found").is_null());
}

/// A run whose only problem is a defense that failed on the GPU fails; one whose defenses all
/// ran passes.
#[test]
fn a_defense_that_fails_on_the_gpu_fails_the_check() {
    let base = || {
        document(
            json!({"gpu": null}),
            json!({"checks": []}),
            json!({"report": {"loss_fell": true, "non_finite_losses": 0, "skipped": 0}}),
            json!({"workloads": []}),
            json!({"sweep": []}),
        )
    };
    assert_eq!(base()["pass"], true);
    let ok = json!({"runs": [{"defense": "elijah", "ok": true, "rows": 40, "seconds": 2.0}]});
    assert_eq!(with_defenses(base(), ok)["pass"], true);
    let part_error = with_defenses(
        base(),
        json!({"error": "baddiff gpu-check defenses failed"}),
    );
    assert_eq!(part_error["pass"], false);
    assert!(part_error["failures"][0]
        .as_str()
        .unwrap()
        .starts_with("defenses: baddiff"));
}
