//! Quantized weights held on the device (the layer that multiplies by them is
//! [`crate::QuantLinear`]).
//!
//! Storage is the packed format itself: 4-bit codes two per byte in a `u8` tensor, absmax in f32
//! or (double quantization) as `u8` codes plus one f32 scale per 256 blocks; LLM.int8 weights as
//! an `i8` tensor plus f32 row scales. Nothing is widened until a forward pass dequantizes one
//! layer's weight, uses it and drops it.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{DType, IntDType};

use crate::blockwise4::{Absmax, NESTED_BLOCKSIZE, QuantType, Quantized4};
use crate::codebook::dynamic_map_signed;
use crate::error::{Error, Result};
use crate::host::{INV_127, pair_table};
use crate::int8::Int8Rows;

/// Shape and codec of a 4-bit weight (host-side metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta4 {
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Elements per absmax block.
    pub blocksize: usize,
    /// Rows of the weight (`out_features`).
    pub out_features: usize,
    /// Columns of the weight (`in_features`).
    pub in_features: usize,
}

/// Double-quantized absmax on the device.
#[derive(Module, Debug)]
pub struct NestedDevice<B: Backend> {
    /// `u8` codes, one per 4-bit block.
    pub codes: Tensor<B, 1, Int>,
    /// f32 scale per group of 256 blocks.
    pub scales: Tensor<B, 1>,
    /// f32 `[1]`: the mean subtracted before quantizing the absmax values.
    pub offset: Tensor<B, 1>,
    /// The signed dynamic 8-bit map (256 f32).
    pub map: Tensor<B, 1>,
}

/// Block scales of a 4-bit weight on the device.
#[derive(Module, Debug)]
pub enum DeviceAbsmax<B: Backend> {
    /// One f32 per block.
    F32(Tensor<B, 1>),
    /// Double quantization.
    Nested(NestedDevice<B>),
}

/// A 4-bit (NF4 / FP4) weight on the device.
#[derive(Module, Debug)]
pub struct Weight4<B: Backend> {
    /// `u8` `[ceil(n / 2)]`, first element of each pair in the high nibble.
    pub packed: Tensor<B, 1, Int>,
    /// Block scales.
    pub absmax: DeviceAbsmax<B>,
    /// f32 `[256, 2]`: the values of a byte's high and low nibble (built from the codebook).
    pub pairs: Tensor<B, 2>,
    /// Codec and shape.
    #[module(skip)]
    pub meta: Meta4,
}

/// An LLM.int8 weight on the device.
#[derive(Module, Debug)]
pub struct WeightInt8<B: Backend> {
    /// `i8` `[out, in]` (`weight` in checkpoints).
    pub cb: Tensor<B, 2, Int>,
    /// f32 `[out]` row absmax (`SCB`).
    pub scb: Tensor<B, 1>,
    /// Outlier threshold of the LLM.int8 matmul (kept for saving; the forward dequantizes).
    #[module(skip)]
    pub threshold: f32,
}

/// A frozen quantized weight matrix `[out_features, in_features]`.
#[derive(Module, Debug)]
pub enum QuantWeight<B: Backend> {
    /// NF4 / FP4 in blocks, optionally double-quantized.
    Four(Weight4<B>),
    /// LLM.int8 row-wise.
    Int8(WeightInt8<B>),
}

fn u8_tensor<B: Backend>(bytes: Vec<u8>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = bytes.len();
    Tensor::from_data(TensorData::new(bytes, [n]), (device, DType::U8))
}

fn f32_tensor<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), (device, DType::F32))
}

impl<B: Backend> QuantWeight<B> {
    /// Moves a host 4-bit tensor of shape `[out_features, in_features]` to the device.
    pub fn from_4bit(
        q: &Quantized4,
        out_features: usize,
        in_features: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let numel = out_features * in_features;
        let blocks = numel.div_ceil(q.blocksize);
        let absmax_len = match &q.absmax {
            Absmax::F32(a) => a.len(),
            Absmax::Nested(n) => n.codes.len(),
        };
        if q.numel != numel || q.packed.len() != numel.div_ceil(2) || absmax_len != blocks {
            return Err(Error::Shape(format!(
                "a [{out_features}, {in_features}] weight in blocks of {} needs {} packed bytes and {blocks} absmax values, got {} elements, {} bytes and {absmax_len} absmax values",
                q.blocksize,
                numel.div_ceil(2),
                q.numel,
                q.packed.len()
            )));
        }
        let absmax = match &q.absmax {
            Absmax::F32(a) => DeviceAbsmax::F32(f32_tensor(a.clone(), device)),
            Absmax::Nested(n) => {
                if n.scales.len() != blocks.div_ceil(NESTED_BLOCKSIZE) {
                    return Err(Error::Shape(format!(
                        "{blocks} double-quantized absmax codes need {} nested scales, got {}",
                        blocks.div_ceil(NESTED_BLOCKSIZE),
                        n.scales.len()
                    )));
                }
                DeviceAbsmax::Nested(NestedDevice {
                    codes: u8_tensor(n.codes.clone(), device),
                    scales: f32_tensor(n.scales.clone(), device),
                    offset: f32_tensor(vec![n.offset], device),
                    map: f32_tensor(dynamic_map_signed().to_vec(), device),
                })
            }
        };
        let pairs: Vec<f32> = pair_table(&q.quant_type.code())
            .into_iter()
            .flatten()
            .collect();
        Ok(QuantWeight::Four(Weight4 {
            packed: u8_tensor(q.packed.clone(), device),
            absmax,
            pairs: Tensor::from_data(TensorData::new(pairs, [256, 2]), (device, DType::F32)),
            meta: (Meta4 {
                quant_type: q.quant_type,
                blocksize: q.blocksize,
                out_features,
                in_features,
            }),
        }))
    }

    /// Moves a host LLM.int8 matrix (`rows = out_features`) to the device.
    pub fn from_int8(q: &Int8Rows, threshold: f32, device: &B::Device) -> Result<Self> {
        if q.cb.len() != q.rows * q.cols || q.scb.len() != q.rows {
            return Err(Error::Shape(format!(
                "int8 weight [{}, {}] needs {} codes and {} row scales, got {} and {}",
                q.rows,
                q.cols,
                q.rows * q.cols,
                q.rows,
                q.cb.len(),
                q.scb.len()
            )));
        }
        let cb = Tensor::from_data(
            TensorData::new(q.cb.clone(), [q.rows, q.cols]),
            (device, DType::I8),
        );
        Ok(QuantWeight::Int8(WeightInt8 {
            cb,
            scb: f32_tensor(q.scb.clone(), device),
            threshold,
        }))
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            QuantWeight::Four(w) => (w.meta.out_features, w.meta.in_features),
            QuantWeight::Int8(w) => {
                let [o, i] = w.cb.dims();
                (o, i)
            }
        }
    }

    /// Bytes held on the device for this weight (codes, scales and codebooks), from the tensors'
    /// own dtypes and shapes.
    pub fn device_bytes(&self) -> usize {
        fn bytes<B: Backend, const D: usize, K: burn::tensor::BasicOps<B>>(
            t: &Tensor<B, D, K>,
        ) -> usize {
            t.shape().num_elements() * t.dtype().size()
        }
        match self {
            QuantWeight::Four(w) => {
                let absmax = match &w.absmax {
                    DeviceAbsmax::F32(a) => bytes(a),
                    DeviceAbsmax::Nested(n) => {
                        bytes(&n.codes) + bytes(&n.scales) + bytes(&n.offset) + bytes(&n.map)
                    }
                };
                bytes(&w.packed) + absmax + bytes(&w.pairs)
            }
            QuantWeight::Int8(w) => bytes(&w.cb) + bytes(&w.scb),
        }
    }

    /// Copies the weight back to the host (for saving).
    pub fn to_host(&self) -> Result<HostWeight> {
        let err = |what: &str, e: burn::tensor::DataError| {
            Error::Shape(format!("reading {what} from the device: {e:?}"))
        };
        match self {
            QuantWeight::Four(w) => {
                let packed = w
                    .packed
                    .to_data()
                    .convert_dtype(DType::U8)
                    .into_vec::<u8>()
                    .map_err(|e| err("packed codes", e))?;
                let absmax = match &w.absmax {
                    DeviceAbsmax::F32(a) => Absmax::F32(
                        a.to_data()
                            .into_vec::<f32>()
                            .map_err(|e| err("absmax", e))?,
                    ),
                    DeviceAbsmax::Nested(n) => Absmax::Nested(crate::NestedAbsmax {
                        codes: n
                            .codes
                            .to_data()
                            .convert_dtype(DType::U8)
                            .into_vec::<u8>()
                            .map_err(|e| err("absmax codes", e))?,
                        offset: n
                            .offset
                            .to_data()
                            .into_vec::<f32>()
                            .map_err(|e| err("offset", e))?[0],
                        scales: n
                            .scales
                            .to_data()
                            .into_vec::<f32>()
                            .map_err(|e| err("nested absmax", e))?,
                    }),
                };
                let m = w.meta;
                Ok(HostWeight::Four {
                    q: Quantized4 {
                        quant_type: m.quant_type,
                        blocksize: m.blocksize,
                        numel: m.out_features * m.in_features,
                        packed,
                        absmax,
                    },
                    out_features: m.out_features,
                    in_features: m.in_features,
                })
            }
            QuantWeight::Int8(w) => {
                let [rows, cols] = w.cb.dims();
                let cb =
                    w.cb.to_data()
                        .convert_dtype(DType::I8)
                        .into_vec::<i8>()
                        .map_err(|e| err("int8 codes", e))?;
                let scb = w
                    .scb
                    .to_data()
                    .into_vec::<f32>()
                    .map_err(|e| err("SCB", e))?;
                Ok(HostWeight::Int8 {
                    q: Int8Rows {
                        cb,
                        scb,
                        outlier_cols: None,
                        rows,
                        cols,
                    },
                    threshold: w.threshold,
                })
            }
        }
    }

    /// Quantizes the float matrix `values` (`[out_features, in_features]`, row-major) with this
    /// weight's codec and settings (NF4/FP4 with its blocksize and double quantization, or
    /// LLM.int8 with its threshold): how a merged adapter goes back into a quantized base.
    pub fn requantize(&self, values: &[f32], device: &B::Device) -> Result<Self> {
        let (out, inp) = self.dims();
        if values.len() != out * inp {
            return Err(Error::Shape(format!(
                "re-quantizing a [{out}, {inp}] weight needs {} values, got {}",
                out * inp,
                values.len()
            )));
        }
        match self {
            QuantWeight::Four(w) => {
                let double = matches!(w.absmax, DeviceAbsmax::Nested(_));
                let q = crate::blockwise4::quantize_4bit(
                    values,
                    w.meta.quant_type,
                    w.meta.blocksize,
                    double,
                )?;
                Self::from_4bit(&q, out, inp, device)
            }
            QuantWeight::Int8(w) => {
                // As on loading: transformers casts to f16 before LLM.int8 quantization.
                let halfed: Vec<f32> = values
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
                let q = crate::int8::int8_vectorwise_quant(&halfed, out, inp, 0.0)?;
                Self::from_int8(&q, w.threshold, device)
            }
        }
    }

    /// Dequantizes with burn tensor ops only (works on every backend; the reference for the
    /// backend-specific paths). Returns f32 `[out_features, in_features]`.
    pub fn dequantize_generic(&self) -> Tensor<B, 2> {
        match self {
            QuantWeight::Four(w) => {
                let m = w.meta;
                let numel = m.out_features * m.in_features;
                let bs = m.blocksize;
                let blocks = numel.div_ceil(bs);
                let nbytes = w.packed.dims()[0];
                let idx = w.packed.clone().cast(IntDType::I32);
                let values = w.pairs.clone().select(0, idx).reshape([2 * nbytes]);
                let absmax = match &w.absmax {
                    DeviceAbsmax::F32(a) => a.clone(),
                    DeviceAbsmax::Nested(n) => {
                        let groups = blocks.div_ceil(NESTED_BLOCKSIZE);
                        let centered = n.map.clone().select(0, n.codes.clone().cast(IntDType::I32));
                        let centered = pad_to(centered, groups * NESTED_BLOCKSIZE);
                        let scaled = centered.reshape([groups, NESTED_BLOCKSIZE])
                            * n.scales.clone().reshape([groups, 1]);
                        scaled.reshape([groups * NESTED_BLOCKSIZE]).slice(0..blocks)
                            + n.offset.clone()
                    }
                };
                let values = pad_to(values, blocks * bs);
                let out = values.reshape([blocks, bs]) * absmax.reshape([blocks, 1]);
                out.reshape([blocks * bs])
                    .slice(0..numel)
                    .reshape([m.out_features, m.in_features])
            }
            QuantWeight::Int8(w) => {
                let [rows, _] = w.cb.dims();
                (w.cb.clone().float() * w.scb.clone().reshape([rows, 1])).mul_scalar(INV_127)
            }
        }
    }
}

/// Zero-pads (or cuts) a vector to `len` elements.
fn pad_to<B: Backend>(t: Tensor<B, 1>, len: usize) -> Tensor<B, 1> {
    let n = t.dims()[0];
    match n.cmp(&len) {
        std::cmp::Ordering::Equal => t,
        std::cmp::Ordering::Greater => t.slice(0..len),
        std::cmp::Ordering::Less => {
            let device = t.device();
            Tensor::cat(vec![t, Tensor::zeros([len - n], &device)], 0)
        }
    }
}

/// A quantized weight copied to the host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostWeight {
    /// NF4 / FP4.
    Four {
        /// Codes and scales.
        q: Quantized4,
        /// Rows.
        out_features: usize,
        /// Columns.
        in_features: usize,
    },
    /// LLM.int8.
    Int8 {
        /// Codes and row scales.
        q: Int8Rows,
        /// Outlier threshold.
        threshold: f32,
    },
}
