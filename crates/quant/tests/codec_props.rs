//! Property tests of the codecs over random tensors (the fixture tests in `codecs.rs` pin them to
//! bitsandbytes' own output bit for bit; these check the arithmetic on inputs nobody chose):
//!
//! - 4-bit (NF4, FP4): every code is bitsandbytes' choice (the nearest code by f32 midpoints,
//!   a value exactly on a midpoint going to the lower code), and the round trip error of each
//!   element is at most `absmax * gap / 2` for the gap between the two codes around it;
//!   with double quantization, plus the error of the 8-bit absmax.
//! - block-wise 8-bit: codes from the 65536-cell table as bitsandbytes' CPU kernel computes them;
//!   error at most `absmax * (largest gap / 2 + 1/65535)`.
//! - LLM.int8: codes are `x * 127 / absmax` rounded (half to even), error at most
//!   `absmax / 254`; outlier columns are exactly those with a value at or above the threshold.

use proptest::prelude::*;
use quant::{
    Absmax, FP4, Lut8, NF4, QuantType, dequantize_4bit, dequantize_blockwise8, dynamic_map_signed,
    int8_vectorwise_dequant, int8_vectorwise_quant, nest_absmax, quantize_4bit,
    quantize_blockwise8,
};

/// Relative slack for f32 rounding of `x / absmax` and `code * absmax` (a few ulps).
const ULPS: f32 = 4.0 * f32::EPSILON;

fn sorted(code: &[f32]) -> Vec<f32> {
    let mut s = code.to_vec();
    s.sort_by(f32::total_cmp);
    s
}

/// Reference 4-bit code of a scaled value: a linear scan over the sorted codes for the last one
/// whose f32 midpoint with its lower neighbour lies strictly below `s` (bitsandbytes' pivots).
/// Returns the nibble; among equal values (FP4's +0 and -0) the first in ascending order wins,
/// as in bitsandbytes (`+0`, nibble 0).
fn ref_nibble(code: &[f32; 16], s: f32) -> u8 {
    let mut order: Vec<u8> = (0..16).collect();
    // Ascending by value; -0 after +0 like bitsandbytes' FP4 tree.
    order.sort_by(|&a, &b| {
        let (x, y) = (code[a as usize], code[b as usize]);
        x.partial_cmp(&y)
            .unwrap()
            .then_with(|| x.is_sign_negative().cmp(&y.is_sign_negative()))
    });
    let mut pick = order[0];
    for w in order.windows(2) {
        let mid = (code[w[0] as usize] + code[w[1] as usize]) / 2.0;
        if mid < s {
            pick = w[1];
        }
    }
    pick
}

fn nibbles(packed: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let b = packed[i / 2];
            if i % 2 == 0 { b >> 4 } else { b & 0x0f }
        })
        .collect()
}

/// Values with exact zeros, ties and wide magnitudes.
fn values() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -8.0f32..8.0,
            1 => Just(0.0f32),
            1 => (-3i32..=3).prop_map(|k| k as f32 * 0.25),
            1 => -1e4f32..1e4,
        ],
        1..700,
    )
}

fn blocksize4() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![32usize, 64, 128, 256])
}

fn quant_type() -> impl Strategy<Value = QuantType> {
    prop::sample::select(vec![QuantType::Nf4, QuantType::Fp4])
}

/// Half the gap between the sorted codes around `s` (`s` in `[-1, 1]`).
fn half_gap(sorted_code: &[f32], s: f32) -> f32 {
    let hi = sorted_code
        .partition_point(|&c| c < s)
        .min(sorted_code.len() - 1);
    let lo = hi.saturating_sub(1);
    (sorted_code[hi] - sorted_code[lo]) / 2.0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn blockwise4_codes_are_the_reference_codes(
        x in values(), qt in quant_type(), bs in blocksize4(),
    ) {
        let q = quantize_4bit(&x, qt, bs, false).unwrap();
        let Absmax::F32(absmax) = &q.absmax else { unreachable!() };
        let code = qt.code();
        let full = x.len() / bs;
        for (b, block) in x.chunks(bs).enumerate() {
            let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // bitsandbytes: full blocks store the raw absmax and multiply by its reciprocal,
            // the trailing partial block stores max(absmax, 1e-38) and divides.
            let stored = if b < full { am } else { am.max(1e-38) };
            prop_assert_eq!(absmax[b].to_bits(), stored.to_bits());
            let got = nibbles(&q.packed, x.len());
            for (j, &v) in block.iter().enumerate() {
                let s = if b < full { v * (1.0 / am.max(1e-38)) } else { v / stored };
                let want = ref_nibble(&code, s.clamp(-1.0, 1.0));
                prop_assert_eq!(got[b * bs + j], want, "block {} element {} value {}", b, j, v);
            }
        }
        if x.len() % 2 == 1 {
            // The padding nibble is the code of 0.
            prop_assert_eq!(q.packed[x.len() / 2] & 0x0f, ref_nibble(&code, 0.0));
        }
    }

    #[test]
    fn blockwise4_round_trip_error_is_within_half_a_gap(
        x in values(), qt in quant_type(), bs in blocksize4(),
    ) {
        let q = quantize_4bit(&x, qt, bs, false).unwrap();
        let y = dequantize_4bit(&q).unwrap();
        let code = sorted(&qt.code());
        for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
            let am = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (j, (&v, &w)) in xb.iter().zip(yb).enumerate() {
                let s = if am > 0.0 { v / am } else { 0.0 };
                let bound = am * half_gap(&code, s) + am * ULPS;
                prop_assert!(
                    (w - v).abs() <= bound,
                    "block {} element {}: {} -> {}, error {} > {}", b, j, v, w, (w - v).abs(), bound
                );
            }
            // The block's largest magnitude comes back exactly (its code is ±1).
            if let Some(k) = xb.iter().position(|v| v.abs() == am) {
                prop_assert_eq!(yb[k].abs(), am);
            }
        }
    }

    #[test]
    fn double_quant_round_trip_error_is_bounded(
        x in values(), qt in quant_type(), bs in blocksize4(),
    ) {
        let plain = quantize_4bit(&x, qt, bs, false).unwrap();
        let nested = quantize_4bit(&x, qt, bs, true).unwrap();
        // The 4-bit codes do not depend on how the absmax is stored.
        prop_assert_eq!(&plain.packed, &nested.packed);
        let Absmax::F32(absmax) = &plain.absmax else { unreachable!() };
        let Absmax::Nested(n) = &nested.absmax else { unreachable!() };
        prop_assert_eq!(n, &nest_absmax(absmax).unwrap());
        let restored = n.unpack().unwrap();
        // Absmax error: 8-bit block-wise on `absmax - offset`, groups of 256.
        let dynamic = dynamic_map_signed();
        let max_gap8 = dynamic.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max);
        for (g, (a, r)) in absmax.chunks(256).zip(restored.chunks(256)).enumerate() {
            let scale = n.scales[g];
            let bound8 = scale * (max_gap8 / 2.0 + 1.0 / 65535.0) + (a[0].abs() + scale) * ULPS;
            for (&a, &r) in a.iter().zip(r) {
                prop_assert!((a - r).abs() <= bound8, "absmax {} -> {} (bound {})", a, r, bound8);
            }
        }
        let y = dequantize_4bit(&nested).unwrap();
        let code = sorted(&qt.code());
        for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
            let (am, am2) = (absmax[b], restored[b]);
            for (&v, &w) in xb.iter().zip(yb) {
                let s = if am > 0.0 { v / am } else { 0.0 };
                // |c A' - x| <= |c| |A' - A| + |c A - x|, |c| <= 1.
                let bound = (am2 - am).abs() + am * half_gap(&code, s) + (am + am2.abs()) * ULPS;
                prop_assert!((w - v).abs() <= bound, "{} -> {} (bound {})", v, w, bound);
            }
        }
    }

    #[test]
    fn blockwise8_codes_and_error(
        x in values(), bs in prop::sample::select(vec![64usize, 256, 4096]),
    ) {
        let map = dynamic_map_signed();
        let lut = Lut8::new(&map);
        let (codes, absmax) = quantize_blockwise8(&x, bs, &lut).unwrap();
        let y = dequantize_blockwise8(&codes, &absmax, bs, &map).unwrap();
        let max_gap = map.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max);
        for (b, block) in x.chunks(bs).enumerate() {
            let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(absmax[b].to_bits(), am.to_bits());
            for (j, &v) in block.iter().enumerate() {
                let i = b * bs + j;
                if am == 0.0 {
                    prop_assert_eq!(codes[i], 0);
                    continue;
                }
                // bitsandbytes' quantize_cpu_impl: cell round((s + 1) / 2 * 65535), then the
                // number of code midpoints strictly below the cell's value.
                let s = (v * (1.0 / am)).clamp(-1.0, 1.0);
                let cell = ((s + 1.0) * 0.5 * 65535.0 + 0.5) as u16;
                let val = -1.0f32 + (2.0 * cell as f32) / 65535.0;
                let want = map.windows(2).filter(|w| 0.5 * (w[0] + w[1]) < val).count();
                prop_assert_eq!(codes[i] as usize, want, "element {} value {}", i, v);
                let bound = am * (max_gap / 2.0 + 1.0 / 65535.0) + am * ULPS;
                prop_assert!((y[i] - v).abs() <= bound, "{} -> {} (bound {})", v, y[i], bound);
            }
        }
    }

    #[test]
    fn int8_codes_and_error(
        rows in 1usize..6,
        cols in 1usize..40,
        seed in prop::collection::vec(-8.0f32..8.0, 240),
        threshold in prop::sample::select(vec![0.0f32, 6.0]),
    ) {
        let a: Vec<f32> = seed[..rows * cols].to_vec();
        let q = int8_vectorwise_quant(&a, rows, cols, threshold).unwrap();
        let y = int8_vectorwise_dequant(&q);
        let outlier = |v: f32| threshold > 0.0 && v.abs() >= threshold;
        let want_cols: Vec<usize> = (0..cols)
            .filter(|&c| (0..rows).any(|r| outlier(a[r * cols + c])))
            .collect();
        if threshold > 0.0 {
            prop_assert_eq!(q.outlier_cols.as_ref(), Some(&want_cols));
        } else {
            prop_assert!(q.outlier_cols.is_none());
        }
        for r in 0..rows {
            let row = &a[r * cols..(r + 1) * cols];
            let stat = row.iter().filter(|v| !outlier(**v)).fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(q.scb[r].to_bits(), stat.to_bits());
            for c in 0..cols {
                let (v, code) = (row[c], q.cb[r * cols + c]);
                if outlier(v) || (rows > 1 && want_cols.contains(&c)) {
                    prop_assert_eq!(code, 0);
                    continue;
                }
                if stat == 0.0 {
                    continue; // 0 * inf: NaN saturates to code 0, as torch does
                }
                // Nearest integer to v * 127 / stat (exact in f64), up to the two f32 roundings.
                let exact = v as f64 * 127.0 / stat as f64;
                prop_assert!((code as f64 - exact).abs() <= 0.5 + 1e-4, "{} -> {}", v, code);
                prop_assert_eq!(code, ((v * ((1.0 / stat) * 127.0)).round_ties_even()) as i8);
                let err = (y[r * cols + c] - v).abs();
                prop_assert!(err <= stat / 254.0 + stat * ULPS, "{} -> {}", v, y[r * cols + c]);
            }
        }
    }
}

#[test]
fn midpoints_go_to_the_lower_code() {
    // A block whose absmax is 1 and whose other values lie exactly on the f32 midpoints.
    for qt in [QuantType::Nf4, QuantType::Fp4] {
        let code = qt.code();
        let s = sorted(&code);
        let mut x = vec![1.0f32];
        x.extend(s.windows(2).map(|w| (w[0] + w[1]) / 2.0));
        x.resize(64, 0.0);
        let q = quantize_4bit(&x, qt, 64, false).unwrap();
        let y = dequantize_4bit(&q).unwrap();
        for (i, w) in s.windows(2).enumerate() {
            if w[0] == w[1] {
                continue; // FP4's -0 and +0: value 0 either way
            }
            // By value: just above 0, FP4 picks bitsandbytes' `-0` (nibble 8), which sorts
            // after `+0`.
            assert_eq!(y[i + 1], w[0], "{qt} midpoint {i}");
        }
    }
    assert_eq!(NF4[7], 0.0);
    assert_eq!(FP4[0].to_bits(), 0.0f32.to_bits());
}
