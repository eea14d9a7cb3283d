//! The projection slot: every linear map of the network (`q_proj` ... `down_proj`, `lm_head`) is a
//! [`Projection`], an enum of layer kinds, so quantized and LoRA-wrapped layers can take the same
//! place without a second copy of the model code.

use burn::module::Module;
use burn::prelude::*;
use quant::{DenseLinear, QuantBackend, QuantLinear, QuantWeight};

/// One linear slot of the network. Later crates add quantized and LoRA variants here; the model
/// code only ever calls [`Projection::forward`].
#[derive(Module, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "seven projections per layer, each owning tensors far larger than the enum; a Box \
              would add an indirection to every forward call for no memory gain"
)]
pub enum Projection<B: Backend> {
    /// Dense float weights.
    Dense(DenseLinear<B>),
    /// Frozen NF4 / FP4 / LLM.int8 weights (bitsandbytes layout), dequantized per call.
    Quant(QuantLinear<B>),
    /// A dense (LoRA) or quantized (QLoRA) base with a LoRA adapter.
    Lora(peft::LoraLinear<B>),
}

impl<B: QuantBackend> Projection<B> {
    /// Applies the projection.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Projection::Dense(layer) => layer.forward(x),
            Projection::Quant(layer) => layer.forward(x),
            Projection::Lora(layer) => layer.forward(x),
        }
    }
}

impl<B: Backend> Projection<B> {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Projection::Dense(layer) => layer.dims(),
            Projection::Quant(layer) => layer.dims(),
            Projection::Lora(layer) => layer.base.dims(),
        }
    }

    /// The tensors this slot holds under Hugging Face suffixes (`weight`, `bias`).
    pub fn named_tensors(&self) -> Vec<(&'static str, NamedTensor<B>)> {
        match self {
            // The base's tensors; adapters are saved in PEFT's own files.
            Projection::Lora(layer) => match &layer.base {
                peft::LoraBase::Dense(d) => Projection::Dense(d.clone()).named_tensors(),
                peft::LoraBase::Quant(q) => Projection::Quant(q.clone()).named_tensors(),
            },
            Projection::Dense(layer) => {
                // Hugging Face stores `[out, in]`.
                let mut out = vec![("weight", NamedTensor::D2(layer.weight.val().transpose()))];
                if let Some(b) = &layer.bias {
                    out.push(("bias", NamedTensor::D1(b.val())));
                }
                out
            }
            Projection::Quant(layer) => {
                let mut out = vec![("weight", NamedTensor::Quant(layer.weight.clone()))];
                if let Some(b) = &layer.bias {
                    out.push(("bias", NamedTensor::D1(b.clone())));
                }
                out
            }
        }
    }
}

/// A tensor of rank 1 or 2, as held by the model's parameters (used when saving).
#[derive(Debug, Clone)]
pub enum NamedTensor<B: Backend> {
    /// A vector (norm weight, bias).
    D1(Tensor<B, 1>),
    /// A matrix (projection or embedding).
    D2(Tensor<B, 2>),
    /// A quantized weight, saved under bitsandbytes' keys (`weight`, `weight.absmax`, ...).
    Quant(QuantWeight<B>),
}

impl<B: Backend> NamedTensor<B> {
    /// The tensor's shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            NamedTensor::D1(t) => t.dims().to_vec(),
            NamedTensor::D2(t) => t.dims().to_vec(),
            NamedTensor::Quant(w) => {
                let (o, i) = w.dims();
                vec![o, i]
            }
        }
    }

    /// The values (a quantized weight is dequantized), row-major.
    pub fn to_data(&self) -> TensorData {
        match self {
            NamedTensor::D1(t) => t.to_data(),
            NamedTensor::D2(t) => t.to_data(),
            NamedTensor::Quant(w) => w.dequantize_generic().to_data(),
        }
    }

    /// The values in consecutive blocks of whole rows of at most about `max_elements` each
    /// (one block for vectors and small matrices), row-major.
    pub fn row_blocks(&self, max_elements: usize) -> impl Iterator<Item = TensorData> + '_ {
        let (rows, cols) = match self {
            NamedTensor::D2(t) => (t.dims()[0], t.dims()[1]),
            _ => (1, usize::MAX),
        };
        let step = if cols == usize::MAX {
            1
        } else {
            (max_elements / cols.max(1)).max(1)
        };
        (0..rows).step_by(step).map(move |r0| match self {
            NamedTensor::D2(t) if step < rows => {
                t.clone().slice(r0..(r0 + step).min(rows)).to_data()
            }
            other => other.to_data(),
        })
    }
}

/// Transposes row-major `[rows, cols]` f32 data into `[cols, rows]`: cache-sized tiles, output
/// written contiguously, columns split across the available cores.
pub fn transpose_data(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    assert_eq!(
        data.len(),
        rows * cols,
        "transpose_data: length is not rows * cols"
    );
    let mut out = vec![0.0f32; data.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(cols.div_ceil(TILE));
    let cols_per = cols.div_ceil(threads).div_ceil(TILE) * TILE;
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(cols_per * rows).enumerate() {
            scope.spawn(move || {
                let first = t * cols_per;
                let ncols = chunk.len() / rows;
                for c0 in (0..ncols).step_by(TILE) {
                    let c1 = (c0 + TILE).min(ncols);
                    for r0 in (0..rows).step_by(TILE) {
                        let r1 = (r0 + TILE).min(rows);
                        for c in c0..c1 {
                            let dst = &mut chunk[c * rows + r0..c * rows + r1];
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = data[(r0 + i) * cols + first + c];
                            }
                        }
                    }
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::transpose_data;

    #[test]
    fn transpose_matches_naive_on_ragged_shapes() {
        for (rows, cols) in [(1, 1), (3, 70), (65, 33), (100, 1), (1, 100)] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let out = transpose_data(&data, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(out[c * rows + r], data[r * cols + c]);
                }
            }
        }
    }
}
