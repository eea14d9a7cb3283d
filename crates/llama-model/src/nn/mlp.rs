//! The SwiGLU feed-forward block.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::silu;

use quant::QuantBackend;

use super::linear::Projection;

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection, `[intermediate, hidden]`.
    pub gate_proj: Projection<B>,
    /// Up projection, `[intermediate, hidden]`.
    pub up_proj: Projection<B>,
    /// Down projection, `[hidden, intermediate]`.
    pub down_proj: Projection<B>,
}

impl<B: QuantBackend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
