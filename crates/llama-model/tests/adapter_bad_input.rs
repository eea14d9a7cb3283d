//! Adapters that do not fit: one clear error naming the file, the key and what was expected, and
//! the model left usable.

use std::path::{Path, PathBuf};

use llama_model::{apply_lora, load_adapter, load_pretrained};
use peft::LoraConfig;

type B = burn_flex::Flex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn base() -> llama_model::Llama<B> {
    let dir = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    load_pretrained::<B>(&dir, &Default::default()).unwrap()
}

/// A copy of the PEFT fixture `lora_qv` in a scratch directory, to be broken by `edit`.
fn broken(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let src = root().join("crates/peft/tests/fixtures/lora_qv");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bad-adapter-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut cfg);
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    let mut model = base();
    let e = load_adapter(&mut model, dir).unwrap_err().to_string();
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    eprintln!("{e}");
    e
}

#[test]
fn shapes_that_do_not_fit_the_model() {
    // The adapter says r = 8 but its tensors have rank 4.
    let dir = broken("rank", |d| edit_config(d, |c| c["r"] = 8.into()));
    let e = load_err(&dir);
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("lora_A.weight")
            && e.contains("[8, 64]")
            && e.contains("[4, 64]"),
        "{e}"
    );
}

#[test]
fn target_names_that_match_nothing() {
    let dir = broken("targets", |d| {
        edit_config(d, |c| c["target_modules"] = serde_json::json!(["qkv_proj"]))
    });
    let e = load_err(&dir);
    assert!(
        e.contains("adapter_config.json")
            && e.contains("qkv_proj")
            && e.contains("match no module")
            && e.contains("q_proj"),
        "{e}"
    );
    // The same check when creating adapters.
    let config =
        LoraConfig::from_json(&serde_json::json!({"target_modules": ["query_key_value"]})).unwrap();
    let e = apply_lora(&mut base(), &config, 0).unwrap_err().to_string();
    assert!(
        e.contains("query_key_value") && e.contains("match no module"),
        "{e}"
    );
}

#[test]
fn an_adapter_for_another_architecture() {
    // GPT-2's fused attention: config names c_attn and the keys follow GPT-2's module tree.
    let dir = broken("gpt2", |d| {
        edit_config(d, |c| {
            c["target_modules"] = serde_json::json!(["c_attn", "c_proj"])
        });
        let t = vec![0u8; 4 * 4 * 64];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 64], &t).unwrap();
        safetensors::serialize_to_file(
            [(
                "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                view,
            )],
            None,
            &d.join("adapter_model.safetensors"),
        )
        .unwrap();
    });
    let e = load_err(&dir);
    assert!(e.contains("c_attn") && e.contains("match no module"), "{e}");

    // Llama's names in the config but a file whose keys belong to another model tree.
    let dir = broken("foreign-keys", |d| {
        let t = vec![0u8; 4 * 4 * 64];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 64], &t).unwrap();
        safetensors::serialize_to_file(
            [(
                "base_model.model.transformer.h.0.self_attn.q_proj.lora_A.weight",
                view,
            )],
            None,
            &d.join("adapter_model.safetensors"),
        )
        .unwrap();
    });
    let e = load_err(&dir);
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
        "{e}"
    );
}

#[test]
fn a_corrupt_or_truncated_adapter_file() {
    let dir = broken("truncated", |d| {
        let path = d.join("adapter_model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    let e = load_err(&dir);
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );

    let dir = broken("json", |d| {
        std::fs::write(d.join("adapter_config.json"), b"{\"r\": 4,").unwrap();
    });
    let e = load_err(&dir);
    assert!(e.contains("adapter_config.json"), "{e}");

    let dir = broken("missing", |d| {
        std::fs::remove_file(d.join("adapter_model.safetensors")).unwrap();
    });
    let e = load_err(&dir);
    assert!(e.contains("adapter_model.safetensors"), "{e}");
}

#[test]
fn a_failed_load_leaves_the_model_usable() {
    let dir = broken("usable", |d| edit_config(d, |c| c["r"] = 8.into()));
    let mut model = base();
    assert!(load_adapter(&mut model, &dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    // The good adapter still loads afterwards.
    load_adapter(
        &mut model,
        root().join("crates/peft/tests/fixtures/lora_qv"),
    )
    .unwrap();
}
