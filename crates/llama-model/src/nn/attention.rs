//! Grouped-query self-attention with rotary embeddings and an optional KV cache.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use quant::QuantBackend;

use super::linear::Projection;
use super::rope::apply_rotary;
use crate::cache::LayerCache;

/// Multi-head attention where `num_heads / num_kv_heads` query heads share a key/value head.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection, `[heads * head_dim, hidden]`.
    pub q_proj: Projection<B>,
    /// Key projection, `[kv_heads * head_dim, hidden]`.
    pub k_proj: Projection<B>,
    /// Value projection, `[kv_heads * head_dim, hidden]`.
    pub v_proj: Projection<B>,
    /// Output projection, `[hidden, heads * head_dim]`.
    pub o_proj: Projection<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: QuantBackend> Attention<B> {
    /// Attends over the cached keys (if any) and the new tokens.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
    /// - `bias`: additive mask `[batch, 1, seq, past + seq]` (0 = attend, large negative = not)
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        bias: Option<&Tensor<B, 4>>,
        cache: Option<(&mut LayerCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, s, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let q = apply_rotary(q, cos, sin);
        let k = apply_rotary(k, cos, sin);
        let (k, v) = match cache {
            Some((cache, past)) => cache.update(past, k, v),
            None => (k, v),
        };
        let t = k.dims()[2];
        let groups = h / kv;
        // Query heads of one group are adjacent (head = kv_head * groups + g), so folding them into
        // the sequence axis lets one batched matmul serve the whole group without copying K or V.
        let q = q.reshape([b, kv, groups * s, d]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
        let mut scores = scores.reshape([b, h, s, t]);
        if let Some(bias) = bias {
            scores = scores + bias.clone();
        }
        let probs = softmax(scores, 3).reshape([b, kv, groups * s, t]);
        let out = probs
            .matmul(v)
            .reshape([b, h, s, d])
            .swap_dims(1, 2)
            .reshape([b, s, h * d]);
        self.o_proj.forward(out)
    }
}
