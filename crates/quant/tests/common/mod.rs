//! Helpers shared by the `quant` integration tests.
#![allow(dead_code)]

/// Deterministic N(0, 0.05) samples (xorshift + Box-Muller).
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            ((-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos()) as f32 * 0.05
        })
        .collect()
}

/// f32 bit patterns, for bit-exact comparisons.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
