//! A [`Llama`] and its tokenizer as a llama.cpp GGUF file: `llama.*` hyper-parameters,
//! `tokenizer.ggml.*` (from a GGUF's own metadata or a Hugging Face `tokenizer.json`), the chat
//! template, and the weights under llama.cpp's names with its Q/K row order, matrices encoded as
//! F16/BF16/Q8_0/Q4_0/Q4_1 or llama.cpp's K-quant mixes, and norms as F32.

use std::path::Path;

use serde_json::Value;

use super::dequant::GgmlType;
use super::ftype::{FileType, MixModel, llama_cpp_tensor_types};
use super::names::{hf_to_gguf, permute_rows, rope_heads};
use super::quantize::quantize;
use super::reader::{GgufFile, MetaValue};
use super::rope::rope_factors;
use super::tokenizer::LLAMA3_SPLIT;
use super::writer::GgufWriter;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::nn::linear::NamedTensor;
use llama_tokenizer::TokenizerConfig;
use quant::QuantBackend;

/// Every `tokenizer.*` pair of a GGUF file, to copy into another.
pub fn tokenizer_metadata_from_gguf(file: &GgufFile) -> Vec<(String, MetaValue)> {
    file.metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect()
}

fn strs(v: impl IntoIterator<Item = String>) -> MetaValue {
    MetaValue::Array(v.into_iter().map(MetaValue::String).collect())
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template` from a Hugging Face tokenizer directory
/// (`tokenizer.json`, `tokenizer_config.json`, optional `chat_template.jinja`). Byte-level BPE
/// becomes `gpt2` (pre-tokenizer recognised as `llama-bpe`, `smollm` or `gpt2`); BPE with byte
/// fallback becomes `llama`, with scores that rank each piece by its first merge.
pub fn tokenizer_metadata_from_hf(dir: &Path) -> Result<Vec<(String, MetaValue)>> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let tj: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let err = |message: String| {
        Error::from(llama_tokenizer::Error::Tokenizer {
            path: path.clone(),
            message,
        })
    };
    let cfg = TokenizerConfig::from_dir(dir)?;
    let model = &tj["model"];
    if model["type"] != "BPE" {
        return Err(err(format!(
            "model type {}; only BPE tokenizers can be written to GGUF",
            model["type"]
        )));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("model.vocab is not an object".into()))?;
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |id: usize, tok: &str, ty: i32| {
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
            types.resize(id + 1, 1);
        }
        by_id[id] = Some(tok.to_string());
        types[id] = ty;
    };
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("vocab id of `{tok}` is not an integer")))?;
        let is_byte =
            byte_fallback && tok.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>');
        put(id as usize, tok, if is_byte { 6 } else { 1 });
    }
    for t in tj["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(tok)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(err(format!("added token {t} lacks id or content")));
        };
        let special = t["special"].as_bool().unwrap_or(false);
        put(id as usize, tok, if special { 3 } else { 4 });
    }
    let tokens: Vec<String> = by_id
        .iter()
        .enumerate()
        .map(|(i, t)| t.clone().ok_or_else(|| err(format!("no token has id {i}"))))
        .collect::<Result<_>>()?;
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            )),
            other => Err(err(format!("merge {other} is neither \"a b\" nor [a, b]"))),
        })
        .collect::<Result<_>>()?;
    let id_of = |token: &Option<String>| {
        token
            .as_deref()
            .and_then(|t| tokens.iter().position(|x| x == t))
    };
    let mut meta: Vec<(String, MetaValue)> = Vec::new();
    let pre_json = tj["pre_tokenizer"].to_string();
    if byte_fallback {
        meta.push((
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        ));
        let mut rank = vec![f32::NEG_INFINITY; tokens.len()];
        let index: std::collections::HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        for (r, m) in merges.iter().enumerate() {
            let merged = m.replacen(' ', "", 1);
            if let Some(&id) = index.get(merged.as_str())
                && rank[id] == f32::NEG_INFINITY
            {
                rank[id] = -(r as f32);
            }
        }
        let scores = rank
            .iter()
            .map(|&r| MetaValue::F32(if r.is_finite() { r } else { -1e9 }));
        meta.push(("tokenizer.ggml.tokens".into(), strs(tokens.clone())));
        meta.push((
            "tokenizer.ggml.scores".into(),
            MetaValue::Array(scores.collect()),
        ));
        let prefix = tj["normalizer"].to_string().contains("Prepend")
            || pre_json.contains("\"prepend_scheme\":\"first\"")
            || pre_json.contains("\"prepend_scheme\":\"always\"");
        meta.push((
            "tokenizer.ggml.add_space_prefix".into(),
            MetaValue::Bool(prefix),
        ));
    } else {
        // Llama 3's split regex, as llama.cpp spells it or as Meta's tokenizer.json does.
        let llama3_hf = LLAMA3_SPLIT.replace(
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        );
        let splits: Vec<&str> = tj["pre_tokenizer"]["pretokenizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["pattern"]["Regex"].as_str())
            .collect();
        let pre = if splits
            .iter()
            .any(|r| *r == LLAMA3_SPLIT || *r == llama3_hf.as_str())
        {
            "llama-bpe"
        } else if pre_json.contains("\"Digits\"") && pre_json.contains("\"ByteLevel\"") {
            "smollm"
        } else if tj["pre_tokenizer"]["type"] == "ByteLevel" {
            "gpt2"
        } else {
            return Err(err(format!(
                "pre_tokenizer {pre_json} is not one GGUF names (llama-bpe, smollm or gpt2)"
            )));
        };
        meta.push((
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ));
        meta.push(("tokenizer.ggml.pre".into(), MetaValue::String(pre.into())));
        meta.push(("tokenizer.ggml.tokens".into(), strs(tokens.clone())));
        meta.push(("tokenizer.ggml.merges".into(), strs(merges)));
    }
    let types = types.into_iter().map(MetaValue::I32).collect();
    meta.push(("tokenizer.ggml.token_type".into(), MetaValue::Array(types)));
    for (key, token) in [
        ("bos_token_id", &cfg.bos_token),
        ("eos_token_id", &cfg.eos_token),
        ("unknown_token_id", &cfg.unk_token),
        ("padding_token_id", &cfg.pad_token),
    ] {
        if let Some(id) = id_of(token) {
            meta.push((format!("tokenizer.ggml.{key}"), MetaValue::U32(id as u32)));
        }
    }
    for (key, flag) in [
        ("add_bos_token", cfg.add_bos_token),
        ("add_eos_token", cfg.add_eos_token),
    ] {
        if let Some(b) = flag {
            meta.push((format!("tokenizer.ggml.{key}"), MetaValue::Bool(b)));
        }
    }
    if let Some(t) = cfg.chat_template {
        meta.push(("tokenizer.chat_template".into(), MetaValue::String(t)));
    }
    Ok(meta)
}

/// Writes `model` to `out` as GGUF of file type `ftype` and `tokenizer` metadata (see
/// [`tokenizer_metadata_from_gguf`] and [`tokenizer_metadata_from_hf`]). F32, F16, BF16, Q8_0,
/// Q4_0 and Q4_1 encode every matrix in that type (F16 where a row is not a whole number of
/// blocks); the K-quant types (Q4_K_M, Q5_K_M, Q6_K, Q4_K_S, Q5_K_S) choose each matrix's type
/// as `llama-quantize` does ([`llama_cpp_tensor_types`]). Norms are F32.
pub fn export_gguf<B: QuantBackend>(
    model: &Llama<B>,
    tokenizer: Vec<(String, MetaValue)>,
    name: &str,
    ftype: FileType,
    out: &Path,
) -> Result<()> {
    let c = model.config();
    let ty = ftype.default_type();
    let mut w = GgufWriter::new();
    let u = |v: usize| MetaValue::U32(v as u32);
    let general = [
        ("general.architecture", MetaValue::String("llama".into())),
        ("general.name", MetaValue::String(name.into())),
        ("general.file_type", MetaValue::U32(ftype.id())),
        ("general.quantization_version", MetaValue::U32(2)),
        ("llama.context_length", u(c.max_position_embeddings)),
        ("llama.embedding_length", u(c.hidden_size)),
        ("llama.block_count", u(c.num_hidden_layers)),
        ("llama.feed_forward_length", u(c.intermediate_size)),
        ("llama.attention.head_count", u(c.num_attention_heads)),
        ("llama.attention.head_count_kv", u(c.num_key_value_heads)),
        ("llama.attention.key_length", u(c.head_dim)),
        ("llama.attention.value_length", u(c.head_dim)),
        ("llama.rope.dimension_count", u(c.head_dim)),
        ("llama.rope.freq_base", MetaValue::F32(c.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(c.rms_norm_eps as f32),
        ),
        ("llama.vocab_size", u(c.vocab_size)),
    ];
    for (k, v) in general {
        w.add_metadata(k, v)?;
    }
    for (k, v) in tokenizer {
        w.add_metadata(k, v)?;
    }
    let tensors = model.named_tensors();
    // Llama 3.1-style scaling goes in as llama.cpp's per-frequency divisors, first.
    let rope = rope_factors(c.rope_scaling, c.rope_theta, c.head_dim);
    if let Some(f) = &rope {
        w.add_tensor("rope_freqs.weight", &[f.len()], GgmlType::F32);
    }
    let skip = rope.is_some() as usize;
    let mut named = Vec::with_capacity(tensors.len());
    for (key, t) in &tensors {
        if let NamedTensor::Quant(_) = t {
            return Err(Error::InvalidArgument(format!(
                "`{key}` is quantized (bitsandbytes); load the float model to export it"
            )));
        }
        let gname = hf_to_gguf(key).ok_or_else(|| {
            Error::InvalidArgument(format!("tensor `{key}` has no llama.cpp name"))
        })?;
        named.push((gname, t.shape()));
    }
    let mix = ftype.is_k_mix().then(|| {
        let m = MixModel {
            n_layer: c.num_hidden_layers,
            n_head: c.num_attention_heads,
            n_head_kv: c.num_key_value_heads,
        };
        llama_cpp_tensor_types(ftype, m, &named)
    });
    let mut plan = Vec::with_capacity(tensors.len());
    for (i, ((key, _), (gname, shape))) in tensors.iter().zip(&named).enumerate() {
        let tty = match (&mix, shape.len()) {
            (_, 1) => GgmlType::F32,
            (Some(types), _) => types[i].unwrap_or(GgmlType::F32),
            (None, _) if shape[1] % ty.block().0 == 0 => ty,
            (None, _) => GgmlType::F16,
        };
        w.add_tensor(gname, shape, tty);
        plan.push((key.clone(), shape.clone(), tty));
    }
    let (heads, kv) = (c.num_attention_heads, c.num_key_value_heads);
    w.write(out, |i| {
        if let (Some(f), 0) = (&rope, i) {
            return quantize(GgmlType::F32, f).map_err(Error::InvalidArgument);
        }
        let i = i - skip;
        let (key, shape, tty) = &plan[i];
        let data = match &tensors[i].1 {
            NamedTensor::D1(t) => t.to_data(),
            NamedTensor::D2(t) => t.to_data(),
            NamedTensor::Quant(_) => unreachable!("rejected above"),
        };
        let mut values: Vec<f32> = data
            .convert::<f32>()
            .to_vec()
            .map_err(|e| Error::InvalidArgument(format!("`{key}`: {e:?}")))?;
        if let Some(h) = rope_heads(key, heads, kv) {
            values = permute_rows(&values, h, shape[1]);
        }
        quantize(*tty, &values).map_err(|m| Error::InvalidArgument(format!("`{key}`: {m}")))
    })
}
