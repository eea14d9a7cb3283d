//! llm.c-style golden test against PyTorch + PEFT (scripts/fixtures/make_trainer_fixtures.py):
//! the loss and every adapter gradient of step 0, then the loss, gradient norm and learning rate
//! of 10 steps (accumulation 2, AdamW with weight decay, linear warmup schedule, global clipping)
//! and the adapter weights after them. The frozen base stays bit-identical.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn_autodiff::Autodiff;
use data::Batch;
use llama_model::{Llama, Projection, load_adapter, load_pretrained};
use safetensors::SafeTensors;
use trainer::{
    AdamW, AdamWConfig, NamedGrads, Schedule, ScheduleKind, StepOptions, causal_lm_loss, train_step,
};

type Ad = Autodiff<burn_flex::Flex>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden() -> PathBuf {
    root().join("crates/trainer/tests/fixtures/golden")
}

fn ints(st: &SafeTensors, key: &str) -> Vec<i64> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn floats(st: &SafeTensors, key: &str) -> Vec<f32> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn batches(st: &SafeTensors) -> Vec<Batch> {
    (0..8)
        .map(|i| {
            let ids = ints(st, &format!("batch.{i}.input_ids"));
            let mask = ints(st, &format!("batch.{i}.attention_mask"));
            Batch {
                rows: 2,
                seq: 16,
                input_ids: ids.iter().map(|&t| t as u32).collect(),
                attention_mask: mask.iter().map(|&m| m as u8).collect(),
                labels: ints(st, &format!("batch.{i}.labels")),
                // transformers trains with positions 0..seq whatever the padding.
                position_ids: (0..2).flat_map(|_| 0..16u32).collect(),
                segment_ids: None,
            }
        })
        .collect()
}

fn model() -> Llama<Ad> {
    let base = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    let mut model = load_pretrained::<Ad>(&base, &Default::default()).unwrap();
    load_adapter(&mut model, golden().join("initial_adapter")).unwrap();
    model
}

/// Each adapter tensor in PEFT's name and layout (`lora_A.weight` `[r, in]`, `lora_B.weight`
/// `[out, r]`), from our `[in, r]` / `[r, out]`, with the value `get` reads off it.
fn peft_tensors(
    model: &Llama<Ad>,
    get: impl Fn(&Param<Tensor<Ad, 2>>) -> Tensor<burn_flex::Flex, 2>,
) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (name, p) in model.projections() {
        let Projection::Lora(l) = p else { continue };
        let ad = &l.adapters[0];
        for (suffix, param) in [("lora_A", &ad.a), ("lora_B", &ad.b)] {
            let key = format!("base_model.model.{name}.{suffix}.weight");
            out.push((key, get(param).transpose().into_data().iter().collect()));
        }
    }
    out
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

/// Largest difference relative to the largest reference value (0 when both are all zero, as
/// `A`'s gradient is at step 0 while `B` = 0).
fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    if scale == 0.0 { diff } else { diff / scale }
}

#[test]
fn step_zero_loss_and_every_adapter_gradient_match_pytorch() {
    let bytes = std::fs::read(golden().join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden().join("golden.json")).unwrap()).unwrap();
    let model = model();
    let micro = &batches(&st)[..2];
    let num_items: usize = micro
        .iter()
        .map(|b| trainer::count_targets(&b.labels, b.seq))
        .sum();
    let mut grads = NamedGrads::default();
    let mut loss = 0.0;
    let mut backward = Vec::new();
    for b in micro {
        let t = b.to_tensors::<Ad>(&Default::default());
        let l = causal_lm_loss(model.forward(t.model_input(), None), t.labels, num_items);
        loss += f64::from(l.clone().into_scalar());
        let g = l.backward();
        grads.accumulate(&model, &g);
        backward.push(g);
    }
    let want = summary["losses"][0].as_f64().unwrap();
    assert!(rel_close(loss, want, 1e-5), "step 0 loss {loss} vs {want}");
    // Every adapter gradient, summed over the two micro-batches as PyTorch accumulates them.
    let sum_grad = |p: &Param<Tensor<Ad, 2>>| {
        backward
            .iter()
            .map(|g| p.val().grad(g).unwrap())
            .reduce(|a, b| a + b)
            .unwrap()
    };
    let ours = peft_tensors(&model, sum_grad);
    assert_eq!(ours.len(), 2 * 7 * 2);
    let mut worst = 0f64;
    for (key, g) in &ours {
        let want = floats(&st, &format!("grad.{key}"));
        let r = max_rel(g, &want);
        assert!(r < 1e-4, "{key}: gradient off by {r} (relative to its max)");
        worst = worst.max(r);
    }
    eprintln!(
        "step 0: loss {loss} vs {want} ({:.3e} relative), gradients {worst:.3e}",
        ((loss - want) / want).abs()
    );
    let norm = grads.global_norm();
    let want = summary["grad_norms"][0].as_f64().unwrap();
    assert!(rel_close(norm, want, 1e-5), "grad norm {norm} vs {want}");
}

/// Every float parameter's values by id.
struct Snapshot(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor<Ad> for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
        self.0
            .insert(param.id, param.val().into_data().iter::<f32>().collect());
    }
}

#[test]
fn ten_steps_match_pytorch_and_leave_the_base_bit_identical() {
    let bytes = std::fs::read(golden().join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden().join("golden.json")).unwrap()).unwrap();
    let micro = batches(&st);
    let mut model = model();
    let mut before = Snapshot(HashMap::new());
    model.visit(&mut before);
    let lr = summary["lr"].as_f64().unwrap();
    let mut optimizer = AdamW::new(AdamWConfig {
        lr,
        weight_decay: summary["weight_decay"].as_f64().unwrap(),
        ..AdamWConfig::default()
    });
    let schedule = Schedule {
        kind: ScheduleKind::Linear,
        warmup_steps: 2,
        total_steps: 10,
    };
    let accum = 2;
    let mut worst_loss = 0f64;
    for step in 0..10u64 {
        let window: Vec<Batch> = (0..accum)
            .map(|k| micro[(step as usize * accum + k) % micro.len()].clone())
            .collect();
        let step_lr = lr * schedule.factor(step);
        let (m, stats) = train_step(
            model,
            &window,
            &mut optimizer,
            &StepOptions::new(step_lr, Some(1.0)),
        );
        model = m;
        let want = |k: &str| summary[k][step as usize].as_f64().unwrap();
        assert!(stats.finite);
        worst_loss = worst_loss.max((stats.loss - want("losses")).abs() / want("losses"));
        assert!(
            rel_close(stats.loss, want("losses"), 1e-4),
            "step {step}: loss {} vs {}",
            stats.loss,
            want("losses")
        );
        assert!(
            rel_close(stats.grad_norm, want("grad_norms"), 1e-4),
            "step {step}: grad norm {} vs {}",
            stats.grad_norm,
            want("grad_norms")
        );
        assert!(rel_close(stats.lr, want("lrs"), 1e-12) || want("lrs") == 0.0 && stats.lr == 0.0);
    }
    // After 10 steps the adapters agree to 1e-3 of their largest value: Adam divides each
    // gradient by its own running RMS, so where a gradient is near zero (A's, early on) float
    // rounding differences between the two libraries become full-size update differences.
    let mut worst = 0f64;
    for (key, w) in peft_tensors(&model, |p| p.val().inner()) {
        let want = floats(&st, &format!("final.{key}"));
        let r = max_rel(&w, &want);
        worst = worst.max(r);
        assert!(r < 1e-3, "{key}: weights after 10 steps off by {r}");
    }
    eprintln!(
        "10 steps: loss max relative difference {worst_loss:.3e}; adapter weights {worst:.3e}"
    );
    // Frozen: every non-adapter parameter bit-identical.
    let mut after = Snapshot(HashMap::new());
    model.visit(&mut after);
    let mut adapters = Vec::new();
    for (_, p) in model.projections() {
        if let Projection::Lora(l) = p {
            adapters.extend([l.adapters[0].a.id, l.adapters[0].b.id]);
        }
    }
    for (id, v) in &before.0 {
        if !adapters.contains(id) {
            let now = &after.0[id];
            assert!(
                v.iter().zip(now).all(|(a, b)| a.to_bits() == b.to_bits()),
                "a frozen parameter moved"
            );
        }
    }
}
