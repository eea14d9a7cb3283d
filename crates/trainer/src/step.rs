//! One optimizer step over a window of micro-batches: forward, loss, backward per micro-batch
//! with gradients accumulated by name, a finiteness check, global-norm clipping, AdamW.

use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use data::Batch;
use llama_model::{Llama, QuantBackend};

use crate::grads::NamedGrads;
use crate::loss::{causal_lm_loss, count_targets};
use crate::optim::AdamW;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean token loss over the window (transformers' `loss`, summed over micro-batches).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Real (non-padding) tokens seen.
    pub tokens: usize,
    /// Tokens whose label was predicted.
    pub targets: usize,
    /// False when the loss or a gradient was NaN/Inf; the update was then not applied.
    pub finite: bool,
}

/// Runs the micro-batches of one accumulation window and applies one AdamW update with
/// learning rate `lr` (skipped, with `finite = false`, when the loss or a gradient is not
/// finite). `max_grad_norm`: `clip_grad_norm_` over all trainable parameters.
pub fn train_step<B>(
    model: Llama<B>,
    micro: &[Batch],
    optimizer: &mut AdamW<B::InnerBackend>,
    lr: f64,
    max_grad_norm: Option<f64>,
) -> (Llama<B>, StepStats)
where
    B: AutodiffBackend + QuantBackend,
{
    let device = model.embed_tokens.val().device();
    let num_items: usize = micro.iter().map(|b| count_targets(&b.labels, b.seq)).sum();
    let mut grads = NamedGrads::<B::InnerBackend>::default();
    let mut loss = 0.0;
    let mut tokens = 0;
    for batch in micro {
        let t = batch.to_tensors::<B>(&device);
        let logits = model.forward(t.model_input(), None);
        let l = causal_lm_loss(logits, t.labels, num_items);
        let value: f32 = l.clone().into_scalar().elem();
        loss += f64::from(value);
        let g = l.backward();
        grads.accumulate(&model, &g);
        tokens += batch.real_tokens();
    }
    let norm = grads.global_norm();
    let stats = StepStats {
        loss,
        grad_norm: norm,
        lr,
        tokens,
        targets: num_items,
        finite: loss.is_finite() && norm.is_finite(),
    };
    if !stats.finite {
        return (model, stats);
    }
    if let Some(max) = max_grad_norm {
        grads.clip_with_norm(norm, max);
    }
    let model = optimizer.step(lr, model, &grads);
    (model, stats)
}
