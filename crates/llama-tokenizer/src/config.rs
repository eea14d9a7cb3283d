//! `tokenizer_config.json` and `chat_template.jinja`: the one parser of a checkpoint's tokenizer
//! settings, used for Hugging Face directories and (through [`TokenizerConfig::from_json`]) for
//! the config a GGUF file's metadata is turned into.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// Special tokens, `add_*_token` flags and chat template of a checkpoint's tokenizer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerConfig {
    /// `bos_token`, if any.
    pub bos_token: Option<String>,
    /// `eos_token`, if any.
    pub eos_token: Option<String>,
    /// `pad_token`, if any.
    pub pad_token: Option<String>,
    /// `unk_token`, if any.
    pub unk_token: Option<String>,
    /// `add_bos_token`, when the config sets it.
    pub add_bos_token: Option<bool>,
    /// `add_eos_token`, when the config sets it.
    pub add_eos_token: Option<bool>,
    /// The Jinja `chat_template` (from `chat_template.jinja` or `tokenizer_config.json`).
    pub chat_template: Option<String>,
}

/// A special token: a string, or an `AddedToken` object with its `content`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `chat_template`: a string, or a list of `{name, template}` (the one named `default`, else the
/// first).
fn template_source(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

impl TokenizerConfig {
    /// The settings of a parsed `tokenizer_config.json` (anything but an object gives none).
    pub fn from_json(config: &Value) -> Self {
        Self {
            bos_token: token_string(config.get("bos_token")),
            eos_token: token_string(config.get("eos_token")),
            pad_token: token_string(config.get("pad_token")),
            unk_token: token_string(config.get("unk_token")),
            add_bos_token: config.get("add_bos_token").and_then(Value::as_bool),
            add_eos_token: config.get("add_eos_token").and_then(Value::as_bool),
            chat_template: config.get("chat_template").and_then(template_source),
        }
    }

    /// Reads `tokenizer_config.json` and `chat_template.jinja` of `dir` (both optional;
    /// `chat_template.jinja` wins over a `chat_template` in the JSON, as in transformers).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::read(dir.as_ref())?.0)
    }

    /// [`Self::from_dir`], with the file the chat template came from.
    pub(crate) fn read(dir: &Path) -> Result<(Self, PathBuf)> {
        let path = Self::json_path(dir);
        let json: Value = if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?
        } else {
            Value::Null
        };
        let mut config = Self::from_json(&json);
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            config.chat_template = Some(source);
            return Ok((config, jinja));
        }
        Ok((config, path))
    }

    /// `dir/tokenizer_config.json`.
    pub fn json_path(dir: &Path) -> PathBuf {
        dir.join("tokenizer_config.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_as_strings_or_added_token_objects() {
        let c = TokenizerConfig::from_json(&json!({
            "bos_token": "<s>",
            "eos_token": {"content": "</s>", "lstrip": false},
            "pad_token": null,
            "unk_token": "<unk>",
            "add_bos_token": true,
            "chat_template": "{{ messages }}",
        }));
        assert_eq!(c.bos_token.as_deref(), Some("<s>"));
        assert_eq!(c.eos_token.as_deref(), Some("</s>"));
        assert_eq!(c.pad_token, None);
        assert_eq!(c.unk_token.as_deref(), Some("<unk>"));
        assert_eq!((c.add_bos_token, c.add_eos_token), (Some(true), None));
        assert_eq!(c.chat_template.as_deref(), Some("{{ messages }}"));
        assert_eq!(
            TokenizerConfig::from_json(&Value::Null),
            TokenizerConfig::default()
        );
    }

    #[test]
    fn named_template_list_picks_default_else_first() {
        let list = |names: &[&str]| {
            let items: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "template": format!("T-{n}")}))
                .collect();
            TokenizerConfig::from_json(&json!({ "chat_template": items })).chat_template
        };
        assert_eq!(list(&["tool_use", "default"]).as_deref(), Some("T-default"));
        assert_eq!(list(&["rag", "tool_use"]).as_deref(), Some("T-rag"));
        assert_eq!(list(&[]), None);
    }
}
