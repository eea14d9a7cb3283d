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
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn logits<B: quant::QuantBackend>(model: &Llama<B>, expected: &[u8]) -> Vec<f32> {
    let (ids, shape) = tensor(expected, "input_ids");
    let ids: Vec<i64> = ids
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [shape[0], shape[1]]),
        &Default::default(),
    );
    model
        .forward(ModelInput::new(input), None)
        .into_data()
        .iter::<f32>()
        .collect()
}

/// The base checkpoint a fixture adapter was made on (`base_model_name_or_path`, repo-relative).
fn base_of(adapter: &std::path::Path) -> PathBuf {
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    root().join(cfg["base_model_name_or_path"].as_str().unwrap())
}

const CASES: [&str; 5] = [
    "lora_qv",
    "rslora_all_linear",
    "dora_attn",
    "qlora_all_linear",
    "qdora_mlp",
];

fn peft_adapters_match<B: quant::QuantBackend>() {
    for name in CASES {
        let dir = fixture(name);
        let base = base_of(&dir);
        let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
        let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let before = logits(&model, &expected);
        load_adapter(&mut model, &dir).unwrap();
        let ours = logits(&model, &expected);
        let want = f32s(&tensor(&expected, "logits").0);
        let diff = max_abs_diff(&ours, &want);
        let moved = max_abs_diff(&before, &want);
        eprintln!("{name}: max |logit diff| vs PEFT {diff:e} (base model was {moved:e} away)");
        assert!(
            moved > 1e-2,
            "{name}: the adapter must change the logits for the test to mean anything"
        );
        assert!(diff <= 1e-4, "{name}: {diff}");
        if SafeTensors::deserialize(&expected)
            .unwrap()
            .names()
            .contains(&"merged_logits")
        {
            // Merge every adapted projection into a dense layer.
            for (_, p) in model.projections_mut() {
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

#[test]
fn saved_adapters_are_peft_files_tensor_for_tensor() {
    type B = burn_flex::Flex;
    for name in CASES {
        let dir = fixture(name);
        let base = base_of(&dir);
        let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
        let config = load_adapter(&mut model, &dir).unwrap();
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("adapter-save-{name}-{}", std::process::id()));
        llama_model::save_adapter(&model, &config, &out).unwrap();
        let (ours, theirs) = (
            std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
            std::fs::read(dir.join("adapter_model.safetensors")).unwrap(),
        );
        let (a, b) = (
            SafeTensors::deserialize(&ours).unwrap(),
            SafeTensors::deserialize(&theirs).unwrap(),
        );
        let (mut ka, mut kb) = (a.names(), b.names());
        ka.sort();
        kb.sort();
        assert_eq!(ka, kb, "{name}: keys");
        for k in kb {
            let (x, y) = (a.tensor(k).unwrap(), b.tensor(k).unwrap());
            assert_eq!(
                (x.dtype(), x.shape()),
                (y.dtype(), y.shape()),
                "{name}: {k}"
            );
            assert!(x.data() == y.data(), "{name}: bytes of {k}");
        }
        // Our config re-parses to the same adapter, and reloading gives the same logits.
        let mut again = load_pretrained::<B>(&base, &Default::default()).unwrap();
        let config2 = load_adapter(&mut again, &out).unwrap();
        assert_eq!(
            (
                config2.r,
                config2.lora_alpha,
                config2.use_rslora,
                config2.use_dora
            ),
            (
                config.r,
                config.lora_alpha,
                config.use_rslora,
                config.use_dora
            )
        );
        let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
        assert_eq!(
            logits(&again, &expected),
            logits(&model, &expected),
            "{name}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn fresh_adapters_start_at_the_base_and_count_like_peft() {
    type B = burn_flex::Flex;
    let base = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
    let expected = std::fs::read(fixture("lora_qv").join("expected.safetensors")).unwrap();
    let before = logits(&model, &expected);
    let (_, total_before) = llama_model::parameter_counts(&model);
    let config = peft::LoraConfig::from_json(
        &serde_json::json!({"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
    )
    .unwrap();
    llama_model::apply_lora(&mut model, &config, 0).unwrap();
    assert_eq!(
        logits(&model, &expected),
        before,
        "B = 0: the adapted model equals its base exactly"
    );
    let (trainable, total) = llama_model::parameter_counts(&model);
    // 2 layers x (q, v) x (A 4x64 + B 64x4).
    assert_eq!(trainable, 2 * 2 * (4 * 64 + 64 * 4));
    assert_eq!(total, total_before + trainable);
    // PEFT's print_trainable_parameters line for the same model.
    let pct = 100.0 * trainable as f64 / total as f64;
    assert_eq!(
        llama_model::trainable_summary(&model),
        format!(
            "trainable params: 2,048 || all params: {} || trainable%: {pct:.4}",
            total
                .to_string()
                .as_bytes()
                .rchunks(3)
                .rev()
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(",")
        )
    );
}

#[test]
fn merged_checkpoints_reload_to_the_adapter_logits() {
    type B = burn_flex::Flex;
    for name in CASES {
        let dir = fixture(name);
        let base = base_of(&dir);
        let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
        load_adapter(&mut model, &dir).unwrap();
        let merged = llama_model::merge_adapters(&mut model, true);
        assert!(merged > 0);
        assert!(
            model.config().quantization.is_none(),
            "{name}: fully dense after merging"
        );
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("merged-{name}-{}", std::process::id()));
        llama_model::save_checkpoint(&model, &out, llama_model::SaveDtype::F32, None).unwrap();
        let reloaded = load_pretrained::<B>(&out, &Default::default()).unwrap();
        let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
        // Against PEFT's adapter logits (for 4-bit bases the merge happens on the dequantized weight).
        let diff = max_abs_diff(
            &logits(&reloaded, &expected),
            &f32s(&tensor(&expected, "logits").0),
        );
        eprintln!("{name}: merged + saved + reloaded vs PEFT adapter logits {diff:e}");
        assert!(diff <= 1e-4, "{name}: {diff}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn several_adapters_switch_and_disable() {
    type B = burn_flex::Flex;
    let base = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    let mut model = load_pretrained::<B>(&base, &Default::default()).unwrap();
    let (exp_a, exp_b) = (
        std::fs::read(fixture("lora_qv").join("expected.safetensors")).unwrap(),
        std::fs::read(fixture("dora_attn").join("expected.safetensors")).unwrap(),
    );
    let plain = logits(&model, &exp_a);
    llama_model::load_named_adapter(&mut model, fixture("lora_qv"), "qv").unwrap();
    llama_model::load_named_adapter(&mut model, fixture("dora_attn"), "dora").unwrap();
    let check = |model: &Llama<B>, exp: &[u8], what: &str| {
        let diff = max_abs_diff(&logits(model, exp), &f32s(&tensor(exp, "logits").0));
        assert!(diff <= 1e-4, "{what}: {diff}");
    };
    check(&model, &exp_b, "the last loaded adapter is active");
    llama_model::set_active_adapter(&mut model, Some("qv"));
    check(&model, &exp_a, "switched to qv");
    llama_model::set_active_adapter(&mut model, None);
    assert_eq!(
        logits(&model, &exp_a),
        plain,
        "disabled: the base model's output exactly"
    );
    llama_model::set_active_adapter(&mut model, Some("dora"));
    check(&model, &exp_b, "back to dora");
}

#[test]
fn parameter_counts_match_peft_print_trainable_parameters() {
    type B = burn_flex::Flex;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("fixtures.json")).unwrap()).unwrap();
    for (name, case) in summary["cases"].as_object().unwrap() {
        let adapter = fixture(name);
        let mut model = load_pretrained::<B>(base_of(&adapter), &Default::default()).unwrap();
        load_adapter(&mut model, &adapter).unwrap();
        let (trainable, total) = llama_model::parameter_counts(&model);
        let want = &case["trainable_parameters"];
        assert_eq!(
            (trainable as u64, total as u64),
            (want[0].as_u64().unwrap(), want[1].as_u64().unwrap()),
            "{name}"
        );
    }
}
