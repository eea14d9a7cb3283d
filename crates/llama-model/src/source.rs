//! Where model tensors come from: the [`TensorSource`] the model is built from (a safetensors
//! checkpoint, a GGUF file, or the [`RandomSource`] initialiser). The model depends on this
//! module only; the checkpoint reader and writer sit above the model.

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::error::Result;

/// Where model tensors come from, one at a time, by Hugging Face key.
pub trait TensorSource {
    /// The tensor stored under `key` as f32 data of exactly `shape`.
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<TensorData>;
    /// Whether the source stores `key` (quantized checkpoints are recognised by their keys).
    fn contains(&self, _key: &str) -> bool {
        false
    }
    /// The tensor under `key` as stored (dtype, shape, bytes), or `None` when absent.
    fn take_raw(&mut self, _key: &str) -> Result<Option<quant::RawTensor>> {
        Ok(None)
    }
    /// The file that holds `key` (or the checkpoint directory), for error messages.
    fn location(&self, _key: &str) -> std::path::PathBuf {
        std::path::PathBuf::from("<generated weights>")
    }
    /// Called after the last tensor; fails if the source holds tensors nobody asked for.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl dyn TensorSource + '_ {
    /// [`TensorSource::take`] uploaded to `device` as a rank-`D` tensor.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.take(key, &shape)?;
        Ok(Tensor::from_data(data, device))
    }
}

/// Random weights: normal(0, std) for matrices, ones for norm weights, zeros for biases.
pub struct RandomSource {
    rng: StdRng,
    normal: Normal<f32>,
}

impl RandomSource {
    /// A deterministic source for `seed`.
    pub fn new(seed: u64, std: f32) -> Self {
        let normal = Normal::new(0.0, std).unwrap_or_else(|_| unreachable!("std is finite"));
        Self {
            rng: StdRng::seed_from_u64(seed),
            normal,
        }
    }
}

impl TensorSource for RandomSource {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if key.ends_with("norm.weight") {
            vec![1.0; n]
        } else if key.ends_with(".bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| self.normal.sample(&mut self.rng)).collect()
        };
        Ok(TensorData::new(values, shape.to_vec()))
    }
}
