//! A [`data::Batch`] (plain vectors) on a device: the model's inputs as `Int` tensors of shape
//! `[rows, seq]`. Labels stay on the host: the chunked loss reads them from `Batch::labels`
//! (which positions to project, which targets to pick), so they are never uploaded; only the
//! plain-autodiff reference loss [`crate::causal_lm_loss`] takes them as a tensor
//! ([`labels_tensor`]).

use burn::prelude::*;
use data::Batch;
use llama_model::ModelInput;

/// The model inputs of a batch on a device.
#[derive(Debug, Clone)]
pub struct BatchTensors<B: Backend> {
    /// `[rows, seq]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[rows, seq]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// `[rows, seq]`.
    pub position_ids: Tensor<B, 2, Int>,
    /// `[rows, seq]`, packed batches only.
    pub segment_ids: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> BatchTensors<B> {
    /// The model input (ids, padding mask, positions and, when packed, segments).
    pub fn model_input(&self) -> ModelInput<B> {
        let input = ModelInput::new(self.input_ids.clone())
            .with_mask(self.attention_mask.clone())
            .with_positions(self.position_ids.clone());
        match &self.segment_ids {
            Some(s) => input.with_segments(s.clone()),
            None => input,
        }
    }
}

fn int_tensor<B: Backend>(
    v: Vec<i64>,
    rows: usize,
    seq: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v, [rows, seq]), device)
}

fn widen<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&x| x.into()).collect()
}

/// Copies the model inputs of `batch` to `device` (labels stay in `batch.labels`).
pub fn batch_tensors<B: Backend>(batch: &Batch, device: &B::Device) -> BatchTensors<B> {
    let (r, s) = (batch.rows, batch.seq);
    BatchTensors {
        input_ids: int_tensor(widen(&batch.input_ids), r, s, device),
        attention_mask: int_tensor(widen(&batch.attention_mask), r, s, device),
        position_ids: int_tensor(widen(&batch.position_ids), r, s, device),
        segment_ids: batch
            .segment_ids
            .as_ref()
            .map(|v| int_tensor(widen(v), r, s, device)),
    }
}

/// The labels of `batch` as a `[rows, seq]` tensor, for [`crate::causal_lm_loss`].
pub fn labels_tensor<B: Backend>(batch: &Batch, device: &B::Device) -> Tensor<B, 2, Int> {
    int_tensor(batch.labels.clone(), batch.rows, batch.seq, device)
}
