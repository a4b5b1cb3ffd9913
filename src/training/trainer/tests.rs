use super::*;
use tch::nn::Module;

/// A small learnable problem: predict the noise added to fixed inputs with a linear layer.
struct Denoise {
    net: nn::Linear,
    data: Tensor,
}

impl Objective for Denoise {
    fn loss(&mut self, indices: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let x = self.data.index_select(0, indices);
        let noise = rng.randn(&x.size());
        Ok(self
            .net
            .forward(&(&x + &noise))
            .mse_loss(&noise, tch::Reduction::Mean))
    }
}

fn model(seed: u64) -> (nn::VarStore, Denoise) {
    let mut rng = Rng::seeded(seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = rng.with(|| nn::linear(vs.root() / "net", 4, 4, Default::default()));
    // The data are the same for every model; only the initial weights depend on `seed`.
    rng.reseed(1234);
    let data = rng.randn(&[20, 4]) * 0.1;
    (vs, Denoise { net, data })
}

fn settings(epochs: u64) -> TrainSettings {
    TrainSettings {
        epochs,
        batch: 3,
        effective_batch: 6,
        learning_rate: 0.05,
        warmup_steps: 4,
        grad_clip: 1.0,
        save_every_epochs: 1,
        seed: 5,
        steps: None,
        mixed_precision: None,
        keep_epochs: vec![],
    }
}

struct Log(Vec<StepRecord>, Option<u64>);
impl Observer for Log {
    fn iteration(&mut self, r: &StepRecord) {
        self.0.push(r.clone());
    }
    fn checkpoint(&mut self, epoch: u64, _: &Path) -> Result<()> {
        // Simulates a kill right after the checkpoint of epoch `self.1`.
        if Some(epoch) == self.1 {
            bail!("killed after epoch {epoch}");
        }
        Ok(())
    }
}

fn weights(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter().map(|(_, t)| t.detach().copy()).collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(1);
    let mut log = Log(vec![], None);
    train(
        &vs,
        &mut obj,
        20,
        &settings(4),
        "k",
        &dir.path().join("a"),
        &mut log,
    )
    .unwrap();
    let straight = weights(&vs);

    let (vs, mut obj) = model(1);
    let mut first = Log(vec![], Some(2));
    let err = train(
        &vs,
        &mut obj,
        20,
        &settings(4),
        "k",
        &dir.path().join("b"),
        &mut first,
    )
    .unwrap_err();
    assert!(err.to_string().contains("killed after epoch 2"));
    // A fresh process: new model (other init), same directory.
    let (vs, mut obj) = model(99);
    let mut second = Log(vec![], None);
    let state = train(
        &vs,
        &mut obj,
        20,
        &settings(4),
        "k",
        &dir.path().join("b"),
        &mut second,
    )
    .unwrap();
    assert_eq!(state.epochs_done, 4);
    assert_eq!(state.iterations_done, 4 * 7);
    for (a, b) in straight.iter().zip(weights(&vs)) {
        assert!(
            a.equal(&b),
            "resumed weights differ from the uninterrupted run"
        );
    }
    // The resumed half logged exactly the iterations the first half did not.
    assert_eq!(first.0.len() + second.0.len(), log.0.len());
    assert_eq!(second.0.first().unwrap().iteration, 14);
    assert_eq!(second.0, log.0[14..]);
}

#[test]
fn training_reduces_the_loss_and_follows_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(2);
    let mut log = Log(vec![], None);
    train(&vs, &mut obj, 20, &settings(30), "k", dir.path(), &mut log).unwrap();
    let mean = |r: &[StepRecord]| r.iter().map(|s| s.loss).sum::<f64>() / r.len() as f64;
    let (head, tail) = (mean(&log.0[..14]), mean(&log.0[log.0.len() - 14..]));
    assert!(tail < 0.5 * head, "loss did not fall: {head} -> {tail}");
    assert_eq!(log.0[0].lr, 0.0, "LambdaLR starts at factor 0");
    assert!(
        log.0.last().unwrap().lr < 1e-3 * 0.05,
        "the cosine schedule ends near 0"
    );
    // 7 micro-batches per epoch, accumulation 2: steps after micro-batches 2, 4, 6 and the last (7).
    let synced: Vec<bool> = log.0[..7].iter().map(|r| r.grad_norm.is_some()).collect();
    assert_eq!(synced, [false, true, false, true, false, true, true]);
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(3);
    train(
        &vs,
        &mut obj,
        20,
        &settings(1),
        "k",
        dir.path(),
        &mut Log(vec![], None),
    )
    .unwrap();
    let mut other = settings(1);
    other.learning_rate = 0.1;
    let err = train(
        &vs,
        &mut obj,
        20,
        &other,
        "k",
        dir.path(),
        &mut Log(vec![], None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn batch_must_divide_the_effective_batch() {
    let mut s = settings(1);
    s.batch = 4;
    let err = s.accumulation().unwrap_err().to_string();
    assert!(err.contains("does not divide"), "{err}");
}

#[test]
fn corrupt_state_file_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATE_JSON), "{not json").unwrap();
    let (vs, mut obj) = model(4);
    let err = format!(
        "{:#}",
        train(
            &vs,
            &mut obj,
            20,
            &settings(1),
            "k",
            dir.path(),
            &mut Log(vec![], None)
        )
        .unwrap_err()
    );
    assert!(err.contains("corrupt") && err.contains("delete"), "{err}");
}

#[test]
fn a_step_limit_stops_mid_epoch_with_a_final_update_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(2);
    let mut log = Log(vec![], None);
    // 7 micro-batches per epoch: 10 steps end inside the second epoch, on an odd micro-batch.
    let s = TrainSettings {
        steps: Some(10),
        ..settings(30)
    };
    let state = train(&vs, &mut obj, 20, &s, "k", dir.path(), &mut log).unwrap();
    assert_eq!((state.iterations_done, log.0.len()), (10, 10));
    assert!(
        log.0[9].grad_norm.is_some(),
        "the last step updates the weights"
    );
    let spans_10 = CosineWithWarmup {
        base_lr: 0.05,
        warmup: 4,
        total: 10,
    };
    assert_eq!(
        log.0[9].lr,
        spans_10.lr(9),
        "the schedule spans the 10 steps"
    );
    assert_eq!(iterations_done(dir.path(), "k").unwrap(), 10);
    // Rerun on the finished checkpoint: nothing more to do.
    let mut again = Log(vec![], None);
    train(&vs, &mut obj, 20, &s, "k", dir.path(), &mut again).unwrap();
    assert!(again.0.is_empty());
}

#[test]
fn mixed_precision_is_refused_where_it_cannot_run_and_absent_from_float32_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(2);
    let mut log = Log(vec![], None);
    let fp16 = TrainSettings {
        mixed_precision: Some(MixedPrecision::Fp16),
        ..settings(1)
    };
    let err = train(&vs, &mut obj, 20, &fp16, "k", dir.path(), &mut log).unwrap_err();
    assert!(
        format!("{err:#}").contains("needs a CUDA device"),
        "{err:#}"
    );
    let bf16 = TrainSettings {
        mixed_precision: Some(MixedPrecision::Bf16),
        ..settings(1)
    };
    let err = train(&vs, &mut obj, 20, &bf16, "k", dir.path(), &mut log).unwrap_err();
    assert!(format!("{err:#}").contains("use \"fp16\""), "{err:#}");
    assert!(log.0.is_empty(), "nothing trained");
    // Unset, the field is not serialised: float32 runs keep their stage keys.
    let json = serde_json::to_value(settings(1)).unwrap();
    assert!(json.get("mixed_precision").is_none());
    assert_eq!(
        serde_json::to_value(&fp16).unwrap()["mixed_precision"],
        "fp16"
    );
}

#[test]
fn a_checkpoint_of_another_key_is_refused_naming_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut obj) = model(3);
    let s = settings(2);
    // Killed after the first epoch's checkpoint.
    let mut first = Log(vec![], Some(1));
    train(&vs, &mut obj, 20, &s, "cell-a", dir.path(), &mut first).unwrap_err();
    let mut other = Log(vec![], None);
    let err = train(&vs, &mut obj, 20, &s, "cell-b", dir.path(), &mut other).unwrap_err();
    let e = format!("{err:#}");
    assert!(
        e.contains("another cell") && e.contains("cell-a") && e.contains("cell-b"),
        "{e}"
    );
    assert!(
        other.0.is_empty(),
        "nothing trained on the other cell's checkpoint"
    );
    assert_eq!(iterations_done(dir.path(), "cell-a").unwrap(), 7);
    assert!(iterations_done(dir.path(), "cell-b").is_err());
}

/// [`Denoise`] whose loss overflows (is multiplied by inf) at the given iterations, as a float16
/// loss can.
struct Overflowing {
    inner: Denoise,
    at: Vec<u64>,
    iteration: u64,
}

impl Objective for Overflowing {
    fn loss(&mut self, indices: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let loss = self.inner.loss(indices, rng)?;
        let i = self.iteration;
        self.iteration += 1;
        Ok(if self.at.contains(&i) {
            loss * f64::INFINITY
        } else {
            loss
        })
    }
}

/// Under loss scaling an overflow skips its optimizer step, halves the scale and the run goes
/// on; the learning rates, the skipped steps and the final scale equal accelerate 0.11.0's
/// (the official code's pin) given the same overflows and sync iterations. With gradient
/// accumulation (2 micro-batches), one overflow lands mid-accumulation and one on a sync step,
/// and two overflow in a row.
#[test]
fn float16_overflows_skip_steps_and_hold_the_schedule_as_accelerate_does() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, inner) = model(1);
    let at = vec![2, 5, 9, 10, 11];
    let mut obj = Overflowing {
        inner,
        at: at.clone(),
        iteration: 0,
    };
    let mut log = Log(vec![], None);
    let s = settings(3);
    let state = train_loop(
        &vs,
        &mut obj,
        20,
        &s,
        "overflow-test",
        dir.path(),
        &mut log,
        true,
    )
    .unwrap();
    let recs = &log.0;
    assert_eq!(state.iterations_done, recs.len() as u64);
    assert!(state.skipped_steps >= 3, "{state:?}");
    assert_eq!(
        state.skipped_steps,
        recs.iter().filter(|r| r.skipped).count() as u64
    );
    for w in weights(&vs) {
        assert!(
            w.isfinite().all().int64_value(&[]) == 1,
            "non-finite weights"
        );
    }

    let overflow: Vec<i64> = (0..recs.len() as u64)
        .map(|i| at.contains(&i) as i64)
        .collect();
    let sync: Vec<i64> = recs
        .iter()
        .map(|r| (r.grad_norm.is_some() || r.skipped) as i64)
        .collect();
    let total = s.total_iterations(7).to_string();
    let (lr, warmup) = (s.learning_rate.to_string(), s.warmup_steps.to_string());
    let out = crate::testing::oracle(
        "accelerate_fp16",
        &[
            ("overflow", &Tensor::from_slice(&overflow)),
            ("sync", &Tensor::from_slice(&sync)),
        ],
        &[&lr, &warmup, &total],
    );
    let theirs_lr: Vec<f64> = Vec::try_from(&out["lr"]).unwrap();
    let ours_lr: Vec<f64> = recs.iter().map(|r| r.lr).collect();
    for (i, (a, b)) in ours_lr.iter().zip(&theirs_lr).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12,
            "iteration {i}: lr {a} vs accelerate's {b}"
        );
    }
    let theirs_skipped: Vec<i64> = Vec::try_from(&out["skipped"]).unwrap();
    for (i, r) in recs.iter().enumerate() {
        let skipped_here = sync[i] == 1 && theirs_skipped[i] == 1;
        assert_eq!(r.skipped, skipped_here, "iteration {i}");
    }
    let scale = out["scale"].double_value(&[0]);
    assert_eq!(state.scaler.as_ref().unwrap().scale, scale);
    assert_eq!(scale, 65_536.0 * 0.5f64.powi(state.skipped_steps as i32));
    // The schedule stood still exactly while the last step was a skipped one.
    assert!(state.schedule_held >= state.skipped_steps);
}
