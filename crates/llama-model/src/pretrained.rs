//! Loading a Hugging Face checkpoint directory into a [`Llama`].

use std::path::{Path, PathBuf};

use llama_tokenizer::LlamaTokenizer;
use quant::QuantBackend;

use crate::checkpoint::{SafetensorsSource, TensorSource};
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::quantize::QuantizeOptions;

/// Loads `config.json` and the safetensors weights of `dir` onto `device`, converting every
/// tensor to the compute dtype on the way. `dir` may also be a `.gguf` file (llama.cpp's format:
/// configuration from its metadata, tensors dequantized to f32).
pub fn load_pretrained<B: QuantBackend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Llama<B>> {
    let (config, mut src) = open_checkpoint(dir.as_ref())?;
    Llama::from_source(&config, src.as_mut(), device)
}

/// [`load_pretrained`], quantizing every float projection that `options` selects while it loads:
/// peak memory is the quantized model plus one float weight, never the float model.
pub fn load_pretrained_quantized<B: QuantBackend>(
    dir: impl AsRef<Path>,
    options: &QuantizeOptions,
    device: &B::Device,
) -> Result<Llama<B>> {
    let dir = dir.as_ref();
    let (config, mut src) = open_checkpoint(dir)?;
    if config.quantization.is_some() {
        return Err(Error::Config {
            path: dir.join("config.json"),
            message: "this checkpoint is already quantized (quantization_config); load it as it is"
                .into(),
        });
    }
    Llama::from_source_quantized(&config, src.as_mut(), Some(options), device)
}

/// The tokenizer of a checkpoint directory (`tokenizer.json`, `tokenizer_config.json`,
/// `chat_template.jinja`) or of a `.gguf` file (its `tokenizer.*` metadata).
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<LlamaTokenizer> {
    let path = path.as_ref();
    if crate::gguf::is_gguf_path(path) {
        return crate::gguf::tokenizer_from_gguf(&crate::gguf::GgufFile::open(path)?);
    }
    Ok(LlamaTokenizer::from_dir(path)?)
}

/// The configuration and the tensor source of a checkpoint directory or a `.gguf` file.
fn open_checkpoint(dir: &Path) -> Result<(LlamaConfig, Box<dyn TensorSource>)> {
    if crate::gguf::is_gguf_path(dir) {
        let (config, src) = crate::gguf::GgufSource::open(dir)?;
        return Ok((config, Box::new(src)));
    }
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        ));
    }
    let config = LlamaConfig::from_file(dir.join("config.json"))?;
    let mut src = SafetensorsSource::open(dir)?;
    if config.tie_word_embeddings {
        src.allow_unused("lm_head.weight");
    }
    Ok((config, Box::new(src)))
}

/// The hub caches to search, in transformers' order: `$HF_HUB_CACHE`, `$HF_HOME/hub`,
/// `~/.cache/huggingface/hub`.
fn hub_caches() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        out.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        out.push(PathBuf::from(home).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        out.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    out
}

/// Resolves what a user passed as `--model`: an existing directory or `.gguf` file as is, otherwise a hub id
/// (`org/name`, optionally `org/name@revision`) looked up in the local Hugging Face cache
/// (`models--org--name/snapshots/<commit>` via `refs/<revision>`, default `main`). Nothing is
/// downloaded.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    resolve_in(spec, &hub_caches())
}

/// [`resolve_model_dir`] against explicit cache directories.
pub fn resolve_in(spec: &str, caches: &[PathBuf]) -> Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.is_dir() || (crate::gguf::is_gguf_path(&path) && path.is_file()) {
        return Ok(path);
    }
    let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let looks_like_id =
        id.split('/').count() == 2 && !id.starts_with(['/', '.', '~']) && !id.contains("..");
    if looks_like_id {
        let folder = format!("models--{}", id.replace('/', "--"));
        for cache in caches {
            let repo = cache.join(&folder);
            let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
                Ok(c) => c.trim().to_string(),
                Err(_) => revision.to_string(),
            };
            let snapshot = repo.join("snapshots").join(&commit);
            if snapshot.join("config.json").is_file() {
                return Ok(snapshot);
            }
        }
        let searched: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
        return Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "not a directory, and hub id `{id}` (revision {revision}) is not in the local Hugging Face cache (searched {}); download it first, e.g. `huggingface-cli download {id}`",
                    searched.join(", ")
                ),
            ),
        ));
    }
    Err(Error::io(
        &path,
        std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
    ))
}
