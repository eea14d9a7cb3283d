//! `cargo xtask estimate`: the memory a training run needs, item by item, and whether it fits.

use anyhow::{Context, Result, bail};
use llama_model::LlamaConfig;
use trainer::Method;
use trainer::estimate::{EstimateInput, estimate, human};

/// Arguments of `estimate`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// A model directory (its config.json), a .gguf file, or a preset (llama3.2-1b, llama3.1-8b, ...).
    #[arg(long)]
    model: String,
    /// full, lora or qlora.
    #[arg(long, default_value = "qlora")]
    method: Method,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Stored float weights: f32 (the CPU default) or bf16 / f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Adapter dropout in use.
    #[arg(long)]
    dropout: bool,
    /// Activation checkpointing in use.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Memory available, e.g. 24GB or 80GiB: prints whether the run fits.
    #[arg(long, allow_hyphen_values = true)]
    gpu_memory: Option<String>,
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("gib", 1u64 << 30),
        ("gb", 1_000_000_000),
        ("mib", 1 << 20),
        ("mb", 1_000_000),
        ("g", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    let n: f64 = num
        .parse()
        .with_context(|| format!("--gpu-memory {s}: expected a size like 24GB or 80GiB"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("--gpu-memory {s}: expected a positive size like 24GB or 80GiB");
    }
    Ok((n * mult as f64) as u64)
}

fn model_config(spec: &str) -> Result<LlamaConfig> {
    if let Some(c) = LlamaConfig::preset(spec) {
        return Ok(c);
    }
    let source = llama_model::ModelSource::resolve(spec).with_context(|| {
        format!(
            "--model {spec}: not a preset ({}) nor a model directory or .gguf file",
            LlamaConfig::PRESETS.join(", ")
        )
    })?;
    Ok(source.config()?)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let weight_bytes = match args.dtype.as_str() {
        "f32" => 4,
        "bf16" | "f16" => 2,
        other => bail!("--dtype {other}: expected f32, bf16 or f16"),
    };
    let input = EstimateInput {
        model: model_config(&args.model)?,
        method: args.method,
        seq_len: args.seq_len,
        batch: args.batch,
        rank: args.rank,
        weight_bytes,
        dropout: args.dropout,
        gradient_checkpointing: args.gradient_checkpointing,
    };
    input.validate().map_err(anyhow::Error::msg)?;
    let gpu_memory = args.gpu_memory.as_deref().map(parse_size).transpose()?;
    let e = estimate(&input);
    let p = e.parameters;
    println!(
        "{}: {:.2}B parameters, {:?}, seq {} x batch {}, rank {}, {} weights",
        args.model,
        p as f64 / 1e9,
        args.method,
        args.seq_len,
        args.batch,
        args.rank,
        args.dtype
    );
    println!(
        "weights alone: {} in f32, {} in 16-bit, {} in 4-bit",
        human(p * 4),
        human(p * 2),
        human(p / 2)
    );
    println!("trainable: {} parameters", e.trainable);
    for item in &e.items {
        println!("  {:<17} {:>10}", item.name, human(item.bytes));
    }
    println!("  {:<17} {:>10}", "total", human(e.total));
    if let (Some(mem), Some(avail)) = (&args.gpu_memory, gpu_memory) {
        let verdict = if e.total <= avail * 9 / 10 {
            "fits"
        } else if e.total <= avail {
            "fits, with under 10% to spare"
        } else {
            "does not fit"
        };
        println!(
            "{verdict} in {mem} ({} needed of {})",
            human(e.total),
            human(avail)
        );
    }
    Ok(())
}
