//! `LlamaConfig`: the model shape read from a Hugging Face `config.json`, in either the classic
//! layout of published checkpoints (`rope_theta`, `rope_scaling`, `torch_dtype`) or the one
//! transformers 5 writes (`rope_parameters`, `dtype`), plus presets of well-known shapes.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// How rotary frequencies are adjusted for long contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"` or no scaling).
    None,
    /// Llama 3.1 frequency scaling.
    Llama3 {
        /// Factor by which the low frequencies are divided.
        factor: f64,
        /// Wavelength boundary (as a share of the original context) below which nothing changes.
        low_freq_factor: f64,
        /// Wavelength boundary above which frequencies are fully scaled.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// The shape and constants of a Llama-family network.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Context size.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// Every token that ends generation.
    pub eos_token_ids: Vec<u32>,
    /// Bias on the attention projections.
    pub attention_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// The dtype the checkpoint was saved in (`"float32"`, `"bfloat16"`, ...), if stated.
    pub torch_dtype: Option<String>,
    /// `quantization_config` of a bitsandbytes checkpoint (4-bit or LLM.int8), if any.
    pub quantization: Option<quant::BnbConfig>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Map<String, Value>>,
    rope_parameters: Option<Map<String, Value>>,
    max_position_embeddings: Option<usize>,
    vocab_size: Option<usize>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    hidden_act: Option<String>,
    quantization_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

impl LlamaConfig {
    /// Reads `config.json` (a file, or a directory holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("config.json");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json_str(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        match raw.model_type.as_deref() {
            Some("llama") => {}
            Some(other) => {
                return Err(err(format!(
                    "unsupported model_type \"{other}\": expected \"llama\""
                )));
            }
            None => return Err(err("missing model_type: expected \"llama\"".into())),
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(err(format!(
                "unsupported hidden_act \"{act}\": expected \"silu\""
            )));
        }
        // transformers 5 nests the RoPE settings in `rope_parameters`; older files use
        // top-level `rope_theta` and `rope_scaling`.
        let params = raw.rope_parameters.or(raw.rope_scaling);
        let mut rope_theta = raw.rope_theta;
        let mut rope_scaling = RopeScaling::None;
        if let Some(p) = &params {
            if let Some(theta) = p.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(theta);
            }
            let kind = p
                .get("rope_type")
                .or_else(|| p.get("type"))
                .and_then(Value::as_str);
            rope_scaling = match kind {
                None | Some("default") => RopeScaling::None,
                Some("llama3") => {
                    let num = |key: &str| {
                        p.get(key)
                            .and_then(Value::as_f64)
                            .ok_or_else(|| err(format!("rope type llama3 needs a number `{key}`")))
                    };
                    RopeScaling::Llama3 {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?
                            as usize,
                    }
                }
                Some(other) => {
                    return Err(err(format!(
                        "unsupported rope type \"{other}\": expected \"default\" or \"llama3\""
                    )));
                }
            };
        }
        if raw.hidden_size == 0 {
            return Err(err("`hidden_size` is 0: expected a positive integer".into()));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(err(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
            None => {
                return Err(err(format!(
                    "hidden_size ({}) is not divisible by num_attention_heads ({heads}) and no head_dim is given",
                    raw.hidden_size
                )));
            }
        };
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(err(format!(
                "head_dim ({head_dim}) must be even and positive for RoPE"
            )));
        }
        let cfg = LlamaConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            vocab_size: raw.vocab_size.unwrap_or(32_000),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id.and_then(|b| b.into_vec().first().copied()),
            eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            torch_dtype: raw.dtype.or(raw.torch_dtype),
            quantization: match &raw.quantization_config {
                None | Some(Value::Null) => None,
                Some(v) => Some(quant::BnbConfig::from_json(v).map_err(|e| err(e.to_string()))?),
            },
        };
        cfg.check().map_err(err)?;
        Ok(cfg)
    }

    /// Checks the values a model cannot run with, naming the `config.json` key: sizes that must
    /// be positive, `rms_norm_eps` and `rope_theta` positive and finite, Llama 3 RoPE scaling
    /// factors usable by its smoothing formula.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("`{key}` is 0: expected a positive integer"));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "`rms_norm_eps` is {}: expected a small positive number (e.g. 1e-5)",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "`rope_theta` is {}: expected a positive number (e.g. 10000 or 500000)",
                self.rope_theta
            ));
        }
        if let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = self.rope_scaling
        {
            let positive = |key: &str, v: f64| {
                if v.is_finite() && v > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "`rope_scaling.{key}` is {v}: expected a positive number"
                    ))
                }
            };
            positive("factor", factor)?;
            positive("low_freq_factor", low_freq_factor)?;
            positive("high_freq_factor", high_freq_factor)?;
            if high_freq_factor <= low_freq_factor {
                return Err(format!(
                    "`rope_scaling.high_freq_factor` ({high_freq_factor}) must be larger than `low_freq_factor` ({low_freq_factor})"
                ));
            }
            if original_max_position_embeddings == 0 {
                return Err(
                    "`rope_scaling.original_max_position_embeddings` is 0: expected a positive integer"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The `config.json` a Hugging Face checkpoint of this model carries, in the classic layout
    /// that every transformers version reads. `dtype` is the dtype of the saved weights.
    pub fn to_hf_json(&self, dtype: &str) -> Value {
        let mut v = self.to_hf_json_float(dtype);
        if let (Some(q), Value::Object(map)) = (&self.quantization, &mut v) {
            map.insert("quantization_config".into(), q.to_json());
        }
        v
    }

    fn to_hf_json_float(&self, dtype: &str) -> Value {
        let rope_scaling = match self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "mlp_bias": self.mlp_bias,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "torch_dtype": dtype,
        })
    }

    /// Number of query heads that share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Total parameter count (embedding, layers, final norm and an untied LM head).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if self.attention_bias {
                q + 2 * kv + h
            } else {
                0
            };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }
}
