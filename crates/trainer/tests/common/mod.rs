//! The llm.c-style golden checks shared by golden.rs (LoRA on the f32 tiny Llama,
//! scripts/fixtures/make_trainer_fixtures.py) and golden_qlora.rs (QLoRA on its NF4 checkpoint,
//! scripts/fixtures/make_qlora_golden_fixtures.py): both fixtures hold the same micro-batches,
//! the step-0 adapter gradients, the per-step loss / gradient norm / learning rate of 10 steps and
//! the adapter after them, in the same layout.

// Each test binary compiles this module on its own.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_autodiff::Autodiff;
use data::Batch;
use llama_model::{Llama, Projection, load_adapter, load_pretrained};
use peft::LoraBase;
use quant::{DeviceAbsmax, QuantBackend, QuantLinear, QuantType, QuantWeight};
use safetensors::SafeTensors;
use trainer::{
    AdamW, AdamWConfig, NamedGrads, Schedule, ScheduleKind, StepOptions, StepStats, causal_lm_loss,
    train_step,
};

pub type Ad = Autodiff<burn_flex::Flex>;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An Alpaca-style `train.jsonl` in `dir` of `records` records: "Count to i." answered with the
/// numbers 0..=i % `cycle`.
pub fn counting_data(dir: &Path, records: usize, cycle: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("train.jsonl");
    let lines: Vec<String> = (0..records)
        .map(|i| {
            serde_json::json!({
                "instruction": format!("Count to {i}."),
                "output": (0..=i % cycle).map(|k| k.to_string()).collect::<Vec<_>>().join(" "),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// The LoRA fixture (scripts/fixtures/make_trainer_fixtures.py).
pub fn lora_golden() -> PathBuf {
    root().join("crates/trainer/tests/fixtures/golden")
}

/// The QLoRA fixture (scripts/fixtures/make_qlora_golden_fixtures.py).
pub fn qlora_golden() -> PathBuf {
    root().join("crates/trainer/tests/fixtures/golden_qlora")
}

/// The f32 tiny Llama with PEFT's initial adapter of the LoRA fixture.
pub fn lora_model<B: QuantBackend>(device: &B::Device) -> Llama<B> {
    let base = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    let mut model = load_pretrained::<B>(&base, device).unwrap();
    load_adapter(&mut model, lora_golden().join("initial_adapter")).unwrap();
    model
}

pub const LORA_TOLERANCES: Tolerances = Tolerances {
    step0: 1e-5,
    step0_grads: 1e-4,
    steps: 1e-4,
    // After 10 steps the adapters agree to 1e-3 of their largest value: Adam divides each
    // gradient by its own running RMS, so where a gradient is near zero (A's, early on) float
    // rounding differences between the two libraries become full-size update differences.
    final_weights: 1e-3,
};

// The reference's 4-bit layers compute exactly the f32 math of LoRA on the dequantized weight
// (golden.json: bnb_cpu.step0_flat_kernel_vs_lora_on_f32_flat_dequant_copy, bit-identical), and
// so do ours (the dequantized weight feeds an f32 gemm), so the differences left are the f32
// rounding of two libraries' gemms, softmax and reductions — the LoRA test's. Same tolerances.
pub const QLORA_TOLERANCES: Tolerances = LORA_TOLERANCES;

/// NF4 with double-quantized absmax.
fn is_nf4_dq<B: QuantBackend>(q: &QuantLinear<B>) -> bool {
    matches!(&q.weight, QuantWeight::Four(w)
        if w.meta.quant_type == QuantType::Nf4 && matches!(w.absmax, DeviceAbsmax::Nested(_)))
}

/// The QLoRA fixture's bitsandbytes checkpoint as it loads (every decoder projection NF4,
/// lm_head f32 as transformers keeps it), with PEFT's initial adapter on each of the 14
/// projections.
pub fn qlora_model<B: QuantBackend>(device: &B::Device) -> Llama<B> {
    let mut model = load_pretrained::<B>(qlora_golden().join("base"), device).unwrap();
    let projections = model.projections();
    assert_eq!(projections.len(), 2 * 7 + 1);
    for (name, p) in &projections {
        match (name.as_str(), p) {
            ("lm_head", Projection::Dense(_)) => {}
            (_, Projection::Quant(q)) if name != "lm_head" && is_nf4_dq(q) => {}
            _ => panic!("{name}: not what the bitsandbytes checkpoint holds"),
        }
    }
    load_adapter(&mut model, qlora_golden().join("initial_adapter")).unwrap();
    for (name, p) in model.projections() {
        match p {
            Projection::Lora(l) => {
                assert!(
                    matches!(&l.base, LoraBase::Quant(q) if is_nf4_dq(q)),
                    "{name}"
                );
            }
            _ => assert_eq!(name, "lm_head"),
        }
    }
    model
}

/// A golden fixture directory: `golden.safetensors` and `golden.json`.
pub struct Golden {
    bytes: Vec<u8>,
    pub summary: serde_json::Value,
}

impl Golden {
    pub fn open(dir: &Path) -> Self {
        Self {
            bytes: std::fs::read(dir.join("golden.safetensors")).unwrap(),
            summary: serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap())
                .unwrap(),
        }
    }

    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn f64(&self, key: &str) -> f64 {
        self.summary[key].as_f64().unwrap()
    }

    fn at(&self, key: &str, step: usize) -> f64 {
        self.summary[key][step].as_f64().unwrap()
    }
}

pub fn ints(st: &SafeTensors, key: &str) -> Vec<i64> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn floats(st: &SafeTensors, key: &str) -> Vec<f32> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn batches(st: &SafeTensors) -> Vec<Batch> {
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

/// Each adapter tensor in PEFT's name and layout (`lora_A.weight` `[r, in]`, `lora_B.weight`
/// `[out, r]`), from our `[in, r]` / `[r, out]`, with the value `get` reads off it.
pub fn peft_tensors<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    get: impl Fn(&Param<Tensor<B, 2>>) -> Tensor<B::InnerBackend, 2>,
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

pub fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

/// Largest difference relative to the largest reference value (0 when both are all zero, as
/// `A`'s gradient is at step 0 while `B` = 0).
pub fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    if scale == 0.0 { diff } else { diff / scale }
}

/// Relative tolerances of one fixture's checks.
pub struct Tolerances {
    /// Step-0 loss and gradient norm.
    pub step0: f64,
    /// Each step-0 adapter gradient, relative to its largest value ([`max_rel`]).
    pub step0_grads: f64,
    /// Loss and gradient norm of each of the 10 steps.
    pub steps: f64,
    /// Each adapter tensor after 10 steps, relative to its largest value.
    pub final_weights: f64,
}

/// Measured worst relative differences (what the tolerances are held against).
#[derive(Debug, Default)]
pub struct Worst {
    pub loss: f64,
    pub grads: f64,
    pub grad_norm: f64,
    pub weights: f64,
    /// The loss of each step ([`check_steps`]).
    pub losses: Vec<f64>,
    /// The adapter after the steps, PEFT's names and layout ([`check_steps`]).
    pub adapter: Vec<(String, Vec<f32>)>,
}

/// The loss and every adapter gradient of step 0 (the first accumulation window, two
/// micro-batches, full logits and [`causal_lm_loss`]) against the fixture.
pub fn check_step_zero<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    golden: &Golden,
    tol: &Tolerances,
    device: &B::Device,
) -> Worst {
    let st = golden.tensors();
    let micro = &batches(&st)[..2];
    let num_items: usize = micro
        .iter()
        .map(|b| trainer::count_targets(&b.labels, b.seq))
        .sum();
    let mut grads = NamedGrads::default();
    let mut loss = 0.0;
    let mut backward = Vec::new();
    for b in micro {
        let t = trainer::batch_tensors::<B>(b, device);
        let labels = trainer::labels_tensor::<B>(b, device);
        let l = causal_lm_loss(model.forward(t.model_input(), None), labels, num_items);
        loss += l.clone().into_scalar().elem::<f64>();
        let g = l.backward();
        grads.accumulate::<B, _>(model, &g);
        backward.push(g);
    }
    let want = golden.at("losses", 0);
    assert!(
        rel_close(loss, want, tol.step0),
        "step 0 loss {loss} vs {want}"
    );
    let mut worst = Worst {
        loss: ((loss - want) / want).abs(),
        ..Worst::default()
    };
    // Every adapter gradient, summed over the two micro-batches as PyTorch accumulates them.
    let sum_grad = |p: &Param<Tensor<B, 2>>| {
        backward
            .iter()
            .map(|g| p.val().grad(g).unwrap())
            .reduce(|a, b| a + b)
            .unwrap()
    };
    let ours = peft_tensors(model, sum_grad);
    assert_eq!(ours.len(), 2 * 7 * 2);
    for (key, g) in &ours {
        let want = floats(&st, &format!("grad.{key}"));
        let r = max_rel(g, &want);
        assert!(
            r < tol.step0_grads,
            "{key}: gradient off by {r} (relative to its max)"
        );
        worst.grads = worst.grads.max(r);
    }
    let norm = grads.global_norm();
    let want = golden.at("grad_norms", 0);
    assert!(
        rel_close(norm, want, tol.step0),
        "grad norm {norm} vs {want}"
    );
    worst.grad_norm = ((norm - want) / want).abs();
    eprintln!(
        "step 0: loss {loss} vs {} ({:.3e} relative), gradients {:.3e}, norm {:.3e}",
        golden.at("losses", 0),
        worst.loss,
        worst.grads,
        worst.grad_norm
    );
    worst
}

/// Every float parameter's values by id.
pub struct Snapshot(pub HashMap<ParamId, Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0
            .insert(param.id, param.val().into_data().iter::<f32>().collect());
    }
}

/// The fixture's steps with [`train_step`]: the model after them and each step's statistics.
pub fn golden_steps<B: AutodiffBackend + QuantBackend>(
    mut model: Llama<B>,
    golden: &Golden,
) -> (Llama<B>, Vec<StepStats>) {
    let micro = batches(&golden.tensors());
    let lr = golden.f64("lr");
    assert_eq!(golden.summary["schedule"], "linear");
    assert_eq!(golden.f64("max_grad_norm"), 1.0);
    let mut optimizer = AdamW::new(AdamWConfig {
        lr,
        weight_decay: golden.f64("weight_decay"),
        ..AdamWConfig::default()
    });
    let steps = golden.f64("steps") as u64;
    let schedule = Schedule {
        kind: ScheduleKind::Linear,
        warmup_steps: golden.f64("warmup_steps") as u64,
        total_steps: steps,
    };
    let accum = golden.f64("grad_accum") as usize;
    let mut all = Vec::new();
    for step in 0..steps {
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
        all.push(stats);
    }
    (model, all)
}

/// The fixture's steps with [`train_step`] (accumulation, AdamW with weight decay, linear warmup
/// schedule, global clipping at 1.0): loss, gradient norm and learning rate of each, the adapter
/// weights after them, and every non-adapter float parameter bit-identical at the end.
pub fn check_steps<B: AutodiffBackend + QuantBackend>(
    model: Llama<B>,
    golden: &Golden,
    tol: &Tolerances,
) -> Worst {
    let st = golden.tensors();
    let mut before = Snapshot(HashMap::new());
    model.visit(&mut before);
    let (model, all) = golden_steps(model, golden);
    let steps = all.len();
    let mut worst = Worst::default();
    for (step, stats) in all.iter().enumerate() {
        let want = |k: &str| golden.at(k, step);
        assert!(stats.finite);
        worst.losses.push(stats.loss);
        worst.loss = worst
            .loss
            .max((stats.loss - want("losses")).abs() / want("losses"));
        worst.grad_norm = worst
            .grad_norm
            .max((stats.grad_norm - want("grad_norms")).abs() / want("grad_norms"));
        assert!(
            rel_close(stats.loss, want("losses"), tol.steps),
            "step {step}: loss {} vs {}",
            stats.loss,
            want("losses")
        );
        assert!(
            rel_close(stats.grad_norm, want("grad_norms"), tol.steps),
            "step {step}: grad norm {} vs {}",
            stats.grad_norm,
            want("grad_norms")
        );
        assert!(rel_close(stats.lr, want("lrs"), 1e-12) || want("lrs") == 0.0 && stats.lr == 0.0);
    }
    worst.adapter = peft_tensors(&model, |p| p.val().inner());
    for (key, w) in &worst.adapter {
        let want = floats(&st, &format!("final.{key}"));
        let r = max_rel(w, &want);
        worst.weights = worst.weights.max(r);
        assert!(
            r < tol.final_weights,
            "{key}: weights after {steps} steps off by {r}"
        );
    }
    eprintln!(
        "{steps} steps: loss max relative difference {:.3e}, grad norm {:.3e}; adapter weights {:.3e}",
        worst.loss, worst.grad_norm, worst.weights
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
    worst
}
