//! Block-wise 4-bit quantization (NF4 and bitsandbytes' FP4), optionally with double
//! quantization of the absmax values, bit-identical to `bitsandbytes.functional.quantize_4bit`
//! on CPU.

use crate::blockwise8::{Lut8, dequantize_blockwise8, quantize_blockwise8};
use crate::codebook::{FP4, FP4_ORDER, NF4, dynamic_map_signed};
use crate::error::{Error, Result};
use crate::torch_sum::torch_mean_f32;

/// Blocks of absmax values are quantized in groups of this many (bitsandbytes' nested blocksize).
pub const NESTED_BLOCKSIZE: usize = 256;

/// The 4-bit data type: `nf4` or `fp4` (bitsandbytes' names) in configuration files, on the
/// command line and in quant states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum QuantType {
    /// NormalFloat4 (QLoRA).
    Nf4,
    /// bitsandbytes' 4-bit float (sign + 2 exponent + 1 mantissa bits).
    Fp4,
}

impl QuantType {
    /// Code value of every nibble.
    pub fn code(self) -> [f32; 16] {
        match self {
            QuantType::Nf4 => NF4,
            QuantType::Fp4 => FP4,
        }
    }

    /// Nibbles in ascending order of their values.
    fn order(self) -> [u8; 16] {
        match self {
            QuantType::Nf4 => std::array::from_fn(|i| i as u8),
            QuantType::Fp4 => FP4_ORDER,
        }
    }

    /// The 15 midpoints between consecutive sorted codes, computed in f32 as bitsandbytes does.
    pub fn bounds(self) -> [f32; 15] {
        let code = self.code();
        let sorted = self.order().map(|n| code[n as usize]);
        std::array::from_fn(|i| (sorted[i] + sorted[i + 1]) / 2.0)
    }

    /// `"nf4"` or `"fp4"`.
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuantType {
    type Err = String;
    /// `nf4` or `fp4`; anything else is an error naming the value and the choices.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [QuantType::Nf4, QuantType::Fp4]
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown 4-bit quant type \"{s}\"; expected \"nf4\" or \"fp4\""))
    }
}

/// Double-quantized absmax: 8-bit codes of `absmax - offset`, one f32 scale per 256 blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedAbsmax {
    /// One 8-bit code per 4-bit block (`weight.absmax` in checkpoints).
    pub codes: Vec<u8>,
    /// Mean of the absmax values, subtracted before quantizing them.
    pub offset: f32,
    /// Absmax of each group of [`NESTED_BLOCKSIZE`] codes (`weight.nested_absmax`).
    pub scales: Vec<f32>,
}

/// Per-block scales of a 4-bit tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    F32(Vec<f32>),
    /// Double quantization.
    Nested(NestedAbsmax),
}

/// A 4-bit tensor: two codes per byte, the first element in the high nibble.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized4 {
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Elements per block.
    pub blocksize: usize,
    /// Number of elements.
    pub numel: usize,
    /// `ceil(numel / 2)` bytes.
    pub packed: Vec<u8>,
    /// Block scales.
    pub absmax: Absmax,
}

/// Checks a 4-bit block size: a power of two from 32 to 4096.
pub fn check_blocksize(blocksize: usize) -> Result<()> {
    if (32..=4096).contains(&blocksize) && blocksize.is_power_of_two() {
        Ok(())
    } else {
        Err(Error::Blocksize(blocksize))
    }
}

/// Index of the nearest code in sorted order: the number of bounds strictly below `s`, so a value
/// exactly on a midpoint goes to the lower code.
#[inline]
fn nearest(bounds: &[f32; 15], s: f32) -> usize {
    bounds.iter().filter(|&&b| b < s).count()
}

/// Quantizes `x` (flattened row-major) to 4 bits in blocks of `blocksize`.
pub fn quantize_4bit(
    x: &[f32],
    quant_type: QuantType,
    blocksize: usize,
    double_quant: bool,
) -> Result<Quantized4> {
    check_blocksize(blocksize)?;
    if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    let n = x.len();
    let blocks = n.div_ceil(blocksize);
    // Blocks are independent: split them across the cores (a chunk boundary is a block boundary,
    // so every chunk but the last packs an even number of codes).
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = cores.min(n.div_ceil(1 << 16)).max(1);
    let blocks_per = blocks.div_ceil(threads).max(1);
    let parts: Vec<(Vec<f32>, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = x
            .chunks(blocks_per * blocksize)
            .enumerate()
            .map(|(t, chunk)| {
                let first_block = t * blocks_per;
                scope.spawn(move || {
                    quantize_blocks(chunk, first_block, n / blocksize, quant_type, blocksize)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut absmax = Vec::with_capacity(blocks);
    let mut packed = Vec::with_capacity(n.div_ceil(2));
    for (a, p) in parts {
        absmax.extend(a);
        packed.extend(p);
    }
    let absmax = if double_quant {
        Absmax::Nested(nest_absmax(&absmax)?)
    } else {
        Absmax::F32(absmax)
    };
    Ok(Quantized4 {
        quant_type,
        blocksize,
        numel: n,
        packed,
        absmax,
    })
}

/// Quantizes consecutive blocks starting at block `first_block`; blocks from `full` on are the
/// trailing partial block. Returns their absmax values and packed bytes (an odd element count gets
/// the zero code as padding in the last low nibble).
fn quantize_blocks(
    x: &[f32],
    first_block: usize,
    full: usize,
    quant_type: QuantType,
    blocksize: usize,
) -> (Vec<f32>, Vec<u8>) {
    let bounds = quant_type.bounds();
    let order = quant_type.order();
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    let mut nibbles = Vec::with_capacity(x.len() + 1);
    for (j, block) in x.chunks(blocksize).enumerate() {
        let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if first_block + j < full {
            // Full blocks: the raw absmax is stored; scale by a reciprocal.
            absmax.push(max);
            let r = 1.0f32 / max.max(1e-38);
            nibbles.extend(
                block
                    .iter()
                    .map(|&v| order[nearest(&bounds, (v * r).clamp(-1.0, 1.0))]),
            );
        } else {
            // The trailing partial block stores the clamped absmax and divides.
            let am = max.max(1e-38);
            absmax.push(am);
            nibbles.extend(
                block
                    .iter()
                    .map(|&v| order[nearest(&bounds, (v / am).clamp(-1.0, 1.0))]),
            );
        }
    }
    if nibbles.len() % 2 == 1 {
        nibbles.push(order[nearest(&bounds, 0.0)]);
    }
    (
        absmax,
        nibbles
            .chunks_exact(2)
            .map(|p| (p[0] << 4) | p[1])
            .collect(),
    )
}

/// Double quantization of block absmax values.
pub fn nest_absmax(absmax: &[f32]) -> Result<NestedAbsmax> {
    let offset = torch_mean_f32(absmax);
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let map = dynamic_map_signed();
    let (codes, scales) = quantize_blockwise8(&centered, NESTED_BLOCKSIZE, &Lut8::new(&map))?;
    Ok(NestedAbsmax {
        codes,
        offset,
        scales,
    })
}

impl NestedAbsmax {
    /// The f32 absmax values dequantization uses: `code8[q] * scale + offset`.
    pub fn unpack(&self) -> Result<Vec<f32>> {
        let map = dynamic_map_signed();
        let vals = dequantize_blockwise8(&self.codes, &self.scales, NESTED_BLOCKSIZE, &map)?;
        Ok(vals.into_iter().map(|v| v + self.offset).collect())
    }
}

impl Absmax {
    /// f32 absmax per block.
    pub fn values(&self) -> Result<Vec<f32>> {
        match self {
            Absmax::F32(v) => Ok(v.clone()),
            Absmax::Nested(n) => n.unpack(),
        }
    }
}

/// Dequantizes to f32: `code[nibble] * absmax[block]`.
pub fn dequantize_4bit(q: &Quantized4) -> Result<Vec<f32>> {
    let absmax = q.absmax.values()?;
    let blocks = q.numel.div_ceil(q.blocksize);
    if absmax.len() != blocks || q.packed.len() != q.numel.div_ceil(2) {
        return Err(Error::Shape(format!(
            "{} elements in blocks of {} need {} absmax values and {} packed bytes, got {} and {}",
            q.numel,
            q.blocksize,
            blocks,
            q.numel.div_ceil(2),
            absmax.len(),
            q.packed.len()
        )));
    }
    let code = q.quant_type.code();
    let mut out = Vec::with_capacity(q.numel);
    for (i, &byte) in q.packed.iter().enumerate() {
        let e = 2 * i;
        out.push(code[(byte >> 4) as usize] * absmax[e / q.blocksize]);
        if e + 1 < q.numel {
            out.push(code[(byte & 0x0f) as usize] * absmax[(e + 1) / q.blocksize]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_quantization_equals_one_pass() {
        // Large enough to be split across threads; odd count with a partial trailing block.
        let n = 300_001;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 97) as f32))
            .collect();
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            for bs in [32, 64, 4096] {
                let q = quantize_4bit(&x, qt, bs, false).unwrap();
                let (absmax, packed) = quantize_blocks(&x, 0, n / bs, qt, bs);
                assert_eq!(q.packed, packed, "{qt:?} blocks of {bs}");
                assert_eq!(q.absmax, Absmax::F32(absmax), "{qt:?} blocks of {bs}");
            }
        }
    }
}
