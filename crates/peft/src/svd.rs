//! Truncated singular value decomposition on the host, for PiSSA's initialisation.
//!
//! The full decomposition is one-sided Jacobi (Hestenes) in f64: columns of the matrix are
//! rotated pairwise until orthogonal, their norms are the singular values. The randomized one
//! (`pissa_niter_N`) finds the top-`r` subspace by subspace iteration from a seeded Gaussian start
//! (Halko, Martinsson, Tropp 2011, as `torch.svd_lowrank`), then decomposes the small projected
//! matrix exactly. Both run once per adapted layer at initialisation.

/// `W ≈ U · diag(S) · Vᵀ` truncated to rank `r`, singular values descending.
#[derive(Debug, Clone, PartialEq)]
pub struct Svd {
    /// Left singular vectors, `[rows, r]` row-major.
    pub u: Vec<f64>,
    /// Singular values, `[r]`.
    pub s: Vec<f64>,
    /// Right singular vectors, `[cols, r]` row-major.
    pub v: Vec<f64>,
    /// Rank kept.
    pub r: usize,
}

/// Column-major matrix for the Jacobi sweeps.
struct Cols {
    rows: usize,
    data: Vec<Vec<f64>>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One-sided Jacobi on the columns of `a` (`rows >= cols` is not required). Returns the rotated
/// columns (`A·V`, whose norms are the singular values) and `V` (`[cols][cols]`, column-major).
fn jacobi(mut a: Cols) -> (Cols, Vec<Vec<f64>>) {
    let n = a.data.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = dot(&a.data[p], &a.data[p]);
                let beta = dot(&a.data[q], &a.data[q]);
                let gamma = dot(&a.data[p], &a.data[q]);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for m in [&mut a.data, &mut v] {
                    let (left, right) = m.split_at_mut(q);
                    let (cp, cq) = (&mut left[p], &mut right[0]);
                    for (x, y) in cp.iter_mut().zip(cq.iter_mut()) {
                        let (xp, xq) = (*x, *y);
                        *x = c * xp - s * xq;
                        *y = s * xp + c * xq;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    (a, v)
}

/// Exact SVD of `w` (`[rows, cols]` row-major, f32) truncated to rank `r`.
pub fn svd_truncated(w: &[f32], rows: usize, cols: usize, r: usize) -> Svd {
    let w64: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    exact(&w64, rows, cols, r)
}

fn exact(w: &[f64], rows: usize, cols: usize, r: usize) -> Svd {
    let r = r.min(rows).min(cols);
    // Rotate the columns of whichever orientation has fewer of them.
    let transpose = cols > rows;
    let (m, n) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let at = |i: usize, j: usize| {
        if transpose {
            w[j * cols + i]
        } else {
            w[i * cols + j]
        }
    };
    let a = Cols {
        rows: m,
        data: (0..n).map(|j| (0..m).map(|i| at(i, j)).collect()).collect(),
    };
    let (av, v) = jacobi(a);
    let mut order: Vec<(f64, usize)> = av
        .data
        .iter()
        .enumerate()
        .map(|(j, c)| (dot(c, c).sqrt(), j))
        .collect();
    order.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    // For M = A: A·V = U·S, so U's column j = (A·V)_j / s_j and V as rotated. For the transpose,
    // the roles of U and V swap.
    let mut left = vec![0.0; m * r];
    let mut right = vec![0.0; n * r];
    let mut s = Vec::with_capacity(r);
    for (k, &(sigma, j)) in order.iter().take(r).enumerate() {
        s.push(sigma);
        for i in 0..av.rows {
            left[i * r + k] = if sigma > 0.0 {
                av.data[j][i] / sigma
            } else {
                0.0
            };
        }
        for i in 0..n {
            right[i * r + k] = v[j][i];
        }
    }
    let (u, v) = if transpose {
        (right, left)
    } else {
        (left, right)
    };
    Svd { u, s, v, r }
}

/// Randomized truncated SVD with `niter` subspace iterations (PEFT's `pissa_niter_N`), seeded.
/// The sketch has `r + 8` columns (oversampling) where the matrix allows it.
pub fn svd_lowrank(w: &[f32], rows: usize, cols: usize, r: usize, niter: usize, seed: u64) -> Svd {
    let r = r.min(rows).min(cols);
    let k = (r + 8).min(rows).min(cols);
    let w64: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    // Gaussian start [cols, k] from a small xorshift generator + Box-Muller.
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let omega: Vec<f64> = (0..cols * k)
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect();
    // Q = orth(W Ω), then (W Wᵀ)^niter refinement with re-orthonormalisation.
    let mut q = orthonormal(matmul(&w64, &omega, rows, cols, k), rows, k);
    let wt = transpose(&w64, rows, cols);
    for _ in 0..niter {
        let z = orthonormal(matmul(&wt, &q, cols, rows, k), cols, k);
        q = orthonormal(matmul(&w64, &z, rows, cols, k), rows, k);
    }
    // B = Qᵀ W is [k, cols]; its exact SVD B = Ub S Vᵀ gives W ≈ (Q Ub) S Vᵀ.
    let qt = transpose(&q, rows, k);
    let b = matmul(&qt, &w64, k, rows, cols);
    let small = exact(&b, k, cols, r);
    let u = matmul(&q, &small.u, rows, k, r);
    Svd {
        u,
        s: small.s,
        v: small.v,
        r,
    }
}

fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        for (p, &x) in a[i * k..(i + 1) * k].iter().enumerate() {
            if x != 0.0 {
                for (o, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *o += x * y;
                }
            }
        }
    }
    out
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = a[i * cols + j];
        }
    }
    out
}

/// Modified Gram-Schmidt on the `k` columns of `[rows, k]` (twice, for stability).
fn orthonormal(mut a: Vec<f64>, rows: usize, k: usize) -> Vec<f64> {
    for _ in 0..2 {
        for j in 0..k {
            for p in 0..j {
                let d: f64 = (0..rows).map(|i| a[i * k + j] * a[i * k + p]).sum();
                for i in 0..rows {
                    a[i * k + j] -= d * a[i * k + p];
                }
            }
            let norm = (0..rows).map(|i| a[i * k + j].powi(2)).sum::<f64>().sqrt();
            for i in 0..rows {
                a[i * k + j] = if norm > 0.0 { a[i * k + j] / norm } else { 0.0 };
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(s: &Svd, rows: usize, cols: usize) -> Vec<f64> {
        let mut out = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..s.r)
                    .map(|k| s.u[i * s.r + k] * s.s[k] * s.v[j * s.r + k])
                    .sum();
            }
        }
        out
    }

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                ((i * 7919 % 1013) as f32 / 1013.0 - 0.5)
                    + if i % (cols + 1) == 0 { 2.0 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn full_rank_decomposition_reconstructs_both_orientations() {
        for (rows, cols) in [(12, 7), (7, 12), (9, 9)] {
            let w = matrix(rows, cols);
            let s = svd_truncated(&w, rows, cols, rows.min(cols));
            let back = reconstruct(&s, rows, cols);
            for (a, b) in w.iter().zip(&back) {
                assert!((f64::from(*a) - b).abs() < 1e-9, "{rows}x{cols}");
            }
            assert!(s.s.windows(2).all(|p| p[0] >= p[1]), "descending");
            // Orthonormal columns of U and V.
            for (m, n) in [(&s.u, rows), (&s.v, cols)] {
                for a in 0..s.r {
                    for b in 0..s.r {
                        let d: f64 = (0..n).map(|i| m[i * s.r + a] * m[i * s.r + b]).sum();
                        assert!((d - f64::from(u8::from(a == b))).abs() < 1e-9);
                    }
                }
            }
        }
    }

    #[test]
    fn randomized_matches_exact_on_a_low_rank_matrix() {
        // Rank 3 plus tiny noise: the top-3 subspace is found in a few iterations.
        let (rows, cols) = (40, 30);
        let mut w = vec![0f32; rows * cols];
        for k in 0..3 {
            for i in 0..rows {
                for j in 0..cols {
                    let u = ((i + 3 * k) as f32 * 0.37).sin();
                    let v = ((j * (k + 1)) as f32 * 0.21).cos();
                    w[i * cols + j] += (3 - k) as f32 * u * v;
                }
            }
        }
        let exact = svd_truncated(&w, rows, cols, 3);
        let fast = svd_lowrank(&w, rows, cols, 3, 4, 1);
        for (a, b) in exact.s.iter().zip(&fast.s) {
            assert!((a - b).abs() < 1e-6 * a, "{a} vs {b}");
        }
        let (x, y) = (
            reconstruct(&exact, rows, cols),
            reconstruct(&fast, rows, cols),
        );
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
