//! Speed of the quantization codecs and of the quantized layer, on the CPU (burn-flex).
//!
//! - `quantize`: host quantization of a 2048 x 2048 weight (throughput = input f32 bytes).
//! - `dequantize`: the multi-threaded host path the CPU backends use, and the single-threaded
//!   reference codec (throughput = output f32 bytes).
//! - `linear`: `y = x Wᵀ` at Llama-3.2-1B projection sizes with an f32, LLM.int8 and NF4+DQ weight
//!   (dequantize + gemm per call), for one decode row and a 128-token prefill.
//!
//! `cargo bench -p benches --bench quant_speed`

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant::host::{dequantize_4bit_into, dequantize_int8_into};
use quant::{
    Absmax, QuantLinear, QuantType, QuantWeight, dequantize_4bit, int8_vectorwise_quant,
    quantize_4bit,
};

type B = burn_flex::Flex;

fn weights(n: usize) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let (rows, cols) = (2048usize, 2048usize);
    let n = rows * cols;
    let w = weights(n);
    let mut group = c.benchmark_group("quantize");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((n * 4) as u64));
    for (name, qt, dq) in [
        ("nf4", QuantType::Nf4, false),
        ("nf4_dq", QuantType::Nf4, true),
        ("fp4", QuantType::Fp4, false),
    ] {
        group.bench_function(BenchmarkId::new(name, "2048x2048"), |b| {
            b.iter(|| quantize_4bit(&w, qt, 64, dq).unwrap())
        });
    }
    group.bench_function(BenchmarkId::new("int8", "2048x2048"), |b| {
        b.iter(|| int8_vectorwise_quant(&w, rows, cols, 0.0).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("dequantize");
    group.sample_size(20);
    group.throughput(Throughput::Bytes((n * 4) as u64));
    let mut out = vec![0.0f32; n];
    for (name, qt, dq) in [
        ("nf4", QuantType::Nf4, false),
        ("nf4_dq", QuantType::Nf4, true),
        ("fp4", QuantType::Fp4, false),
    ] {
        let q = quantize_4bit(&w, qt, 64, dq).unwrap();
        group.bench_function(
            BenchmarkId::new(format!("{name}_host_threads"), "2048x2048"),
            |b| {
                b.iter(|| {
                    // The nested absmax are unpacked per call, as the layer does.
                    let absmax = match &q.absmax {
                        Absmax::F32(a) => a.clone(),
                        Absmax::Nested(nq) => nq.unpack().unwrap(),
                    };
                    dequantize_4bit_into(&q.packed, &absmax, &qt.code(), 64, &mut out).unwrap()
                })
            },
        );
        group.bench_function(
            BenchmarkId::new(format!("{name}_reference"), "2048x2048"),
            |b| b.iter(|| dequantize_4bit(&q).unwrap()),
        );
    }
    let q8 = int8_vectorwise_quant(&w, rows, cols, 0.0).unwrap();
    group.bench_function(BenchmarkId::new("int8_host_threads", "2048x2048"), |b| {
        b.iter(|| dequantize_int8_into(&q8.cb, &q8.scb, cols, &mut out).unwrap())
    });
    group.finish();
}

fn linear(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("linear");
    group.sample_size(10);
    for (proj, out_f, in_f) in [("q_proj", 2048usize, 2048usize), ("up_proj", 8192, 2048)] {
        let w = weights(out_f * in_f);
        // f32: the dense layer's `[in, out]` weight.
        let mut wt = vec![0.0f32; w.len()];
        for o in 0..out_f {
            for i in 0..in_f {
                wt[i * out_f + o] = w[o * in_f + i];
            }
        }
        let dense = Tensor::<B, 2>::from_data(TensorData::new(wt, [in_f, out_f]), &device);
        let nf4 = QuantLinear::<B>::new(
            QuantWeight::from_4bit(
                &quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap(),
                out_f,
                in_f,
                &device,
            )
            .unwrap(),
            None,
        );
        let int8 = QuantLinear::<B>::new(
            QuantWeight::from_int8(
                &int8_vectorwise_quant(&w, out_f, in_f, 0.0).unwrap(),
                6.0,
                &device,
            )
            .unwrap(),
            None,
        );
        for rows in [1usize, 128] {
            let x = Tensor::<B, 2>::random([rows, in_f], Distribution::Normal(0.0, 1.0), &device);
            group.throughput(Throughput::Elements((2 * rows * in_f * out_f) as u64));
            let id = |kind: &str| {
                BenchmarkId::new(format!("{proj}_{kind}"), format!("{rows}x{in_f}x{out_f}"))
            };
            group.bench_function(id("f32"), |b| {
                b.iter(|| x.clone().matmul(dense.clone()).into_data())
            });
            group.bench_function(id("int8"), |b| {
                b.iter(|| int8.forward(x.clone()).into_data())
            });
            group.bench_function(id("nf4_dq"), |b| {
                b.iter(|| nf4.forward(x.clone()).into_data())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, codecs, linear);
criterion_main!(benches);
