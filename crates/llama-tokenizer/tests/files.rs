//! Reading a Hugging Face tokenizer directory: `tokenizer.json`, `tokenizer_config.json` and
//! `chat_template.jinja` (fixtures of `llama-model`, read only), and the errors on bad files.

use std::path::{Path, PathBuf};

use llama_tokenizer::{LlamaTokenizer, Message, TokenizerConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama-model/tests/fixtures")
}

/// An empty directory under the target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-tokenizer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tokenizer_and_config_of_a_checkpoint() {
    let dir = fixtures().join("chat/chatml");
    let tok = LlamaTokenizer::from_dir(&dir).unwrap();
    let config = TokenizerConfig::from_dir(&dir).unwrap();
    assert_eq!(tok.config(), &config);
    assert!(config.chat_template.is_some());
    assert_eq!(
        tok.chat_template().map(|t| t.source()),
        config.chat_template.as_deref()
    );
    assert_eq!(
        tok.eos_token_id(),
        config.eos_token.as_deref().and_then(|t| tok.token_to_id(t))
    );
    let text = tok
        .apply_chat_template(&[Message::new("user", "hi")], true)
        .unwrap();
    assert!(text.contains("hi"), "{text}");
    assert_eq!(
        tok.encode_chat(&[Message::new("user", "hi")], true)
            .unwrap(),
        tok.encode(&text, false).unwrap()
    );
}

#[test]
fn chat_template_jinja_wins_over_the_json() {
    let dir = scratch("jinja");
    assert_eq!(
        TokenizerConfig::from_dir(&dir).unwrap(),
        TokenizerConfig::default()
    );
    let src = fixtures().join("chat/chatml");
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "</s>", "chat_template": "json"}"#,
    )
    .unwrap();
    assert_eq!(
        TokenizerConfig::from_dir(&dir)
            .unwrap()
            .chat_template
            .as_deref(),
        Some("json")
    );
    std::fs::write(dir.join("chat_template.jinja"), "jinja {{ eos_token }}").unwrap();
    let c = TokenizerConfig::from_dir(&dir).unwrap();
    assert_eq!(c.chat_template.as_deref(), Some("jinja {{ eos_token }}"));
    assert_eq!(c.eos_token.as_deref(), Some("</s>"));
    let tok = LlamaTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.apply_chat_template(&[], false).unwrap(), "jinja </s>");
    // A template that does not compile names the file it came from.
    std::fs::write(dir.join("chat_template.jinja"), "{% if %}").unwrap();
    let err = LlamaTokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("chat_template.jinja") && err.contains("chat template"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_name_the_file() {
    let dir = scratch("bad");
    let err = LlamaTokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not found"),
        "{err}"
    );
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": 42}",
    )
    .unwrap();
    let err = LlamaTokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("failed to parse"),
        "{err}"
    );
    std::fs::write(dir.join("tokenizer_config.json"), "{\"bos_token\": ").unwrap();
    let err = TokenizerConfig::from_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("invalid JSON"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_template_is_an_error_when_rendering() {
    let tok = LlamaTokenizer::from_dir(fixtures().join("tokenizer")).unwrap();
    if tok.chat_template().is_none() {
        let err = tok.apply_chat_template(&[], true).unwrap_err().to_string();
        assert!(err.contains("no chat_template"), "{err}");
    }
    let bare = LlamaTokenizer::from_tokenizer(tok.inner().clone());
    assert!(bare.chat_template().is_none() && bare.bos_token_id().is_none());
    let err = bare.apply_chat_template(&[], true).unwrap_err().to_string();
    assert!(err.contains("no chat_template"), "{err}");
}
