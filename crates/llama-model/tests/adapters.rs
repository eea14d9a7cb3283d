//! PEFT parity: adapters that PEFT 0.21.2 saved (scripts/fixtures/make_peft_fixtures.py) load onto
//! the base model and reproduce PEFT's logits — LoRA, rsLoRA, DoRA on an f32 base; QLoRA and
//! QDoRA on the transformers-written NF4 base — and merging reproduces `merge_and_unload`.

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::max_abs_diff;
use llama_model::{Llama, ModelInput, Projection, load_adapter, load_pretrained};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    root().join("crates/peft/tests/fixtures").join(name)
}

fn tensor(bytes: &[u8], key: &str) -> (Vec<u8>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(key).unwrap();
    (t.data().to_vec(), t.shape().to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn logits<B: llama_model::QuantBackend>(model: &Llama<B>, expected: &[u8]) -> Vec<f32> {
    let (ids, shape) = tensor(expected, "input_ids");
    let ids: Vec<i64> = ids.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), &Default::default());
    model.forward(ModelInput::new(input), None).into_data().iter::<f32>().collect()
}

const CASES: [&str; 5] = ["lora_qv", "rslora_all_linear", "dora_attn", "qlora_all_linear", "qdora_mlp"];

fn peft_adapters_match<B: llama_model::QuantBackend>() {
    for name in CASES {
        let dir = fixture(name);
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
        let base = root().join(cfg["base_model_name_or_path"].as_str().unwrap());
        let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
        let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let before = logits(&model, &expected);
        load_adapter(&mut model, &dir).unwrap();
        let ours = logits(&model, &expected);
        let want = f32s(&tensor(&expected, "logits").0);
        let diff = max_abs_diff(&ours, &want);
        let moved = max_abs_diff(&before, &want);
        eprintln!("{name}: max |logit diff| vs PEFT {diff:e} (base model was {moved:e} away)");
        assert!(moved > 1e-2, "{name}: the adapter must change the logits for the test to mean anything");
        assert!(diff <= 1e-4, "{name}: {diff}");
        if SafeTensors::deserialize(&expected).unwrap().names().contains(&"merged_logits") {
            // Merge every adapted projection into a dense layer.
            for (_, p) in llama_model::adapter::projections_mut(&mut model) {
                if let Projection::Lora(l) = p {
                    *p = Projection::Dense(l.merged());
                }
            }
            let merged = logits(&model, &expected);
            let want = f32s(&tensor(&expected, "merged_logits").0);
            let diff = max_abs_diff(&merged, &want);
            eprintln!("{name}: merged max |logit diff| vs PEFT merge_and_unload {diff:e}");
            assert!(diff <= 1e-4, "{name} merged: {diff}");
        }
    }
}

#[test]
fn peft_adapters_match_flex() {
    peft_adapters_match::<burn_flex::Flex>();
}

#[test]
fn peft_adapters_match_ndarray() {
    peft_adapters_match::<burn_ndarray::NdArray<f32>>();
}
