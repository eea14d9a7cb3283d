//! The crate's error type: every variant names the file, key or option at fault and what was
//! expected.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong configuring, initialising, reading or writing a LoRA adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration option (a key of `adapter_config.json`) is malformed, unsupported or
    /// unknown. The message names the key and what was expected.
    #[error("{0}")]
    Option(String),
    /// `adapter_config.json` could not be read or does not describe a supported adapter.
    #[error("{path}: {message}")]
    Config {
        /// The `adapter_config.json`.
        path: PathBuf,
        /// Key at fault and what was expected.
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file could not be written.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// `adapter_model.safetensors` is truncated, corrupt or holds a tensor of a type we do not
    /// read.
    #[error("{path}: {message}")]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong (with the key) and what was expected.
        message: String,
    },
    /// The adapter file lacks a tensor of a targeted module.
    #[error("{path}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingTensor {
        /// The safetensors file.
        path: PathBuf,
        /// PEFT's key (`base_model.model.<module>.lora_A.weight`, ...).
        key: String,
        /// The shape the configuration and the module imply.
        expected: Vec<usize>,
    },
    /// The adapter file holds tensors no targeted module uses.
    #[error(
        "{path}: unexpected tensor `{key}` ({count} unused tensor(s) in total); the config does not describe this checkpoint"
    )]
    UnexpectedTensor {
        /// The safetensors file.
        path: PathBuf,
        /// The first unused key.
        key: String,
        /// How many keys were left unused.
        count: usize,
    },
    /// A tensor has another shape than the configuration and the module imply.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The safetensors file.
        path: PathBuf,
        /// PEFT's key.
        key: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// PiSSA decomposes the base weight and replaces it by the residual: a float base only.
    #[error(
        "PiSSA initialisation needs a float base weight; this one is quantized (initialise on the float model, then quantize the residual, as PEFT requires)"
    )]
    PissaNeedsFloatBase,
    /// Reading a weight back from the device failed.
    #[error("reading a weight from the device: {0}")]
    Device(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
