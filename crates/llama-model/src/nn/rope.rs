//! Rotary position embedding in Hugging Face's rotate-half layout, with Llama 3 frequency
//! scaling.

use burn::prelude::*;

use crate::config::{LlamaConfig, RopeScaling};

/// Inverse frequencies of the rotary embedding, computed once from the config.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    /// Frequencies for `config.head_dim`, `rope_theta` and `rope_scaling`, as transformers'
    /// `ROPE_INIT_FUNCTIONS` compute them.
    pub fn new(config: &LlamaConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta;
        let mut inv_freq: Vec<f64> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f64 / dim as f64))
            .collect();
        if let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = config.rope_scaling
        {
            let old_len = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_len / low_freq_factor;
            let high_freq_wavelen = old_len / high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_freq_wavelen {
                    *f /= factor;
                } else if wavelen >= high_freq_wavelen {
                    let smooth = (old_len / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        Self {
            inv_freq: inv_freq.into_iter().map(|f| f as f32).collect(),
        }
    }

    /// `(cos, sin)` for the given positions, duplicated over both halves of the head.
    ///
    /// # Shapes
    /// - `position_ids`: `[batch, seq]`
    /// - returns two tensors `[batch, 1, seq, head_dim]`
    pub fn cos_sin<B: Backend>(
        &self,
        position_ids: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let device = position_ids.device();
        let [b, s] = position_ids.dims();
        let half = self.inv_freq.len();
        let inv =
            Tensor::<B, 1>::from_data(TensorData::new(self.inv_freq.clone(), [half]), &device);
        let pos: Tensor<B, 3> = position_ids.float().reshape([b, s, 1]);
        let freqs = pos * inv.reshape([1, 1, half]);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, s, 2 * half]);
        (emb.clone().cos(), emb.sin())
    }
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = [-x2, x1]`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().slice_dim(3, 0..d / 2);
    let x2 = x.clone().slice_dim(3, d / 2..d);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
