//! Scalar maths as diffusers does it: on 0-dim float32 tensors. libtorch's `pow(x, 0.5)`, `exp`
//! and `log` on such tensors are not always the correctly rounded `f32::sqrt`/`exp`/`ln` (they
//! differ by an ulp now and then), and over hundreds of steps that ulp grows; so these go through
//! libtorch too. `+ − × ÷` are IEEE-exact in both and stay plain `f32` arithmetic.
use tch::{Device, Kind, Tensor};

fn on_tensor(x: f32, f: impl FnOnce(&Tensor) -> Tensor) -> f32 {
    f(&Tensor::scalar_tensor(x as f64, (Kind::Float, Device::Cpu))).double_value(&[]) as f32
}

/// `x ** p` of a 0-dim float32 tensor.
pub(super) fn pow(x: f32, p: f64) -> f32 {
    on_tensor(x, |t| t.pow_tensor_scalar(p))
}

/// `x ** 0.5`, the way diffusers writes square roots.
pub(super) fn sqrt(x: f32) -> f32 {
    pow(x, 0.5)
}

/// `torch.exp` of a 0-dim float32 tensor.
pub(super) fn exp(x: f32) -> f32 {
    on_tensor(x, Tensor::exp)
}

/// `torch.log` of a 0-dim float32 tensor.
pub(super) fn ln(x: f32) -> f32 {
    on_tensor(x, Tensor::log)
}
