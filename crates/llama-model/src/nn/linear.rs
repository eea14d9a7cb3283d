//! The projection slot: every linear map of the network (`q_proj` ... `down_proj`, `lm_head`) is a
//! [`Projection`], an enum of layer kinds, so quantized and LoRA-wrapped layers can take the same
//! place without a second copy of the model code.

use burn::module::{Module, Param};
use burn::prelude::*;

/// A dense linear layer stored in PyTorch's `[out, in]` layout, so Hugging Face weights load and
/// save without a transpose.
#[derive(Module, Debug)]
pub struct DenseLinear<B: Backend> {
    /// Weight, shape `[out_features, in_features]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Optional bias, shape `[out_features]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> DenseLinear<B> {
    /// Wraps existing tensors.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor) }
    }

    /// `y = x W^T + b`.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        let mut y = x2.matmul(self.weight.val().transpose());
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.dims().0;
        y.reshape(out)
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let [o, i] = self.weight.dims();
        (o, i)
    }
}

/// One linear slot of the network. Later crates add quantized and LoRA variants here; the model
/// code only ever calls [`Projection::forward`].
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    /// Dense float weights.
    Dense(DenseLinear<B>),
}

impl<B: Backend> Projection<B> {
    /// Applies the projection.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Projection::Dense(layer) => layer.forward(x),
        }
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Projection::Dense(layer) => layer.dims(),
        }
    }

    /// The tensors this slot holds under Hugging Face suffixes (`weight`, `bias`).
    pub fn named_tensors(&self) -> Vec<(&'static str, NamedTensor<B>)> {
        match self {
            Projection::Dense(layer) => {
                let mut out = vec![("weight", NamedTensor::D2(layer.weight.val()))];
                if let Some(b) = &layer.bias {
                    out.push(("bias", NamedTensor::D1(b.val())));
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
}

impl<B: Backend> NamedTensor<B> {
    /// The tensor's shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            NamedTensor::D1(t) => t.dims().to_vec(),
            NamedTensor::D2(t) => t.dims().to_vec(),
        }
    }

    /// The values as f32, row-major.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let data = match self {
            NamedTensor::D1(t) => t.to_data(),
            NamedTensor::D2(t) => t.to_data(),
        };
        data.iter::<f32>().collect()
    }
}
