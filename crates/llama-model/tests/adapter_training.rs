//! Training-side behaviour of adapters: an optimizer step moves only the adapters (the base stays
//! bit-identical, dense or NF4), in-place merge / unmerge, and merging into a 4-bit base with
//! re-quantization.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn_autodiff::Autodiff;
use common::max_abs_diff;
use llama_model::{Llama, ModelInput, Projection, apply_lora, load_pretrained};
use peft::{LoraBase, LoraConfig};
use quant::QuantBackend;

type Ad = Autodiff<burn_flex::Flex>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dense_model() -> PathBuf {
    root().join("crates/llama-model/tests/fixtures/models/mha_untied")
}

fn nf4_model() -> PathBuf {
    root().join("crates/quant/tests/fixtures/models/mha_untied_nf4_dq")
}

fn ids<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..24).map(|i| (i * 37 + 5) % 512).collect();
    Tensor::from_data(TensorData::new(ids, [2, 12]), device)
}

/// Mean next-token cross-entropy over the batch.
fn loss<B: QuantBackend>(model: &Llama<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s] = ids.dims();
    let logits = model.forward(ModelInput::new(ids.clone()), None);
    let v = logits.dims()[2];
    let logp = log_softmax(logits.slice([0..b, 0..s - 1, 0..v]), 2);
    let targets = ids.slice([0..b, 1..s]).unsqueeze_dim::<3>(2);
    logp.gather(2, targets).mean().neg()
}

/// Every float parameter's values by id.
struct Snapshot(HashMap<ParamId, Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values = param.val().into_data().iter::<f32>().collect();
        self.0.insert(param.id, values);
    }
}

fn snapshot<B: Backend>(model: &Llama<B>) -> HashMap<ParamId, Vec<f32>> {
    let mut s = Snapshot(HashMap::new());
    model.visit(&mut s);
    s.0
}

fn adapter_ids<B: Backend>(model: &Llama<B>) -> Vec<ParamId> {
    let mut out = Vec::new();
    for (_, p) in model.projections() {
        if let Projection::Lora(l) = p {
            for a in &l.adapters {
                out.extend([a.a.id, a.b.id]);
                out.extend(a.magnitude.as_ref().map(|m| m.id));
            }
        }
    }
    out
}

/// Packed codes and scales of every quantized base, as stored.
fn quantized_bases<B: Backend>(model: &Llama<B>) -> Vec<quant::layer::HostWeight> {
    let mut out = Vec::new();
    for (_, p) in model.projections() {
        let q = match p {
            Projection::Quant(q) => q,
            Projection::Lora(l) => match &l.base {
                LoraBase::Quant(q) => q,
                LoraBase::Dense(_) => continue,
            },
            Projection::Dense(_) => continue,
        };
        out.push(q.weight.to_host().unwrap());
    }
    out
}

fn adamw_steps(mut model: Llama<Ad>, steps: usize) -> Llama<Ad> {
    // PyTorch's AdamW defaults with TRL's learning rate (burn's own defaults differ).
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init::<Ad, Llama<Ad>>();
    for _ in 0..steps {
        let l = loss(&model, ids(&Default::default()));
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(2e-4, model, grads);
    }
    model
}

fn check_only_adapters_move(path: PathBuf, config: serde_json::Value) {
    let mut model = load_pretrained::<Ad>(&path, &Default::default()).unwrap();
    apply_lora(&mut model, &LoraConfig::from_json(&config).unwrap(), 7).unwrap();
    let before = snapshot(&model);
    let quant_before = quantized_bases(&model);
    let adapters = adapter_ids(&model);
    assert!(!adapters.is_empty());
    // Two steps: B starts at zero, so A's gradient is zero until B has moved once.
    let model = adamw_steps(model, 2);
    let after = snapshot(&model);
    assert_eq!(before.len(), after.len());
    for (id, values) in &before {
        let now = &after[id];
        if adapters.contains(id) {
            assert_ne!(values, now, "an adapter tensor did not change");
        } else {
            let same = values
                .iter()
                .zip(now)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "a frozen base parameter changed");
        }
    }
    assert_eq!(
        quant_before,
        quantized_bases(&model),
        "quantized codes moved"
    );
}

#[test]
fn an_optimizer_step_moves_only_the_adapters_on_a_dense_base() {
    check_only_adapters_move(
        dense_model(),
        serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}),
    );
}

#[test]
fn an_optimizer_step_moves_only_the_adapters_on_an_nf4_base() {
    check_only_adapters_move(
        nf4_model(),
        serde_json::json!({"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "down_proj"], "use_dora": true}),
    );
}

fn logits<B: QuantBackend>(model: &Llama<B>) -> Vec<f32> {
    model
        .forward(ModelInput::new(ids(&Default::default())), None)
        .into_data()
        .iter::<f32>()
        .collect()
}

/// A trained-looking adapter: a couple of optimizer steps with a large learning rate.
fn trained(path: PathBuf, config: serde_json::Value) -> Llama<burn_flex::Flex> {
    let mut model = load_pretrained::<Ad>(&path, &Default::default()).unwrap();
    apply_lora(&mut model, &LoraConfig::from_json(&config).unwrap(), 3).unwrap();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<Ad, Llama<Ad>>();
    for _ in 0..3 {
        let l = loss(&model, ids(&Default::default()));
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(2e-2, model, grads);
    }
    model.valid()
}

#[test]
fn merge_then_unmerge_is_exact_and_merged_matches_within_1e5() {
    for path in [dense_model(), nf4_model()] {
        let mut model = trained(
            path,
            serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "use_rslora": true}),
        );
        let unmerged = logits(&model);
        assert_eq!(llama_model::set_merged(&mut model, true), 14);
        let merged = logits(&model);
        assert_ne!(merged, unmerged, "merged runs another computation");
        let d = max_abs_diff(&merged, &unmerged);
        assert!(d < 1e-5, "merged vs unmerged: {d}");
        assert_eq!(llama_model::set_merged(&mut model, false), 14);
        assert_eq!(
            logits(&model),
            unmerged,
            "unmerge restores the layer exactly"
        );
    }
}

#[test]
fn merging_into_nf4_requantizes_and_reports_the_rounding_error() {
    let mut model = trained(
        nf4_model(),
        serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    );
    let adapted = logits(&model);
    let mut dense = model.clone();
    llama_model::merge_adapters(&mut dense, false);
    let report = llama_model::merge_adapters_requantized(&mut model).unwrap();
    assert_eq!(report.len(), 4);
    eprintln!("rounding errors: {report:?}");
    for (name, e) in &report {
        assert!(name.ends_with("q_proj") || name.ends_with("v_proj"));
        // NF4 on blocks of 64: the error is a few percent of the weight, never zero.
        assert!(e.relative > 1e-3 && e.relative < 0.2, "{name}: {e:?}");
        assert!(e.max_abs > 0.0 && e.rms > 0.0 && e.delta_relative > 0.0);
    }
    // Still 4-bit, same codec settings, and the model still runs near the adapted one.
    let mut quantized = 0;
    for (name, p) in model.projections() {
        match p {
            Projection::Dense(_) if name == "lm_head" => {}
            Projection::Quant(q) => {
                quantized += 1;
                let quant::layer::QuantWeight::Four(w) = &q.weight else {
                    panic!("expected 4-bit")
                };
                assert_eq!(w.meta.blocksize, 64);
                assert!(matches!(w.absmax, quant::layer::DeviceAbsmax::Nested(_)));
            }
            other => panic!("expected a quantized projection, got {other:?}"),
        }
    }
    assert_eq!(quantized, 14);
    assert!(model.config().quantization.is_some());
    // The report agrees with the weights: ‖dequant(q) - merged‖ / ‖merged‖ recomputed here from
    // the re-quantized model and the densely merged one.
    let dense_weights: HashMap<String, Vec<f32>> = dense
        .projections()
        .into_iter()
        .filter_map(|(n, p)| match p {
            Projection::Dense(d) => {
                Some((n, d.weight.val().transpose().into_data().iter().collect()))
            }
            _ => None,
        })
        .collect();
    for (name, e) in &report {
        let Some((_, Projection::Quant(q))) =
            model.projections().into_iter().find(|(n, _)| n == name)
        else {
            panic!("{name} is not quantized")
        };
        let back: Vec<f32> = <burn_flex::Flex as QuantBackend>::dequantize_weight(&q.weight)
            .into_data()
            .iter()
            .collect();
        let merged = &dense_weights[name];
        let num: f64 = back
            .iter()
            .zip(merged)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let den: f64 = merged.iter().map(|&m| f64::from(m).powi(2)).sum();
        let relative = (num / den).sqrt();
        assert!(
            (relative - e.relative).abs() < 1e-6,
            "{name}: {relative} vs {e:?}"
        );
    }
    let exact = logits(&dense);
    assert!(max_abs_diff(&exact, &adapted) < 1e-4);
    let d = max_abs_diff(&logits(&model), &adapted);
    eprintln!("re-quantized logits vs the adapted model: max abs {d}");
    assert!(d > 0.0 && d.is_finite());
}
