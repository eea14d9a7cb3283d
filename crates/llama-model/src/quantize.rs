//! Quantized projections: reading the ones a bitsandbytes checkpoint stores, and quantizing float
//! ones while a model loads (one tensor at a time, so peak memory is the quantized model plus
//! one float weight).

use burn::prelude::*;
use quant::bnb::{quant_state_keys, read_4bit, read_int8};
use quant::{
    BnbConfig, BnbMethod, QuantLinear, QuantType, QuantWeight, int8_vectorwise_quant, quantize_4bit,
};

use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::nn::linear::{Projection, transpose_data};
use crate::source::TensorSource;
use quant::DenseLinear;

/// How to quantize a float checkpoint while loading it (`cargo xtask quantize`, QLoRA bases).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOptions {
    /// NF4, FP4 or LLM.int8.
    pub method: BnbMethod,
    /// Double quantization of the 4-bit absmax values.
    pub double_quant: bool,
    /// Elements per 4-bit block (64 by default; powers of two from 32 to 4096).
    pub blocksize: usize,
    /// Compute dtype recorded in `quantization_config` (`"float32"`, `"bfloat16"`, `"float16"`).
    pub compute_dtype: String,
    /// LLM.int8 outlier threshold recorded for int8 (6.0 as in transformers).
    pub int8_threshold: f32,
    /// Module names kept in float (matched on whole dotted components, e.g. `down_proj` or
    /// `layers.0.self_attn`).
    pub skip_modules: Vec<String>,
    /// Quantize `lm_head` too (kept in float by default, as transformers does).
    pub quantize_lm_head: bool,
}

impl QuantizeOptions {
    /// NF4 with double quantization in blocks of 64: the QLoRA paper's setting.
    pub fn nf4() -> Self {
        Self {
            method: BnbMethod::FourBit(QuantType::Nf4),
            double_quant: true,
            blocksize: 64,
            compute_dtype: "float32".into(),
            int8_threshold: 6.0,
            skip_modules: Vec::new(),
            quantize_lm_head: false,
        }
    }

    /// Checks the options before any weight is read.
    pub fn validate(&self) -> Result<()> {
        if matches!(self.method, BnbMethod::FourBit(_)) {
            quant::check_blocksize(self.blocksize)
                .map_err(|e| Error::InvalidArgument(format!("--blocksize: {e}")))?;
        }
        if !matches!(
            self.compute_dtype.as_str(),
            "float32" | "bfloat16" | "float16"
        ) {
            return Err(Error::InvalidArgument(format!(
                "compute dtype \"{}\": expected float32, bfloat16 or float16",
                self.compute_dtype
            )));
        }
        Ok(())
    }

    /// Whether the projection named `name` (e.g. `model.layers.0.mlp.down_proj`) is quantized.
    pub fn applies_to(&self, name: &str) -> bool {
        if name == "lm_head" && !self.quantize_lm_head {
            return false;
        }
        let dotted = format!(".{name}.");
        !self
            .skip_modules
            .iter()
            .any(|s| dotted.contains(&format!(".{}.", s.trim_matches('.'))))
    }

    /// The `quantization_config` a checkpoint quantized with these options carries.
    pub fn bnb_config(&self) -> BnbConfig {
        let mut skip = self.skip_modules.clone();
        if !self.quantize_lm_head {
            skip.push("lm_head".into());
        }
        BnbConfig {
            method: self.method,
            double_quant: self.double_quant && matches!(self.method, BnbMethod::FourBit(_)),
            compute_dtype: self.compute_dtype.clone(),
            int8_threshold: self.int8_threshold,
            skip_modules: Some(skip),
        }
    }
}

fn quant_error(src: &dyn TensorSource, prefix: &str, e: quant::Error) -> Error {
    let message = match e {
        // Already names its key.
        quant::Error::Checkpoint { .. } => e.to_string(),
        other => format!("`{prefix}.weight`: {other}"),
    };
    Error::Safetensors {
        path: src.location(&format!("{prefix}.weight")),
        message,
    }
}

/// A stored tensor for the bitsandbytes readers (which report errors by key).
fn raw(src: &mut dyn TensorSource, key: &str) -> quant::Result<Option<quant::RawTensor>> {
    src.take_raw(key).map_err(|e| quant::Error::Checkpoint {
        key: key.into(),
        message: e.to_string(),
    })
}

/// Loads the projection stored under `prefix` with HF shape `[out, in]`: a bitsandbytes 4-bit or
/// int8 weight as stored, otherwise the float weight, quantized on the way when `quantize` asks
/// for it, else kept dense.
pub(crate) fn load_projection<B: Backend>(
    src: &mut dyn TensorSource,
    config: &LlamaConfig,
    prefix: &str,
    shape: [usize; 2],
    bias: bool,
    quantize: Option<&QuantizeOptions>,
    device: &B::Device,
) -> Result<Projection<B>> {
    let bias = |src: &mut dyn TensorSource| -> Result<Option<Tensor<B, 1>>> {
        if bias {
            Ok(Some(src.tensor::<B, 1>(
                &format!("{prefix}.bias"),
                [shape[0]],
                device,
            )?))
        } else {
            Ok(None)
        }
    };
    let name = prefix.strip_suffix(".weight").unwrap_or(prefix);
    // A weight that a bitsandbytes checkpoint stores quantized.
    for (_, state_key) in quant_state_keys(name) {
        if src.contains(&state_key) {
            let q = { read_4bit(name, &state_key, shape, &mut |k| raw(src, k)) }
                .map_err(|e| quant_error(src, name, e))?;
            let weight = QuantWeight::from_4bit(&q, shape[0], shape[1], device)
                .map_err(|e| quant_error(src, name, e))?;
            return Ok(Projection::Quant(QuantLinear::new(weight, bias(src)?)));
        }
    }
    if src.contains(&format!("{name}.SCB")) {
        let q = { read_int8(name, shape, &mut |k| raw(src, k)) }
            .map_err(|e| quant_error(src, name, e))?;
        let threshold = config
            .quantization
            .as_ref()
            .map_or(6.0, |c| c.int8_threshold);
        let weight =
            QuantWeight::from_int8(&q, threshold, device).map_err(|e| quant_error(src, name, e))?;
        return Ok(Projection::Quant(QuantLinear::new(weight, bias(src)?)));
    }
    // Float weights (`[out, in]` in the file).
    let key = format!("{name}.weight");
    let data = src.take(&key, &shape)?;
    let values = data
        .into_vec::<f32>()
        .map_err(|e| Error::InvalidArgument(format!("{key}: {e:?}")))?;
    if let Some(opts) = quantize.filter(|o| o.applies_to(name)) {
        let weight = match opts.method {
            BnbMethod::FourBit(qt) => {
                let q = quantize_4bit(&values, qt, opts.blocksize, opts.double_quant)
                    .map_err(|e| quant_error(src, name, e))?;
                QuantWeight::from_4bit(&q, shape[0], shape[1], device)
            }
            BnbMethod::Int8 => {
                // transformers casts the weight to f16 before LLM.int8 quantization.
                let halfed: Vec<f32> = values
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
                let q = int8_vectorwise_quant(&halfed, shape[0], shape[1], 0.0)
                    .map_err(|e| quant_error(src, name, e))?;
                QuantWeight::from_int8(&q, opts.int8_threshold, device)
            }
        }
        .map_err(|e| quant_error(src, name, e))?;
        drop(values);
        return Ok(Projection::Quant(QuantLinear::new(weight, bias(src)?)));
    }
    // Dense: the layer keeps `[in, out]` (see `DenseLinear`).
    let transposed = transpose_data(&values, shape[0], shape[1]);
    drop(values);
    let weight =
        Tensor::<B, 2>::from_data(TensorData::new(transposed, [shape[1], shape[0]]), device);
    Ok(Projection::Dense(DenseLinear::new(weight, bias(src)?)))
}
