//! PiSSA against PEFT 0.21.2 (scripts/fixtures/make_peft_fixtures.py): the residual base weights
//! and the initial adapter delta match PEFT's, the initialised model computes the base model, and
//! the adapter saved for the original model (PEFT's `path_initial_model_for_weight_conversion`
//! conversion: rank 2r) reproduces the trained model — ours and PEFT's converted files alike.

mod common;

use std::path::PathBuf;

use burn::module::Param;
use burn::prelude::*;
use common::max_abs_diff;
use llama_model::{
    Llama, ModelInput, Projection, apply_lora, load_adapter, load_pretrained, save_adapter,
};
use peft::{LoraBase, LoraConfig};
use safetensors::SafeTensors;

type B = burn_flex::Flex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn base_path() -> PathBuf {
    root().join("crates/llama-model/tests/fixtures/models/mha_untied")
}

fn fixture(name: &str) -> PathBuf {
    root().join("crates/peft/tests/fixtures").join(name)
}

fn read_f32(st: &SafeTensors, key: &str) -> Vec<f32> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn logits(model: &Llama<B>, st: &SafeTensors) -> Vec<f32> {
    let t = st.tensor("input_ids").unwrap();
    let ids: Vec<i64> = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [t.shape()[0], t.shape()[1]]),
        &Default::default(),
    );
    model
        .forward(ModelInput::new(input), None)
        .into_data()
        .iter()
        .collect()
}

fn summary(name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("fixtures.json")).unwrap()).unwrap();
    all["pissa"][name].clone()
}

/// `s·B·A` `[out, in]` of the active adapter of every adapted projection.
fn deltas(model: &Llama<B>) -> Vec<(String, Vec<f32>)> {
    model
        .projections()
        .into_iter()
        .filter_map(|(n, p)| match p {
            Projection::Lora(l) => {
                let ad = l.active_adapter().unwrap();
                let d = ad.b.val().transpose().matmul(ad.a.val().transpose());
                Some((
                    n,
                    d.mul_scalar(ad.spec.scale()).into_data().iter().collect(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn pissa_matches_peft_and_saves_an_adapter_for_the_original_model() {
    for name in ["pissa_qv", "pissa_rslora_mlp"] {
        let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let case = summary(name);
        let mut json = case["config"].clone();
        json["init_lora_weights"] = "pissa".into();
        let config = LoraConfig::from_json(&json).unwrap();

        let mut model = load_pretrained::<B>(base_path(), &Default::default()).unwrap();
        apply_lora(&mut model, &config, 0).unwrap();
        // Residual base and initial delta (both free of the SVD's sign ambiguity).
        let mut checked = 0;
        for (n, d) in deltas(&model) {
            let want = read_f32(&st, &format!("init_delta.{n}"));
            let diff = max_abs_diff(&d, &want);
            assert!(diff < 1e-5, "{name} {n}: init delta off by {diff}");
            let Some((_, Projection::Lora(l))) =
                model.projections().into_iter().find(|(m, _)| *m == n)
            else {
                unreachable!()
            };
            let LoraBase::Dense(base) = &l.base else {
                panic!("dense base")
            };
            let residual: Vec<f32> = base.weight.val().transpose().into_data().iter().collect();
            let diff = max_abs_diff(&residual, &read_f32(&st, &format!("residual.{n}")));
            assert!(diff < 1e-5, "{name} {n}: residual off by {diff}");
            checked += 1;
        }
        assert!(checked >= 4);
        let d = max_abs_diff(&logits(&model, &st), &read_f32(&st, "base_logits"));
        assert!(d < 1e-4, "{name}: initialised model vs base: {d}");

        // Stand-in for training, as in the fixture script: A *= 1.1, B *= 0.9.
        for (_, p) in model.projections_mut() {
            if let Projection::Lora(l) = p {
                for ad in &mut l.adapters {
                    ad.a = Param::from_tensor(ad.a.val().mul_scalar(1.1));
                    ad.b = Param::from_tensor(ad.b.val().mul_scalar(0.9));
                }
            }
        }
        let trained = read_f32(&st, "trained_logits");
        let d = max_abs_diff(&logits(&model, &st), &trained);
        assert!(d < 1e-4, "{name}: trained PiSSA model vs PEFT: {d}");

        // Saved for the original model: PEFT's converted config, and it reproduces the trained
        // model on the untouched base.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pissa-{name}-{}", std::process::id()));
        save_adapter(&model, &config, &dir).unwrap();
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap())
                .unwrap();
        let want = &case["saved_config"];
        assert_eq!(saved["r"], want["r"]);
        assert_eq!(saved["init_lora_weights"], want["init_lora_weights"]);
        let alpha = saved["lora_alpha"].as_f64().unwrap();
        assert!((alpha - want["lora_alpha"].as_f64().unwrap()).abs() < 1e-12);
        for adapter in [dir.clone(), fixture(name)] {
            let mut original = load_pretrained::<B>(base_path(), &Default::default()).unwrap();
            load_adapter(&mut original, &adapter).unwrap();
            let d = max_abs_diff(&logits(&original, &st), &trained);
            assert!(
                d < 1e-4,
                "{name}: {} on the original model: {d}",
                adapter.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn pissa_on_a_quantized_base_is_refused_before_anything_changes() {
    let nf4 = root().join("crates/quant/tests/fixtures/models/mha_untied_nf4_dq");
    let mut model = load_pretrained::<B>(&nf4, &Default::default()).unwrap();
    let config = LoraConfig::from_json(&serde_json::json!({
        "r": 4, "target_modules": ["q_proj"], "init_lora_weights": "pissa_niter_4"
    }))
    .unwrap();
    let err = apply_lora(&mut model, &config, 0).unwrap_err().to_string();
    assert!(
        err.contains("pissa") && err.contains("q_proj") && err.contains("float"),
        "{err}"
    );
    assert!(
        model
            .projections()
            .iter()
            .all(|(_, p)| !matches!(p, Projection::Lora(_)))
    );
}

#[test]
fn randomized_pissa_is_close_to_the_exact_one() {
    let bytes = std::fs::read(fixture("pissa_qv").join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config = LoraConfig::from_json(&serde_json::json!({
        "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
        "init_lora_weights": "pissa_niter_16"
    }))
    .unwrap();
    let mut model = load_pretrained::<B>(base_path(), &Default::default()).unwrap();
    apply_lora(&mut model, &config, 0).unwrap();
    for (n, d) in deltas(&model) {
        let want = read_f32(&st, &format!("init_delta.{n}"));
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&d, &want);
        assert!(diff < 1e-2 * scale, "{n}: {diff} (max {scale})");
    }
    // Whatever the decomposition, the initialised model computes the base model.
    let d = max_abs_diff(&logits(&model, &st), &read_f32(&st, "base_logits"));
    assert!(d < 1e-4, "{d}");
}
