//! The learning-rate schedule of the official code: diffusers' `get_cosine_schedule_with_warmup`
//! (linear warm-up from 0, then half a cosine down to 0), stepped once per optimizer step.
//! As with torch's LambdaLR, the first step runs at factor lambda(0) = 0.

/// Cosine decay with linear warm-up over `warmup` steps, reaching 0 at `total` steps.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CosineWithWarmup {
    pub base_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl CosineWithWarmup {
    /// Learning rate for 0-based optimizer step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    fn factor(&self, step: u64) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        let progress =
            (step - self.warmup) as f64 / self.total.saturating_sub(self.warmup).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn matches_diffusers_cosine_schedule_with_warmup() {
        for (warmup, total) in [(500u64, 2345u64), (0, 10), (7, 7), (3, 40)] {
            let s = CosineWithWarmup {
                base_lr: 2e-4,
                warmup,
                total,
            };
            let ours: Vec<f64> = (0..total + 5).map(|k| s.lr(k)).collect();
            let out = crate::testing::oracle(
                "lr_schedule",
                &[],
                &[
                    "0.0002",
                    &warmup.to_string(),
                    &total.to_string(),
                    &(total + 5).to_string(),
                ],
            );
            let ours = Tensor::from_slice(&ours).to_kind(Kind::Double);
            crate::testing::assert_close(
                &format!("lr (warmup {warmup}, total {total})"),
                &ours,
                &out["lr"],
                1e-15,
            );
        }
    }

    #[test]
    fn warms_up_then_decays_to_zero() {
        let s = CosineWithWarmup {
            base_lr: 1.0,
            warmup: 10,
            total: 110,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
    }
}
