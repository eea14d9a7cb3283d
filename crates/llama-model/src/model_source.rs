//! Where a model comes from, decided once: a Hugging Face checkpoint directory (local, or a
//! snapshot in the local hub cache) or a llama.cpp `.gguf` file. Every command and the trainer
//! resolve what the user passed with [`ModelSource::resolve`] and then ask the source for its
//! configuration, weights, tokenizer and tokenizer files, so "directory or GGUF?" is answered in
//! this file only.

use std::path::{Path, PathBuf};

use llama_tokenizer::LlamaTokenizer;
use quant::QuantBackend;

use crate::checkpoint::SafetensorsSource;
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufSource, MetaValue};
use crate::model::Llama;
use crate::quantize::QuantizeOptions;
use crate::source::TensorSource;

/// A model on disk, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face checkpoint directory: `config.json`, safetensors weights, tokenizer files.
    HfDir(PathBuf),
    /// A llama.cpp GGUF file: configuration, tensors and tokenizer in one file.
    Gguf(PathBuf),
}

/// The tokenizer files of a transformers checkpoint that a copy of the model needs (what
/// `save_pretrained` of a tokenizer writes, plus the generation defaults).
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
];

impl ModelSource {
    /// What a user passed as `--model`: an existing directory or `.gguf` file as is, otherwise a
    /// hub id (`org/name`, optionally `org/name@revision`) looked up in the local Hugging Face
    /// cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`; the snapshot that
    /// `refs/<revision>` names, default `main`). Nothing is downloaded.
    pub fn resolve(spec: &str) -> Result<Self> {
        Self::resolve_in(spec, &hub_caches())
    }

    /// [`ModelSource::resolve`] against explicit hub cache directories.
    pub fn resolve_in(spec: &str, caches: &[PathBuf]) -> Result<Self> {
        let path = PathBuf::from(spec);
        if path.is_dir() || path.is_file() {
            return Self::from_path(path);
        }
        let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let looks_like_id =
            id.split('/').count() == 2 && !id.starts_with(['/', '.', '~']) && !id.contains("..");
        if !looks_like_id {
            return Err(not_found(
                &path,
                "model not found (expected a checkpoint directory or a .gguf file)",
            ));
        }
        let folder = format!("models--{}", id.replace('/', "--"));
        for cache in caches {
            let repo = cache.join(&folder);
            let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
                Ok(c) => c.trim().to_string(),
                Err(_) => revision.to_string(),
            };
            let snapshot = repo.join("snapshots").join(&commit);
            if snapshot.join("config.json").is_file() {
                return Ok(Self::HfDir(snapshot));
            }
        }
        let searched: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
        Err(not_found(
            &path,
            &format!(
                "not a directory, and hub id `{id}` (revision {revision}) is not in the local Hugging Face cache (searched {}); download it first, e.g. `huggingface-cli download {id}`",
                searched.join(", ")
            ),
        ))
    }

    /// A path that must exist: a directory is a checkpoint directory, a file must end in
    /// `.gguf` (the reader checks the magic when it is opened).
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.is_dir() {
            return Ok(Self::HfDir(path));
        }
        if !path.exists() {
            return Err(not_found(
                &path,
                "model not found (expected a checkpoint directory or a .gguf file)",
            ));
        }
        if is_gguf_name(&path) {
            return Ok(Self::Gguf(path));
        }
        Err(Error::Config {
            path,
            message:
                "a model is a checkpoint directory (config.json + safetensors) or a .gguf file"
                    .into(),
        })
    }

    /// The directory or file.
    pub fn path(&self) -> &Path {
        match self {
            Self::HfDir(p) | Self::Gguf(p) => p,
        }
    }

    /// Whether this is a GGUF file.
    pub fn is_gguf(&self) -> bool {
        matches!(self, Self::Gguf(_))
    }

    /// A short name for the model: the GGUF file's stem or the directory's name.
    pub fn name(&self) -> String {
        let p = self.path();
        let name = match self {
            Self::Gguf(_) => p.file_stem(),
            Self::HfDir(_) => p.file_name(),
        };
        name.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    /// The model configuration (`config.json`, or the GGUF's `llama.*` metadata).
    pub fn config(&self) -> Result<LlamaConfig> {
        match self {
            Self::HfDir(dir) => LlamaConfig::from_file(dir.join("config.json")),
            Self::Gguf(file) => crate::gguf::config_from_gguf(&GgufFile::open(file)?),
        }
    }

    /// The configuration and a source of every tensor under its Hugging Face name.
    pub fn open(&self) -> Result<(LlamaConfig, Box<dyn TensorSource>)> {
        match self {
            Self::Gguf(file) => {
                let (config, src) = GgufSource::open(file)?;
                Ok((config, Box::new(src)))
            }
            Self::HfDir(dir) => {
                let config = LlamaConfig::from_file(dir.join("config.json"))?;
                let mut src = SafetensorsSource::open(dir)?;
                if config.tie_word_embeddings {
                    src.allow_unused("lm_head.weight");
                }
                Ok((config, Box::new(src)))
            }
        }
    }

    /// The model on `device` (GGUF tensors dequantized to f32; bitsandbytes checkpoints keep
    /// their 4-bit / 8-bit weights).
    pub fn load<B: QuantBackend>(&self, device: &B::Device) -> Result<Llama<B>> {
        let (config, mut src) = self.open()?;
        Llama::from_source(&config, src.as_mut(), device)
    }

    /// The model with every float projection that `options` selects quantized while it loads:
    /// peak memory is the quantized model plus one float weight, never the float model.
    pub fn load_quantized<B: QuantBackend>(
        &self,
        options: &QuantizeOptions,
        device: &B::Device,
    ) -> Result<Llama<B>> {
        let (config, mut src) = self.open()?;
        if config.quantization.is_some() {
            return Err(Error::Config {
                path: self.path().join("config.json"),
                message:
                    "this checkpoint is already quantized (quantization_config); load it as it is"
                        .into(),
            });
        }
        Llama::from_source_quantized(&config, src.as_mut(), Some(options), device)
    }

    /// The tokenizer with its settings and chat template (`tokenizer.json`,
    /// `tokenizer_config.json`, `chat_template.jinja`, or the GGUF's `tokenizer.*` metadata).
    pub fn tokenizer(&self) -> Result<LlamaTokenizer> {
        match self {
            Self::HfDir(dir) => Ok(LlamaTokenizer::from_dir(dir)?),
            Self::Gguf(file) => crate::gguf::tokenizer_from_gguf(&GgufFile::open(file)?),
        }
    }

    /// The tokenizer as GGUF metadata (`tokenizer.ggml.*`, chat template), for GGUF export.
    pub fn tokenizer_metadata(&self) -> Result<Vec<(String, MetaValue)>> {
        match self {
            Self::HfDir(dir) => crate::gguf::tokenizer_metadata_from_hf(dir),
            Self::Gguf(file) => Ok(crate::gguf::tokenizer_metadata_from_gguf(&GgufFile::open(
                file,
            )?)),
        }
    }

    /// Writes what a tokenizer and generation need into the checkpoint directory `to`, so a
    /// model saved there is complete: a directory's tokenizer files are copied as they are; a
    /// GGUF's tokenizer is written as transformers' `tokenizer.json` and
    /// `tokenizer_config.json`. Each file goes to a temporary name first and is renamed, so an
    /// interrupted write never leaves half a file. Returns the files written.
    pub fn write_tokenizer_files(&self, to: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        match self {
            Self::Gguf(file) => {
                let files = crate::gguf::tokenizer_files(&GgufFile::open(file)?)?;
                for (name, value) in [
                    ("tokenizer.json", &files.tokenizer_json),
                    ("tokenizer_config.json", &files.tokenizer_config),
                ] {
                    let path = to.join(name);
                    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Json {
                        path: path.clone(),
                        source: e,
                    })?;
                    write_atomic(&path, |tmp| std::fs::write(tmp, &bytes))?;
                    written.push(path);
                }
            }
            Self::HfDir(dir) => {
                for name in TOKENIZER_FILES {
                    let src = dir.join(name);
                    if !src.is_file() || same_file(&src, &to.join(name)) {
                        continue;
                    }
                    let path = to.join(name);
                    write_atomic(&path, |tmp| std::fs::copy(&src, tmp).map(|_| ())).map_err(
                        |e| match e {
                            Error::Io { source, .. } => Error::io(&src, source),
                            other => other,
                        },
                    )?;
                    written.push(path);
                }
            }
        }
        Ok(written)
    }
}

/// The model's generation defaults: transformers' `generation_config.json` (falling back to
/// `config.json` for the special tokens), or a GGUF's `tokenizer.ggml.*` ids. Sampling fields
/// are `None` where the file does not set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// Every token that ends generation (transformers allows a list: Llama 3 Instruct has three).
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
    /// `do_sample`.
    pub do_sample: Option<bool>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_k`.
    pub top_k: Option<usize>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `max_new_tokens`.
    pub max_new_tokens: Option<usize>,
}

impl ModelSource {
    /// The generation defaults (see [`GenerationDefaults`]). A `generation_config.json` that
    /// exists but does not parse, or has a field of the wrong type, is an error naming the file
    /// and the field.
    pub fn generation_defaults(&self) -> Result<GenerationDefaults> {
        let config = self.config()?;
        let mut out = GenerationDefaults {
            bos_token_id: config.bos_token_id,
            eos_token_ids: config.eos_token_ids.clone(),
            ..GenerationDefaults::default()
        };
        match self {
            Self::Gguf(file) => {
                let file = GgufFile::open(file)?;
                out.pad_token_id = file
                    .get_u64("tokenizer.ggml.padding_token_id")?
                    .map(|v| v as u32);
            }
            Self::HfDir(dir) => {
                let path = dir.join("generation_config.json");
                if !path.is_file() {
                    return Ok(out);
                }
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| Error::Json {
                        path: path.clone(),
                        source: e,
                    })?;
                let field = GenerationField {
                    path: &path,
                    json: &json,
                };
                if let Some(ids) = field.ids("bos_token_id")? {
                    out.bos_token_id = ids.first().copied();
                }
                if let Some(ids) = field.ids("eos_token_id")? {
                    out.eos_token_ids = ids;
                }
                out.pad_token_id = field
                    .ids("pad_token_id")?
                    .and_then(|ids| ids.first().copied());
                out.do_sample = field.get("do_sample", serde_json::Value::as_bool, "a boolean")?;
                out.temperature =
                    field.get("temperature", serde_json::Value::as_f64, "a number")?;
                out.top_p = field.get("top_p", serde_json::Value::as_f64, "a number")?;
                out.top_k = field
                    .get("top_k", serde_json::Value::as_u64, "a non-negative integer")?
                    .map(|v| v as usize);
                out.max_new_tokens = field
                    .get(
                        "max_new_tokens",
                        serde_json::Value::as_u64,
                        "a non-negative integer",
                    )?
                    .map(|v| v as usize);
            }
        }
        Ok(out)
    }
}

/// Typed reads of `generation_config.json` fields; `null` or absent is `None`.
struct GenerationField<'a> {
    path: &'a Path,
    json: &'a serde_json::Value,
}

impl GenerationField<'_> {
    fn get<T>(
        &self,
        key: &str,
        read: impl Fn(&serde_json::Value) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => read(v).map(Some).ok_or_else(|| Error::Config {
                path: self.path.to_path_buf(),
                message: format!("`{key}` is {v}; expected {expected}"),
            }),
        }
    }

    /// A token id or a list of them.
    fn ids(&self, key: &str) -> Result<Option<Vec<u32>>> {
        let id = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        self.get(
            key,
            |v| match v {
                serde_json::Value::Array(items) => items.iter().map(id).collect(),
                other => id(other).map(|i| vec![i]),
            },
            "a token id or a list of token ids",
        )
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// Whether `path` is named like a GGUF file (the reader checks the magic).
fn is_gguf_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `write` fills a temporary file beside `path`, which is then renamed over `path`.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn not_found(path: &Path, message: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, message.to_string()),
    )
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
