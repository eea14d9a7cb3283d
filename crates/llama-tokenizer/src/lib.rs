//! `llama-tokenizer`: the tokenizer files of a Hugging Face Llama checkpoint.
//!
//! The tokenizer and the chat template are needed both by inference (`llama-model`: prompts,
//! generation, scoring) and by dataset preparation (`data`: templating and tokenizing training
//! examples). Neither of those crates should depend on the other — the dataset pipeline has no
//! business pulling in burn and the network, and the model no business knowing about datasets —
//! so the tokenizer lives here, below both, without burn.
//!
//! - [`TokenizerConfig`]: the one parser of `tokenizer_config.json` (special tokens, `add_*_token`
//!   flags) and of the chat template (`chat_template.jinja`, or `chat_template` in
//!   `tokenizer_config.json`, a string or a list of named templates).
//! - [`ChatTemplate`]: a Jinja chat template rendered with minijinja as transformers renders it
//!   (`raise_exception`, `strftime_now`, Python-style `tojson`), in minijinja's default sandbox
//!   (no loader: a template cannot read files).
//! - [`LlamaTokenizer`]: `tokenizer.json` (via the `tokenizers` crate) with its config and chat
//!   template: `encode`, `decode`, `apply_chat_template`, `encode_chat`.
//! - [`Message`]: one chat message.
//!
//! A `.gguf` file carries its tokenizer in its metadata; `llama_model::load_tokenizer` reads
//! either kind of path.

pub mod chat;
pub mod config;
pub mod error;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use config::TokenizerConfig;
pub use error::{Error, Result};
pub use tokenizer::LlamaTokenizer;
