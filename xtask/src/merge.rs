//! `cargo xtask merge`: fold a PEFT adapter into its base and write a full Hugging Face checkpoint
//! (PEFT's `merge_and_unload` + `save_pretrained`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use llama_model::{
    ModelSource, SaveDtype, load_adapter, merge_adapters, merge_adapters_requantized,
    save_checkpoint,
};

use crate::backend::spinner;
use crate::out_dir::OutDir;

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
    /// Replace a non-empty output directory (refused by default).
    #[arg(long)]
    overwrite: bool,
    /// Stored dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Keep a 4/8-bit base quantized: merge in f32, then quantize again with the base's settings
    /// and report the rounding error per module (the default writes the merge dense).
    #[arg(long, conflicts_with = "base_float")]
    requantize: bool,
}

/// Runs the command on the CPU.
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let dtype = SaveDtype::parse(&args.dtype)?;
    let source = ModelSource::resolve(args.base_float.as_deref().unwrap_or(&args.model))?;
    if args.out.exists()
        && std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(source.path()).ok()
    {
        bail!(
            "--out {} is the source checkpoint; choose another directory",
            args.out.display()
        );
    }
    let out = OutDir::begin(&args.out, args.overwrite)?;
    let pb = spinner(&format!("merging {} into {source}", args.adapter.display(),));
    let mut model = source.load::<B>(&Default::default())?;
    load_adapter(&mut model, &args.adapter)?;
    if args.requantize {
        if model.config().quantization.is_none() {
            bail!(
                "--requantize: {source} is not a quantized checkpoint (no quantization_config); drop the flag"
            );
        }
        let report = merge_adapters_requantized(&mut model)?;
        pb.set_message(format!("writing {}", args.out.display()));
        let files = save_checkpoint(&model, out.path(), dtype, None)?;
        source.write_tokenizer_files(out.path())?;
        let files: Vec<_> = files.iter().map(|f| out.final_path(f)).collect();
        let dir = out.commit()?;
        println!("{}", dir.display());
        pb.finish_and_clear();
        for f in files {
            eprintln!("wrote {}", f.display());
        }
        print_rounding(&report);
        return Ok(());
    }
    let merged = merge_adapters(&mut model, true);
    pb.set_message(format!("writing {}", args.out.display()));
    let files = save_checkpoint(&model, out.path(), dtype, None)?;
    source.write_tokenizer_files(out.path())?;
    let files: Vec<_> = files.iter().map(|f| out.final_path(f)).collect();
    let dir = out.commit()?;
    // The result a script reads: the checkpoint directory.
    println!("{}", dir.display());
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

/// The re-quantization report: per module and overall, the rounding error next to the size of
/// the adapter's change (when they are alike, rounding erased much of what was learned).
fn print_rounding(report: &[(String, peft::RoundingError)]) {
    eprintln!(
        "re-quantized {} merged modules; rounding error ‖q - W'‖/‖W'‖ vs adapter delta ‖ΔW‖/‖W'‖:",
        report.len()
    );
    for (name, e) in report {
        eprintln!(
            "  {name}: rounding {:.3e} (max abs {:.3e}), delta {:.3e}",
            e.relative, e.max_abs, e.delta_relative
        );
    }
    let n = report.len().max(1) as f64;
    let mean =
        |f: fn(&peft::RoundingError) -> f64| report.iter().map(|(_, e)| f(e)).sum::<f64>() / n;
    eprintln!(
        "mean rounding {:.3e}, mean delta {:.3e}; merging into the float model (--base-float) avoids the rounding",
        mean(|e| e.relative),
        mean(|e| e.delta_relative)
    );
}
