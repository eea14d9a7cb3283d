//! llama.cpp's GGUF format: read (versions 2 and 3, memory-mapped and validated), dequantize
//! (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, as llama.cpp does), map
//! tensor names to Hugging Face's, undo llama.cpp's Q/K row order, rebuild the tokenizer and
//! chat template from the metadata, and write GGUF files back.
//!
//! - [`GgufFile`]: the container (metadata of every value type, tensor directory).
//! - [`GgufSource`]: a [`crate::TensorSource`] so [`crate::load_pretrained`] takes a `.gguf`.
//! - [`export_gguf`] / [`GgufWriter`]: a model and its tokenizer written as GGUF (F16, BF16,
//!   Q8_0, Q4_0, Q4_1 matrices, or llama.cpp's Q4_K_M/Q5_K_M/Q6_K mixes: [`FileType`],
//!   [`llama_cpp_tensor_types`]).
//! - [`export_lora_gguf`]: a PEFT LoRA adapter as a llama.cpp LoRA GGUF (`--lora`).
//! - [`tokenizer_from_gguf`] / [`tokenizer_files`]: the tokenizer as `tokenizers` runs it.

mod dequant;
mod export;
mod ftype;
mod kquants;
mod lora;
mod meta;
mod names;
mod quantize;
mod reader;
mod rope;
mod source;
mod tokenizer;
mod writer;

pub use dequant::{GgmlType, dequantize};
pub use export::{export_gguf, tokenizer_metadata_from_gguf, tokenizer_metadata_from_hf};
pub use ftype::{FileType, MixModel, llama_cpp_tensor_types};
pub use lora::export_lora_gguf;
pub use names::{gguf_to_hf, hf_to_gguf, permute_rows, unpermute_rows};
pub use quantize::quantize;
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use rope::{rope_factors, scaling_from_factors};
pub use source::{GgufSource, config_from_gguf};
pub use tokenizer::{GgufTokenizerFiles, tokenizer_files, tokenizer_from_gguf};
pub use writer::GgufWriter;
