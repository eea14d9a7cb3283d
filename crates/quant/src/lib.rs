//! `quant`: bitsandbytes-compatible quantization codecs on host slices.
//!
//! - [`quantize_4bit`] / [`dequantize_4bit`]: NF4 and FP4 in blocks of 32..4096, two codes per
//!   byte (first element in the high nibble), optional double quantization of the absmax.
//! - [`quantize_blockwise8`]: block-wise 8-bit with the signed dynamic map (bitsandbytes' CPU
//!   lookup-table kernel, bit for bit).
//! - [`int8_vectorwise_quant`]: LLM.int8 row-wise int8 with `SCB` and outlier columns.
//!
//! Every codec is checked bit for bit against bitsandbytes 0.50.2 (`tests/codecs.rs`, fixtures
//! from `scripts/fixtures/make_quant_fixtures.py`).

pub mod backend;
pub mod blockwise4;
pub mod blockwise8;
pub mod bnb;
pub mod codebook;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;
pub mod dense;
pub mod error;
#[cfg(feature = "wgpu")]
pub mod gpu;

/// burn's CUDA backend as the commands and tests use it: f32 floats, i32 ints, with fusion.
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda<f32, i32>;
#[cfg(feature = "cuda")]
pub use burn_cuda::CudaDevice;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub use cube::FUSED_MAX_ROWS;
pub mod host;
pub mod int8;
pub mod layer;
pub mod linear;
pub mod report;
pub mod torch_sum;

pub use backend::{QuantBackend, dequantize_on_host};
pub use blockwise4::{
    Absmax, NESTED_BLOCKSIZE, NestedAbsmax, QuantType, Quantized4, check_blocksize,
    dequantize_4bit, nest_absmax, quantize_4bit,
};
pub use blockwise8::{Lut8, dequantize_blockwise8, quantize_blockwise8};
pub use bnb::{BnbConfig, BnbMethod, QuantState4, RawTensor};
pub use codebook::{FP4, NF4, dynamic_map_signed};
pub use dense::DenseLinear;
pub use error::{Error, Result};
pub use int8::{Int8Rows, int8_vectorwise_dequant, int8_vectorwise_quant};
pub use layer::{DeviceAbsmax, HostWeight, Meta4, NestedDevice, QuantWeight, Weight4, WeightInt8};
pub use linear::QuantLinear;
pub use report::ErrorStats;
