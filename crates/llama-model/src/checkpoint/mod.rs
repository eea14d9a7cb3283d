//! Reading and writing model weights: the safetensors [`SafetensorsSource`] (a
//! [`TensorSource`], defined in `crate::source` so the model does not depend on this module)
//! and the Hugging Face checkpoint writer.

mod reader;
mod writer;

pub use crate::source::{RandomSource, TensorSource};
pub use reader::SafetensorsSource;
pub use writer::{SaveDtype, save_checkpoint};
