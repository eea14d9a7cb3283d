//! Bit-exact float32 `torch.mean` of a contiguous CPU tensor, which is how bitsandbytes computes
//! the double-quantization offset (`absmax.mean()`). ATen sums with `cascade_sum` over SIMD lanes
//! (`aten/src/ATen/native/cpu/SumKernel.cpp`); the lane count is 8 on AVX2 machines (16 with
//! AVX-512), so the last bit of the offset depends on the CPU torch ran on. We follow AVX2, the
//! common case and the machine our fixtures come from.

/// SIMD lanes of ATen's float32 sum on AVX2.
pub const AVX2_LANES: usize = 8;

fn ceil_log2(x: usize) -> u32 {
    if x <= 2 {
        1
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

/// `multi_row_sum` of ATen: `rows[i][r][w]` summed over `i` with four cascaded accumulators.
fn multi_row_sum(rows: &[f32], size: usize, nrows: usize, w: usize) -> Vec<f32> {
    let lp = (ceil_log2(size) / 4).max(4);
    let step = 1usize << lp;
    let mask = step - 1;
    let width = nrows * w;
    let mut acc = vec![vec![0.0f32; width]; 4];
    let add = |dst: &mut Vec<f32>, src: &[f32]| dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            add(&mut acc[0], &rows[i * width..(i + 1) * width]);
            i += 1;
        }
        for j in 1..4 {
            let prev = std::mem::replace(&mut acc[j - 1], vec![0.0; width]);
            add(&mut acc[j], &prev);
            if i & (mask << (j as u32 * lp)) != 0 {
                break;
            }
        }
    }
    while i < size {
        add(&mut acc[0], &rows[i * width..(i + 1) * width]);
        i += 1;
    }
    let mut out = acc[0].clone();
    for a in &acc[1..] {
        add(&mut out, a);
    }
    out
}

/// `torch.sum` of f32 values with `lanes`-wide vectors, bit for bit.
pub fn torch_sum_f32(a: &[f32], lanes: usize) -> f32 {
    let n = a.len();
    if n < lanes {
        let size_ilp = n / 4;
        let mut ps = multi_row_sum(&a[..size_ilp * 4], size_ilp, 4, 1);
        for &v in &a[size_ilp * 4..] {
            ps[0] += v;
        }
        for k in 1..4 {
            ps[0] += ps[k];
        }
        return 0.0 + ps[0];
    }
    let vecs = n / lanes;
    let size_ilp = vecs / 4;
    let mut ps = multi_row_sum(&a[..size_ilp * 4 * lanes], size_ilp, 4, lanes);
    let (head, rest) = ps.split_at_mut(lanes);
    for i in size_ilp * 4..vecs {
        head.iter_mut()
            .zip(&a[i * lanes..(i + 1) * lanes])
            .for_each(|(d, s)| *d += *s);
    }
    for k in 1..4 {
        head.iter_mut()
            .zip(&rest[(k - 1) * lanes..k * lanes])
            .for_each(|(d, s)| *d += *s);
    }
    let mut fin = 0.0f32;
    for &v in &a[vecs * lanes..] {
        fin += v;
    }
    for &v in head.iter() {
        fin += v;
    }
    0.0 + fin
}

/// `torch.mean` of f32 values (`sum / n` in f32) as computed on an AVX2 CPU.
pub fn torch_mean_f32(a: &[f32]) -> f32 {
    torch_sum_f32(a, AVX2_LANES) / a.len() as f32
}
