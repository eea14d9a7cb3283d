//! Block-wise 8-bit quantization with a 256-entry code map, as bitsandbytes' CPU kernel
//! (`quantize_cpu_impl`) does it: absmax per block, then a 65536-cell lookup table — not an exact
//! nearest search — so codes match bitsandbytes bit for bit.

use crate::error::{Error, Result};

/// Maps a scaled value in `[-1, 1]` to its code the way bitsandbytes' CPU kernel does.
#[derive(Debug, Clone)]
pub struct Lut8 {
    lut: Vec<u8>,
}

impl Lut8 {
    /// Builds the table for a sorted 256-entry code map: cell `j` gets the number of code
    /// midpoints strictly below `-1 + 2j / 65535`.
    pub fn new(code: &[f32; 256]) -> Self {
        let mids: Vec<f32> = code.windows(2).map(|w| 0.5f32 * (w[0] + w[1])).collect();
        let lut = (0..65536u32)
            .map(|j| {
                let val = -1.0f32 + (2.0f32 * j as f32) / 65535.0f32;
                mids.partition_point(|&m| m < val) as u8
            })
            .collect();
        Self { lut }
    }

    /// Code of `v`, already scaled by the block's inverse absmax.
    #[inline]
    pub fn code(&self, v: f32) -> u8 {
        let v = v.clamp(-1.0, 1.0);
        // Each step rounded to f32 as in the C kernel; `as u16` truncates.
        let half = (v + 1.0) * 0.5;
        let scaled = half * 65535.0;
        let idx = (scaled + 0.5) as u16;
        self.lut[idx as usize]
    }
}

/// Codes and per-block absmax of `x` (any block size > 0; the last block may be partial).
pub fn quantize_blockwise8(x: &[f32], blocksize: usize, lut: &Lut8) -> Result<(Vec<u8>, Vec<f32>)> {
    if blocksize == 0 {
        return Err(Error::Blocksize(0));
    }
    if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    let mut codes = vec![0u8; x.len()];
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    for (block, out) in x.chunks(blocksize).zip(codes.chunks_mut(blocksize)) {
        let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(am);
        if am == 0.0 {
            continue; // all codes 0, as the C kernel leaves them
        }
        let inv = 1.0f32 / am;
        for (o, &v) in out.iter_mut().zip(block) {
            *o = lut.code(v * inv);
        }
    }
    Ok((codes, absmax))
}

/// `code[q] * absmax[block]` for every element.
pub fn dequantize_blockwise8(
    codes: &[u8],
    absmax: &[f32],
    blocksize: usize,
    code: &[f32; 256],
) -> Result<Vec<f32>> {
    if blocksize == 0 || codes.len().div_ceil(blocksize) != absmax.len() {
        return Err(Error::Shape(format!(
            "{} codes in blocks of {blocksize} need {} absmax values, got {}",
            codes.len(),
            codes.len().div_ceil(blocksize.max(1)),
            absmax.len()
        )));
    }
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &q)| code[q as usize] * absmax[i / blocksize])
        .collect())
}
