//! Chat templates render exactly what `tokenizer.apply_chat_template` renders (Llama-2, Llama-3
//! and ChatML templates; fixture `chat/cases.json` from transformers).

mod common;

use common::fixtures;
use llama_tokenizer::{LlamaTokenizer, Message};

#[test]
fn chat_templates_match_transformers() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat/cases.json")).unwrap())
            .unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 18);
    for case in cases {
        let template = case["template"].as_str().unwrap();
        let tok = LlamaTokenizer::from_dir(fixtures().join("chat").join(template)).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add_gen = case["add_generation_prompt"].as_bool().unwrap();
        let text = tok.apply_chat_template(&messages, add_gen).unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "{template} (add_generation_prompt={add_gen})"
        );
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode_chat(&messages, add_gen).unwrap(),
            ids,
            "{template} ids"
        );
    }
}

#[test]
fn template_errors_are_reported_not_panicked() {
    let tok = LlamaTokenizer::from_dir(fixtures().join("chat/llama2")).unwrap();
    // The Llama-2 template raises when roles do not alternate.
    let messages = [Message::new("user", "a"), Message::new("user", "b")];
    let err = tok
        .apply_chat_template(&messages, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chat template"), "{err}");
}

#[test]
fn tokenizer_adds_bos_like_transformers() {
    let tok = LlamaTokenizer::from_dir(fixtures().join("tokenizer")).unwrap();
    let with = tok.encode("Hello world", true).unwrap();
    let without = tok.encode("Hello world", false).unwrap();
    assert_eq!(with[0], tok.bos_token_id().unwrap());
    assert_eq!(&with[1..], &without[..]);
    assert_eq!(tok.decode(&without, false).unwrap(), "Hello world");
}
