//! `cargo xtask bench-train`: training step time and peak memory on a random model of a given
//! shape and random tokens, next to the memory planner's estimate. Prints one JSON object.
//!
//! Shapes: a preset name, or `issue-tiny` (dim 256, 4 layers, 8 heads, 4 KV heads, FFN 688,
//! vocab 32000 — the PyTorch comparison shape of docs/benchmarks.md).

use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use data::Batch;
use llama_model::{Llama, LlamaConfig, QuantizeOptions, RandomSource};
use quant::QuantBackend;
use trainer::estimate::{EstimateInput, estimate};
use trainer::{AdamW, AdamWConfig, Method};

use crate::backend::{Device, TrainJob, dispatch_train, peak_rss_bytes};

/// Arguments of `bench-train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset (llama3.2-1b, ...) or `issue-tiny`.
    #[arg(long, default_value = "issue-tiny")]
    shape: String,
    /// full, lora or qlora.
    #[arg(long, default_value = "lora")]
    method: Method,
    /// Tokens per row.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// LoRA rank (all linear layers).
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Optimizer steps; the first is a warm-up, the median of the rest is reported.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Where to run.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Activation checkpointing (decoder layers run again in the backward pass).
    #[arg(long)]
    gradient_checkpointing: bool,
}

fn shape(name: &str) -> Result<LlamaConfig> {
    if name == "issue-tiny" {
        let mut c = LlamaConfig::tiny();
        c.hidden_size = 256;
        c.num_hidden_layers = 4;
        c.num_attention_heads = 8;
        c.num_key_value_heads = 4;
        c.head_dim = 32;
        c.intermediate_size = 688;
        c.vocab_size = 32000;
        c.tie_word_embeddings = false;
        c.max_position_embeddings = 2048;
        c.rope_scaling = llama_model::RopeScaling::None;
        return Ok(c);
    }
    match LlamaConfig::preset(name) {
        Some(c) => Ok(c),
        None => bail!(
            "--shape {name}: expected issue-tiny or one of {}",
            LlamaConfig::PRESETS.join(", ")
        ),
    }
}

fn bench<B>(args: &Args, config: &LlamaConfig, device: B::Device) -> Result<serde_json::Value>
where
    B: AutodiffBackend + QuantBackend,
{
    let t0 = Instant::now();
    let mut src = RandomSource::new(0, 0.02);
    let quant = (args.method == Method::Qlora).then(QuantizeOptions::nf4);
    let mut model = Llama::<B>::from_source_quantized(config, &mut src, quant.as_ref(), &device)?;
    if args.method != Method::Full {
        let lora = peft::LoraConfig::from_json(&serde_json::json!({
            "r": args.rank, "lora_alpha": 2 * args.rank, "target_modules": "all-linear"
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        llama_model::apply_lora(&mut model, &lora, 0)?;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let mut optimizer = AdamW::<B::InnerBackend>::new(AdamWConfig::default());
    let (rows, seq) = (args.batch, args.seq_len);
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for step in 0..args.steps {
        let ids: Vec<u32> = (0..rows * seq)
            .map(|k| ((k * 7919 + step * 104_729) % config.vocab_size) as u32)
            .collect();
        let batch = Batch {
            rows,
            seq,
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            input_ids: ids,
            attention_mask: vec![1; rows * seq],
            position_ids: (0..rows).flat_map(|_| 0..seq as u32).collect(),
            segment_ids: None,
        };
        let t = Instant::now();
        let options = trainer::StepOptions {
            gradient_checkpointing: args.gradient_checkpointing,
            ..trainer::StepOptions::new(2e-4, Some(1.0))
        };
        let (m, stats) = trainer::train_step(model, &[batch], &mut optimizer, &options);
        model = m;
        // The step's loss is read on the host, so the device work is done when the clock stops.
        times.push(t.elapsed().as_secs_f64());
        losses.push(stats.loss);
    }
    let mut measured: Vec<f64> = times.iter().skip(1).copied().collect();
    measured.sort_by(f64::total_cmp);
    let median = measured
        .get(measured.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let est = estimate(&EstimateInput {
        model: config.clone(),
        method: args.method,
        seq_len: seq,
        batch: rows,
        rank: args.rank,
        weight_bytes: 4,
        dropout: false,
        gradient_checkpointing: args.gradient_checkpointing,
    });
    let peak = peak_rss_bytes().unwrap_or(0);
    Ok(serde_json::json!({
        "shape": args.shape,
        "method": format!("{:?}", args.method).to_lowercase(),
        "seq_len": seq,
        "batch": rows,
        "rank": args.rank,
        "load_s": load_s,
        "step_s_median": median,
        "step_s": times,
        "tokens_per_s": (rows * seq) as f64 / median,
        "losses": losses,
        "peak_rss_bytes": peak,
        "estimate_bytes": est.total,
        "estimate_error": (est.total as f64 - peak as f64) / peak as f64,
        "estimate": est.items,
    }))
}

/// The benchmark as a job for [`dispatch_train`].
struct Bench<'a> {
    args: &'a Args,
    config: &'a LlamaConfig,
}

impl TrainJob for Bench<'_> {
    type Output = serde_json::Value;
    fn device(&self) -> Device {
        self.args.device
    }
    fn run<B>(self, device: B::Device) -> Result<serde_json::Value>
    where
        B: AutodiffBackend + QuantBackend,
        B::InnerBackend: QuantBackend,
    {
        bench::<B>(self.args, self.config, device)
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.steps < 2 {
        bail!("--steps must be at least 2 (the first is a warm-up)");
    }
    let config = shape(&args.shape)?;
    let out = dispatch_train(Bench {
        args: &args,
        config: &config,
    })?;
    println!("{out}");
    Ok(())
}
