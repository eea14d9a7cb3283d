//! burn-ndarray vs burn-flex f32 matmul at the shapes a Llama-3.2-1B forward uses: a decode step
//! (one row), a 128-token prefill through the MLP, and the tied vocabulary head.
//!
//! `cargo bench -p benches --bench cpu_backends`

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn matmul<B: Backend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let mut group = c.benchmark_group(format!("matmul_{backend}"));
    group.sample_size(10);
    for (name, m, k, n) in [
        ("decode_up_proj", 1usize, 2048usize, 8192usize),
        ("prefill128_up_proj", 128, 2048, 8192),
        ("vocab_head_1_token", 128_256, 2048, 1),
    ] {
        let a = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<B, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &device);
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_with_input(
            BenchmarkId::new(name, format!("{m}x{k}x{n}")),
            &(),
            |bench, _| {
                // Reading the result back waits for the backend.
                bench.iter(|| a.clone().matmul(w.clone()).into_data())
            },
        );
    }
    group.finish();
}

fn backends(c: &mut Criterion) {
    matmul::<burn_ndarray::NdArray<f32>>(c, "ndarray");
    matmul::<burn_flex::Flex>(c, "flex");
}

criterion_group!(benches, backends);
criterion_main!(benches);
