//! `cargo xtask export-gguf`: a Hugging Face checkpoint (or GGUF), optionally with a PEFT
//! adapter merged in, written as a llama.cpp GGUF file with its tokenizer and chat template.

use std::path::PathBuf;

use anyhow::Result;
use llama_model::gguf::{FileType, export_gguf, export_lora_gguf};
use llama_model::{ModelSource, load_adapter, merge_adapters};

use crate::backend::spinner;

/// Arguments of `export-gguf`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face checkpoint directory (with tokenizer.json), `.gguf` file or cached hub id.
    #[arg(long)]
    model: String,
    /// A PEFT adapter to merge into the weights first (or, with --lora, to write on its own).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Write only the --adapter, as a llama.cpp LoRA GGUF (`llama-cli --lora OUT` applies it to
    /// the base model's GGUF without merging); --model gives the base model's shape.
    #[arg(long, requires = "adapter")]
    lora: bool,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output file (refused by default).
    #[arg(long)]
    overwrite: bool,
    /// File type: f16, q8_0, q4_0, q4_1 (every matrix in that type; also f32, bf16) or
    /// llama.cpp's K-quant mixes q4_k_m, q5_k_m, q6_k (also q4_k_s, q5_k_s), each matrix's type
    /// chosen as llama-quantize chooses it. Norms stay F32.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
}

fn parse_type(s: &str) -> Result<FileType> {
    s.parse::<FileType>()
        .map_err(|e| anyhow::anyhow!("--type {s}: {e}"))
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let ty = parse_type(&args.ty)?;
    let source = ModelSource::resolve(&args.model)?;
    crate::out_dir::check_file(&args.out, args.overwrite)?;
    if let (true, Some(adapter)) = (args.lora, &args.adapter) {
        if ty != FileType::F16 && ty != FileType::F32 {
            anyhow::bail!("--lora writes F32 adapter tensors; leave --type out");
        }
        let name = adapter
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into());
        export_lora_gguf(adapter, &source.config()?, &name, &args.out)?;
        println!("{}", args.out.display());
        return Ok(());
    }
    let tokenizer = source.tokenizer_metadata()?;
    let name = source.name();
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
