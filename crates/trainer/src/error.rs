//! The trainer's errors: each names the file or setting at fault and what was expected.

use std::path::{Path, PathBuf};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint file that does not match the run (missing state, wrong shape, corrupt).
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A checkpoint (or the final weights) could not be written — a full disk, a file-size limit:
    /// `source` names the file; the previous checkpoints are untouched and no temporary is left.
    #[error("could not save {dir} (earlier checkpoints are untouched): {source}")]
    Save {
        /// The directory being saved.
        dir: PathBuf,
        /// What failed, naming the file being written.
        source: Box<Error>,
    },
    /// A setting out of range.
    #[error("{0}")]
    Config(String),
    /// The loss or a gradient is NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    /// The accelerator ran out of memory; the message names the batch and what to change.
    #[error("{0}")]
    OutOfMemory(String),
    /// Drawing `loss.png` failed.
    #[error("drawing the loss plot: {0}")]
    Plot(String),
    /// From the model crate.
    #[error(transparent)]
    Model(#[from] llama_model::Error),
    /// From the data crate (reading, templating, tokenizing, batching); names the file and line.
    #[error(transparent)]
    Data(#[from] data::Error),
    /// From the tokenizer crate (encoding prompts, decoding samples, the chat template).
    #[error(transparent)]
    Tokenizer(#[from] llama_tokenizer::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result with the trainer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
