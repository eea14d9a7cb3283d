//! Building a run: the model (float, 4-bit, with fresh or resumed adapters) and the data splits.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use data::{Dataset, EncodeOptions, Encoder, ReadOptions};
use llama_model::{Llama, ModelSource, QuantizeOptions};
use llama_tokenizer::LlamaTokenizer;
use peft::LoraConfig;
use quant::QuantBackend;

use crate::config::{Method, TrainConfig};
use crate::error::{Error, Result};

/// The model of `config`: float for `full` and `lora`, quantized while loading for `qlora`;
/// adapters from `adapter` (a checkpoint being resumed) or freshly initialised with the seed.
pub fn load_model<B: AutodiffBackend + QuantBackend>(
    config: &TrainConfig,
    source: &ModelSource,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<Llama<B>> {
    let mut model = match config.method {
        Method::Full | Method::Lora => source.load::<B>(device)?,
        Method::Qlora => {
            let q = &config.quant;
            let mut opts = QuantizeOptions::nf4();
            opts.method = quant::BnbMethod::FourBit(q.quant_type);
            opts.double_quant = q.double_quant;
            opts.blocksize = q.blocksize;
            let compute = q.compute_dtype.on(config.device);
            if let Some(dtype) = compute {
                use burn::tensor::backend::DTypeUsage;
                let usage = B::dtype_usage(device, dtype.into());
                if !usage.contains(DTypeUsage::Arithmetic) {
                    let name = format!("{dtype:?}").to_lowercase();
                    return Err(Error::Config(format!(
                        "quant.compute_dtype = {name}: device {} ({}) has no {name} arithmetic; use `--compute-dtype f32` (or another device)",
                        config.device,
                        B::name(device)
                    )));
                }
            }
            let mut model = source.load_quantized::<B>(&opts, device)?;
            model.set_quant_compute_dtype(compute);
            model
        }
    };
    if config.method != Method::Full {
        match adapter {
            Some(dir) => {
                llama_model::load_adapter(&mut model, dir)?;
            }
            None => llama_model::apply_lora(&mut model, &lora_config(config)?, config.seed)?,
        }
    }
    Ok(model)
}

/// PEFT's `LoraConfig` for the run's `[lora]` section.
pub fn lora_config(config: &TrainConfig) -> Result<LoraConfig> {
    let l = &config.lora;
    let targets = if l.target_modules.len() == 1 && l.target_modules[0] == "all-linear" {
        serde_json::json!("all-linear")
    } else {
        serde_json::json!(l.target_modules)
    };
    LoraConfig::from_json(&serde_json::json!({
        "r": l.r,
        "lora_alpha": l.alpha,
        "lora_dropout": l.dropout,
        "target_modules": targets,
        "use_rslora": l.use_rslora,
        "use_dora": l.use_dora,
    }))
    .map_err(|e| Error::Config(format!("[lora]: {e}")))
}

/// Training and validation examples, and the padding id.
pub struct Splits {
    /// Training examples.
    pub train: Dataset,
    /// Validation examples.
    pub valid: Dataset,
    /// Padding token id (the tokenizer's pad token, else EOS, else 0).
    pub pad_id: u32,
    /// The tokenizer (for sample generations).
    pub tokenizer: LlamaTokenizer,
}

/// Reads, templates and tokenizes the data of `config` with the model's tokenizer.
pub fn load_data(config: &TrainConfig, source: &ModelSource) -> Result<Splits> {
    // The tokenizer of a model directory or of a GGUF file's metadata, with its settings.
    let tokenizer = source.tokenizer()?;
    let tc = tokenizer.config().clone();
    let pad_id = tc
        .pad_token
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .or(tokenizer.eos_token_id())
        .unwrap_or(0);
    let encoder = Encoder::new(
        tokenizer.inner().clone(),
        tc,
        EncodeOptions {
            max_seq_len: Some(config.max_seq_len),
            train_on_prompt: config.train_on_prompt,
            ..EncodeOptions::default()
        },
    )?;
    let read = ReadOptions {
        format: config.format.to_data(),
        ..ReadOptions::default()
    };
    if config.data.is_empty() {
        return Err(Error::Config(
            "no training data: set `data` (files or directories)".into(),
        ));
    }
    let train = Dataset::load(&config.data, &encoder, read.clone())?;
    let (train, valid) = if config.valid_data.is_empty() {
        train.split(config.valid_ratio, config.seed)?
    } else {
        let valid = Dataset::load(&config.valid_data, &encoder, read)?;
        (train, valid)
    };
    if train.is_empty() {
        return Err(Error::Config(format!(
            "no training example left after tokenization ({} dropped, {} truncated)",
            train.stats.dropped, train.stats.truncated
        )));
    }
    Ok(Splits {
        train,
        valid,
        pad_id,
        tokenizer,
    })
}
