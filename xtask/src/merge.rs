//! `cargo xtask merge`: fold a PEFT adapter into its base and write a full Hugging Face checkpoint
//! (PEFT's `merge_and_unload` + `save_pretrained`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use llama_model::{
    SaveDtype, load_adapter, load_pretrained, merge_adapters, resolve_model_dir, save_checkpoint,
};

use crate::backend::spinner;

/// Arguments of `merge`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The base checkpoint the adapter was trained on (float or bitsandbytes 4/8-bit).
    #[arg(long)]
    model: String,
    /// PEFT adapter directory.
    #[arg(long)]
    adapter: PathBuf,
    /// Merge onto these float weights instead (the original model of a 4-bit base).
    #[arg(long)]
    base_float: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Stored dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let dtype = SaveDtype::parse(&args.dtype)?;
    let source = resolve_model_dir(args.base_float.as_deref().unwrap_or(&args.model))?;
    if args.out.exists()
        && std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(&source).ok()
    {
        bail!(
            "--out {} is the source checkpoint; choose another directory",
            args.out.display()
        );
    }
    let pb = spinner(&format!(
        "merging {} into {}",
        args.adapter.display(),
        source.display()
    ));
    let mut model = load_pretrained::<B>(&source, &Default::default())?;
    load_adapter(&mut model, &args.adapter)?;
    let merged = merge_adapters(&mut model, true);
    pb.set_message(format!("writing {}", args.out.display()));
    let files = save_checkpoint(&model, &args.out, dtype, None)?;
    crate::backend::copy_tokenizer_files(&source, &args.out)?;
    pb.finish_and_clear();
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    eprintln!(
        "merged {merged} adapted projections; the checkpoint is dense ({})",
        args.dtype
    );
    Ok(())
}
