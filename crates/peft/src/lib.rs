//! `peft`: LoRA adapters over a dense or quantized base layer, as Hugging Face PEFT defines them.
//!
//! - [`LoraLinear`]: `y = base(x) + scale · B(A(dropout(x)))` as two thin matmuls (the product
//!   `B·A` is never formed in the forward pass), `scale = alpha / r` or, with rsLoRA,
//!   `alpha / sqrt(r)`; DoRA's magnitude vector; merge / unmerge into a dense base.
//! - The base is frozen: only `A`, `B` (and DoRA's magnitude) are parameters that train.
//! - [`format`](mod@format): PEFT's adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
//!   read into and written from host tensors keyed by module path.
//!
//! Knows nothing about Llama beyond module names.

pub mod config;
pub mod error;
pub mod format;
pub mod lora;
pub mod svd;

pub use config::{InitLoraWeights, LoraConfig, TargetModules};
pub use error::{Error, Result};
pub use format::{AdapterWeights, LoraTensors, read_adapter, read_adapter_modules, write_adapter};
pub use lora::{
    LoraAdapter, LoraBase, LoraLinear, LoraSpec, PissaInitial, RoundingError, seed_adapter_init,
};
