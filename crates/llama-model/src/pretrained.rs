//! Loading a Hugging Face checkpoint directory or a `.gguf` file into a [`Llama`] by path (see
//! [`ModelSource`] for hub ids and everything else a model source offers).

use std::path::Path;

use llama_tokenizer::LlamaTokenizer;
use quant::QuantBackend;

use crate::error::Result;
use crate::model::Llama;
use crate::model_source::ModelSource;
use crate::quantize::QuantizeOptions;

/// Loads `config.json` and the safetensors weights of `dir` onto `device`, converting every
/// tensor to the compute dtype on the way. `dir` may also be a `.gguf` file (llama.cpp's format:
/// configuration from its metadata, tensors dequantized to f32). Shorthand for
/// [`ModelSource::from_path`] then [`ModelSource::load`].
pub fn load_pretrained<B: QuantBackend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Llama<B>> {
    ModelSource::from_path(dir.as_ref())?.load(device)
}

/// [`load_pretrained`], quantizing every float projection that `options` selects while it loads:
/// peak memory is the quantized model plus one float weight, never the float model.
pub fn load_pretrained_quantized<B: QuantBackend>(
    dir: impl AsRef<Path>,
    options: &QuantizeOptions,
    device: &B::Device,
) -> Result<Llama<B>> {
    ModelSource::from_path(dir.as_ref())?.load_quantized(options, device)
}

/// The tokenizer of a checkpoint directory (`tokenizer.json`, `tokenizer_config.json`,
/// `chat_template.jinja`) or of a `.gguf` file (its `tokenizer.*` metadata).
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<LlamaTokenizer> {
    ModelSource::from_path(path.as_ref())?.tokenizer()
}
