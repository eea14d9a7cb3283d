//! LLM.int8 row-wise quantization (`bitsandbytes.functional.int8_vectorwise_quant`): int8 codes
//! with one f32 absmax per row (`SCB`), and the outlier columns that go through the float path.

use crate::error::{Error, Result};

/// An int8 matrix with row scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    /// Codes, row-major `[rows, cols]` (`weight` in checkpoints).
    pub cb: Vec<i8>,
    /// Absmax of each row (`SCB`).
    pub scb: Vec<f32>,
    /// Sorted columns holding any value with `|a| >= threshold` (`None` when threshold is 0).
    pub outlier_cols: Option<Vec<usize>>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

/// Quantizes `a` (`[rows, cols]`, row-major). With `threshold > 0`, entries with
/// `|a| >= threshold` are left out of the row statistics and their codes are 0; with more than
/// one row, whole outlier columns are zeroed (they are computed in float instead).
pub fn int8_vectorwise_quant(
    a: &[f32],
    rows: usize,
    cols: usize,
    threshold: f32,
) -> Result<Int8Rows> {
    if a.len() != rows * cols {
        return Err(Error::Shape(format!(
            "{} values do not form a [{rows}, {cols}] matrix",
            a.len()
        )));
    }
    if let Some((index, &value)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    let is_outlier = |v: f32| threshold > 0.0 && v.abs() >= threshold;
    let mut outlier_cols = if threshold > 0.0 {
        Some(Vec::new())
    } else {
        None
    };
    if let Some(cols_out) = outlier_cols.as_mut() {
        for c in 0..cols {
            if (0..rows).any(|r| is_outlier(a[r * cols + c])) {
                cols_out.push(c);
            }
        }
    }
    let mut cb = vec![0i8; rows * cols];
    let mut scb = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &a[r * cols..(r + 1) * cols];
        let kept = |v: f32| if is_outlier(v) { 0.0 } else { v };
        let stat = row.iter().fold(0.0f32, |m, &v| m.max(kept(v).abs()));
        scb.push(stat);
        // `127.0 / row_stats` in PyTorch is `row_stats.reciprocal() * 127.0` (Tensor.__rtruediv__):
        // two roundings, which decides x.5 ties (a plain division gave 2 codes off by one on a
        // 160x64 weight).
        let scale = (1.0f32 / stat) * 127.0f32;
        for (o, &v) in cb[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            // torch.round rounds half to even; `as i8` saturates.
            *o = (kept(v) * scale).round_ties_even() as i8;
        }
    }
    if rows > 1
        && let Some(oc) = &outlier_cols
    {
        for &c in oc {
            for r in 0..rows {
                cb[r * cols + c] = 0;
            }
        }
    }
    Ok(Int8Rows {
        cb,
        scb,
        outlier_cols,
        rows,
        cols,
    })
}

/// `(cb * scb[row]) * (1/127)` in f32, as `int8_vectorwise_dequant` computes it.
pub fn int8_vectorwise_dequant(q: &Int8Rows) -> Vec<f32> {
    const INV_127: f32 = 1.0 / 127.0;
    q.cb.iter()
        .enumerate()
        .map(|(i, &c)| (c as f32 * q.scb[i / q.cols]) * INV_127)
        .collect()
}
