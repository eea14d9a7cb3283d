//! A PEFT LoRA adapter written as a llama.cpp LoRA GGUF (what llama.cpp 0.3.36's
//! `convert_lora_to_gguf.py` writes, loaded by `llama-cli --lora FILE` / `llama_adapter_lora_init`
//! and applied at run time without merging): `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and for each adapted matrix `blk.N.<name>.weight.lora_a` (PEFT's
//! `lora_A`, `[r, in]`) and `.lora_b` (`lora_B`, `[out, r]`, rows of `q_proj`/`k_proj` in
//! llama.cpp's RoPE order), F32.
//!
//! llama.cpp scales each pair by `alpha / r` with `r` read from the tensor, as PEFT does. PEFT's
//! rsLoRA scale `alpha / sqrt(r)` is written as the alpha `alpha * sqrt(r)` (llama.cpp has no
//! rsLoRA flag; `convert_lora_to_gguf.py` ignores `use_rslora` and writes `alpha`, so its files
//! of rsLoRA adapters are scaled wrong). Refused with an error naming `adapter_config.json`:
//! DoRA (llama.cpp has no magnitude), per-module alphas, and rsLoRA with per-module ranks (one
//! alpha cannot express them).

use std::path::Path;

use peft::{AdapterWeights, LoraConfig};

use super::dequant::GgmlType;
use super::names::{hf_to_gguf, permute_rows, rope_heads};
use super::quantize::quantize;
use super::reader::MetaValue;
use super::writer::GgufWriter;
use crate::config::LlamaConfig;
use crate::error::{Error, Result};

/// `(out_features, in_features)` of the Hugging Face module `module` (e.g.
/// `model.layers.3.self_attn.q_proj`) of a model with `c`.
fn module_dims(c: &LlamaConfig, module: &str) -> Option<(usize, usize)> {
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let (h, ff) = (c.hidden_size, c.intermediate_size);
    let last = module.rsplit('.').next()?;
    Some(match last {
        "q_proj" => (q, h),
        "k_proj" | "v_proj" => (kv, h),
        "o_proj" => (h, q),
        "gate_proj" | "up_proj" => (ff, h),
        "down_proj" => (h, ff),
        _ => return None,
    })
}

/// Writes the PEFT adapter in `adapter_dir` (`adapter_config.json`, `adapter_model.safetensors`)
/// for a base model with `config` as a llama.cpp LoRA GGUF at `out` (through a temp file).
pub fn export_lora_gguf(
    adapter_dir: &Path,
    config: &LlamaConfig,
    name: &str,
    out: &Path,
) -> Result<()> {
    let lcfg = LoraConfig::from_file(adapter_dir)?;
    let cfg_path = adapter_dir.join("adapter_config.json");
    let bad = |message: String| Error::Config {
        path: cfg_path.clone(),
        message,
    };
    let mut weights = AdapterWeights::open(adapter_dir)?;
    let modules = weights.modules();
    if modules.is_empty() {
        return Err(bad(format!(
            "{} holds no lora_A/lora_B tensor",
            weights.path().display()
        )));
    }
    let mut alpha: Option<f64> = None;
    let mut pairs = Vec::with_capacity(modules.len());
    for module in &modules {
        let hf = module.strip_prefix("base_model.model.").unwrap_or(module);
        let spec = lcfg.spec_for(hf);
        if spec.use_dora {
            return Err(bad(format!(
                "use_dora: llama.cpp LoRA files have no DoRA magnitude (module `{hf}`); merge it \
                 instead (`export-gguf --model BASE --adapter DIR`)"
            )));
        }
        let dims = module_dims(config, hf).ok_or_else(|| {
            bad(format!(
                "module `{hf}` is not a projection llama.cpp can adapt"
            ))
        })?;
        let gname = hf_to_gguf(&format!("{hf}.weight"))
            .ok_or_else(|| bad(format!("module `{hf}` has no llama.cpp tensor name")))?;
        let a = if spec.use_rslora {
            spec.alpha * (spec.r as f64).sqrt()
        } else {
            spec.alpha
        };
        match alpha {
            None => alpha = Some(a),
            Some(prev) if (prev - a).abs() > 1e-9 * prev.abs().max(1.0) => {
                return Err(bad(format!(
                    "module `{hf}` needs alpha {a} but an earlier one {prev}: a llama.cpp LoRA \
                     file has one alpha (per-module alpha_pattern, or rsLoRA with per-module \
                     ranks, cannot be written)"
                )));
            }
            Some(_) => {}
        }
        let t = weights.take(module, &spec, dims)?;
        let to_vec = |d: burn::tensor::TensorData, which: &str| {
            d.to_vec::<f32>()
                .map_err(|e| bad(format!("`{hf}` {which}: {e:?}")))
        };
        let lora_a = to_vec(t.lora_a, "lora_A")?;
        let mut lora_b = to_vec(t.lora_b, "lora_B")?;
        if let Some(heads) = rope_heads(
            &format!("{hf}.weight"),
            config.num_attention_heads,
            config.num_key_value_heads,
        ) {
            lora_b = permute_rows(&lora_b, heads, spec.r);
        }
        pairs.push((gname, spec.r, dims, lora_a, lora_b));
    }
    weights.finish()?;
    let mut w = GgufWriter::new();
    let meta = [
        ("general.architecture", MetaValue::String("llama".into())),
        ("general.type", MetaValue::String("adapter".into())),
        ("adapter.type", MetaValue::String("lora".into())),
        ("general.name", MetaValue::String(name.into())),
        (
            "adapter.lora.alpha",
            MetaValue::F32(alpha.unwrap_or(0.0) as f32),
        ),
        ("general.quantization_version", MetaValue::U32(2)),
    ];
    for (k, v) in meta {
        w.add_metadata(k, v)?;
    }
    for (gname, r, (o, i), ..) in &pairs {
        w.add_tensor(format!("{gname}.lora_a"), &[*r, *i], GgmlType::F32);
        w.add_tensor(format!("{gname}.lora_b"), &[*o, *r], GgmlType::F32);
    }
    w.write(out, |k| {
        let (_, _, _, a, b) = &pairs[k / 2];
        quantize(GgmlType::F32, if k % 2 == 0 { a } else { b }).map_err(Error::InvalidArgument)
    })
}
