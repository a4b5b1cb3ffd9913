//! The gpu-check report: every part's JSON combined into one document (with the verdict and the
//! rates the plan reads) and one Markdown table. Pure functions of JSON, tested on the CPU.
use serde_json::{json, Value};

/// The whole check should finish within this on one GPU (the bound).
pub const BUDGET_S: f64 = 480.0;

/// Denoising steps of one full DDPM sampling run (google/ddpm-cifar10-32).
const DDPM_STEPS: f64 = 1000.0;

/// `name, memory MiB, driver` from `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`.
pub fn parse_gpu(line: &str) -> Value {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() < 3 || f[0].is_empty() {
        return Value::Null;
    }
    json!({"name": f[0], "memory_mib": f[1].parse::<u64>().ok(), "driver": f[2]})
}

fn error(part: &Value) -> Option<&str> {
    part["error"].as_str()
}

/// The document: the parts as they came, `plan_rates` for the plan, and the verdict (`pass`,
/// with `failures` naming each problem). Parity fails on any bound exceeded; fp16 on an abort,
/// a loss that did not fall or a non-finite loss whose step was not skipped; every part on an
/// error. Throughput and the sweep are measurements, judged only by running at all.
pub fn document(
    meta: Value,
    parity: Value,
    fp16: Value,
    throughput: Value,
    sampling: Value,
) -> Value {
    let mut failures = Vec::new();
    for (name, part) in [
        ("parity", &parity),
        ("fp16", &fp16),
        ("throughput", &throughput),
        ("sampling-sweep", &sampling),
    ] {
        if let Some(e) = error(part) {
            failures.push(format!("{name}: {e}"));
        }
    }
    for c in parity["checks"].as_array().into_iter().flatten() {
        if c["pass"] != true {
            failures.push(format!(
                "parity: {} is {} (bound {})",
                c["name"].as_str().unwrap_or("?"),
                c["value"],
                c["bound"]
            ));
        }
    }
    let r = &fp16["report"];
    if r.is_object() {
        if r["loss_fell"] != true {
            failures.push(format!(
                "fp16: the loss did not fall ({} -> {})",
                r["first_mean_loss"], r["last_mean_loss"]
            ));
        }
        if r["non_finite_losses"].as_u64() > r["skipped"].as_u64() {
            failures.push("fp16: a non-finite loss was not skipped".into());
        }
    }
    for w in throughput["workloads"].as_array().into_iter().flatten() {
        if let Some(e) = error(w) {
            failures.push(format!("throughput: {e}"));
        }
    }
    let best = best_batch(&sampling);
    let mut sampling = sampling;
    if sampling.is_object() && error(&sampling).is_none() {
        sampling["best"] = best.clone().unwrap_or(Value::Null);
    }
    let plan_rates = plan_rates(&meta, &fp16, &throughput, &sampling);
    json!({
        "meta": meta,
        "pass": failures.is_empty(),
        "failures": failures,
        "parity": parity,
        "fp16": fp16,
        "throughput": throughput,
        "sampling": sampling,
        "plan_rates": plan_rates,
    })
}

fn best_batch(sampling: &Value) -> Option<Value> {
    sampling["sweep"]
        .as_array()?
        .iter()
        .filter(|t| t["images_per_s"].as_f64().is_some_and(f64::is_finite))
        .max_by(|a, b| {
            let i = |t: &Value| t["images_per_s"].as_f64().unwrap_or(0.0);
            i(a).total_cmp(&i(b))
        })
        .cloned()
}

/// What the GPU profiles' plan assumes once this machine is measured: seconds per training
/// iteration (ours, the GPU profiles' training step under fp16; else the fp16 part's median
/// step) and seconds per sampling step at every batch timed, the best marked. `null` without a
/// GPU name to match or without both rates.
fn plan_rates(meta: &Value, fp16: &Value, throughput: &Value, sampling: &Value) -> Value {
    let Some(device) = meta["gpu"]["name"].as_str() else {
        return Value::Null;
    };
    let train_row = throughput["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["workload"] == "train-step-cifar10-gpu");
    let train = match train_row.and_then(|w| w["ours"]["median_s"].as_f64()) {
        Some(s) => Some((
            s,
            train_row.unwrap()["batch"].as_i64(),
            "train-step-cifar10-gpu, ours, fp16",
        )),
        None => fp16["report"]["median_step_s"].as_f64().map(|s| {
            (
                s,
                fp16["report"]["batch"].as_i64(),
                "the fp16 part's median step",
            )
        }),
    };
    let sweep: Vec<Value> = sampling["sweep"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(json!({"batch": t["batch"].as_i64()?, "seconds_per_step": t["seconds_per_step"].as_f64()?}))
        })
        .collect();
    let (Some((train_s, train_batch, train_source)), Some(best)) =
        (train, sampling["best"].as_object())
    else {
        return Value::Null;
    };
    json!({
        "device": device,
        "seconds_per_train_iteration": train_s,
        "train_batch": train_batch,
        "train_source": train_source,
        "sampling_batch": best["batch"],
        "seconds_per_sampling_step": best["seconds_per_step"],
        "sampling": sweep,
    })
}

fn sci(v: &Value) -> String {
    match v.as_f64() {
        Some(0.0) => "0".into(),
        Some(x) => format!("{x:.2e}"),
        None => "NaN".into(),
    }
}

fn secs(v: &Value) -> String {
    match v.as_f64() {
        Some(t) if t >= 10.0 => format!("{t:.1}"),
        Some(t) if t >= 0.1 => format!("{t:.3}"),
        Some(t) => format!("{t:.4}"),
        None => "–".into(),
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "**FAIL**"
    }
}

/// Memory of one side: the process as nvidia-smi saw it, and the tensors' peak where known.
fn memory(side: &Value) -> String {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    match (
        side["gpu_memory_mib"].as_f64(),
        side["peak_memory_bytes"].as_f64(),
    ) {
        (Some(m), Some(t)) => format!("{:.1} GiB (tensors {:.1})", m / 1024.0, gib(t)),
        (Some(m), None) => format!("{:.1} GiB", m / 1024.0),
        (None, Some(t)) => format!("tensors {:.1} GiB", gib(t)),
        (None, None) => "not measured".into(),
    }
}

fn rate(side: &Value) -> String {
    crate::bench::report::rate_and_share(side, 1e12, " TFLOP/s", "– TFLOP/s")
}

/// One table for humans, then what its columns mean.
/// Adds the defenses part (`baddiff gpu-check defenses`): it fails on an error or on any
/// defense that did not run to its rows.
pub fn with_defenses(mut doc: Value, defenses: Value) -> Value {
    let mut failures: Vec<String> = match error(&defenses) {
        Some(e) => vec![format!("defenses: {e}")],
        None => defenses["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["ok"] != true)
            .map(|r| {
                format!(
                    "defenses: {} did not run on the GPU: {}",
                    r["defense"].as_str().unwrap_or("?"),
                    r["error"].as_str().unwrap_or("no rows")
                )
            })
            .collect(),
    };
    if let Some(f) = doc["failures"].as_array_mut() {
        f.extend(failures.drain(..).map(Value::from));
        doc["pass"] = Value::from(f.is_empty());
    }
    doc["defenses"] = defenses;
    doc
}

pub fn markdown(doc: &Value) -> String {
    let m = &doc["meta"];
    let gpu = &m["gpu"];
    let mut s = format!(
        "# GPU check {}\n\n`{}` at commit {}{} on {} (driver {}): {} s of the {:.0} s budget. Verdict: **{}**.\n\n",
        m["stamp"].as_str().unwrap_or("?"),
        m["command"].as_str().unwrap_or("cargo xtask gpu-check"),
        m["git_commit"].as_str().map(|c| &c[..c.len().min(10)]).unwrap_or("?"),
        if m["git_dirty"] == true { " (with uncommitted changes)" } else { "" },
        gpu["name"].as_str().unwrap_or("an unnamed GPU (no nvidia-smi)"),
        gpu["driver"].as_str().unwrap_or("?"),
        secs(&m["wall_s"]),
        BUDGET_S,
        if doc["pass"] == true { "pass" } else { "FAIL" },
    );
    s.push_str("| part | item | measured | requirement | verdict |\n|---|---|---|---|---|\n");
    let mut row = |part: &str, item: &str, measured: &str, req: &str, v: &str| {
        s.push_str(&format!("| {part} | {item} | {measured} | {req} | {v} |\n"));
    };
    let parity = &doc["parity"];
    match error(parity) {
        Some(e) => row("parity", "error", e, "runs", verdict(false)),
        None => {
            for c in parity["checks"].as_array().into_iter().flatten() {
                row(
                    "parity",
                    c["name"].as_str().unwrap_or("?"),
                    &sci(&c["value"]),
                    &format!(
                        "≤ {} ({})",
                        sci(&c["bound"]),
                        c["why"].as_str().unwrap_or("")
                    ),
                    verdict(c["pass"] == true),
                );
            }
        }
    }
    let fp16 = &doc["fp16"];
    let r = &fp16["report"];
    match error(fp16) {
        Some(e) => row("fp16", "error", e, "no abort", verdict(false)),
        None => row(
            "fp16",
            &format!("{} steps at batch {}", r["steps"], r["batch"]),
            &format!(
                "loss {:.3} → {:.3} (first/last {} steps); {} skipped, {} non-finite losses; scale {}; {} s/step",
                r["first_mean_loss"].as_f64().unwrap_or(f64::NAN),
                r["last_mean_loss"].as_f64().unwrap_or(f64::NAN),
                r["window"],
                r["skipped"],
                r["non_finite_losses"],
                r["final_scale"],
                secs(&r["median_step_s"]),
            ),
            "no abort; the loss falls; every non-finite loss skipped",
            verdict(
                r["loss_fell"] == true
                    && r["non_finite_losses"].as_u64() <= r["skipped"].as_u64(),
            ),
        ),
    }
    let tp = &doc["throughput"];
    match error(tp) {
        Some(e) => row("throughput", "error", e, "runs", verdict(false)),
        None => {
            for w in tp["workloads"].as_array().into_iter().flatten() {
                if let Some(e) = error(w) {
                    row("throughput", "error", e, "runs", verdict(false));
                    continue;
                }
                let (o, p) = (&w["ours"], &w["peer"]);
                row(
                    "throughput",
                    &format!(
                        "{} (batch {}{})",
                        w["workload"].as_str().unwrap_or("?"),
                        w["batch"],
                        if w["amp"] == true { ", fp16" } else { "" },
                    ),
                    &format!(
                        "ours {} s, peer {} s: **{:.2}×**; ours {}, peer {}; memory ours {}, peer {}",
                        secs(&o["median_s"]),
                        secs(&p["median_s"]),
                        w["ratio"].as_f64().unwrap_or(f64::NAN),
                        rate(o),
                        rate(p),
                        memory(o),
                        memory(p),
                    ),
                    &format!("vs {}", p["implementation"].as_str().unwrap_or("?")),
                    "–",
                );
            }
        }
    }
    let sampling = &doc["sampling"];
    match error(sampling) {
        Some(e) => row("sampling batch", "error", e, "runs", verdict(false)),
        None => {
            let best = sampling["best"]["batch"].as_i64();
            for t in sampling["sweep"].as_array().into_iter().flatten() {
                let measured = match t["error"].as_str() {
                    Some(e) => format!("stopped: {e}"),
                    None => format!(
                        "{} s/step, {:.1} images/s",
                        secs(&t["seconds_per_step"]),
                        t["images_per_s"].as_f64().unwrap_or(f64::NAN)
                    ),
                };
                let is_best = t["batch"].as_i64() == best;
                row(
                    "sampling batch",
                    &t["batch"].to_string(),
                    &measured,
                    "most images/s",
                    if is_best { "**best**" } else { "–" },
                );
            }
        }
    }
    let defenses = &doc["defenses"];
    match error(defenses) {
        Some(e) => row("defenses", "error", e, "runs", verdict(false)),
        None => {
            for r in defenses["runs"].as_array().into_iter().flatten() {
                row(
                    "defenses",
                    r["defense"].as_str().unwrap_or("?"),
                    &match r["error"].as_str() {
                        Some(e) => e.to_string(),
                        None => format!("{} rows in {} s", r["rows"], secs(&r["seconds"])),
                    },
                    "runs on the GPU at toy amounts",
                    verdict(r["ok"] == true),
                );
            }
        }
    }
    s.push_str(&format!(
        "\nParity: CUDA against the CPU on random weights, float32 with TF32 off; value = max |cuda − cpu| / max |cpu| (the loss and gradient norm: |cuda − cpu| / |cpu|).\n\
         fp16: the trainer's float16 step (autocast, loss scaling, a step skipped on overflow) on random CIFAR-shaped data.\n\
         Throughput: peer/ours > 1 means ours is faster; medians over {} alternating rounds; the training step under fp16 as the GPU profiles train, the rest in float32. \
         TFLOP/s counts matmuls, convolutions and attention (torch.utils.flop_counter), as a share of the float32 matmul ceiling{}; an fp16 workload may exceed it. \
         Memory: the process as nvidia-smi lists it (CUDA context and cache included; \"not measured\" where the driver does not list the process), and the peer's tensor peak (torch.cuda.max_memory_allocated; tch offers no such reading).\n\
         Sampling batch: one batch of DDPM sampling with the CIFAR-10 UNet per size, {} steps timed; images/s of a full {}-step run. The GPU profiles' plan uses these rates (`plan_rates` in the JSON).\n\
         Defenses: every defense kind a profile can run (ANP, ANP pruning, Elijah, TERD, the input-noise test), once, at toy amounts, on a random model of the CIFAR-10 architecture: it catches a tensor left on the wrong device; its numbers mean nothing.\n",
        m["rounds"],
        match tp["ceiling_flops_per_s"].as_f64() {
            Some(c) => format!(" ({:.1} TFLOP/s here)", c / 1e12),
            None => String::new(),
        },
        sampling["steps"],
        DDPM_STEPS,
    ));
    if let Some(f) = doc["failures"].as_array().filter(|f| !f.is_empty()) {
        s.push_str("\nProblems:\n");
        for x in f {
            s.push_str(&format!("- {}\n", x.as_str().unwrap_or("?")));
        }
    }
    s
}

#[cfg(test)]
mod tests;
