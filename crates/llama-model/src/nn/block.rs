//! One pre-norm decoder layer.

use burn::module::Module;
use burn::prelude::*;

use quant::QuantBackend;

use super::attention::Attention;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use crate::cache::LayerCache;

/// `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: QuantBackend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`; see [`Attention::forward`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        bias: Option<&Tensor<B, 4>>,
        cache: Option<(&mut LayerCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let h = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            bias,
            cache,
        );
        let x = x + h;
        let h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }
}
