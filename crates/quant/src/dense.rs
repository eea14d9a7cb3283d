//! The dense float linear layer: the unquantized counterpart of [`crate::QuantLinear`] and the
//! other base a LoRA adapter can wrap.

use burn::module::{Module, Param};
use burn::prelude::*;

/// A dense linear layer. The weight is held as `[in_features, out_features]` (transposed once
/// when loaded from PyTorch's `[out, in]`), so the forward is a plain row-major gemm: a
/// transposed view would make burn-ndarray copy the whole weight on every call.
#[derive(Module, Debug)]
pub struct DenseLinear<B: Backend> {
    /// Weight, shape `[in_features, out_features]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Optional bias, shape `[out_features]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> DenseLinear<B> {
    /// Wraps existing tensors; `weight` is `[in_features, out_features]`.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// `y = x W^T + b`.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        let mut y = x2.matmul(self.weight.val());
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.dims().0;
        y.reshape(out)
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (o, i)
    }
}
