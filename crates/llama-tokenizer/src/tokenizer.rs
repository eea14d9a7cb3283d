//! [`LlamaTokenizer`]: `tokenizer.json` (run by the `tokenizers` crate) with the special tokens
//! and chat template of its [`TokenizerConfig`].

use std::path::{Path, PathBuf};

use crate::chat::{ChatTemplate, Message};
use crate::config::TokenizerConfig;
use crate::error::{Error, Result};

/// Tokenizer plus the special tokens and chat template from `tokenizer_config.json`.
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    config: TokenizerConfig,
    chat_template: Option<ChatTemplate>,
}

impl LlamaTokenizer {
    /// Reads `tokenizer.json`, and `tokenizer_config.json` / `chat_template.jinja` when present,
    /// from a Hugging Face checkpoint directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return Err(Error::Tokenizer {
                path: dir.to_path_buf(),
                message: "a file, not a tokenizer directory: expected a directory with \
                          tokenizer.json (a .gguf file is read by `llama_model::load_tokenizer`)"
                    .into(),
            });
        }
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json not found: expected a Hugging Face tokenizer directory",
                ),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            message: format!("failed to parse: {e}"),
        })?;
        let (config, template_path) = TokenizerConfig::read(dir)?;
        Self::from_config(inner, config).map_err(|e| Error::Tokenizer {
            path: template_path,
            message: e.to_string(),
        })
    }

    /// A tokenizer with its config; the config's chat template, if any, is compiled with its
    /// BOS/EOS tokens (the only error is a template that does not compile).
    pub fn from_config(inner: tokenizers::Tokenizer, config: TokenizerConfig) -> Result<Self> {
        let chat_template = match &config.chat_template {
            Some(src) => Some(ChatTemplate::new(
                src,
                config.bos_token.as_deref().unwrap_or(""),
                config.eos_token.as_deref().unwrap_or(""),
            )?),
            None => None,
        };
        Ok(Self {
            inner,
            config,
            chat_template,
        })
    }

    /// A tokenizer with its BOS/EOS token strings and chat template.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        chat_template: Option<ChatTemplate>,
    ) -> Self {
        let config = TokenizerConfig {
            bos_token,
            eos_token,
            chat_template: chat_template.as_ref().map(|t| t.source().to_string()),
            ..Default::default()
        };
        Self {
            inner,
            config,
            chat_template,
        }
    }

    /// Wraps a tokenizer without a config (no chat template).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            config: TokenizerConfig::default(),
            chat_template: None,
        }
    }

    /// Encodes `text`; `add_special_tokens` applies the post-processor (BOS for Llama).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, optionally dropping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                message: e.to_string(),
            })
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The BOS token id from `tokenizer_config.json`, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.config
            .bos_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The EOS token id from `tokenizer_config.json`, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.config
            .eos_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The pad token id from `tokenizer_config.json`, if any.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.config
            .pad_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The special tokens and chat template source this tokenizer was built with.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The chat template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .chat_template
            .as_ref()
            .ok_or_else(|| Error::Template("this tokenizer has no chat_template".into()))?;
        tmpl.render(messages, add_generation_prompt)
    }

    /// `tokenizer.apply_chat_template(messages, tokenize=True, ...)`: the rendered text encoded
    /// without adding special tokens again (the template already holds BOS).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
