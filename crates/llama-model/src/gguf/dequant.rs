//! ggml tensor types and their dequantization to f32, computed the way llama.cpp's
//! `dequantize_row_*` reference functions do (f16 scales widened to f32, the same products and
//! sums in the same order), so results match bit for bit.

use half::{bf16, f16};

/// A ggml storage type (the `type` field of a GGUF tensor info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
}

const ALL: [(GgmlType, u32); 20] = [
    (GgmlType::F32, 0),
    (GgmlType::F16, 1),
    (GgmlType::Q4_0, 2),
    (GgmlType::Q4_1, 3),
    (GgmlType::Q5_0, 6),
    (GgmlType::Q5_1, 7),
    (GgmlType::Q8_0, 8),
    (GgmlType::Q8_1, 9),
    (GgmlType::Q2_K, 10),
    (GgmlType::Q3_K, 11),
    (GgmlType::Q4_K, 12),
    (GgmlType::Q5_K, 13),
    (GgmlType::Q6_K, 14),
    (GgmlType::Q8_K, 15),
    (GgmlType::I8, 24),
    (GgmlType::I16, 25),
    (GgmlType::I32, 26),
    (GgmlType::I64, 27),
    (GgmlType::F64, 28),
    (GgmlType::BF16, 30),
];

/// Elements per super-block of the K-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml id `id`, if this reader knows its layout.
    pub fn from_id(id: u32) -> Option<Self> {
        ALL.iter().find(|(_, i)| *i == id).map(|(t, _)| *t)
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        ALL.iter()
            .find(|(t, _)| *t == self)
            .map(|(_, i)| *i)
            .unwrap_or_else(|| unreachable!("every type is in ALL"))
    }

    /// Names of every known type, for error messages.
    pub fn known_names() -> String {
        let names: Vec<String> = ALL.iter().map(|(t, i)| format!("{t:?}={i}")).collect();
        names.join(", ")
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (QK_K, 84),
            Q3_K => (QK_K, 110),
            Q4_K => (QK_K, 144),
            Q5_K => (QK_K, 176),
            Q6_K => (QK_K, 210),
            Q8_K => (QK_K, 292),
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` of type `ty` to f32 values in storage order. `Err` names what this
/// reader does not dequantize or a length that is not a whole number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (block, size) = ty.block();
    if !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes is not a whole number of {size}-byte blocks",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / size * block);
    let blocks = bytes.chunks_exact(size);
    use GgmlType::*;
    match ty {
        F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        F16 => out.extend((0..bytes.len() / 2).map(|i| f16_at(bytes, 2 * i))),
        BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Q8_0 => blocks.for_each(|b| {
            let d = f16_at(b, 0);
            out.extend(b[2..].iter().map(|&q| q as i8 as f32 * d));
        }),
        Q4_0 | Q4_1 | Q5_0 | Q5_1 => blocks.for_each(|b| legacy_block(ty, b, &mut out)),
        Q4_K => blocks.for_each(|b| q4_k_block(b, &mut out)),
        Q5_K => blocks.for_each(|b| q5_k_block(b, &mut out)),
        Q6_K => blocks.for_each(|b| q6_k_block(b, &mut out)),
        other => {
            return Err(format!(
                "type {other:?} is not dequantized by this reader (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
            ));
        }
    }
    Ok(out)
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1: 32 values, low nibbles are the first 16, high nibbles the last
/// 16; Q5 adds a fifth bit from a 32-bit mask; `_0` types centre on 8 (16), `_1` add a minimum.
fn legacy_block(ty: GgmlType, b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let (m, qh, qs) = match ty {
        GgmlType::Q4_0 => (None, None, &b[2..18]),
        GgmlType::Q4_1 => (Some(f16_at(b, 2)), None, &b[4..20]),
        GgmlType::Q5_0 => (
            None,
            Some(u32::from_le_bytes([b[2], b[3], b[4], b[5]])),
            &b[6..22],
        ),
        _ => (
            Some(f16_at(b, 2)),
            Some(u32::from_le_bytes([b[4], b[5], b[6], b[7]])),
            &b[8..24],
        ),
    };
    let mut vals = [0f32; 32];
    for j in 0..16 {
        let (mut x0, mut x1) = ((qs[j] & 0x0F) as i32, (qs[j] >> 4) as i32);
        if let Some(h) = qh {
            x0 |= (((h >> j) << 4) & 0x10) as i32;
            x1 |= ((h >> (j + 12)) & 0x10) as i32;
        }
        match m {
            Some(m) => {
                vals[j] = x0 as f32 * d + m;
                vals[j + 16] = x1 as f32 * d + m;
            }
            None => {
                let centre = if qh.is_some() { 16 } else { 8 };
                vals[j] = (x0 - centre) as f32 * d;
                vals[j + 16] = (x1 - centre) as f32 * d;
            }
        }
    }
    out.extend_from_slice(&vals);
}

/// Scale and minimum `j` (0..8) of a K-quant's 12 packed 6-bit scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d`, `dmin` (f16), 12 scale bytes, 128 nibble bytes; 8 sub-blocks of 32.
fn q4_k_block(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..QK_K / 64 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (sc, m) = scale_min_k4(2 * chunk, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (sc, m) = scale_min_k4(2 * chunk + 1, scales);
        let (d2, m2) = (d * sc as f32, dmin * m as f32);
        out.extend(q.iter().map(|&v| d1 * (v & 0x0F) as f32 - m1));
        out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - m2));
    }
}

/// Q5_K: Q4_K plus 32 bytes of fifth bits (`qh`), two bits of each byte per 64 values.
fn q5_k_block(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..QK_K / 64 {
        let ql = &qs[chunk * 32..chunk * 32 + 32];
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let (sc, m) = scale_min_k4(2 * chunk, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (sc, m) = scale_min_k4(2 * chunk + 1, scales);
        let (d2, m2) = (d * sc as f32, dmin * m as f32);
        let hi = |h: u8, u: u8| if h & u != 0 { 16 } else { 0 };
        out.extend((0..32).map(|l| d1 * ((ql[l] & 0x0F) + hi(qh[l], u1)) as f32 - m1));
        out.extend((0..32).map(|l| d2 * ((ql[l] >> 4) + hi(qh[l], u2)) as f32 - m2));
    }
}

/// Q6_K: 128 low-nibble bytes, 64 high-bit bytes, 16 signed scales, then `d` (f16).
fn q6_k_block(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 208);
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
