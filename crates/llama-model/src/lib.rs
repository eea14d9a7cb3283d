//! `llama-model`: the Llama family of causal language models on [burn](https://burn.dev), generic
//! over the backend (`burn-ndarray` on CPU, `burn-cuda` on GPU).
//!
//! - [`LlamaConfig`] reads a Hugging Face `config.json` (classic and transformers-5 layouts) and
//!   offers presets of published shapes.
//! - [`Llama`] is the network; its linear maps are [`Projection`]s so quantized and LoRA layers
//!   can take their place.
//! - [`load_pretrained`] / [`save_checkpoint`] read and write Hugging Face checkpoints
//!   (single-file or sharded safetensors, f32/f16/bf16).
//! - [`ModelSource`] is where a model comes from, decided once: a checkpoint directory, a
//!   snapshot in the local Hugging Face cache, or a `.gguf` file; it gives the configuration,
//!   weights, tokenizer and tokenizer files of each the same way.
//! - [`gguf`] reads and writes llama.cpp's GGUF files (metadata, quantized tensors, tokenizer).
//! - [`generate`](fn@generate) decodes with a [`KvCache`]; [`sequence_nll`] scores text.
//! - [`load_tokenizer`] reads the tokenizer (`llama_tokenizer::LlamaTokenizer`) of a checkpoint
//!   directory or a `.gguf` file.

pub mod adapter;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod model_source;
pub mod nn;
pub mod presets;
pub mod pretrained;
pub mod quantize;
pub mod sampling;
pub mod score;
mod source;

pub use adapter::{
    apply_lora, load_adapter, load_named_adapter, merge_adapters, merge_adapters_requantized,
    parameter_counts, save_adapter, set_active_adapter, set_merged, trainable_summary,
};
pub use cache::KvCache;
pub use checkpoint::{RandomSource, SafetensorsSource, SaveDtype, TensorSource, save_checkpoint};
pub use config::{LlamaConfig, RopeScaling};
pub use error::{Error, Result};
pub use generate::{GenerationConfig, generate};
pub use model::{LayerInputs, Llama, ModelInput};
pub use model_source::{GenerationDefaults, ModelSource};
pub use nn::linear::{NamedTensor, Projection};
pub use pretrained::{load_pretrained, load_pretrained_quantized, load_tokenizer};
pub use quantize::QuantizeOptions;
pub use sampling::{Sampler, SamplingConfig};
pub use score::{Nll, sequence_nll};
