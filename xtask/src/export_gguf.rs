//! `cargo xtask export-gguf`: a Hugging Face checkpoint (or GGUF), optionally with a PEFT
//! adapter merged in, written as a llama.cpp GGUF file with its tokenizer and chat template.

use std::path::PathBuf;

use anyhow::{Result, bail};
use llama_model::gguf::{GgmlType, export_gguf};
use llama_model::{ModelSource, load_adapter, merge_adapters};

use crate::backend::spinner;

/// Arguments of `export-gguf`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face checkpoint directory (with tokenizer.json), `.gguf` file or cached hub id.
    #[arg(long)]
    model: String,
    /// A PEFT adapter to merge into the weights first.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output file (refused by default).
    #[arg(long)]
    overwrite: bool,
    /// Encoding of the matrices: f16, q8_0, q4_0, q4_1 (also f32, bf16). Norms stay F32.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
}

fn parse_type(s: &str) -> Result<GgmlType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        other => bail!("--type {other}: expected f16, q8_0, q4_0, q4_1, f32 or bf16"),
    })
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let ty = parse_type(&args.ty)?;
    let source = ModelSource::resolve(&args.model)?;
    let tokenizer = source.tokenizer_metadata()?;
    let name = source.name();
    crate::out_dir::check_file(&args.out, args.overwrite)?;
    let pb = spinner(&format!("exporting {source}"));
    let mut model = source.load::<B>(&Default::default())?;
    if let Some(adapter) = &args.adapter {
        load_adapter(&mut model, adapter)?;
        merge_adapters(&mut model, true);
    }
    export_gguf(&model, tokenizer, &name, ty, &args.out)?;
    pb.finish_and_clear();
    println!("{}", args.out.display());
    Ok(())
}
