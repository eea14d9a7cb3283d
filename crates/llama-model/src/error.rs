//! The crate's error type: every variant names the file, key or argument at fault and what was
//! expected, so a user sees one clear line instead of a panic.

use std::path::PathBuf;

/// Result alias used throughout `llama-model`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file did not parse or did not have the expected fields.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde reported (line, column and field).
        source: serde_json::Error,
    },
    /// `config.json` parsed but describes something we cannot run.
    #[error("{path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A safetensors file is truncated, corrupt or uses a type we do not read.
    #[error("{path}: {message}")]
    Safetensors {
        /// The safetensors file (or its index).
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A GGUF file is truncated, corrupt or uses a type or layout we do not read.
    #[error("{path}: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong (with the key or byte offset) and what was expected.
        message: String,
    },
    /// The checkpoint lacks a tensor the model needs.
    #[error("{path}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint directory.
        path: PathBuf,
        /// The Hugging Face key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// The checkpoint holds tensors the model does not use.
    #[error(
        "{path}: unexpected tensor `{key}` ({count} unused tensor(s) in total); the config does not describe this checkpoint"
    )]
    UnexpectedTensor {
        /// The file holding the first unused tensor.
        path: PathBuf,
        /// The first unused key.
        key: String,
        /// How many keys were left unused.
        count: usize,
    },
    /// A tensor has another shape than the config implies.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file holding the tensor.
        path: PathBuf,
        /// The Hugging Face key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// `tokenizer.json`, `tokenizer_config.json` or the chat template could not be used (from
    /// `llama-tokenizer`).
    #[error(transparent)]
    Tokenizer(#[from] llama_tokenizer::Error),
    /// A prompt does not fit in the model's context.
    #[error(
        "prompt of {tokens} tokens plus {new} new tokens exceeds max_position_embeddings = {max}"
    )]
    PromptTooLong {
        /// Prompt length in tokens.
        tokens: usize,
        /// Tokens requested on top of it.
        new: usize,
        /// The model's context size.
        max: usize,
    },
    /// A PEFT adapter directory could not be read or written (from `peft`; names the file, the
    /// key and what was expected).
    #[error(transparent)]
    Peft(#[from] peft::Error),
    /// The model computed NaN or infinite logits: its weights (or an adapter's) hold NaN/inf.
    #[error(
        "the model produced NaN or infinite logits (generation step {step}, row {row}): its weights or the adapter's hold NaN/inf values; check the checkpoint"
    )]
    NonFiniteLogits {
        /// The generation step (0 = the prompt's last position).
        step: usize,
        /// The batch row.
        row: usize,
    },
    /// A caller passed an argument outside its domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
