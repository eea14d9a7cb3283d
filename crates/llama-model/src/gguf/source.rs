//! A GGUF file as a model: [`LlamaConfig`] from the `llama.*` metadata and a [`TensorSource`]
//! that serves every tensor under its Hugging Face name, dequantized to f32 with llama.cpp's
//! Q/K row order undone.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;

use super::names::{gguf_to_hf, rope_heads, unpermute_rows};
use super::reader::GgufFile;
use super::rope::scaling_from_factors;
use crate::config::{LlamaConfig, RopeScaling};
use crate::error::Result;
use crate::source::TensorSource;

/// The model configuration a GGUF file describes (`general.architecture` must be `llama`).
pub fn config_from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
    match file.get_str("general.architecture")? {
        Some("llama") => {}
        Some(other) => {
            return Err(file.error(format!(
                "`general.architecture` is \"{other}\"; expected \"llama\""
            )));
        }
        None => {
            return Err(file.error("missing `general.architecture`; expected \"llama\"".into()));
        }
    }
    let u = |key: &str| -> Result<usize> { Ok(file.require_u64(key)? as usize) };
    let hidden = u("llama.embedding_length")?;
    let heads = u("llama.attention.head_count")?;
    let kv_heads = match file.get_u64("llama.attention.head_count_kv")? {
        Some(v) => v as usize,
        None => heads,
    };
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(file.error(format!(
            "`llama.attention.head_count` ({heads}) must be a positive multiple of `llama.attention.head_count_kv` ({kv_heads})"
        )));
    }
    let head_dim = match file.get_u64("llama.attention.key_length")? {
        Some(v) => v as usize,
        None => hidden / heads,
    };
    if let Some(dims) = file.get_u64("llama.rope.dimension_count")?
        && dims as usize != head_dim
    {
        return Err(file.error(format!(
            "`llama.rope.dimension_count` is {dims}; only full-head RoPE ({head_dim}) is supported"
        )));
    }
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(file.error(format!(
            "head dimension {head_dim} must be even and positive"
        )));
    }
    if let Some(kind) = file.get_str("llama.rope.scaling.type")?
        && kind != "none"
    {
        return Err(file.error(format!(
            "`llama.rope.scaling.type` is \"{kind}\"; only unscaled RoPE is supported for GGUF"
        )));
    }
    let embd = file.tensor("token_embd.weight").ok_or_else(|| {
        file.error("missing tensor `token_embd.weight` (the token embedding)".into())
    })?;
    let vocab_size = match file.get_u64("llama.vocab_size")? {
        Some(v) => v as usize,
        None => embd.shape()[0],
    };
    let rope_theta = file.get_f64("llama.rope.freq_base")?.unwrap_or(10_000.0);
    // Llama 3.1-style scaling: llama.cpp stores only the per-frequency divisors.
    let rope_scaling = match file.tensor("rope_freqs.weight") {
        None => RopeScaling::None,
        Some(_) => {
            let factors = file.dequantize("rope_freqs.weight")?;
            scaling_from_factors(&factors, rope_theta, head_dim)
                .map_err(|m| file.error(format!("tensor `rope_freqs.weight`: {m}")))?
        }
    };
    let token = |key: &str| -> Result<Option<u32>> { Ok(file.get_u64(key)?.map(|v| v as u32)) };
    let config = LlamaConfig {
        hidden_size: hidden,
        intermediate_size: u("llama.feed_forward_length")?,
        num_hidden_layers: u("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: file
            .get_f64("llama.attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        max_position_embeddings: u("llama.context_length")?,
        vocab_size,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: token("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: token("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: file.tensor("blk.0.ffn_up.bias").is_some(),
        torch_dtype: None,
        quantization: None,
    };
    // The same checks as config.json's, named by the GGUF keys the values came from.
    config.check().map_err(|m| {
        let mut m = m;
        for (hf, gguf) in [
            ("`hidden_size`", "`llama.embedding_length`"),
            ("`intermediate_size`", "`llama.feed_forward_length`"),
            ("`vocab_size`", "`llama.vocab_size`"),
            ("`max_position_embeddings`", "`llama.context_length`"),
            ("`rms_norm_eps`", "`llama.attention.layer_norm_rms_epsilon`"),
            ("`rope_theta`", "`llama.rope.freq_base`"),
        ] {
            m = m.replace(hf, gguf);
        }
        file.error(m)
    })?;
    Ok(config)
}

/// The tensors of a GGUF file under Hugging Face names, as f32.
pub struct GgufSource {
    file: GgufFile,
    /// Hugging Face name -> llama.cpp name.
    names: HashMap<String, String>,
    heads: usize,
    kv_heads: usize,
    used: HashSet<String>,
}

impl GgufSource {
    /// Opens `path` and returns its configuration with the source of its tensors.
    pub fn open(path: impl AsRef<Path>) -> Result<(LlamaConfig, Self)> {
        let file = GgufFile::open(path)?;
        let config = config_from_gguf(&file)?;
        let mut names = HashMap::new();
        for t in file.tensors() {
            if t.name == "rope_freqs.weight" {
                continue; // read into the config
            }
            let hf = gguf_to_hf(&t.name).ok_or_else(|| {
                file.error(format!(
                    "tensor `{}` is not part of the Llama layout (expected token_embd, output_norm, output or blk.N.{{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}})",
                    t.name
                ))
            })?;
            names.insert(hf, t.name.clone());
        }
        let source = Self {
            file,
            names,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            used: HashSet::new(),
        };
        Ok((config, source))
    }

    /// The underlying file (metadata and raw tensors).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<TensorData> {
        let Some(name) = self.names.get(key) else {
            return Err(crate::error::Error::MissingTensor {
                path: self.file.path().to_path_buf(),
                key: format!(
                    "{key} (GGUF `{}`)",
                    super::names::hf_to_gguf(key).unwrap_or_default()
                ),
                expected: shape.to_vec(),
            });
        };
        let info = self
            .file
            .tensor(name)
            .unwrap_or_else(|| unreachable!("names only holds tensors of the file"));
        if info.shape() != shape {
            return Err(crate::error::Error::ShapeMismatch {
                path: self.file.path().to_path_buf(),
                key: format!("{key} (GGUF `{name}`)"),
                expected: shape.to_vec(),
                found: info.shape(),
            });
        }
        let mut values = self.file.dequantize(name)?;
        if let Some(h) = rope_heads(key, self.heads, self.kv_heads) {
            values = unpermute_rows(&values, h, info.dims[0] as usize);
        }
        self.file.release(info);
        self.used.insert(key.to_string());
        Ok(TensorData::new(values, shape.to_vec()))
    }

    fn contains(&self, key: &str) -> bool {
        self.names.contains_key(key)
    }

    fn location(&self, _key: &str) -> PathBuf {
        self.file.path().to_path_buf()
    }

    fn finish(&mut self) -> Result<()> {
        let mut unused: Vec<&String> = self
            .names
            .keys()
            .filter(|k| !self.used.contains(*k))
            .collect();
        unused.sort();
        if let Some(first) = unused.first() {
            return Err(crate::error::Error::UnexpectedTensor {
                path: self.file.path().to_path_buf(),
                key: (*first).clone(),
                count: unused.len(),
            });
        }
        Ok(())
    }
}
