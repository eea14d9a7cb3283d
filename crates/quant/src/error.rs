//! Errors of the `quant` crate.

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while quantizing or dequantizing.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A block size outside what bitsandbytes accepts.
    #[error("blocksize {0}: expected a power of two from 32 to 4096")]
    Blocksize(usize),
    /// A NaN or infinite input value.
    #[error("value {value} at index {index} is not finite: quantization needs finite weights")]
    NonFinite {
        /// Flat index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Buffers whose sizes disagree (packed codes vs shape, absmax vs block count, ...).
    #[error("{0}")]
    Shape(String),
    /// A stored tensor or setting that does not describe a valid quantized weight.
    #[error("`{key}`: {message}")]
    Checkpoint {
        /// The checkpoint key (or config field) at fault.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}
