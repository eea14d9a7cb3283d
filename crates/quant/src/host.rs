//! Fast host dequantization: multi-threaded, straight into the output buffer that becomes the
//! matmul's weight tensor. Same arithmetic (and bits) as [`crate::dequantize_4bit`] and
//! [`crate::int8_vectorwise_dequant`].

use crate::error::{Error, Result};

/// `1.0f32 / 127.0f32`, the constant bitsandbytes multiplies by after `CB * SCB` (f32 `0x3c010204`).
pub const INV_127: f32 = 1.0 / 127.0;

/// For every byte, the values of its high and low nibble.
pub fn pair_table(code: &[f32; 16]) -> [[f32; 2]; 256] {
    std::array::from_fn(|b| [code[b >> 4], code[b & 0x0f]])
}

fn threads_for(work: usize) -> usize {
    // Below ~64k elements a thread costs more than it saves.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(work.div_ceil(1 << 16)).max(1)
}

/// Dequantizes `numel` 4-bit values into `out` (`out.len() == numel`):
/// `out[i] = code[nibble_i] * absmax[i / blocksize]`, blocks split across the cores.
pub fn dequantize_4bit_into(
    packed: &[u8],
    absmax: &[f32],
    code: &[f32; 16],
    blocksize: usize,
    out: &mut [f32],
) -> Result<()> {
    let numel = out.len();
    if blocksize == 0 || !blocksize.is_multiple_of(2) {
        return Err(Error::Blocksize(blocksize));
    }
    if packed.len() != numel.div_ceil(2) || absmax.len() != numel.div_ceil(blocksize) {
        return Err(Error::Shape(format!(
            "{numel} elements in blocks of {blocksize} need {} packed bytes and {} absmax values, got {} and {}",
            numel.div_ceil(2),
            numel.div_ceil(blocksize),
            packed.len(),
            absmax.len()
        )));
    }
    let pairs = pair_table(code);
    let blocks = absmax.len();
    let threads = threads_for(numel);
    let blocks_per = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(blocks_per * blocksize).enumerate() {
            let pairs = &pairs;
            scope.spawn(move || {
                let first_block = t * blocks_per;
                for (j, dst) in chunk.chunks_mut(blocksize).enumerate() {
                    let b = first_block + j;
                    let am = absmax[b];
                    let src = &packed[b * blocksize / 2..];
                    let half = dst.len() / 2;
                    let mut pairs_out = dst.chunks_exact_mut(2);
                    for (d, &byte) in (&mut pairs_out).zip(src) {
                        let [hi, lo] = pairs[byte as usize];
                        d[0] = hi * am;
                        d[1] = lo * am;
                    }
                    // Odd element count: the last byte's high nibble only.
                    if let [last] = pairs_out.into_remainder() {
                        *last = pairs[src[half] as usize][0] * am;
                    }
                }
            });
        }
    });
    Ok(())
}

/// LLM.int8 dequantization `(f32(CB) * SCB[row]) * (1/127)` of a `[rows, cols]` matrix, rows
/// split across the cores.
pub fn dequantize_int8_into(cb: &[i8], scb: &[f32], cols: usize, out: &mut [f32]) -> Result<()> {
    if cols == 0 || cb.len() != out.len() || cb.len() != scb.len() * cols {
        return Err(Error::Shape(format!(
            "int8 weight of {} values with {} row scales does not form rows of {cols}",
            cb.len(),
            scb.len()
        )));
    }
    let rows = scb.len();
    let threads = threads_for(out.len());
    let rows_per = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(rows_per * cols).enumerate() {
            scope.spawn(move || {
                for (j, dst) in chunk.chunks_mut(cols).enumerate() {
                    let r = t * rows_per + j;
                    let s = scb[r];
                    for (d, &c) in dst.iter_mut().zip(&cb[r * cols..(r + 1) * cols]) {
                        *d = (f32::from(c) * s) * INV_127;
                    }
                }
            });
        }
    });
    Ok(())
}
