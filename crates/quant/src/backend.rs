//! [`QuantBackend`]: how a backend multiplies by a quantized weight.
//!
//! Every method has a default written in burn tensor ops, so a backend only overrides what it can
//! do faster: the CPU backends dequantize on the host with all cores straight into the weight
//! buffer, and [`Autodiff`] registers its own backward step that dequantizes the weight again
//! instead of keeping the dense copy alive between forward and backward (bitsandbytes'
//! `MatMul4Bit` does the same).

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};

use crate::blockwise4::NestedAbsmax;
use crate::host::{dequantize_4bit_into, dequantize_int8_into};
use crate::layer::{DeviceAbsmax, QuantWeight};

/// A backend that can multiply by a [`QuantWeight`].
pub trait QuantBackend: Backend {
    /// The dequantized weight, f32 `[out_features, in_features]`.
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        weight.dequantize_generic()
    }

    /// `x · dequant(W)ᵀ`: `x` is `[rows, in_features]`, the result `[rows, out_features]` in
    /// `x`'s dtype. With a `compute` dtype (bf16 / f16 on CUDA) the gemm runs in that dtype.
    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        matmul_in(x, Self::dequantize_weight(weight).transpose(), compute)
    }

    /// `g · dequant(W)`: the gradient of [`QuantBackend::quant_matmul`] with respect to `x`,
    /// `g` being `[rows, out_features]`.
    fn quant_matmul_backward(
        grad: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        matmul_in(grad, Self::dequantize_weight(weight), compute)
    }
}

/// `a · b` computed in `compute` (when given and different from `a`'s dtype), returned in `a`'s dtype.
pub fn matmul_in<B: Backend>(
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    compute: Option<FloatDType>,
) -> Tensor<B, 2> {
    let out = FloatDType::from(a.dtype());
    match compute {
        Some(dt) if dt != out => a.cast(dt).matmul(b.cast(dt)).cast(out),
        _ => a.matmul(b.cast(out)),
    }
}

fn bytes_of<B: Backend, const D: usize>(t: &Tensor<B, D, Int>, dtype: DType) -> TensorData {
    let data = t.to_data();
    if data.dtype == dtype {
        data
    } else {
        data.convert_dtype(dtype)
    }
}

/// Dequantizes on the host with all cores, writing straight into the buffer that becomes the
/// returned tensor. Meant for CPU backends, where reading the codes is a memory copy.
pub fn dequantize_on_host<B: Backend>(weight: &QuantWeight<B>) -> Tensor<B, 2> {
    match weight {
        QuantWeight::Four(w) => {
            let m = w.meta;
            let device = w.packed.device();
            let packed = bytes_of(&w.packed, DType::U8);
            let absmax: Vec<f32> = match &w.absmax {
                DeviceAbsmax::F32(a) => a.to_data().to_vec::<f32>().expect("absmax is f32"),
                DeviceAbsmax::Nested(n) => NestedAbsmax {
                    codes: bytes_of(&n.codes, DType::U8)
                        .to_vec::<u8>()
                        .expect("absmax codes are u8"),
                    offset: n.offset.to_data().to_vec::<f32>().expect("offset is f32")[0],
                    scales: n
                        .scales
                        .to_data()
                        .to_vec::<f32>()
                        .expect("nested absmax is f32"),
                }
                .unpack()
                .expect("nested absmax consistent (checked when built)"),
            };
            let mut out = vec![0.0f32; m.out_features * m.in_features];
            dequantize_4bit_into(
                packed.as_slice::<u8>().expect("packed codes are u8"),
                &absmax,
                &m.quant_type.code(),
                m.blocksize,
                &mut out,
            )
            .expect("4-bit weight consistent (checked when built)");
            Tensor::from_data(
                TensorData::new(out, [m.out_features, m.in_features]),
                (&device, DType::F32),
            )
        }
        QuantWeight::Int8(w) => {
            let [rows, cols] = w.cb.dims();
            let device = w.cb.device();
            let cb = bytes_of(&w.cb, DType::I8);
            let scb = w.scb.to_data().to_vec::<f32>().expect("SCB is f32");
            let mut out = vec![0.0f32; rows * cols];
            dequantize_int8_into(
                cb.as_slice::<i8>().expect("int8 codes are i8"),
                &scb,
                cols,
                &mut out,
            )
            .expect("int8 weight consistent (checked when built)");
            Tensor::from_data(TensorData::new(out, [rows, cols]), (&device, DType::F32))
        }
    }
}

/// `x · Wᵀ` computed as `(W · xᵀ)ᵀ` on the row-major `[out, in]` weight the host path writes:
/// a gemm whose big operand is in its natural layout. (`x.matmul(W.transpose())` made the CPU
/// gemm repack the whole weight through a strided view: 10 ms of a 14.6 ms NF4 decode step at
/// 2048x2048 on burn-flex; see docs/benchmarks.md.)
fn host_quant_matmul<B: Backend>(
    x: Tensor<B, 2>,
    weight: &QuantWeight<B>,
    compute: Option<FloatDType>,
) -> Tensor<B, 2> {
    let out = FloatDType::from(x.dtype());
    matmul_in(dequantize_on_host(weight).cast(out), x.transpose(), compute).transpose()
}

impl QuantBackend for burn_flex::Flex {
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        dequantize_on_host(weight)
    }

    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        host_quant_matmul(x, weight, compute)
    }
}

impl QuantBackend for burn_ndarray::NdArray<f32> {
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        dequantize_on_host(weight)
    }

    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        host_quant_matmul(x, weight, compute)
    }
}

// CUDA (`burn_cuda::Cuda`, fused or not): CubeCL kernels for `CubeBackend<R, ..>` and a custom
// fusion operation for `Fusion<B>`, in `cuda.rs`.

/// Backward step of [`QuantBackend::quant_matmul`] under autodiff: its state is the quantized
/// weight only (packed codes and scales, shared, not copied); the dense weight is rebuilt here.
#[derive(Debug)]
struct QuantMatmulBackward;

impl<B: QuantBackend> Backward<B, 1> for QuantMatmulBackward {
    type State = (QuantWeight<B>, Option<FloatDType>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (weight, compute) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad));
            B::quant_matmul_backward(grad, &weight, compute)
                .into_primitive()
                .tensor()
        });
    }
}

impl<B: QuantBackend, C: CheckpointStrategy> QuantBackend for Autodiff<B, C> {
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        Tensor::from_inner(B::dequantize_weight(&weight.valid()))
    }

    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        let inner = weight.valid();
        let x = x.into_primitive().tensor();
        let forward = |x| {
            B::quant_matmul(
                Tensor::from_primitive(TensorPrimitive::Float(x)),
                &inner,
                compute,
            )
            .into_primitive()
            .tensor()
        };
        let out = match QuantMatmulBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward(x.primitive);
                prep.finish((inner.clone(), compute), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn quant_matmul_backward(
        grad: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        // Not differentiated twice: the gradient of a gradient through a frozen weight.
        matmul_in(grad, Self::dequantize_weight(weight), compute)
    }
}
