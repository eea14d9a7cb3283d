//! The causal language-model loss as transformers computes it: logits at position `t` predict the
//! label at `t + 1`; labels of -100 are ignored; the summed token losses are divided by the number
//! of predicted tokens in the whole accumulated batch (`num_items_in_batch`), so accumulating
//! micro-batches gives the same gradient as one large batch.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// The label that is not predicted.
pub const IGNORE_INDEX: i64 = -100;

/// Number of predicted tokens in `labels` `[batch, seq]` (labels after the first position that
/// are not [`IGNORE_INDEX`]).
pub fn count_targets(labels: &[i64], seq: usize) -> usize {
    labels
        .chunks(seq)
        .map(|row| row[1..].iter().filter(|&&l| l != IGNORE_INDEX).count())
        .sum()
}

/// Summed next-token cross-entropy of `logits` `[batch, seq, vocab]` against `labels`
/// `[batch, seq]` (-100 ignored), divided by `num_items`.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`, `labels`: `[batch, seq]` -> `[1]`
pub fn causal_lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    num_items: usize,
) -> Tensor<B, 1> {
    let [b, s, _] = logits.dims();
    // Shift the (small) labels instead of slicing the (large) logits: position t is scored
    // against label t + 1, the last position against nothing — no copy of `[b, s, vocab]`.
    let device = labels.device();
    let targets = Tensor::cat(
        vec![
            labels.slice([0..b, 1..s]),
            Tensor::<B, 2, Int>::full([b, 1], IGNORE_INDEX, &device),
        ],
        1,
    );
    let logp = log_softmax(logits, 2);
    let keep = targets.clone().not_equal_elem(IGNORE_INDEX);
    let safe = targets.mask_fill(keep.clone().bool_not(), 0);
    let picked = logp
        .gather(2, safe.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    let picked = picked.mask_fill(keep.bool_not(), 0.0);
    picked.sum().neg().div_scalar(num_items.max(1) as f32)
}
