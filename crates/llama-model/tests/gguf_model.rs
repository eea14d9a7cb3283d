//! Models and tokenizers loaded from GGUF files, against transformers' reading of the same files
//! (`scripts/fixtures/make_gguf_fixtures.py`).
//!
//! - tiny.gguf: a random tiny Llama (GQA, tied) written as llama.cpp's converter writes it;
//!   transformers' logits and tokenization are the reference. Always runs.
//! - SmolLM2-135M-Instruct.Q4_1.gguf: greedy 30-token answers to three chat prompts and the
//!   last-position logits of the first, against transformers 5.23 in f32. Runs when the model is
//!   in the cache (`cargo xtask fetch-default`, or `LLAMA_RS_CACHE`); skips with a message
//!   otherwise. Run it with `cargo test --release -p llama-model --test gguf_model -- --nocapture`.

use std::path::PathBuf;

use burn::prelude::*;
use llama_model::{
    GenerationConfig, ModelInput, SamplingConfig, generate, load_pretrained, load_tokenizer,
};
use llama_tokenizer::Message;
use serde_json::Value;

type B = burn_flex::Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn last_logits(model: &llama_model::Llama<B>, prompt: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let n = ids.len();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &Default::default());
    let logits = model.forward(ModelInput::new(input), None);
    let [_, s, v] = logits.dims();
    logits
        .slice([0..1, s - 1..s, 0..v])
        .into_data()
        .iter::<f32>()
        .collect()
}

#[test]
fn tiny_gguf_logits_match_transformers() {
    let exp = json("tiny.json");
    let model = load_pretrained::<B>(fixture("tiny.gguf"), &Default::default()).unwrap();
    let c = model.config();
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4, 2, 16)
    );
    assert!(c.tie_word_embeddings);
    let input: Vec<i64> = ids(&exp["input_ids"]).iter().map(|&t| t as i64).collect();
    let n = input.len();
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, n]), &Default::default());
    let got: Vec<f32> = model
        .forward(ModelInput::new(x), None)
        .into_data()
        .iter::<f32>()
        .collect();
    let want = floats(&exp["logits"]);
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("tiny.gguf: max |logit diff| vs transformers = {diff:e}");
    assert!(diff < 1e-4, "max |logit diff| {diff}");
}

#[test]
fn tiny_gguf_tokenizer_matches_transformers() {
    let exp = json("tiny.json");
    let tok = load_tokenizer(fixture("tiny.gguf")).unwrap();
    for (text, want) in exp["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(exp["encoded"].as_array().unwrap())
    {
        let text = text.as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(want), "{text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }
    // add_bos_token is false in this file: special tokens add nothing.
    assert_eq!(
        tok.encode("the cat", true).unwrap(),
        tok.encode("the cat", false).unwrap()
    );
    let chat = tok
        .encode_chat(&[Message::new("user", "the cat")], true)
        .unwrap();
    assert_eq!(chat, ids(&exp["chat_ids"]));
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.bos_token_id(), Some(0));
}

#[test]
fn spm_vocab_adds_bos_when_asked() {
    let tok = load_tokenizer(fixture("vocab/ggml-vocab-llama-spm.gguf")).unwrap();
    let plain = tok.encode("Hello world", false).unwrap();
    let with = tok.encode("Hello world", true).unwrap();
    assert_eq!(with[0], 1, "BOS <s>");
    assert_eq!(&with[1..], &plain[..]);
    assert_eq!(tok.decode(&plain, false).unwrap(), "Hello world");
}

/// Where `cargo xtask fetch-default` leaves the default model (`$LLAMA_RS_CACHE`, else
/// `$XDG_CACHE_HOME/llama-rs`, else `~/.cache/llama-rs`), if it is there.
fn cached_default_model() -> Option<PathBuf> {
    let dir = match (
        std::env::var_os("LLAMA_RS_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
    ) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(dir)) => PathBuf::from(dir).join("llama-rs"),
        (None, None) => PathBuf::from(std::env::var_os("HOME")?).join(".cache/llama-rs"),
    };
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.is_file().then_some(path)
}

#[test]
fn smollm2_matches_transformers() {
    let Some(path) = cached_default_model() else {
        eprintln!(
            "skipped: SmolLM2-135M-Instruct.Q4_1.gguf is not in the cache (run `cargo xtask fetch-default`)"
        );
        return;
    };
    let exp = json("smollm2_parity.json");
    let tok = load_tokenizer(&path).unwrap();
    let model = load_pretrained::<B>(&path, &Default::default()).unwrap();
    for (i, case) in exp["cases"].as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = tok
            .encode_chat(&[Message::new("user", prompt)], true)
            .unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]), "{prompt}: prompt ids");
        if i == 0 {
            let got = last_logits(&model, &prompt_ids);
            let top = &case["last_logits_top20"];
            let mut diff = 0f32;
            for (id, want) in ids(&top["ids"]).iter().zip(floats(&top["values"])) {
                diff = diff.max((got[*id as usize] - want).abs());
            }
            for (g, w) in got.iter().zip(floats(&case["last_logits_first64"])) {
                diff = diff.max((g - w).abs());
            }
            let sum: f64 = got.iter().map(|&v| v as f64).sum();
            let want_sum = case["last_logits_sum"].as_f64().unwrap();
            eprintln!(
                "SmolLM2 last-position logits: max |diff| over top-20 and first 64 = {diff:e}; sum {sum:.3} vs {want_sum:.3}"
            );
            assert!(diff <= 1e-3, "max |logit diff| {diff}");
            assert!((sum - want_sum).abs() / want_sum.abs().max(1.0) < 1e-4);
        }
        let config = GenerationConfig {
            max_new_tokens: 30,
            sampling: SamplingConfig {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
            },
            eos_token_ids: vec![],
            pad_token_id: 2,
        };
        let mut produced = Vec::new();
        generate(&model, &[prompt_ids], &config, |_, t| produced.push(t)).unwrap();
        let want = ids(&case["new_ids"]);
        eprintln!("{prompt:?} -> {:?}", tok.decode(&produced, true).unwrap());
        assert_eq!(produced, want, "{prompt}: greedy tokens");
    }
}
