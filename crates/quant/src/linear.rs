//! [`QuantLinear`], the frozen quantized layer that takes a dense projection's place.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::backend::QuantBackend;
use crate::layer::QuantWeight;

/// A frozen quantized linear layer: `y = x · dequant(W)ᵀ + b`, computed in f32. Under autodiff the
/// input gets its gradient, the weight gets none, and the dequantized weight is recomputed in the
/// backward pass instead of being kept alive (see [`QuantBackend`]).
#[derive(Module, Debug)]
pub struct QuantLinear<B: Backend> {
    /// Quantized `[out, in]` weight.
    pub weight: QuantWeight<B>,
    /// Frozen float bias `[out]`.
    pub bias: Option<Tensor<B, 1>>,
    /// Dtype of the gemm (`None`: the input's, f32). bf16 / f16 are for CUDA, like
    /// bitsandbytes' `bnb_4bit_compute_dtype`; the output keeps the input's dtype.
    #[module(skip)]
    pub compute_dtype: Option<FloatDType>,
}

impl<B: Backend> QuantLinear<B> {
    /// A layer from a device weight and an optional bias.
    pub fn new(weight: QuantWeight<B>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight,
            bias,
            compute_dtype: None,
        }
    }

    /// Runs the gemm in `dtype` (bf16 / f16 on CUDA).
    pub fn with_compute_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        self.weight.dims()
    }
}

impl<B: QuantBackend> QuantLinear<B> {
    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        let mut y = B::quant_matmul(x2, &self.weight, self.compute_dtype);
        if let Some(b) = &self.bias {
            y = y + b.clone().unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.dims().0;
        y.reshape(out)
    }
}
