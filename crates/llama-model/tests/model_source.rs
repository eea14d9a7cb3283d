//! `ModelSource`: one answer to "directory or GGUF?" for every caller, and the same services
//! (configuration, weights, tokenizer, tokenizer files) from both.

use std::path::PathBuf;

use burn::prelude::*;
use llama_model::{LlamaConfig, ModelInput, ModelSource};
use llama_tokenizer::{LlamaTokenizer, Message};

type B = burn_flex::Flex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("model-source-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn logits(model: &llama_model::Llama<B>, ids: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.clone(), [1, ids.len()]),
        &Default::default(),
    );
    model
        .forward(ModelInput::new(input), None)
        .into_data()
        .iter::<f32>()
        .collect()
}

#[test]
fn kinds_are_decided_once_from_the_path() {
    let dir = fixtures().join("models/mha_untied");
    let gguf = fixtures().join("gguf/tiny.gguf");
    let d = ModelSource::resolve(dir.to_str().unwrap()).unwrap();
    assert_eq!(d, ModelSource::HfDir(dir.clone()));
    assert!(!d.is_gguf());
    assert_eq!(d.name(), "mha_untied");
    let g = ModelSource::resolve(gguf.to_str().unwrap()).unwrap();
    assert_eq!(g, ModelSource::Gguf(gguf.clone()));
    assert!(g.is_gguf());
    assert_eq!(g.name(), "tiny");
    assert_eq!(
        d.config().unwrap(),
        LlamaConfig::from_file(dir.join("config.json")).unwrap()
    );
    assert_eq!(
        g.config().unwrap().vocab_size,
        g.tokenizer().unwrap().inner().get_vocab_size(true)
    );
}

#[test]
fn other_files_and_missing_paths_are_clear_errors() {
    let err = ModelSource::from_path(fixtures().join("gguf/tiny.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny.json") && err.contains(".gguf file"),
        "{err}"
    );
    let err = ModelSource::resolve("/no/such/model")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/no/such/model") && err.contains("not found"),
        "{err}"
    );
    // A GGUF with a corrupt header is refused when it is opened, naming the file.
    let dir = tmp("corrupt");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"not a gguf file at all").unwrap();
    let source = ModelSource::from_path(&bad).unwrap();
    let err = source.config().unwrap_err().to_string();
    assert!(err.contains("bad.gguf"), "{err}");
    assert!(source.load::<B>(&Default::default()).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gguf_tokenizer_files_load_as_transformers_files() {
    // The tokenizer a GGUF carries, written as tokenizer.json + tokenizer_config.json, encodes
    // text and chats exactly as the GGUF's own tokenizer does.
    let source = ModelSource::from_path(fixtures().join("gguf/tiny.gguf")).unwrap();
    let out = tmp("gguf-tok");
    let written = source.write_tokenizer_files(&out).unwrap();
    assert_eq!(
        written,
        vec![
            out.join("tokenizer.json"),
            out.join("tokenizer_config.json")
        ]
    );
    let ours = source.tokenizer().unwrap();
    let theirs = LlamaTokenizer::from_dir(&out).unwrap();
    for text in ["the cat sat", "Hello, world!  42", ""] {
        assert_eq!(
            ours.encode(text, true).unwrap(),
            theirs.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    let chat = [Message::new("user", "the cat")];
    assert_eq!(
        ours.encode_chat(&chat, true).unwrap(),
        theirs.encode_chat(&chat, true).unwrap()
    );
    assert!(!out.join("tokenizer.json.tmp").exists());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn directory_tokenizer_files_are_copied_and_the_copy_loads() {
    let dir = fixtures().join("models/mha_untied");
    let source = ModelSource::from_path(&dir).unwrap();
    let out = tmp("dir-tok");
    let written = source.write_tokenizer_files(&out).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json"
        ]
    );
    for name in &names {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(out.join(name)).unwrap(),
            "{name}"
        );
    }
    // Writing onto the source itself is a no-op, not a truncation.
    assert!(source.write_tokenizer_files(&dir).unwrap().is_empty());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn loading_through_the_source_equals_loading_by_path() {
    let gguf = fixtures().join("gguf/tiny.gguf");
    let source = ModelSource::from_path(&gguf).unwrap();
    let a = source.load::<B>(&Default::default()).unwrap();
    let b = llama_model::load_pretrained::<B>(&gguf, &Default::default()).unwrap();
    assert_eq!(logits(&a, &[1, 5, 9, 3]), logits(&b, &[1, 5, 9, 3]));
}

#[test]
fn generation_defaults_come_from_generation_config_or_the_gguf() {
    // A directory: generation_config.json wins over config.json (Llama 3 Instruct lists three
    // end tokens there and one in config.json).
    let dir = tmp("gen");
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(
            fixtures().join("models/mha_untied").join(name),
            dir.join(name),
        )
        .unwrap();
    }
    let source = ModelSource::from_path(&dir).unwrap();
    let config = source.config().unwrap();
    let plain = source.generation_defaults().unwrap();
    assert_eq!(plain.eos_token_ids, config.eos_token_ids);
    assert_eq!(plain.temperature, None);
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 1, "eos_token_id": [2, 7, 9], "pad_token_id": null, "do_sample": true, "temperature": 0.6, "top_p": 0.9}"#,
    )
    .unwrap();
    let d = source.generation_defaults().unwrap();
    assert_eq!(d.bos_token_id, Some(1));
    assert_eq!(d.eos_token_ids, [2, 7, 9]);
    assert_eq!(d.pad_token_id, None);
    assert_eq!(
        (d.do_sample, d.temperature, d.top_p),
        (Some(true), Some(0.6), Some(0.9))
    );
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": "</s>"}"#,
    )
    .unwrap();
    let err = source.generation_defaults().unwrap_err().to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("`eos_token_id`"),
        "{err}"
    );
    std::fs::write(dir.join("generation_config.json"), "{").unwrap();
    let err = source.generation_defaults().unwrap_err().to_string();
    assert!(err.contains("generation_config.json"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
    // A GGUF: its tokenizer.ggml ids.
    let g = ModelSource::from_path(fixtures().join("gguf/tiny.gguf")).unwrap();
    let d = g.generation_defaults().unwrap();
    assert_eq!(
        (d.bos_token_id, d.eos_token_ids.as_slice()),
        (Some(0), &[2][..])
    );
}
