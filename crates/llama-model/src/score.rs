//! Next-token negative log-likelihood of token sequences (the numbers behind `eval`).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use quant::QuantBackend;

use crate::error::{Error, Result};
use crate::model::{Llama, ModelInput};

/// Summed negative log-likelihood and the number of predicted tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Nll {
    /// Sum over predicted tokens of `-log p(token | prefix)`.
    pub total: f64,
    /// Number of predicted tokens.
    pub tokens: usize,
}

impl Nll {
    /// Mean loss (`total / tokens`); NaN when nothing was predicted.
    pub fn mean(&self) -> f64 {
        self.total / self.tokens as f64
    }
}

/// Scores one sequence: every token but the first is predicted from its prefix.
pub fn sequence_nll<B: QuantBackend>(model: &Llama<B>, ids: &[u32]) -> Result<Nll> {
    model.check_ids(ids, 0)?;
    if ids.len() < 2 {
        return Ok(Nll::default());
    }
    let device = model.embed_tokens.device();
    let n = ids.len();
    let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, n]), &device);
    let logits = model.forward(ModelInput::new(input), None);
    let vocab = model.config().vocab_size;
    let logp = log_softmax(logits.slice([0..1, 0..n - 1, 0..vocab]), 2);
    let targets: Vec<i64> = ids[1..].iter().map(|&t| t as i64).collect();
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [1, n - 1, 1]), &device);
    let picked = logp.gather(2, targets);
    let values: Vec<f32> = picked.into_data().iter::<f32>().collect();
    let total = -values.iter().map(|&v| f64::from(v)).sum::<f64>();
    if !total.is_finite() {
        return Err(Error::InvalidArgument(
            "loss is not finite (NaN or Inf in the logits)".into(),
        ));
    }
    Ok(Nll {
        total,
        tokens: n - 1,
    })
}
