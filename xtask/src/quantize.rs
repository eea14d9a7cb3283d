//! `cargo xtask quantize`: a float checkpoint to NF4 / FP4 / LLM.int8 in the layout transformers +
//! bitsandbytes write, streaming one weight at a time, with an optional per-tensor quality report.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use llama_model::{Llama, ModelSource, Projection, QuantizeOptions, SaveDtype, save_checkpoint};
use quant::{BnbMethod, QuantBackend};

use crate::backend::{peak_rss_bytes, spinner};
use crate::out_dir::OutDir;

/// Arguments of `quantize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Float checkpoint directory (or hub id in the local HF cache).
    #[arg(long)]
    model: String,
    /// nf4, fp4 or int8 (LLM.int8).
    #[arg(long, default_value = "nf4")]
    method: String,
    /// Double quantization of the 4-bit absmax values (QLoRA's setting; ~0.37 bits/param less).
    #[arg(long)]
    double_quant: bool,
    /// Elements per 4-bit block: a power of two from 32 to 4096.
    #[arg(long, default_value_t = 64)]
    blocksize: usize,
    /// Compute dtype recorded for transformers: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    compute_dtype: String,
    /// Dtype of the tensors kept in float (embeddings, norms, lm_head): f32, bf16, f16
    /// (default: the checkpoint's own dtype).
    #[arg(long)]
    dtype: Option<String>,
    /// Comma-separated module names kept in float (e.g. `down_proj,layers.0.self_attn`).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Quantize lm_head too (kept in float by default).
    #[arg(long)]
    quantize_lm_head: bool,
    /// Print MSE, max |error| and SNR of every quantized weight against the float one.
    #[arg(long)]
    report: bool,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace a non-empty output directory (refused by default).
    #[arg(long)]
    overwrite: bool,
}

fn torch_dtype(short: &str) -> Result<String> {
    Ok(SaveDtype::parse(short)?.torch_name().to_string())
}

/// Runs the command (on the CPU: quantization is host work; the result runs anywhere).
pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let source = ModelSource::resolve(&args.model)?;
    let mut opts = QuantizeOptions::nf4();
    opts.method = args
        .method
        .parse::<BnbMethod>()
        .map_err(|e| anyhow::anyhow!("--method {}: {e}", args.method))?;
    opts.double_quant = args.double_quant;
    opts.blocksize = args.blocksize;
    opts.compute_dtype = torch_dtype(&args.compute_dtype).context("--compute-dtype")?;
    opts.skip_modules = args.skip.clone();
    opts.quantize_lm_head = args.quantize_lm_head;
    opts.validate()?;
    if args.out.exists()
        && std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(source.path()).ok()
    {
        bail!(
            "--out {} is the source checkpoint; choose another directory",
            args.out.display()
        );
    }
    if let Some(d) = &args.dtype {
        SaveDtype::parse(d)?;
    }
    let out = OutDir::begin(&args.out, args.overwrite)?;
    let device = Default::default();
    let pb = spinner(&format!("quantizing {source} to {}", args.method));
    let model: Llama<B> = source.load_quantized(&opts, &device)?;
    // The source's float dtype (config.json's, or the GGUF's as read) unless --dtype says.
    let save_dtype = match (&args.dtype, model.config().torch_dtype.as_deref()) {
        (Some(d), _) => SaveDtype::parse(d)?,
        (None, Some(d)) => SaveDtype::parse(d).unwrap_or(SaveDtype::F32),
        (None, None) => SaveDtype::F32,
    };
    let load_peak = peak_rss_bytes().unwrap_or(0);
    pb.set_message(format!("writing {}", args.out.display()));
    let files = save_checkpoint(&model, out.path(), save_dtype, None)?;
    source.write_tokenizer_files(out.path())?;
    let files: Vec<_> = files.iter().map(|f| out.final_path(f)).collect();
    out.commit()?;
    pb.finish_and_clear();
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    let (quantized, total) = count(&model);
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "{quantized} of {total} projections quantized ({}); checkpoint {:.1} MB; peak RSS {:.1} MB loading + quantizing, {:.1} MB overall",
        args.method,
        bytes as f64 / 1e6,
        load_peak as f64 / 1e6,
        peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    if args.report {
        report(&model, &source)?;
    }
    Ok(())
}

fn count<B: burn::prelude::Backend>(model: &Llama<B>) -> (usize, usize) {
    let all = model.projections();
    (
        all.iter()
            .filter(|(_, p)| matches!(p, Projection::Quant(_)))
            .count(),
        all.len(),
    )
}

/// Per-tensor and total error of the quantized weights against the float checkpoint, reading one
/// float weight at a time.
fn report<B: QuantBackend>(model: &Llama<B>, source: &ModelSource) -> Result<()> {
    let (_, mut src) = source.open()?;
    let mut total = quant::ErrorStats::default();
    println!("| tensor | MSE | max abs error | SNR (dB) |");
    println!("|---|---|---|---|");
    for (name, proj) in model.projections() {
        let Projection::Quant(q) = proj else { continue };
        let (o, i) = q.dims();
        let float = src
            .take(&format!("{name}.weight"), &[o, i])?
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
        let deq = B::dequantize_weight(&q.weight)
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
        let s = quant::ErrorStats::between(&float, &deq);
        println!(
            "| {name} | {:.3e} | {:.3e} | {:.1} |",
            s.mse(),
            s.max_abs,
            s.snr_db()
        );
        total.merge(&s);
    }
    if total.count > 0 {
        println!(
            "| **total** ({} weights) | {:.3e} | {:.3e} | {:.1} |",
            total.count,
            total.mse(),
            total.max_abs,
            total.snr_db()
        );
    }
    Ok(())
}
