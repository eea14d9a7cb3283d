//! Training memory scales with the 4-bit weights: peak heap during forward + backward through a
//! stack of NF4 layers, against the same stack in f32 and against the naive
//! `x.matmul(dequant(W)ᵀ)` under autodiff, which keeps every dense weight alive until backward.
//! Counted with a global allocator (bytes, not time), alone in this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quant::{QuantLinear, QuantType, QuantWeight, quantize_4bit};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type B = Autodiff<Flex>;
const LAYERS: usize = 12;
const DIM: usize = 1024;
const ROWS: usize = 16;

/// Peak heap bytes above the level before `build` ran, over building the stack and one forward +
/// backward pass.
fn peak_of<M>(
    build: impl FnOnce() -> Vec<M>,
    forward: impl Fn(&M, Tensor<B, 2>) -> Tensor<B, 2>,
) -> usize {
    let device = Default::default();
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let layers = build();
    let x = Tensor::<B, 2>::ones([ROWS, DIM], &device).require_grad();
    let mut h = x.clone();
    for l in &layers {
        h = forward(l, h);
    }
    let grads = h.sum().backward();
    let g = x.grad(&grads).expect("input gradient");
    assert!(
        g.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );
    drop(layers);
    PEAK.load(Ordering::SeqCst) - base
}

fn weights(seed: usize) -> Vec<f32> {
    (0..DIM * DIM)
        .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.05)
        .collect()
}

#[test]
fn nf4_training_memory_scales_with_the_4bit_weights() {
    let device: burn::tensor::Device<B> = Default::default();
    let dense_bytes = DIM * DIM * 4;
    let quantized = |seed| {
        let q = quantize_4bit(&weights(seed), QuantType::Nf4, 64, true).unwrap();
        QuantLinear::<B>::new(QuantWeight::from_4bit(&q, DIM, DIM, &device).unwrap(), None)
    };

    let nf4 = peak_of(|| (0..LAYERS).map(quantized).collect(), |l, h| l.forward(h));
    let naive = peak_of(
        || (0..LAYERS).map(quantized).collect(),
        |l, h| h.matmul(l.weight.dequantize_generic().transpose()),
    );
    let f32_stack = peak_of(
        || {
            (0..LAYERS)
                .map(|s| {
                    Tensor::<B, 2>::from_data(TensorData::new(weights(s), [DIM, DIM]), &device)
                })
                .collect::<Vec<_>>()
        },
        |w, h| h.matmul(w.clone()),
    );
    eprintln!(
        "{LAYERS} layers of {DIM}x{DIM}, batch {ROWS}: peak heap NF4+DQ {:.1} MiB, naive dequant+matmul {:.1} MiB, f32 {:.1} MiB",
        nf4 as f64 / 1048576.0,
        naive as f64 / 1048576.0,
        f32_stack as f64 / 1048576.0
    );
    // The naive graph keeps one dense weight per layer for the backward pass.
    assert!(naive >= LAYERS * dense_bytes, "naive {naive}");
    // Ours: the packed stack (~0.52 MiB a layer) plus a few dense weights in flight at a time.
    assert!(
        nf4 < LAYERS * dense_bytes / 3,
        "nf4 {nf4} vs f32 weights {}",
        LAYERS * dense_bytes
    );
    assert!(f32_stack >= LAYERS * dense_bytes);
}
