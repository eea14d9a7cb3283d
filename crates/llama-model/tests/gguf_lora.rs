//! PEFT adapters written as llama.cpp LoRA GGUFs, compared with what llama.cpp 0.3.36's own
//! `convert_lora_to_gguf.py` wrote for the same adapters (committed, made by
//! `scripts/fixtures/make_lora_gguf_fixtures.sh`): same tensor names, types, shapes and bytes
//! (lora_b of q/k in llama.cpp's RoPE row order), same adapter metadata.

use std::path::PathBuf;

use llama_model::LlamaConfig;
use llama_model::gguf::{GgufFile, MetaValue, export_lora_gguf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn base_config() -> LlamaConfig {
    LlamaConfig::from_file(root().join("tests/fixtures/models/mha_untied/config.json")).unwrap()
}

fn check(case: &str) -> (GgufFile, GgufFile) {
    let adapter = root().join("../peft/tests/fixtures").join(case);
    let out = std::env::temp_dir().join(format!("llama-rs-{case}-{}.gguf", std::process::id()));
    export_lora_gguf(&adapter, &base_config(), case, &out).unwrap();
    let ours = GgufFile::open(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let reference =
        GgufFile::open(root().join(format!("tests/fixtures/gguf/{case}.lora.gguf"))).unwrap();
    assert_eq!(ours.tensors().len(), reference.tensors().len(), "{case}");
    for t in reference.tensors() {
        let o = ours
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{case}: {} missing", t.name));
        assert_eq!(
            (o.ggml_type, &o.dims),
            (t.ggml_type, &t.dims),
            "{case}: {}",
            t.name
        );
        assert!(
            ours.tensor_bytes(o) == reference.tensor_bytes(t),
            "{case}: {} bytes differ from convert_lora_to_gguf.py's",
            t.name
        );
    }
    for key in ["general.architecture", "general.type", "adapter.type"] {
        assert_eq!(ours.get(key), reference.get(key), "{case}: {key}");
    }
    (ours, reference)
}

fn alpha(f: &GgufFile) -> f32 {
    match f.get("adapter.lora.alpha") {
        Some(MetaValue::F32(a)) => *a,
        other => panic!("adapter.lora.alpha: {other:?}"),
    }
}

#[test]
fn lora_qv_equals_convert_lora_to_gguf() {
    let (ours, reference) = check("lora_qv");
    assert_eq!(alpha(&ours), alpha(&reference));
    assert_eq!(alpha(&ours), 16.0);
}

#[test]
fn rslora_all_linear_equals_convert_lora_to_gguf_but_for_alpha() {
    // Every projection, k_proj's lora_b permuted like q_proj's. The alpha differs on purpose:
    // the script writes PEFT's alpha (8) and llama.cpp then scales by 8 / r = 1, while rsLoRA
    // means 8 / sqrt(8); we write alpha * sqrt(r) so that alpha / r is that scale.
    let (ours, reference) = check("rslora_all_linear");
    assert_eq!(alpha(&reference), 8.0);
    assert!(
        (alpha(&ours) - 8.0 * 8f32.sqrt()).abs() < 1e-5,
        "{}",
        alpha(&ours)
    );
    assert!(ours.tensor("blk.0.attn_k.weight.lora_b").is_some());
}

#[test]
fn dora_is_refused_with_the_config_named() {
    let adapter = root().join("../peft/tests/fixtures/dora_attn");
    let out = std::env::temp_dir().join(format!("llama-rs-dora-{}.gguf", std::process::id()));
    let err = export_lora_gguf(&adapter, &base_config(), "dora", &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_config.json") && err.contains("DoRA"),
        "{err}"
    );
    assert!(!out.exists());
}
