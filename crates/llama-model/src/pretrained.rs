//! Loading a Hugging Face checkpoint directory into a [`Llama`].

use std::path::Path;

use burn::prelude::*;

use crate::checkpoint::{SafetensorsSource, TensorSource};
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::model::Llama;

/// Loads `config.json` and the safetensors weights of `dir` onto `device`, converting every
/// tensor to the compute dtype on the way.
pub fn load_pretrained<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Llama<B>> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let config = LlamaConfig::from_file(dir.join("config.json"))?;
    let mut src = SafetensorsSource::open(dir)?;
    if config.tie_word_embeddings {
        src.allow_unused("lm_head.weight");
    }
    Llama::from_source(&config, &mut src as &mut dyn TensorSource, device)
}
