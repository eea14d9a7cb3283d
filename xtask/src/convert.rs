//! `cargo xtask convert`: a GGUF file to a Hugging Face checkpoint directory (config.json,
//! model.safetensors, tokenizer.json, tokenizer_config.json with the chat template,
//! generation_config.json) that transformers loads.

use std::path::PathBuf;

use anyhow::{Result, bail};
use llama_model::{ModelSource, SaveDtype, save_checkpoint};

use crate::backend::spinner;
use crate::out_dir::OutDir;

/// Arguments of `convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file (llama architecture).
    #[arg(long)]
    model: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace a non-empty output directory (refused by default).
    #[arg(long)]
    overwrite: bool,
    /// Stored dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let dtype = SaveDtype::parse(&args.dtype)?;
    let source = ModelSource::from_path(&args.model)?;
    if !source.is_gguf() {
        bail!("--model {source}: expected a .gguf file");
    }
    let out = OutDir::begin(&args.out, args.overwrite)?;
    let pb = spinner(&format!("converting {source}"));
    let model = source.load::<B>(&Default::default())?;
    // config.json, the weights and generation_config.json, then the tokenizer files.
    save_checkpoint(&model, out.path(), dtype, None)?;
    source.write_tokenizer_files(out.path())?;
    out.commit()?;
    pb.finish_and_clear();
    println!("{}", args.out.display());
    Ok(())
}
