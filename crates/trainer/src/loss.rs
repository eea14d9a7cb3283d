//! The causal language-model loss as transformers computes it: logits at position `t` predict the
//! label at `t + 1`; labels of -100 are ignored; the summed token losses are divided by the number
//! of predicted tokens in the whole accumulated batch (`num_items_in_batch`), so accumulating
//! micro-batches gives the same gradient as one large batch.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, TensorData};
use llama_model::{Llama, ModelInput, Projection};
use quant::QuantBackend;

/// The label that is not predicted (defined by the dataset crate, which writes the labels).
pub use data::IGNORE_INDEX;

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

/// Logit elements per chunk of the chunked loss (rows x vocabulary): 16 Mi floats, 64 MiB.
/// Measured on 2 CPU cores (docs/benchmarks.md): 8 Mi made the Llama-3.2-1B step 4% slower (the
/// 1 GB tied head is streamed through the gemm once per chunk), 32 Mi was no faster and held
/// 130 MB more.
const CHUNK_ELEMENTS: usize = 16 << 20;

/// Rows per chunk of the chunked loss for a vocabulary of `vocab`: 64 MiB of f32 logits
/// (524 rows of a 32k vocabulary, 130 of Llama 3's 128k), at least 16.
pub fn default_chunk_rows(vocab: usize) -> usize {
    (CHUNK_ELEMENTS / vocab.max(1)).max(16)
}

/// Rows (of the flattened `[batch * seq]` positions) that predict a label, and their labels:
/// position `t` of a row predicts `labels[t + 1]`.
fn targets(labels: &[i64], seq: usize) -> (Vec<i64>, Vec<i64>) {
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for (r, row) in labels.chunks(seq).enumerate() {
        for t in 0..seq.saturating_sub(1) {
            if row[t + 1] != IGNORE_INDEX {
                rows.push((r * seq + t) as i64);
                ids.push(row[t + 1]);
            }
        }
    }
    (rows, ids)
}

/// The LM head as a plain matrix, when it is one (a dense `lm_head` or the tied embedding).
enum Head<B: Backend> {
    /// Dense `lm_head`, stored `[hidden, vocab]`.
    Dense(Tensor<B, 2>),
    /// Tied embedding, `[vocab, hidden]`.
    Tied(Tensor<B, 2>),
}

impl<B: Backend> Head<B> {
    fn of(model: &Llama<B>) -> Option<Self> {
        match &model.lm_head {
            None => Some(Head::Tied(model.embed_tokens.val())),
            Some(Projection::Dense(d)) if d.bias.is_none() => Some(Head::Dense(d.weight.val())),
            Some(_) => None,
        }
    }

    fn weight(&self) -> &Tensor<B, 2> {
        match self {
            Head::Dense(w) | Head::Tied(w) => w,
        }
    }

    /// `[rows, hidden]` -> `[rows, vocab]`.
    fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Head::Dense(w) => h.matmul(w.clone()),
            // `E hᵀ`, then transposed: the `[vocab, hidden]` embedding stays the contiguous
            // operand (through a transposed view the gemm repacks all of it on every call,
            // 1 GB for Llama 3's vocabulary); only the chunk of logits is copied.
            Head::Tied(e) => contiguous(e.clone().matmul(h.transpose()).transpose()),
        }
    }

    /// `[rows, vocab]` -> `[rows, hidden]`: the gradient of the hidden states.
    fn back(&self, g: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            // `(W gᵀ)ᵀ`: the `[hidden, vocab]` weight stays the contiguous operand (see `logits`).
            Head::Dense(w) => contiguous(w.clone().matmul(g.transpose()).transpose()),
            Head::Tied(e) => g.matmul(e.clone()),
        }
    }

    /// The weight's gradient from `g` `[rows, vocab]` and `h` `[rows, hidden]`, in the
    /// weight's own layout.
    fn weight_grad(&self, g: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Head::Dense(_) => h.transpose().matmul(g),
            Head::Tied(_) => g.transpose().matmul(h),
        }
    }
}

/// A row-major copy of a transposed view (the reductions and the next gemm read rows).
fn contiguous<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 2> {
    // `x * 1` through a fresh buffer: burn has no explicit "make contiguous"; an elementwise op
    // writes its output in row-major order.
    t.mul_scalar(1.0)
}

/// What [`chunked_cross_entropy`] computed.
struct ChunkedCe<B: Backend> {
    /// Summed token losses, `[1]`.
    loss: Tensor<B, 1>,
    /// Gradient of the scaled loss with respect to the selected hidden rows, `[rows, hidden]`.
    hidden_grad: Option<Tensor<B, 2>>,
    /// Gradient of the scaled loss with respect to the head weight (its own layout).
    weight_grad: Option<Tensor<B, 2>>,
}

/// Cross-entropy of `head(hidden)` against `ids`, a chunk of rows at a time, so the
/// `[rows, vocab]` logits are never held whole, with the gradients written out by hand
/// (`softmax - onehot`, scaled by `scale`) instead of kept on an autodiff tape.
fn chunked_cross_entropy<B: Backend>(
    head: &Head<B>,
    hidden: Tensor<B, 2>,
    ids: Tensor<B, 1, Int>,
    scale: f32,
    want_hidden: bool,
    want_weight: bool,
    chunk: usize,
) -> ChunkedCe<B> {
    let [m, _] = hidden.dims();
    let device = hidden.device();
    let chunk = chunk.max(1);
    let mut loss = Tensor::<B, 1>::zeros([1], &device);
    let mut hidden_grads = Vec::new();
    let mut weight_grad: Option<Tensor<B, 2>> = None;
    for start in (0..m).step_by(chunk) {
        let end = (start + chunk).min(m);
        let h = hidden.clone().slice(start..end);
        let t = ids.clone().slice(start..end).reshape([end - start, 1]);
        let logits = head.logits(h.clone());
        let max = logits.clone().max_dim(1);
        let picked = logits.clone().gather(1, t.clone());
        let exp = (logits - max.clone()).exp();
        let sum = exp.clone().sum_dim(1);
        // loss_i = log(sum_j exp(z_ij - max_i)) + max_i - z_i,t
        loss = loss + (sum.clone().log() + max - picked).sum();
        if !(want_hidden || want_weight) {
            continue;
        }
        // d loss_i / d z_ij = softmax_ij - [j == t_i], times `scale`.
        let probs = exp / sum.div_scalar(scale);
        let ones = Tensor::<B, 2>::full([end - start, 1], -scale, &device);
        let g = probs.scatter(1, t, ones, burn::tensor::IndexingUpdateOp::Add);
        if want_weight {
            let gw = head.weight_grad(g.clone(), h);
            weight_grad = Some(match weight_grad {
                Some(acc) => acc + gw,
                None => gw,
            });
        }
        if want_hidden {
            hidden_grads.push(head.back(g));
        }
    }
    ChunkedCe {
        loss,
        hidden_grad: want_hidden.then(|| {
            if hidden_grads.is_empty() {
                Tensor::zeros([0, hidden.dims()[1]], &device)
            } else {
                Tensor::cat(hidden_grads, 0)
            }
        }),
        weight_grad,
    }
}

fn int_vec<B: Backend>(v: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Summed next-token loss of a batch, `chunk_rows` positions at a time
/// ([`default_chunk_rows`]), (`labels` `[batch, seq]` on the host) without autodiff and
/// without holding the `[batch, seq, vocab]` logits: the vocabulary projection runs a chunk of
/// positions at a time, and only positions that predict a label are projected.
pub fn summed_lm_loss<B: QuantBackend>(
    model: &Llama<B>,
    input: ModelInput<B>,
    labels: &[i64],
    seq: usize,
    chunk_rows: usize,
) -> f64 {
    let (rows, ids) = targets(labels, seq);
    if rows.is_empty() {
        return 0.0;
    }
    let hidden = model.forward_hidden(input, None);
    let device = hidden.device();
    let [b, s, h] = hidden.dims();
    let flat = hidden.reshape([b * s, h]);
    let sel = flat.select(0, int_vec::<B>(rows, &device));
    let ids = int_vec::<B>(ids, &device);
    let loss = match Head::of(model) {
        Some(head) => chunked_cross_entropy(&head, sel, ids, 1.0, false, false, chunk_rows).loss,
        None => {
            // A quantized or adapted head: its own forward, a chunk of rows at a time.
            let [m, _] = sel.dims();
            let vocab = model.config().vocab_size;
            let chunk = chunk_rows.max(1);
            let mut loss = Tensor::<B, 1>::zeros([1], &device);
            for start in (0..m).step_by(chunk) {
                let end = (start + chunk).min(m);
                let hc = sel.clone().slice(start..end).reshape([1, end - start, h]);
                let logits: Tensor<B, 2> = model.logits(hc).reshape([end - start, vocab]);
                let t = ids.clone().slice(start..end).reshape([end - start, 1]);
                let logp = log_softmax(logits, 1);
                loss = loss - logp.gather(1, t).sum();
            }
            loss
        }
    };
    let v: f32 = loss.into_scalar().elem();
    f64::from(v)
}

/// The loss of one micro-batch from its final hidden states (after the last norm), divided by
/// `num_items`: its value, and a scalar on the tape whose backward gives the loss's gradients.
///
/// When the head is a plain matrix (a dense `lm_head` or the tied embedding — every LoRA, QLoRA
/// and full run of a Llama checkpoint) the loss is chunked and its gradient written by hand: the
/// tape ends at the hidden states, whose gradient enters it through the surrogate
/// `sum(hidden * d_hidden)` (plus `sum(W * d_W)` when the head itself trains). The
/// `[batch, seq, vocab]` logits, their softmax and their gradient are never held whole, and
/// positions without a label are not projected at all. Other heads take the plain path (the
/// surrogate is then the loss itself).
pub fn head_loss<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    hidden: Tensor<B, 3>,
    labels: &[i64],
    num_items: usize,
    chunk_rows: usize,
) -> (f64, Tensor<B, 1>) {
    let scale = 1.0 / num_items.max(1) as f32;
    let [b, s, h] = hidden.dims();
    let device = hidden.device();
    let Some(head) = Head::of(model) else {
        let labels =
            Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [b * s]), &device)
                .reshape([b, s]);
        let loss = causal_lm_loss(model.logits(hidden), labels, num_items);
        let v: f32 = loss.clone().into_scalar().elem();
        return (f64::from(v), loss);
    };
    let (rows, ids) = targets(labels, s);
    let flat = hidden.reshape([b * s, h]);
    if rows.is_empty() {
        // Nothing to predict: zero loss, zero gradients.
        return (0.0, flat.sum().mul_scalar(0.0));
    }
    let inner_rows = int_vec::<B::InnerBackend>(rows, &device);
    let sel = flat.clone().inner().select(0, inner_rows.clone());
    let inner_head = match &head {
        Head::Dense(w) => Head::Dense(w.clone().inner()),
        Head::Tied(e) => Head::Tied(e.clone().inner()),
    };
    let train_head = head.weight().is_require_grad();
    let ce = chunked_cross_entropy(
        &inner_head,
        sel,
        int_vec::<B::InnerBackend>(ids, &device),
        scale,
        true,
        train_head,
        chunk_rows,
    );
    let v: f32 = ce.loss.into_scalar().elem();
    let d_hidden = Tensor::<B::InnerBackend, 2>::zeros([b * s, h], &device).select_assign(
        0,
        inner_rows,
        ce.hidden_grad.expect("asked for"),
        burn::tensor::IndexingUpdateOp::Add,
    );
    let mut surrogate = (flat * Tensor::from_inner(d_hidden)).sum();
    if let Some(dw) = ce.weight_grad {
        surrogate = surrogate + (head.weight().clone() * Tensor::from_inner(dw)).sum();
    }
    (f64::from(v * scale), surrogate)
}

/// Forward and backward of the causal-LM loss of one micro-batch (`labels` `[batch, seq]` on
/// the host), divided by `num_items`, the vocabulary projected `chunk_rows` positions at a time
/// ([`default_chunk_rows`]; see [`head_loss`]): the loss value and the gradients of every
/// trainable parameter.
pub fn loss_and_grads<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    input: ModelInput<B>,
    labels: &[i64],
    num_items: usize,
    chunk_rows: usize,
) -> (f64, B::Gradients) {
    let hidden = model.forward_hidden(input, None);
    let (value, surrogate) = head_loss(model, hidden, labels, num_items, chunk_rows);
    (value, surrogate.backward())
}
