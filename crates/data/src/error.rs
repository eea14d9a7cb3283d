//! Errors of the data pipeline. Every error that comes from user data names the file and the
//! line (or record / row) and says what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a record sits in its file; displays as the suffix of `file:line` / `file: record N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// 1-based line of a JSONL, CSV or text file.
    Line(usize),
    /// 1-based element of a JSON array.
    Record(usize),
    /// 1-based row of a Parquet file.
    Row(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Line(n) => write!(f, ":{n}"),
            Loc::Record(n) => write!(f, ": record {n}"),
            Loc::Row(n) => write!(f, ": row {n}"),
        }
    }
}

/// Errors of the `data` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// One record is malformed: `file:line: reason`. Skippable with `skip_invalid`.
    #[error("{path}{loc}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Line, record or row in the file.
        loc: Loc,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A whole file is unusable (empty, unknown kind, not a JSON array, bad Parquet footer...).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// An option given by the caller is invalid.
    #[error("invalid option: {0}")]
    Config(String),
    /// Rendering a chat template failed for a record.
    #[error("chat template: {0}")]
    Template(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error from `llama-tokenizer` (tokenizer files, compiling a chat template).
    #[error(transparent)]
    TokenizerFiles(#[from] llama_tokenizer::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A file-level error on `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// A record-level error at `path:loc`.
    pub fn record(path: &Path, loc: Loc, message: impl Into<String>) -> Self {
        Error::Record {
            path: path.to_path_buf(),
            loc,
            message: message.into(),
        }
    }

    /// True for errors of one record, which `skip_invalid` may skip.
    pub fn is_record_error(&self) -> bool {
        matches!(self, Error::Record { .. })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
