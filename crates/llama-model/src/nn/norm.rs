//! RMSNorm as Llama defines it: normalise in f32, then scale by a learned weight.

use burn::module::{Module, Param};
use burn::prelude::*;

/// Root-mean-square layer norm (`LlamaRMSNorm`).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, shape `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Wraps an existing weight.
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps,
        }
    }

    /// `x / sqrt(mean(x^2) + eps) * weight`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let var = x.clone().square().mean_dim(2);
        // A true division: backends may implement `recip` with a fast approximate instruction.
        let x = x / (var + self.eps).sqrt();
        x * self.weight.val().unsqueeze::<3>()
    }
}
