//! `cargo xtask convert`: a GGUF file to a Hugging Face checkpoint directory (config.json,
//! model.safetensors, tokenizer.json, tokenizer_config.json with the chat template,
//! generation_config.json) that transformers loads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use llama_model::gguf::{GgufFile, is_gguf_path, tokenizer_files};
use llama_model::{SaveDtype, load_pretrained, save_checkpoint};
use serde_json::{Value, json};

use crate::backend::spinner;

/// Arguments of `convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file (llama architecture).
    #[arg(long)]
    model: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Stored dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Writes `value` as pretty JSON to `dir/name` through a temp file.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let dtype = SaveDtype::parse(&args.dtype)?;
    if !is_gguf_path(&args.model) {
        bail!("--model {}: expected a .gguf file", args.model.display());
    }
    let file = GgufFile::open(&args.model)?;
    let tokenizer = tokenizer_files(&file)?;
    drop(file);
    let pb = spinner(&format!("converting {}", args.model.display()));
    let model = load_pretrained::<B>(&args.model, &Default::default())?;
    save_checkpoint(&model, &args.out, dtype, None)?;
    let dir = &args.out;
    write_json(dir, "tokenizer.json", &tokenizer.tokenizer_json)?;
    write_json(dir, "tokenizer_config.json", &tokenizer.tokenizer_config)?;
    let c = model.config();
    let eos = match c.eos_token_ids.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    write_json(
        dir,
        "generation_config.json",
        &json!({"bos_token_id": c.bos_token_id, "eos_token_id": eos}),
    )?;
    pb.finish_and_clear();
    println!("{}", dir.display());
    Ok(())
}
