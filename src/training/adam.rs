//! Adam as `torch.optim.Adam` computes it (single-tensor path, defaults betas (0.9, 0.999),
//! eps 1e-8, no weight decay), and `torch.nn.utils.clip_grad_norm_`.
//!
//! Why not tch's optimizer: it wraps libtorch's C++ Adam, whose moments cannot be read or
//! restored through tch, and an exact resume needs them in the checkpoint.
use tch::{COptimizer, Kind, Tensor};

pub struct Adam {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: i64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// libtorch's optimizer base over the same parameters, used only for its `zero_grad`, which
    /// resets gradients to undefined (`set_to_none`, torch's default): tch offers no other way.
    /// Its own step never runs.
    grad_reset: Option<COptimizer>,
}

impl Adam {
    /// Optimises `params` (shallow clones of the model's variables share their storage).
    pub fn new(params: Vec<Tensor>) -> Adam {
        let zeros = |p: &Tensor| p.zeros_like().detach();
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        let grad_reset = COptimizer::sgd(0.0, 0.0, 0.0, 0.0, false)
            .and_then(|mut o| {
                for p in &params {
                    o.add_parameters(p, 0)?;
                }
                Ok(o)
            })
            .ok();
        Adam {
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            grad_reset,
        }
    }

    /// Number of steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Drops the gradients, as torch's `zero_grad()` (set to none): the next backward writes
    /// fresh gradients instead of zero-filling and then adding into the old buffers, and a
    /// parameter that receives no gradient is skipped by [`Adam::step`], as in torch.
    pub fn zero_grad(&mut self) {
        if let Some(o) = &self.grad_reset {
            if o.zero_grad().is_ok() {
                return;
            }
        }
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2) = self.betas;
        let bias_correction1 = 1.0 - b1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias_correction1;
        for ((p, m), v) in self
            .params
            .iter_mut()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let _ = m.lerp_(&g, 1.0 - b1);
            // libtorch's kernels evaluate `self + value * t1 * t2` and `self + value * t1 / t2` left to
            // right; folding `value` into t1 keeps the same rounding.
            let _ = v.g_mul_scalar_(b2).addcmul_(&(&g * (1.0 - b2)), &g);
            // In place after the sqrt (one temporary, not three), as torch's `.add_(eps)`.
            let mut denom = v.sqrt();
            let _ = denom.g_div_scalar_(bias_correction2_sqrt);
            let _ = denom.g_add_scalar_(self.eps);
            let _ = p.addcdiv_(&(&*m * -step_size), &denom);
        }
    }

    /// The optimizer state as named tensors, for checkpoints (`exp_avg.{i}`, `exp_avg_sq.{i}`, `step`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from(self.step))];
        for (i, (m, v)) in self.exp_avg.iter().zip(&self.exp_avg_sq).enumerate() {
            out.push((format!("exp_avg.{i}"), m.shallow_clone()));
            out.push((format!("exp_avg_sq.{i}"), v.shallow_clone()));
        }
        out
    }

    /// Restores a state written by [`Adam::state`]; shapes must match the parameters.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> anyhow::Result<()> {
        let get = |k: &str| {
            state
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    anyhow::anyhow!("optimizer state lacks `{k}`: the checkpoint is incomplete")
                })
        };
        let step = get("step")?.int64_value(&[]);
        let _guard = tch::no_grad_guard();
        for i in 0..self.params.len() {
            for (name, dst) in [
                ("exp_avg", &mut self.exp_avg[i]),
                ("exp_avg_sq", &mut self.exp_avg_sq[i]),
            ] {
                let src = get(&format!("{name}.{i}"))?;
                anyhow::ensure!(
                    src.size() == dst.size(),
                    "optimizer state `{name}.{i}` has shape {:?}, parameter has {:?}: checkpoint of another model",
                    src.size(),
                    dst.size()
                );
                dst.copy_(src);
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales all gradients so their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (coefficient max_norm / (norm + 1e-6), clamped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let _guard = tch::no_grad_guard();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
    let total = Tensor::stack(&norms, 0).norm();
    let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
    for g in &grads {
        let _ = g.shallow_clone().g_mul_(&coef);
    }
    total.to_kind(Kind::Double).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, oracle};

    /// Three steps of ours and of torch.optim.Adam with clip_grad_norm_, from the same start and
    /// the same gradients: parameters must agree to float32 rounding.
    #[test]
    fn matches_torch_adam_with_grad_clipping() {
        let mut rng = crate::rng::Rng::seeded(11);
        let w0 = rng.randn(&[5, 4]);
        let b0 = rng.randn(&[4]);
        let gs: Vec<Tensor> = (0..6)
            .map(|k| rng.randn(if k % 2 == 0 { &[5, 4][..] } else { &[4][..] }) * 3.0)
            .collect();
        drop(rng);
        let w = w0.copy().set_requires_grad(true);
        let b = b0.copy().set_requires_grad(true);
        let mut adam = Adam::new(vec![w.shallow_clone(), b.shallow_clone()]);
        let lrs = [1e-2, 5e-3, 2e-3];
        for step in 0..3 {
            adam.zero_grad();
            // Gradients set through a linear "loss" so they equal gs exactly.
            let loss =
                (&w * &gs[2 * step]).sum(Kind::Float) + (&b * &gs[2 * step + 1]).sum(Kind::Float);
            loss.backward();
            clip_grad_norm(&[w.shallow_clone(), b.shallow_clone()], 1.0);
            adam.step(lrs[step]);
        }
        let mut inputs: Vec<(String, Tensor)> = vec![("w0".into(), w0), ("b0".into(), b0)];
        for (i, g) in gs.iter().enumerate() {
            inputs.push((format!("g{i}"), g.shallow_clone()));
        }
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let out = oracle("adam", &refs, &["0.01", "0.005", "0.002"]);
        assert_close("weight after 3 Adam steps", &w.detach(), &out["w"], 1e-6);
        assert_close("bias after 3 Adam steps", &b.detach(), &out["b"], 1e-6);
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        let run = |split: bool| {
            let p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
            let mut adam = Adam::new(vec![p.shallow_clone()]);
            for k in 0..4 {
                if split && k == 2 {
                    let state = adam.state();
                    let saved: Vec<(String, Tensor)> =
                        state.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
                    adam = Adam::new(vec![p.shallow_clone()]);
                    adam.load_state(&saved).unwrap();
                }
                adam.zero_grad();
                (&p * &p * (k as f64 + 1.0)).sum(Kind::Float).backward();
                adam.step(0.1);
            }
            p.detach()
        };
        assert!(run(false).equal(&run(true)));
    }

    #[test]
    fn load_state_rejects_another_models_state() {
        let a = Adam::new(vec![Tensor::zeros([3], (Kind::Float, tch::Device::Cpu))]);
        let mut b = Adam::new(vec![Tensor::zeros([4], (Kind::Float, tch::Device::Cpu))]);
        let err = b.load_state(&a.state()).unwrap_err().to_string();
        assert!(
            err.contains("exp_avg.0") && err.contains("another model"),
            "{err}"
        );
        let err = b.load_state(&[]).unwrap_err().to_string();
        assert!(err.contains("lacks `step`"), "{err}");
    }
}
