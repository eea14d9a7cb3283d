//! Text generation with the KV cache: batched, left-padded prompts, greedy or sampled tokens,
//! stop on any EOS id, tokens handed to a callback as they are produced.

use burn::prelude::*;

use quant::QuantBackend;

use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::model::{Llama, ModelInput};
use crate::sampling::{Sampler, SamplingConfig};

/// Settings of one `generate` call.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Most tokens produced per prompt.
    pub max_new_tokens: usize,
    /// Greedy or sampled decoding.
    pub sampling: SamplingConfig,
    /// A row stops after producing any of these.
    pub eos_token_ids: Vec<u32>,
    /// Fed for rows that already stopped, and used to left-pad shorter prompts.
    pub pad_token_id: u32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
        }
    }
}

/// Generates a continuation for every prompt. Returns the new tokens of each row (ending with
/// the EOS token when one was produced). `on_token(row, token)` is called for every token as soon
/// as it is chosen.
///
/// # Shapes
/// - `prompts`: `batch` token lists of any lengths (left-padded internally)
pub fn generate<B: QuantBackend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>> {
    if config.max_new_tokens == 0 {
        return Err(Error::InvalidArgument(
            "max_new_tokens 0: expected at least 1 new token".into(),
        ));
    }
    config.sampling.validate().map_err(Error::InvalidArgument)?;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(Error::InvalidArgument(
            "every prompt needs at least one token".into(),
        ));
    }
    for p in prompts {
        model.check_ids(p, config.max_new_tokens)?;
    }
    let device = model.embed_tokens.device();
    let vocab = model.config().vocab_size;
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() != width);
    let mut ids = Vec::with_capacity(b * width);
    let mut mask: Vec<Vec<i64>> = Vec::with_capacity(b);
    for p in prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(config.pad_token_id as i64, pad));
        ids.extend(p.iter().map(|&t| t as i64));
        mask.push(
            std::iter::repeat_n(0, pad)
                .chain(std::iter::repeat_n(1, p.len()))
                .collect(),
        );
    }
    let mut cache = KvCache::new(model.config(), b, width + config.max_new_tokens, &device);
    let mut sampler = Sampler::new(config.sampling.clone());
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut finished = vec![false; b];
    let mut step_ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, width]), &device);
    for step in 0..config.max_new_tokens {
        let s = step_ids.dims()[1];
        let mut input = ModelInput::new(step_ids);
        if padded {
            let t = mask[0].len();
            let flat: Vec<i64> = mask.iter().flatten().copied().collect();
            input = input.with_mask(Tensor::from_data(TensorData::new(flat, [b, t]), &device));
        }
        let logits = model.forward(input, Some(&mut cache));
        let last = logits.slice([0..b, s - 1..s, 0..vocab]);
        let values: Vec<f32> = last.into_data().iter::<f32>().collect();
        let mut next = Vec::with_capacity(b);
        for row in 0..b {
            if finished[row] {
                next.push(config.pad_token_id as i64);
                continue;
            }
            let row_logits = &values[row * vocab..(row + 1) * vocab];
            if row_logits.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFiniteLogits { step, row });
            }
            let tok = sampler.sample(row_logits);
            outputs[row].push(tok);
            on_token(row, tok);
            if config.eos_token_ids.contains(&tok) {
                finished[row] = true;
            }
            next.push(tok as i64);
        }
        if finished.iter().all(|&f| f) {
            break;
        }
        for m in mask.iter_mut() {
            m.push(1);
        }
        step_ids = Tensor::from_data(TensorData::new(next, [b, 1]), &device);
    }
    Ok(outputs)
}
