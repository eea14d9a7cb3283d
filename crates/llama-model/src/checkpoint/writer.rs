//! Writes a Hugging Face checkpoint directory (`config.json`, `generation_config.json`,
//! `model.safetensors` or shards with `model.safetensors.index.json`) that `transformers` loads.
//! Tensors are streamed one at a time and every file is written to a temporary name, then
//! renamed, so an interrupted save never clobbers a good file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::{Value, json};

use quant::QuantBackend;

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::nn::linear::NamedTensor;
use quant::QuantWeight;

/// The dtype weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl SaveDtype {
    /// Parses `f32`/`float32`, `f16`/`float16`, `bf16`/`bfloat16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            other => Err(Error::InvalidArgument(format!(
                "dtype \"{other}\": expected f32, f16 or bf16"
            ))),
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
        }
    }

    /// The name `config.json` uses (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }

    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(values.len() * self.size());
        for &v in values {
            match self {
                Self::F32 => out.extend_from_slice(&v.to_le_bytes()),
                Self::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                Self::BF16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
    }
}

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let io = |e| Error::io(path, e);
    let file = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::new(file);
    write(&mut w).map_err(io)?;
    w.flush().map_err(io)?;
    w.into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// One tensor to write: float values converted to the save dtype, or one of the stored tensors of
/// a quantized weight (`part` of what [`quant_parts`] returns), which is copied from the device
/// again when written instead of being held for the whole save.
enum Item<B: Backend> {
    Float(NamedTensor<B>),
    Quant {
        weight: QuantWeight<B>,
        id: usize,
        part: usize,
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        len: usize,
    },
}

impl<B: Backend> Item<B> {
    fn shape(&self) -> Vec<usize> {
        match self {
            Item::Float(t) => t.shape(),
            Item::Quant { shape, .. } => shape.clone(),
        }
    }
    fn bytes(&self, dtype: SaveDtype) -> usize {
        match self {
            Item::Float(t) => t.shape().iter().product::<usize>() * dtype.size(),
            Item::Quant { len, .. } => *len,
        }
    }
    fn dtype_name(&self, dtype: SaveDtype) -> String {
        match self {
            Item::Float(_) => dtype.safetensors_name().to_string(),
            Item::Quant { dtype, .. } => format!("{dtype:?}"),
        }
    }
}

/// The stored tensors of a quantized weight under bitsandbytes' suffixes.
fn quant_parts<B: Backend>(
    name: &str,
    w: &QuantWeight<B>,
    state_dtype: &str,
) -> Result<Vec<(String, quant::RawTensor)>> {
    let host = w
        .to_host()
        .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
    Ok(match &host {
        quant::HostWeight::Four {
            q,
            out_features,
            in_features,
        } => quant::bnb::write_4bit(q, [*out_features, *in_features], state_dtype),
        quant::HostWeight::Int8 { q, .. } => quant::bnb::write_int8(q),
    })
}

/// Expands quantized weights into bitsandbytes' keys (`P.weight`, `P.weight.absmax`, ...),
/// recording each part's dtype, shape and length for the header.
fn expand<B: Backend>(
    tensors: Vec<(String, NamedTensor<B>)>,
    state_dtype: &str,
) -> Result<Vec<(String, Item<B>)>> {
    let mut out = Vec::with_capacity(tensors.len());
    for (id, (name, t)) in tensors.into_iter().enumerate() {
        let NamedTensor::Quant(weight) = t else {
            out.push((name, Item::Float(t)));
            continue;
        };
        let prefix = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        for (part, (suffix, raw)) in quant_parts(&name, &weight, state_dtype)?
            .into_iter()
            .enumerate()
        {
            let item = Item::Quant {
                weight: weight.clone(),
                id,
                part,
                dtype: raw.dtype,
                shape: raw.shape,
                len: raw.bytes.len(),
            };
            out.push((format!("{prefix}.{suffix}"), item));
        }
    }
    Ok(out)
}

/// Writes one safetensors file holding `tensors`, streaming their data.
fn write_safetensors<B: Backend>(
    path: &Path,
    tensors: &[(String, Item<B>)],
    dtype: SaveDtype,
    state_dtype: &str,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, t) in tensors {
        let len = t.bytes(dtype);
        header.insert(
            name.clone(),
            json!({"dtype": t.dtype_name(dtype), "shape": t.shape(), "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    // The parts of the quantized weight being written (they are consecutive items).
    let mut parts: Option<(usize, Vec<(String, quant::RawTensor)>)> = None;
    write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        let mut buf = Vec::new();
        for (name, t) in tensors {
            match t {
                Item::Float(t) => {
                    // Large matrices are read back a block of rows at a time, so saving never
                    // holds a second full copy of the embedding matrix (1 GB for Llama-3.2-1B).
                    for data in t.row_blocks(1 << 22) {
                        let data = if data.dtype == burn::tensor::DType::F32 {
                            data
                        } else {
                            data.convert::<f32>()
                        };
                        let values = data
                            .as_slice::<f32>()
                            .map_err(|e| std::io::Error::other(format!("{name}: {e:?}")))?;
                        for chunk in values.chunks(1 << 16) {
                            dtype.encode(chunk, &mut buf);
                            w.write_all(&buf)?;
                        }
                    }
                }
                Item::Quant {
                    weight,
                    id,
                    part,
                    len,
                    ..
                } => {
                    if parts.as_ref().is_none_or(|(cur, _)| cur != id) {
                        parts = None;
                        let fresh = quant_parts(name, weight, state_dtype)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        parts = Some((*id, fresh));
                    }
                    let (_, list) = parts.as_ref().unwrap_or_else(|| unreachable!());
                    let bytes = &list[*part].1.bytes;
                    if bytes.len() != *len {
                        return Err(std::io::Error::other(format!(
                            "{name}: quantized weight changed while saving"
                        )));
                    }
                    w.write_all(bytes)?;
                }
            }
        }
        Ok(())
    })
}

/// Saves `model` as a Hugging Face checkpoint in `dir` (created if needed). Shards are cut at
/// `max_shard_bytes` (`None` = one file).
pub fn save_checkpoint<B: QuantBackend>(
    model: &Llama<B>,
    dir: impl AsRef<Path>,
    dtype: SaveDtype,
    max_shard_bytes: Option<usize>,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = model.config();
    let state_dtype = config
        .quantization
        .as_ref()
        .map_or("float32", |q| q.compute_dtype.as_str());
    let tensors = expand(model.named_tensors(), state_dtype)?;
    let limit = max_shard_bytes.unwrap_or(usize::MAX);
    let mut shards: Vec<Vec<(String, Item<B>)>> = vec![Vec::new()];
    let mut size = 0usize;
    for (name, t) in tensors {
        let bytes = t.bytes(dtype);
        if size > 0 && size + bytes > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards
            .last_mut()
            .unwrap_or_else(|| unreachable!())
            .push((name, t));
    }
    let mut written = Vec::new();
    if shards.len() == 1 {
        let path = dir.join("model.safetensors");
        write_safetensors(&path, &shards[0], dtype, state_dtype)?;
        written.push(path);
        let stale = dir.join("model.safetensors.index.json");
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    } else {
        let n = shards.len();
        let mut weight_map = BTreeMap::new();
        let mut total = 0usize;
        for (i, shard) in shards.iter().enumerate() {
            let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            for (key, t) in shard {
                weight_map.insert(key.clone(), name.clone());
                total += t.bytes(dtype);
            }
            let path = dir.join(&name);
            write_safetensors(&path, shard, dtype, state_dtype)?;
            written.push(path);
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = dir.join("model.safetensors.index.json");
        write_json(&path, &index)?;
        written.push(path);
        let stale = dir.join("model.safetensors");
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    let path = dir.join("config.json");
    write_json(&path, &config.to_hf_json(dtype.torch_name()))?;
    written.push(path);
    let eos = match config.eos_token_ids.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let path = dir.join("generation_config.json");
    write_json(
        &path,
        &json!({"bos_token_id": config.bos_token_id, "eos_token_id": eos}),
    )?;
    written.push(path);
    Ok(written)
}
