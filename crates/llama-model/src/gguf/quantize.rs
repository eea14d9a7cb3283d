//! f32 -> ggml encodings for the writer: F32, F16, BF16 and llama.cpp's reference quantizers
//! for Q8_0, Q4_0 and Q4_1 (`quantize_row_*_ref`, which gguf-py's `gguf.quants.quantize`
//! reproduces: the tests compare bytes with it), Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (see
//! [`super::kquants`]; compared with bytes from llama.cpp's own build).

use half::{bf16, f16};

use super::dequant::GgmlType;
use super::kquants;

/// Encodes `values` (a whole number of blocks) as `ty`; `Err` for types the writer does not
/// produce or a length that is not a multiple of the block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> std::result::Result<Vec<u8>, String> {
    let (block, size) = ty.block();
    if !values.len().is_multiple_of(block) {
        return Err(format!(
            "{} values is not a whole number of {block}-value {ty:?} blocks",
            values.len()
        ));
    }
    let mut out = Vec::with_capacity(values.len() / block * size);
    match ty {
        GgmlType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => values.chunks_exact(32).for_each(|b| q8_0(b, &mut out)),
        GgmlType::Q4_0 => values.chunks_exact(32).for_each(|b| q4_0(b, &mut out)),
        GgmlType::Q4_1 => values.chunks_exact(32).for_each(|b| q4_1(b, &mut out)),
        GgmlType::Q5_0 => values
            .chunks_exact(32)
            .for_each(|b| kquants::q5_0(b, &mut out)),
        GgmlType::Q5_1 => values
            .chunks_exact(32)
            .for_each(|b| kquants::q5_1(b, &mut out)),
        GgmlType::Q4_K => values
            .chunks_exact(256)
            .for_each(|b| kquants::q4_k(b, &mut out)),
        GgmlType::Q5_K => values
            .chunks_exact(256)
            .for_each(|b| kquants::q5_k(b, &mut out)),
        GgmlType::Q6_K => values
            .chunks_exact(256)
            .for_each(|b| kquants::q6_k(b, &mut out)),
        other => {
            return Err(format!(
                "the writer does not encode {other:?} (supported: F32, F16, BF16, Q8_0, Q4_0, \
                 Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
            ));
        }
    }
    Ok(out)
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// Packs 32 4-bit codes: value `j` in the low nibble of byte `j`, value `j + 16` in its high one.
fn pack_nibbles(codes: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| codes[j] | (codes[j + 16] << 4)));
}

/// Q8_0: `d = max|x| / 127` (f16), `q = round(x / d)` (ties away from zero).
fn q8_0(b: &[f32], out: &mut Vec<u8>) {
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
}

/// Q4_0: `d = x_max / -8` where `x_max` is the value of largest magnitude (the first one on a
/// tie), `q = min(15, trunc(x / d + 8.5))`.
fn q4_0(b: &[f32], out: &mut Vec<u8>) {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in b {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    let mut codes = [0u8; 32];
    for (c, v) in codes.iter_mut().zip(b) {
        *c = ((v * id + 8.5) as u8).min(15);
    }
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    pack_nibbles(&codes, out);
}

/// Q4_1: `d = (max - min) / 15`, `m = min` (both f16), `q = min(15, trunc((x - min) / d + 0.5))`.
fn q4_1(b: &[f32], out: &mut Vec<u8>) {
    let min = b.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let max = b.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let mut codes = [0u8; 32];
    for (c, v) in codes.iter_mut().zip(b) {
        *c = (((v - min) * id + 0.5) as u8).min(15);
    }
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    pack_nibbles(&codes, out);
}
