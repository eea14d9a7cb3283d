//! CubeCL dequantization kernels and [`QuantBackend`] for burn's CubeCL backends (CUDA, wgpu).
//!
//! The kernels write the dense f32 weight with the same bits as the host reference
//! ([`crate::dequantize_4bit`], [`crate::int8_vectorwise_dequant`], [`crate::host`]):
//!
//! - 4-bit with f32 absmax: `out[i] = code[nibble_i] * absmax[i / blocksize]`;
//! - 4-bit with double-quantized absmax, two launches: `prod[b] = map[code_b] * scales[b / 256]`
//!   into a small workspace (one f32 per block), then
//!   `out[i] = code[nibble_i] * (prod[i / blocksize] + offset)`;
//! - LLM.int8: `out[i] = (f32(cb[i]) * scb[row]) * (1 / 127)`.
//!
//! Every value is one IEEE f32 multiplication or addition, each rounded once, in the host's
//! order. The nested absmax is split across two launches on purpose: NVRTC contracts `a * b + c`
//! into one fused multiply-add by default (`--fmad=true`), which rounds once instead of twice and
//! would change the bits of `map[code] * scale + offset`. A product that is stored by one kernel
//! and loaded by the next cannot be contracted, and `(prod + offset) * value` has no `a * b + c`
//! shape. The multiplications by `1/127` and by the absmax are never followed by an addition.
//!
//! Backends: [`QuantBackend`] is implemented for `CubeBackend<R, F, I, BT>` (any CubeCL runtime),
//! and for `Fusion<B>` over any fusion backend that implements it, as a custom operation in the
//! fusion stream (lazy like every other fused op; the dense weight is produced when the stream
//! runs). `burn_cuda::Cuda<f32, i32>` is `Fusion<CubeBackend<CudaRuntime, f32, i32, u8>>` with
//! burn-cuda's default features and the bare `CubeBackend` without `fusion`; both are covered.
//! `quant_matmul` of an f32 input of at most [`FUSED_MAX_ROWS`] rows by a 4-bit weight (decoding,
//! small batches) runs one kernel that reads the packed codes and never writes the dense weight
//! (`matmul_4bit_kernel`; a second custom fusion operation). Larger inputs, half-precision compute,
//! int8 weights and the backward product keep the trait's defaults: dequantize into a dense
//! workspace, then burn's tiled matmul, which reuses each weight tile across many rows.

use std::marker::PhantomData;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType, IntDType, Shape, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{AddressType, CubeCount, CubeDim};

use crate::backend::{QuantBackend, matmul_in};
use crate::blockwise4::NESTED_BLOCKSIZE;
use crate::host::INV_127;
use crate::layer::{DeviceAbsmax, Meta4, NestedDevice, QuantWeight, Weight4, WeightInt8};
use kernels::{
    dequant_4bit_kernel, dequant_4bit_nested_kernel, dequant_int8_kernel, matmul_4bit_kernel,
    nested_absmax_kernel,
};

// ---------------------------------------------------------------------------------------------
// Kernels.
//
// Layout of the 4-bit kernels: one unit per packed byte, i.e. per pair of output elements. The
// unit loads its byte once (consecutive units read consecutive bytes, so a plane's loads
// coalesce), looks both nibbles up in the `[256, 2]` pair table (which stays in cache), and
// writes two adjacent f32 (consecutive units cover one contiguous stretch of the output). Block
// sizes are even, so both elements of a byte share one absmax value and the unit loads it once.
// An odd element count leaves the last byte with a high nibble only: its unit skips the second
// store. Units past the end (the grid is rounded up to whole cubes) return at once.
// ---------------------------------------------------------------------------------------------

mod kernels {
    use cubecl::prelude::*;

    /// Stores the two elements of packed byte `pos`, both scaled by `scale`.
    #[cube]
    fn store_pair(
        packed: &Array<u8>,
        pairs: &Array<f32>,
        out: &mut Array<f32>,
        pos: usize,
        scale: f32,
    ) {
        let row = usize::cast_from(packed[pos]) * 2;
        let first = pos * 2;
        out[first] = pairs[row] * scale;
        if first + 1 < out.len() {
            out[first + 1] = pairs[row + 1] * scale;
        }
    }

    /// 4-bit with one f32 absmax per block.
    #[cube(launch, address_type = "dynamic")]
    pub(super) fn dequant_4bit_kernel(
        packed: &Array<u8>,
        pairs: &Array<f32>,
        absmax: &Array<f32>,
        out: &mut Array<f32>,
        blocksize: usize,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= packed.len() {
            terminate!();
        }
        let scale = absmax[pos * 2 / blocksize];
        store_pair(packed, pairs, out, pos, scale);
    }

    /// Double quantization, first launch: `prod[b] = map[codes[b]] * scales[b / group]`.
    #[cube(launch, address_type = "dynamic")]
    pub(super) fn nested_absmax_kernel(
        codes: &Array<u8>,
        map: &Array<f32>,
        scales: &Array<f32>,
        prod: &mut Array<f32>,
        #[comptime] group: usize,
    ) {
        let b = ABSOLUTE_POS;
        if b >= codes.len() {
            terminate!();
        }
        prod[b] = map[usize::cast_from(codes[b])] * scales[b / group];
    }

    /// Double quantization, second launch: the absmax of a block is `prod[block] + offset[0]`.
    #[cube(launch, address_type = "dynamic")]
    pub(super) fn dequant_4bit_nested_kernel(
        packed: &Array<u8>,
        pairs: &Array<f32>,
        prod: &Array<f32>,
        offset: &Array<f32>,
        out: &mut Array<f32>,
        blocksize: usize,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= packed.len() {
            terminate!();
        }
        let scale = prod[pos * 2 / blocksize] + offset[0];
        store_pair(packed, pairs, out, pos, scale);
    }

    /// LLM.int8, one unit per element: `(f32(cb) * scb[row]) * inv_127`.
    #[cube(launch, address_type = "dynamic")]
    pub(super) fn dequant_int8_kernel(
        cb: &Array<i8>,
        scb: &Array<f32>,
        out: &mut Array<f32>,
        cols: usize,
        inv_127: f32,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= cb.len() {
            terminate!();
        }
        out[pos] = (f32::cast_from(cb[pos]) * scb[pos / cols]) * inv_127;
    }

    /// `out[r, j] = Σ_k x[r, k] · W[j, k]` straight from the packed codes (the dense weight is
    /// never written): one cube per output feature `j` (`CUBE_POS`, any grid shape), its `units`
    /// units striding over `k` so that consecutive units read consecutive code bytes, the partial
    /// sums reduced pairwise in shared memory. Block `b`'s absmax is `scales[b]` (the f32 absmax),
    /// or with double quantization (`nested`) `scales[b] + offset[0]` (`nested_absmax_kernel`'s
    /// products and the nested offset). Each weight value therefore has the dequantization
    /// kernels' bits; only the order of the sum differs from a gemm's.
    #[cube(launch, address_type = "dynamic")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn matmul_4bit_kernel(
        x: &Array<f32>,
        packed: &Array<u8>,
        pairs: &Array<f32>,
        scales: &Array<f32>,
        offset: &Array<f32>,
        out: &mut Array<f32>,
        rows: usize,
        in_features: usize,
        out_features: usize,
        blocksize: usize,
        half_units: usize,
        #[comptime] units: usize,
        #[comptime] nested: bool,
    ) {
        let j = CUBE_POS;
        if j >= out_features {
            terminate!();
        }
        let unit = UNIT_POS_X as usize;
        let mut partial = SharedMemory::<f32>::new(units);
        let base = j * in_features;
        for r in 0..rows {
            let mut acc = f32::new(0.0);
            let mut k = unit;
            while k < in_features {
                let i = base + k;
                let code = usize::cast_from(packed[i / 2]);
                let mut scale = scales[i / blocksize];
                if nested {
                    scale += offset[0];
                }
                let w = pairs[code * 2 + i % 2] * scale;
                acc += x[r * in_features + k] * w;
                k += units;
            }
            partial[unit] = acc;
            sync_cube();
            let mut s = half_units;
            while s > 0 {
                if unit < s {
                    partial[unit] = partial[unit] + partial[unit + s];
                }
                sync_cube();
                s /= 2;
            }
            if unit == 0 {
                out[r * out_features + j] = partial[0];
            }
            sync_cube();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launches on `CubeBackend`.
// ---------------------------------------------------------------------------------------------

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// A contiguous `u8` / `i8` device buffer of an int tensor (cast first if it was stored wider).
fn int_buffer<R, F, I, BT, const D: usize>(
    t: &Tensor<Cube<R, F, I, BT>, D, Int>,
    dtype: IntDType,
) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let t = if t.dtype() == DType::from(dtype) {
        t.clone()
    } else {
        t.clone().cast(dtype)
    };
    into_contiguous(t.into_primitive())
}

/// A contiguous f32 device buffer of a float tensor.
fn f32_buffer<R, F, I, BT, const D: usize>(t: &Tensor<Cube<R, F, I, BT>, D>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let t = if t.dtype() == DType::F32 {
        t.clone()
    } else {
        t.clone().cast(FloatDType::F32)
    };
    into_contiguous(t.into_primitive().tensor())
}

/// An uninitialised contiguous f32 tensor on the device of `like`.
fn empty_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// Cube size and count for `units` units of an element-wise launch.
fn grid<R: CubeRuntime>(like: &CubeTensor<R>, units: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&like.client, units);
    (
        calculate_cube_count_elemwise(&like.client, units, cube_dim),
        cube_dim,
    )
}

/// The narrowest index type that addresses every buffer of a launch.
fn address_type<R: CubeRuntime>(tensors: &[&CubeTensor<R>]) -> AddressType {
    tensors
        .iter()
        .map(|t| t.required_address_type())
        .max()
        .unwrap_or_default()
}

fn dequantize_4bit<R, F, I, BT>(w: &Weight4<Cube<R, F, I, BT>>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let Meta4 {
        blocksize,
        out_features,
        in_features,
        ..
    } = w.meta;
    let numel = out_features * in_features;
    let nbytes = numel.div_ceil(2);
    let blocks = numel.div_ceil(blocksize);
    // Both elements of a byte share a block only for even block sizes (checked when built).
    assert!(
        blocksize > 0 && blocksize.is_multiple_of(2),
        "4-bit block size {blocksize} is not even"
    );

    let (packed, pairs) = codes_and_pairs(w);
    let out = empty_f32(&packed, Shape::new([out_features, in_features]));
    if numel == 0 {
        return out;
    }
    let (cube_count, cube_dim) = grid(&packed, nbytes);

    match &w.absmax {
        DeviceAbsmax::F32(a) => {
            let absmax = f32_buffer(a);
            assert_eq!(
                absmax.meta.num_elements(),
                blocks,
                "absmax values of {numel} elements in blocks of {blocksize}"
            );
            let addr = address_type(&[&packed, &pairs, &absmax, &out]);
            dequant_4bit_kernel::launch::<R>(
                &out.client,
                cube_count,
                cube_dim,
                addr,
                packed.into_array_arg(),
                pairs.into_array_arg(),
                absmax.into_array_arg(),
                out.clone().into_array_arg(),
                blocksize,
            );
        }
        DeviceAbsmax::Nested(NestedDevice {
            codes,
            scales,
            offset,
            map,
        }) => {
            let (prod, offset) = nested_products(codes, scales, offset, map, blocks);
            let addr = address_type(&[&packed, &pairs, &prod, &offset, &out]);
            dequant_4bit_nested_kernel::launch::<R>(
                &out.client,
                cube_count,
                cube_dim,
                addr,
                packed.into_array_arg(),
                pairs.into_array_arg(),
                prod.into_array_arg(),
                offset.into_array_arg(),
                out.clone().into_array_arg(),
                blocksize,
            );
        }
    }
    out
}

/// The packed codes as a `u8` buffer and the `[256, 2]` nibble-pair table of a 4-bit weight.
fn codes_and_pairs<R, F, I, BT>(w: &Weight4<Cube<R, F, I, BT>>) -> (CubeTensor<R>, CubeTensor<R>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let Meta4 {
        out_features,
        in_features,
        ..
    } = w.meta;
    let packed = int_buffer(&w.packed, IntDType::U8);
    let pairs = f32_buffer(&w.pairs);
    assert_eq!(
        packed.meta.num_elements(),
        (out_features * in_features).div_ceil(2),
        "packed codes of a [{out_features}, {in_features}] weight"
    );
    assert_eq!(
        pairs.meta.num_elements(),
        512,
        "the nibble-pair table is [256, 2]"
    );
    (packed, pairs)
}

/// Double quantization's first launch: `prod[b] = map[codes[b]] * scales[b / 256]` (one f32 per
/// block, a small workspace), and the offset buffer; block `b`'s absmax is `prod[b] + offset`.
fn nested_products<R, F, I, BT>(
    codes: &Tensor<Cube<R, F, I, BT>, 1, Int>,
    scales: &Tensor<Cube<R, F, I, BT>, 1>,
    offset: &Tensor<Cube<R, F, I, BT>, 1>,
    map: &Tensor<Cube<R, F, I, BT>, 1>,
    blocks: usize,
) -> (CubeTensor<R>, CubeTensor<R>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let codes = int_buffer(codes, IntDType::U8);
    let scales = f32_buffer(scales);
    let offset = f32_buffer(offset);
    let map = f32_buffer(map);
    assert_eq!(
        codes.meta.num_elements(),
        blocks,
        "absmax codes of {blocks} blocks"
    );
    assert_eq!(
        scales.meta.num_elements(),
        blocks.div_ceil(NESTED_BLOCKSIZE),
        "nested absmax scales"
    );
    assert_eq!(offset.meta.num_elements(), 1, "nested absmax offset");
    assert_eq!(map.meta.num_elements(), 256, "dynamic 8-bit map");

    let prod = empty_f32(&codes, Shape::new([blocks]));
    if blocks == 0 {
        return (prod, offset);
    }
    let (nested_count, nested_dim) = grid(&codes, blocks);
    let addr = address_type(&[&codes, &map, &scales, &prod]);
    nested_absmax_kernel::launch::<R>(
        &prod.client,
        nested_count,
        nested_dim,
        addr,
        codes.into_array_arg(),
        map.into_array_arg(),
        scales.into_array_arg(),
        prod.clone().into_array_arg(),
        NESTED_BLOCKSIZE,
    );
    (prod, offset)
}

/// Largest number of input rows for which [`QuantBackend::quant_matmul`] reads the 4-bit codes
/// directly ([`matmul_4bit_fused`]: decoding and small batches). Larger inputs dequantize into a
/// dense workspace and use burn's tiled matmul, which reuses each weight tile across rows.
pub const FUSED_MAX_ROWS: usize = 8;

/// Units per cube of the fused kernel: one cube per output feature.
const FUSED_UNITS: usize = 64;

/// `x · dequant(W)ᵀ` for a 4-bit weight without writing the dense weight: `x` f32
/// `[rows, in_features]`, the result f32 `[rows, out_features]`.
fn matmul_4bit_fused<R, F, I, BT>(
    x: CubeTensor<R>,
    rows: usize,
    w: &Weight4<Cube<R, F, I, BT>>,
) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let Meta4 {
        blocksize,
        out_features,
        in_features,
        ..
    } = w.meta;
    let numel = out_features * in_features;
    let blocks = numel.div_ceil(blocksize);
    let (packed, pairs) = codes_and_pairs(w);
    // Plain absmax: the kernel never reads `offset` (comptime `nested` false); any buffer will do.
    let (scales, offset, nested) = match &w.absmax {
        DeviceAbsmax::F32(a) => {
            let absmax = f32_buffer(a);
            assert_eq!(absmax.meta.num_elements(), blocks, "absmax values");
            (absmax.clone(), absmax, false)
        }
        DeviceAbsmax::Nested(NestedDevice {
            codes,
            scales,
            offset,
            map,
        }) => {
            let (prod, offset) = nested_products(codes, scales, offset, map, blocks);
            (prod, offset, true)
        }
    };
    let out = empty_f32(&packed, Shape::new([rows, out_features]));
    if rows == 0 || out_features == 0 {
        return out;
    }
    // One cube per output feature; a 2-D grid where the features exceed one axis' limit.
    let per_axis = out_features.min(65_535);
    let cube_count = CubeCount::Static(per_axis as u32, out_features.div_ceil(per_axis) as u32, 1);
    let cube_dim = CubeDim::new_1d(FUSED_UNITS as u32);
    let addr = address_type(&[&x, &packed, &pairs, &scales, &offset, &out]);
    matmul_4bit_kernel::launch::<R>(
        &out.client,
        cube_count,
        cube_dim,
        addr,
        x.into_array_arg(),
        packed.into_array_arg(),
        pairs.into_array_arg(),
        scales.into_array_arg(),
        offset.into_array_arg(),
        out.clone().into_array_arg(),
        rows,
        in_features,
        out_features,
        blocksize,
        FUSED_UNITS / 2,
        FUSED_UNITS,
        nested,
    );
    out
}

/// Whether [`QuantBackend::quant_matmul`] takes the fused path for this input.
fn fused_applies<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &QuantWeight<B>,
    compute: Option<FloatDType>,
) -> bool {
    matches!(weight, QuantWeight::Four(_))
        && x.dims()[0] <= FUSED_MAX_ROWS
        && x.dtype() == DType::F32
        && compute.is_none_or(|c| c == FloatDType::F32)
}

fn dequantize_int8<R, F, I, BT>(w: &WeightInt8<Cube<R, F, I, BT>>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let [rows, cols] = w.cb.dims();
    let cb = int_buffer(&w.cb, IntDType::I8);
    let scb = f32_buffer(&w.scb);
    assert_eq!(
        scb.meta.num_elements(),
        rows,
        "one SCB value per row of a [{rows}, {cols}] int8 weight"
    );
    let out = empty_f32(&cb, Shape::new([rows, cols]));
    let numel = rows * cols;
    if numel == 0 {
        return out;
    }
    let (cube_count, cube_dim) = grid(&cb, numel);
    let addr = address_type(&[&cb, &scb, &out]);
    dequant_int8_kernel::launch::<R>(
        &out.client,
        cube_count,
        cube_dim,
        addr,
        cb.into_array_arg(),
        scb.into_array_arg(),
        out.clone().into_array_arg(),
        cols,
        INV_127,
    );
    out
}

impl<R, F, I, BT> QuantBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        let out = match weight {
            QuantWeight::Four(w) => dequantize_4bit(w),
            QuantWeight::Int8(w) => dequantize_int8(w),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        match weight {
            QuantWeight::Four(w) if fused_applies(&x, weight, compute) => {
                let rows = x.dims()[0];
                let x = into_contiguous(x.into_primitive().tensor());
                Tensor::from_primitive(TensorPrimitive::Float(matmul_4bit_fused(x, rows, w)))
            }
            _ => {
                let (_, in_features) = weight.dims();
                let w = Self::dequantize_weight(weight).transpose();
                // burn-cubecl 0.21's matmul gives wrong sums for a transposed right-hand side
                // when k = in_features is 8 mod 16 (k >= 520, up to 32 rows, measured on Vulkan /
                // lavapipe; tests/cube.rs `check_fused_matmul` and docs/gpu.md): such weights are
                // copied into the transposed layout first.
                let w = if in_features % 16 == 0 {
                    w
                } else {
                    Tensor::from_primitive(TensorPrimitive::Float(into_contiguous(
                        w.into_primitive().tensor(),
                    )))
                };
                matmul_in(x, w, compute)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fusion: a custom operation in the stream that runs the inner backend's dequantization.
// ---------------------------------------------------------------------------------------------

/// Which [`QuantWeight`] the inputs of a [`DequantizeOp`] form, in the order they are listed.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `[packed, pairs, absmax]`.
    Four(Meta4),
    /// `[packed, pairs, codes, scales, offset, map]`.
    FourNested(Meta4),
    /// `[cb, scb]`.
    Int8 { threshold: f32 },
}

/// Dequantizes the weight whose tensors are the inputs of `desc` with `B::dequantize_weight`;
/// or, with `matmul: Some(compute)`, multiplies the first input by it with `B::quant_matmul`
/// (the weight's tensors follow the input), so that the inner backend picks the fused kernel or
/// the dense path.
struct DequantizeOp<B> {
    desc: CustomOpIr,
    layout: Layout,
    matmul: Option<Option<FloatDType>>,
    backend: PhantomData<fn() -> B>,
}

impl<B> std::fmt::Debug for DequantizeOp<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DequantizeOp")
            .field("desc", &self.desc)
            .field("layout", &self.layout)
            .field("matmul", &self.matmul)
            .finish()
    }
}

fn int_input<B: FusionBackend, const D: usize>(
    handles: &mut HandleContainer<B::Handle>,
    ir: &TensorIr,
) -> Tensor<B, D, Int> {
    Tensor::from_primitive(handles.get_int_tensor::<B>(ir))
}

fn float_input<B: FusionBackend, const D: usize>(
    handles: &mut HandleContainer<B::Handle>,
    ir: &TensorIr,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(handles.get_float_tensor::<B>(ir)))
}

impl<B: FusionBackend + QuantBackend> Operation<B::FusionRuntime> for DequantizeOp<B> {
    fn execute(&self, handles: &mut HandleContainer<B::Handle>) {
        let inputs = &self.desc.inputs;
        let x = &inputs[usize::from(self.matmul.is_some())..];
        let weight = match self.layout {
            Layout::Four(meta) => QuantWeight::Four(Weight4 {
                packed: int_input(handles, &x[0]),
                pairs: float_input(handles, &x[1]),
                absmax: DeviceAbsmax::F32(float_input(handles, &x[2])),
                meta,
            }),
            Layout::FourNested(meta) => QuantWeight::Four(Weight4 {
                packed: int_input(handles, &x[0]),
                pairs: float_input(handles, &x[1]),
                absmax: DeviceAbsmax::Nested(NestedDevice {
                    codes: int_input(handles, &x[2]),
                    scales: float_input(handles, &x[3]),
                    offset: float_input(handles, &x[4]),
                    map: float_input(handles, &x[5]),
                }),
                meta,
            }),
            Layout::Int8 { threshold } => QuantWeight::Int8(WeightInt8 {
                cb: int_input(handles, &x[0]),
                scb: float_input(handles, &x[1]),
                threshold,
            }),
        };
        let out = match self.matmul {
            Some(compute) => B::quant_matmul(float_input(handles, &inputs[0]), &weight, compute),
            None => B::dequantize_weight(&weight),
        };
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, out.into_primitive().tensor());
    }
}

fn int_fusion<B: FusionBackend, const D: usize>(
    t: &Tensor<Fusion<B>, D, Int>,
) -> FusionTensor<B::FusionRuntime> {
    t.clone().into_primitive()
}

fn float_fusion<B: FusionBackend, const D: usize>(
    t: &Tensor<Fusion<B>, D>,
) -> FusionTensor<B::FusionRuntime> {
    t.clone().into_primitive().tensor()
}

/// The weight's tensors in the order of its [`Layout`].
fn weight_inputs<B: FusionBackend>(
    weight: &QuantWeight<Fusion<B>>,
) -> (Layout, Vec<FusionTensor<B::FusionRuntime>>) {
    match weight {
        QuantWeight::Four(w) => match &w.absmax {
            DeviceAbsmax::F32(a) => (
                Layout::Four(w.meta),
                vec![
                    int_fusion(&w.packed),
                    float_fusion(&w.pairs),
                    float_fusion(a),
                ],
            ),
            DeviceAbsmax::Nested(n) => (
                Layout::FourNested(w.meta),
                vec![
                    int_fusion(&w.packed),
                    float_fusion(&w.pairs),
                    int_fusion(&n.codes),
                    float_fusion(&n.scales),
                    float_fusion(&n.offset),
                    float_fusion(&n.map),
                ],
            ),
        },
        QuantWeight::Int8(w) => (
            Layout::Int8 {
                threshold: w.threshold,
            },
            vec![int_fusion(&w.cb), float_fusion(&w.scb)],
        ),
    }
}

/// Registers a [`DequantizeOp`] over `inputs` with one f32 output of `shape`.
fn register_op<B: FusionBackend + QuantBackend>(
    name: &'static str,
    layout: Layout,
    matmul: Option<Option<FloatDType>>,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    shape: [usize; 2],
    dtype: DType,
) -> Tensor<Fusion<B>, 2> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    // The weight keeps its own handles, so every input is read-only here.
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let output = TensorIr::uninit(client.create_empty_handle(), Shape::new(shape), dtype);
    let desc = CustomOpIr::new(name, &inputs, &[output]);
    let op = DequantizeOp::<B> {
        desc: desc.clone(),
        layout,
        matmul,
        backend: PhantomData,
    };
    let out = client
        .register(streams, OperationIr::Custom(desc), op)
        .pop()
        .expect("one output");
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

impl<B: FusionBackend + QuantBackend> QuantBackend for Fusion<B> {
    fn dequantize_weight(weight: &QuantWeight<Self>) -> Tensor<Self, 2> {
        let (out_features, in_features) = weight.dims();
        let (layout, inputs) = weight_inputs(weight);
        register_op::<B>(
            "quant::dequantize_weight",
            layout,
            None,
            inputs,
            [out_features, in_features],
            DType::F32,
        )
    }

    fn quant_matmul(
        x: Tensor<Self, 2>,
        weight: &QuantWeight<Self>,
        compute: Option<FloatDType>,
    ) -> Tensor<Self, 2> {
        let rows = x.dims()[0];
        let dtype = x.dtype();
        let (out_features, _) = weight.dims();
        let (layout, weight_tensors) = weight_inputs(weight);
        let mut inputs = vec![float_fusion(&x)];
        inputs.extend(weight_tensors);
        register_op::<B>(
            "quant::quant_matmul",
            layout,
            Some(compute),
            inputs,
            [rows, out_features],
            dtype,
        )
    }
}
