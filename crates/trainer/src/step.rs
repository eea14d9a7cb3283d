//! One optimizer step over a window of micro-batches: forward, loss, backward per micro-batch
//! with gradients accumulated by name, a finiteness check, global-norm clipping, AdamW.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use data::Batch;
use llama_model::Llama;
use quant::QuantBackend;

use crate::grads::NamedGrads;
use crate::loss::{count_targets, default_chunk_rows, head_loss, loss_and_grads};
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

/// How to run one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// Learning rate of this step (schedule applied).
    pub lr: f64,
    /// `clip_grad_norm_` over all trainable parameters; `None` = no clipping.
    pub max_grad_norm: Option<f64>,
    /// Activation (gradient) checkpointing: keep only each decoder layer's input from the
    /// forward pass and run the layer again during the backward pass. Seeded with `seed` so
    /// dropout draws the same masks both times.
    pub gradient_checkpointing: bool,
    /// Seed of the dropout masks under checkpointing (the run passes seed + step).
    pub seed: u64,
}

impl StepOptions {
    /// Learning rate `lr`, clipping at `max_grad_norm`, no checkpointing.
    pub fn new(lr: f64, max_grad_norm: Option<f64>) -> Self {
        Self {
            lr,
            max_grad_norm,
            gradient_checkpointing: false,
            seed: 0,
        }
    }
}

/// Runs the micro-batches of one accumulation window and applies one AdamW update (skipped,
/// with `finite = false`, when the loss or a gradient is not finite).
pub fn train_step<B>(
    model: Llama<B>,
    micro: &[Batch],
    optimizer: &mut AdamW<B::InnerBackend>,
    options: &StepOptions,
) -> (Llama<B>, StepStats)
where
    B: AutodiffBackend + QuantBackend,
{
    let device = model.embed_tokens.val().device();
    let num_items: usize = micro.iter().map(|b| count_targets(&b.labels, b.seq)).sum();
    let chunk = default_chunk_rows(model.config().vocab_size);
    let mut grads = NamedGrads::<B::InnerBackend>::default();
    let mut loss = 0.0;
    let mut tokens = 0;
    for (m, batch) in micro.iter().enumerate() {
        let t = crate::batch::batch_tensors::<B>(batch, &device);
        if options.gradient_checkpointing {
            let seed = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (m as u64) << 32;
            loss += checkpointed_backward(
                &model,
                t.model_input(),
                &batch.labels,
                num_items,
                chunk,
                seed,
                &mut grads,
            );
        } else {
            let (value, g) =
                loss_and_grads(&model, t.model_input(), &batch.labels, num_items, chunk);
            loss += value;
            grads.accumulate(&model, &g);
        }
        tokens += batch.real_tokens();
    }
    let norm = grads.global_norm();
    let stats = StepStats {
        loss,
        grad_norm: norm,
        lr: options.lr,
        tokens,
        targets: num_items,
        finite: loss.is_finite() && norm.is_finite(),
    };
    if !stats.finite {
        return (model, stats);
    }
    if let Some(max) = options.max_grad_norm {
        grads.clip_with_norm(norm, max);
    }
    let model = optimizer.step(options.lr, model, &grads);
    (model, stats)
}

/// Forward and backward of one micro-batch with activation checkpointing (the loss divided by
/// `num_items`, the head chunked by `chunk` rows as in [`loss_and_grads`]), gradients added to
/// `grads`; returns the loss.
///
/// 1. Forward without a tape (a copy of the model whose parameters require no gradient), keeping
///    only the input of every decoder layer.
/// 2. The final norm and the loss on the tape from the last layer's output; its backward gives
///    the gradient of that output.
/// 3. From the last layer to the first: the layer again on the tape from its kept input, and
///    the backward of `sum(output * d_output)`, which gives the layer's parameter gradients and
///    the gradient of its input.
/// 4. The embedding, when it trains, the same way.
///
/// Only one layer's tape is alive at a time. Dropout is reseeded per layer so the second run of
/// a layer draws the masks of the first.
pub fn checkpointed_backward<B>(
    model: &Llama<B>,
    input: llama_model::ModelInput<B>,
    labels: &[i64],
    num_items: usize,
    chunk: usize,
    seed: u64,
    grads: &mut NamedGrads<B::InnerBackend>,
) -> f64
where
    B: AutodiffBackend + QuantBackend,
{
    let device = input.input_ids.device();
    let n_layers = model.layers.len();
    let layer_seed = |l: usize| seed.wrapping_add(l as u64 + 1);
    let shared = model.layer_inputs(&input);

    // 1. No tape: every operation sees only tensors that require no gradient.
    let frozen = model.clone().no_grad();
    let mut kept = Vec::with_capacity(n_layers);
    let mut x = frozen.embed(input.input_ids.clone()).detach();
    for l in 0..n_layers {
        kept.push(x.clone());
        B::seed(&device, layer_seed(l));
        x = frozen.layer_forward(l, x, &shared).detach();
    }
    drop(frozen);

    // 2. Norm and loss.
    let last = x.require_grad();
    let hidden = model.norm.forward(last.clone());
    let (loss, surrogate) = head_loss(model, hidden, labels, num_items, chunk);
    let g = surrogate.backward();
    grads.accumulate(model, &g);
    let mut d_out = last
        .grad(&g)
        .expect("the loss depends on the last layer's output");

    // 3. Layers, last to first.
    for l in (0..n_layers).rev() {
        let x_in = kept.pop().expect("one kept input per layer").require_grad();
        B::seed(&device, layer_seed(l));
        let y = model.layer_forward(l, x_in.clone(), &shared);
        let g = (y * Tensor::from_inner(d_out)).sum().backward();
        grads.accumulate(model, &g);
        d_out = x_in
            .grad(&g)
            .expect("a layer's output depends on its input");
    }

    // 4. Embedding.
    if model.embed_tokens.val().is_require_grad() {
        let x0 = model.embed(input.input_ids);
        let g = (x0 * Tensor::from_inner(d_out)).sum().backward();
        grads.accumulate(model, &g);
    }
    loss
}
