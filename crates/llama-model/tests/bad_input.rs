//! Bad input gives one clear error line naming the file/key and what was expected — never a
//! panic. One test per case.

mod common;

use std::path::{Path, PathBuf};

use common::{B, DEVICE, model_dir};
use llama_model::{GenerationConfig, generate, load_pretrained, load_tokenizer};

/// A private copy of a fixture checkpoint that a test may damage.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-bad-input-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(model_dir("mha_untied")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    let err = load_pretrained::<B>(dir, &DEVICE)
        .expect_err("loading must fail")
        .to_string();
    assert!(!err.contains('\n'), "error must be one line: {err}");
    err
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_directory() {
    let err = load_err(Path::new("/nonexistent/model/dir"));
    assert!(
        err.contains("/nonexistent/model/dir") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn missing_config() {
    let dir = scratch("noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn malformed_config_json() {
    let dir = scratch("malformed");
    std::fs::write(
        dir.join("config.json"),
        "{\"model_type\": \"llama\", \"hidden_size\": }",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn config_missing_field() {
    let dir = scratch("nofield");
    edit_config(&dir, |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );
}

#[test]
fn unsupported_model_type() {
    let dir = scratch("mtype");
    edit_config(&dir, |v| v["model_type"] = "mistral".into());
    let err = load_err(&dir);
    assert!(
        err.contains("config.json")
            && err.contains("\"mistral\"")
            && err.contains("expected \"llama\""),
        "{err}"
    );
}

#[test]
fn unsupported_rope_type() {
    let dir = scratch("rope");
    edit_config(&dir, |v| {
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
    });
    let err = load_err(&dir);
    assert!(err.contains("unsupported rope type \"yarn\""), "{err}");
}

#[test]
fn truncated_safetensors() {
    let dir = scratch("trunc");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );
}

#[test]
fn corrupt_safetensors_header() {
    let dir = scratch("header");
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );
    // A file shorter than the 8-byte length prefix.
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn shape_mismatch_names_key_and_both_shapes() {
    let dir = scratch("shape");
    edit_config(&dir, |v| v["vocab_size"] = 500.into());
    let err = load_err(&dir);
    assert!(
        err.contains("model.embed_tokens.weight")
            && err.contains("[512, 64]")
            && err.contains("[500, 64]"),
        "{err}"
    );
}

#[test]
fn missing_tensor() {
    let dir = scratch("missing");
    edit_config(&dir, |v| v["num_hidden_layers"] = 3.into());
    let err = load_err(&dir);
    assert!(
        err.contains("missing tensor `model.layers.2.self_attn.q_proj.weight`"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor() {
    let dir = scratch("unexpected");
    edit_config(&dir, |v| v["num_hidden_layers"] = 1.into());
    let err = load_err(&dir);
    assert!(err.contains("unexpected tensor `model.layers.1."), "{err}");
}

#[test]
fn wrong_dtype() {
    let dir = scratch("dtype");
    // Rewrite the checkpoint with the final norm stored as int64.
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = vec![0u8; 64 * 8];
    let mut views = Vec::new();
    for (name, view) in st.tensors() {
        if name == "model.norm.weight" {
            views.push((
                name,
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![64], &ints)
                    .unwrap(),
            ));
        } else {
            views.push((name, view));
        }
    }
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.norm.weight") && err.contains("I64") && err.contains("expected F32"),
        "{err}"
    );
}

#[test]
fn missing_shard_listed_in_index() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-bad-input-shard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(model_dir("sharded_bias")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(dir.join("model-00002-of-00004.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model-00002-of-00004.safetensors"), "{err}");
}

/// Found while writing the `safetensors_index` fuzz target: the index's shard names were joined
/// to the directory as given, so `/etc/passwd` or `../x.safetensors` opened any file.
#[test]
fn index_shard_outside_the_directory() {
    for (i, name) in [
        "/etc/passwd",
        "../model.safetensors",
        "sub/../../x.safetensors",
        "..",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch(&format!("index-path-{i}"));
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": name}});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string(&index).unwrap(),
        )
        .unwrap();
        let err = load_err(&dir);
        assert!(
            err.contains("model.safetensors.index.json")
                && err.contains(name)
                && err.contains("expected a file name inside the checkpoint directory"),
            "{err}"
        );
    }
}

#[test]
fn tokenizer_that_fails_to_parse() {
    let dir = scratch("tok");
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": 42}",
    )
    .unwrap();
    let err = load_tokenizer(&dir).err().expect("must fail").to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("failed to parse"),
        "{err}"
    );
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load_tokenizer(&dir).err().expect("must fail").to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context() {
    let model = load_pretrained::<B>(model_dir("mha_untied"), &DEVICE).unwrap();
    let max = model.config().max_position_embeddings;
    let prompt = vec![vec![11u32; max + 1]];
    let err = generate(&model, &prompt, &GenerationConfig::default(), |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds max_position_embeddings = 128"),
        "{err}"
    );
    // Fits alone, but not with the requested new tokens.
    let prompt = vec![vec![11u32; max - 4]];
    let cfg = GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    assert!(generate(&model, &prompt, &cfg, |_, _| {}).is_err());
    // Token ids outside the vocabulary.
    let err = generate(&model, &[vec![9999u32]], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 9999") && err.contains("vocab_size = 512"),
        "{err}"
    );
}
