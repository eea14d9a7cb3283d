//! `peft`: LoRA adapters over a dense or quantized base layer, as Hugging Face PEFT defines them.
//!
//! - [`LoraLinear`]: `y = base(x) + scale · B(A(dropout(x)))` as two thin matmuls (the product
//!   `B·A` is never formed in the forward pass), `scale = alpha / r` or, with rsLoRA,
//!   `alpha / sqrt(r)`; DoRA's magnitude vector; merge / unmerge into a dense base.
//! - The base is frozen: only `A`, `B` (and DoRA's magnitude) are parameters that train.
//!
//! Knows nothing about Llama beyond module names.

pub mod config;
pub mod lora;
pub mod svd;

pub use config::{ConfigError, InitLoraWeights, LoraConfig, TargetModules};
pub use lora::{
    LoraAdapter, LoraBase, LoraError, LoraLinear, LoraSpec, PissaInitial, RoundingError,
};
