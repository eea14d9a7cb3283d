//! How far a quantized weight is from the float one: MSE, largest absolute error and
//! signal-to-noise ratio, accumulated over any number of tensors (the `--report` of
//! `cargo xtask quantize` and the precision table of `cargo bench`).

/// Squared error, signal energy, element count and largest absolute error of one or more
/// reconstructions. `merge` adds another tensor's statistics to a running total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Sum of squared errors.
    pub squared_error: f64,
    /// Sum of squared reference values.
    pub signal: f64,
    /// Number of values compared.
    pub count: usize,
    /// Largest `|reference - reconstruction|`.
    pub max_abs: f64,
}

impl ErrorStats {
    /// Statistics of `reconstruction` against `reference` (equal lengths; extra values of the
    /// longer slice are ignored).
    pub fn between(reference: &[f32], reconstruction: &[f32]) -> Self {
        let mut s = Self::default();
        for (&a, &b) in reference.iter().zip(reconstruction) {
            let (a, b) = (f64::from(a), f64::from(b));
            let e = a - b;
            s.squared_error += e * e;
            s.signal += a * a;
            s.max_abs = s.max_abs.max(e.abs());
            s.count += 1;
        }
        s
    }

    /// Adds `other`'s values to these.
    pub fn merge(&mut self, other: &Self) {
        self.squared_error += other.squared_error;
        self.signal += other.signal;
        self.count += other.count;
        self.max_abs = self.max_abs.max(other.max_abs);
    }

    /// Mean squared error (0 for no values).
    pub fn mse(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.squared_error / self.count as f64
        }
    }

    /// `10 log10(signal / error)` in dB; infinite for an exact reconstruction.
    pub fn snr_db(&self) -> f64 {
        if self.squared_error == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.squared_error).log10()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_known_error() {
        let s = ErrorStats::between(&[1.0, -2.0, 0.0, 3.0], &[1.0, -1.5, 0.5, 3.0]);
        assert_eq!(s.count, 4);
        assert_eq!(s.squared_error, 0.5);
        assert_eq!(s.signal, 14.0);
        assert_eq!(s.max_abs, 0.5);
        assert_eq!(s.mse(), 0.125);
        assert!((s.snr_db() - 10.0 * 28f64.log10()).abs() < 1e-12);
        let mut total = s;
        total.merge(&ErrorStats::between(&[2.0], &[0.0]));
        assert_eq!(
            (total.count, total.squared_error, total.max_abs),
            (5, 4.5, 2.0)
        );
        assert_eq!(ErrorStats::between(&[1.0], &[1.0]).snr_db(), f64::INFINITY);
        assert_eq!(ErrorStats::default().mse(), 0.0);
    }
}
