//! Forward-pass and cached-decode speed of `llama-model` on the default CPU backend (burn-flex, f32).
//!
//! `cargo bench -p benches --bench llama_forward`
//!
//! Shapes are small enough for a 2-core machine; whole-model figures for Llama-3.2-1B come from
//! `cargo xtask bench-model` (see docs/benchmarks.md).

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llama_model::{KvCache, Llama, LlamaConfig, ModelInput};

type B = burn_flex::Flex;

/// A Llama-3-style shape of about 30M parameters: wide enough for gemm to dominate.
fn bench_config() -> LlamaConfig {
    let mut c = LlamaConfig::llama3_2_1b();
    c.hidden_size = 512;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.vocab_size = 32_000;
    c
}

fn ids(n: usize) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 31_000 + 1).collect();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

fn forward(c: &mut Criterion) {
    let device = Default::default();
    let config = bench_config();
    let model = Llama::<B>::random(&config, 0, &device);
    let mut group = c.benchmark_group("llama_30m_forward");
    group.sample_size(10);
    for seq in [32usize, 128] {
        group.throughput(Throughput::Elements(seq as u64));
        group.bench_function(format!("prefill_seq{seq}"), |b| {
            b.iter(|| {
                let logits = model.forward(ModelInput::new(ids(seq)), None);
                // Reading the result waits for the backend to finish.
                logits.slice([0..1, 0..1, 0..1]).into_data()
            })
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_step_after_64", |b| {
        b.iter_batched(
            || {
                let mut cache = KvCache::new(&config, 1, 80, &device);
                let _ = model.forward(ModelInput::new(ids(64)), Some(&mut cache));
                cache
            },
            |mut cache| {
                let logits = model.forward(ModelInput::new(ids(1)), Some(&mut cache));
                logits.into_data()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
