//! Llama 3.1-style RoPE scaling in GGUF: llama.cpp's converter stores no parameters, only the
//! per-frequency divisors `rope_freqs.weight` (`d/2` f32 values: 1 for high frequencies,
//! `factor` for low ones, a smooth blend between). [`rope_factors`] computes them as the converter
//! does; [`scaling_from_factors`] recovers the parameters from them (only the ratios
//! `original_max_position_embeddings / low_freq_factor` and `high_freq_factor / low_freq_factor`
//! matter, so `low_freq_factor` is taken as 1) and checks that they reproduce every value.

use crate::config::RopeScaling;

fn wavelengths(theta: f64, head_dim: usize) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| {
            let inv = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            2.0 * std::f64::consts::PI / inv
        })
        .collect()
}

/// The divisors llama.cpp's converter writes as `rope_freqs.weight` for `scaling`, or `None`
/// for unscaled RoPE.
pub fn rope_factors(scaling: RopeScaling, theta: f64, head_dim: usize) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = scaling
    else {
        return None;
    };
    let old = original_max_position_embeddings as f64;
    let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
    let factors = wavelengths(theta, head_dim)
        .into_iter()
        .map(|wl| {
            if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor as f32
            } else {
                let smooth = (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect();
    Some(factors)
}

/// Llama 3 scaling parameters that reproduce `factors` (within 1e-5 relative), or a message
/// saying why none do.
pub fn scaling_from_factors(
    factors: &[f32],
    theta: f64,
    head_dim: usize,
) -> std::result::Result<RopeScaling, String> {
    if factors.len() != head_dim / 2 {
        return Err(format!(
            "has {} values; expected head_dim / 2 = {}",
            factors.len(),
            head_dim / 2
        ));
    }
    let factor = factors.iter().fold(1f32, |m, &v| m.max(v)) as f64;
    let wl = wavelengths(theta, head_dim);
    // Blended entries: s = (1/r - 1/factor) / (1 - 1/factor) = orig / wl - 1) / (high - 1)
    // with low = 1, i.e. orig * (1/wl) - (high - 1) * s = 1: two or more give orig and high.
    let blended: Vec<(f64, f64)> = factors
        .iter()
        .zip(&wl)
        .filter(|(r, _)| {
            let r = **r as f64;
            (r - 1.0).abs() > 1e-6 && (r - factor).abs() > 1e-6 * factor
        })
        .map(|(&r, &w)| {
            let s = (1.0 / r as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
            (1.0 / w, s)
        })
        .collect();
    let (orig, high) = if blended.len() >= 2 {
        let ((x1, s1), (x2, s2)) = (blended[0], blended[blended.len() - 1]);
        // orig * x - k * s = 1 for both rows, k = high - 1.
        let det = -x1 * s2 + x2 * s1;
        if det.abs() < 1e-300 {
            return Err("blended values are degenerate".into());
        }
        let orig = (-s2 + s1) / det;
        let k = (x1 - x2) / det;
        (orig, k + 1.0)
    } else {
        // No blend to measure: place the boundaries between the 1s and the `factor`s.
        let last_one = factors
            .iter()
            .rposition(|&r| (r as f64 - 1.0).abs() <= 1e-6);
        let first_full = factors
            .iter()
            .position(|&r| (r as f64 - factor).abs() <= 1e-6 * factor);
        match (last_one, first_full) {
            (Some(a), Some(b)) if b == a + 1 => {
                let orig = (wl[b] * 0.999).floor();
                (orig, orig / (wl[a] * 1.001))
            }
            _ => return Err("values are not a Llama 3 frequency scaling".into()),
        }
    };
    let orig_rounded = orig.round();
    if !(orig_rounded >= 1.0 && high > 1.0) {
        return Err(format!(
            "values give original context {orig} and high_freq_factor {high}; not a Llama 3 scaling"
        ));
    }
    let scaling = RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: (high * 1e6).round() / 1e6,
        original_max_position_embeddings: orig_rounded as usize,
    };
    let again = rope_factors(scaling, theta, head_dim).unwrap_or_default();
    let worst = again
        .iter()
        .zip(factors)
        .map(|(a, b)| ((a - b).abs() / b.abs().max(1e-12)) as f64)
        .fold(0f64, f64::max);
    if worst > 1e-5 {
        return Err(format!(
            "no Llama 3 scaling reproduces them (best guess {scaling:?} is off by {worst:.2e} relative)"
        ));
    }
    Ok(scaling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_scalings_round_trip() {
        // Llama 3.1 8B (d 128, theta 5e5, factor 8, 1/4, 8192), Llama 3.2 1B (d 64, factor 32).
        for (d, factor, orig) in [(128, 8.0, 8192), (64, 32.0, 8192), (32, 8.0, 16)] {
            let s = RopeScaling::Llama3 {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: orig,
            };
            let f = rope_factors(s, 500_000.0, d).unwrap();
            assert_eq!(scaling_from_factors(&f, 500_000.0, d).unwrap(), s, "d={d}");
        }
        assert!(scaling_from_factors(&[1.0, 3.0, 1.0, 3.0], 1e4, 8).is_err());
    }
}
