//! The crate's error type: every variant names the file at fault (or the template) and what was
//! expected.

use std::path::PathBuf;

/// Result alias of `llama-tokenizer`.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while reading tokenizer files, tokenizing or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tokenizer file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// `tokenizer_config.json` is not valid JSON.
    #[error("{path}: invalid JSON (expected an object of tokenizer settings): {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde reported (line and column).
        source: serde_json::Error,
    },
    /// `tokenizer.json` (or the chat template of a file) could not be used.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong and what was expected.
        message: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
