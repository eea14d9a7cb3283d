//! `cargo xtask train`: fine-tune with full, LoRA or QLoRA training.
//!
//! With no arguments: QLoRA on the embedded default model (SmolLM2-135M-Instruct, fetched on
//! first use) over the shipped instruction dataset, a few minutes on a laptop CPU. Otherwise a
//! TOML file (`--config`, see `configs/`) with any field overridden by a flag or `--set key=value`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use quant::QuantBackend;
use trainer::{Device, Method, Observer, RunPaths, StepStats, TrainConfig};

/// Arguments of `train`; every flag overrides the same field of `--config`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// TOML configuration (fields of `TrainConfig`; see configs/*.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory or .gguf file (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// Training data files or directories (default: the shipped Alpaca-style dataset).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Validation files (default: hold out --valid-ratio of the training data).
    #[arg(long, num_args = 1..)]
    valid_data: Vec<PathBuf>,
    /// full, lora or qlora.
    #[arg(long)]
    method: Option<Method>,
    /// Optimizer steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Parent directory of runs.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Run directory name (default: a timestamp).
    #[arg(long)]
    run_name: Option<String>,
    /// cpu (burn-flex), ndarray (burn-ndarray), cuda or cuda:N (GPU N), wgpu or wgpu:N (Vulkan /
    /// Metal adapter N; `cargo xtask devices` lists them).
    #[arg(long)]
    device: Option<Device>,
    /// Dtype of the 4-bit base's matmuls with --method qlora (bitsandbytes'
    /// bnb_4bit_compute_dtype): auto (bf16 on CUDA, f32 elsewhere), f32, bf16 or f16.
    #[arg(long)]
    compute_dtype: Option<trainer::ComputeDtype>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Rows per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Longest example in tokens.
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// LoRA rank.
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Save a checkpoint every N steps.
    #[arg(long)]
    save_every: Option<u64>,
    /// Pack several examples per row.
    #[arg(long)]
    packing: bool,
    /// Activation checkpointing: less memory, about a third more compute.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Also report metrics to TensorBoard (`<run>/tensorboard/`; `tensorboard --logdir runs`).
    #[arg(long, value_enum, value_name = "TARGET")]
    report_to: Vec<trainer::ReportTo>,
    /// Any other field: `--set quant.blocksize=128 --set schedule=linear`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// The configuration of the no-argument run: sized to finish in a few minutes on 2 CPU cores.
fn default_run() -> TrainConfig {
    let mut c = TrainConfig {
        method: Method::Qlora,
        max_steps: 30,
        batch_size: 4,
        grad_accum: 1,
        max_seq_len: 256,
        group_by_length: true,
        warmup_steps: 3,
        eval_every: 15,
        eval_batches: 4,
        save_every: 15,
        sample_tokens: 32,
        sample_prompts: vec![
            "What is the capital of France?".into(),
            "Give three tips for staying healthy.".into(),
        ],
        ..TrainConfig::default()
    };
    c.optimizer.lr = 1e-3;
    c.lora.r = 16;
    c.lora.alpha = 32.0;
    c
}

/// The shipped dataset: `data/alpaca-eval/` at the repository root.
fn shipped_data() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alpaca-eval");
    (dir.join("train.jsonl"), dir.join("valid.jsonl"))
}

impl Args {
    /// The configuration: the file (or the default run), then the flags.
    fn resolve(&self) -> Result<TrainConfig> {
        let mut c = match (&self.config, &self.resume) {
            (Some(path), _) => TrainConfig::from_file(path)?,
            (None, Some(dir)) => TrainConfig::from_file(&dir.join("config.toml"))?,
            (None, None) => default_run(),
        };
        if let Some(v) = &self.model {
            c.model = v.clone();
        }
        if !self.data.is_empty() {
            c.data = self.data.clone();
            c.valid_data.clear();
        }
        if !self.valid_data.is_empty() {
            c.valid_data = self.valid_data.clone();
        }
        macro_rules! over {
            ($($field:ident => $($path:ident).+),*) => {
                $(if let Some(v) = self.$field.clone() { c.$($path).+ = v; })*
            };
        }
        over!(method => method, max_steps => max_steps, output_dir => output_dir,
            run_name => run_name, lr => optimizer.lr, batch_size => batch_size,
            grad_accum => grad_accum, max_seq_len => max_seq_len, lora_r => lora.r,
            lora_alpha => lora.alpha, seed => seed, eval_every => eval_every,
            save_every => save_every, device => device, compute_dtype => quant.compute_dtype);
        if self.packing {
            c.packing = true;
        }
        if self.gradient_checkpointing {
            c.gradient_checkpointing = true;
        }
        for r in &self.report_to {
            if !c.report_to.contains(r) {
                c.report_to.push(*r);
            }
        }
        for s in &self.set {
            c.apply_override(s).map_err(|e| anyhow!("--set {s}: {e}"))?;
        }
        if c.data.is_empty() {
            let (train, valid) = shipped_data();
            c.data = vec![train];
            c.valid_data = vec![valid];
        }
        c.validate()?;
        Ok(c)
    }
}

/// Progress bar: step, loss, learning rate, tokens/s and ETA.
struct Bar(ProgressBar);

impl Observer for Bar {
    fn step(&mut self, step: u64, total: u64, s: &StepStats, tps: f64) {
        if self.0.is_hidden() {
            // No terminal (a log file, CI): one line per step instead of the bar.
            eprintln!(
                "step {step}/{total}  loss {:.4}  lr {:.2e}  {:.0} tok/s",
                s.loss, s.lr, tps
            );
        }
        self.0.set_length(total);
        self.0.set_position(step);
        self.0.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            s.loss, s.lr, tps
        ));
    }
    fn info(&mut self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// A run as a job for [`crate::backend::dispatch_train`].
struct Train<'a> {
    config: &'a TrainConfig,
    paths: &'a RunPaths,
}

impl crate::backend::TrainJob for Train<'_> {
    type Output = trainer::Summary;
    fn device(&self) -> Device {
        self.config.device
    }
    fn run<B>(self, device: B::Device) -> Result<trainer::Summary>
    where
        B: AutodiffBackend + QuantBackend,
        B::InnerBackend: QuantBackend,
    {
        train_on::<B>(self.config, self.paths, device)
    }
}

fn train_on<B>(
    config: &TrainConfig,
    paths: &RunPaths,
    device: B::Device,
) -> Result<trainer::Summary>
where
    B: AutodiffBackend + QuantBackend,
    B::InnerBackend: QuantBackend,
{
    let pb = ProgressBar::new(config.max_steps);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut bar = Bar(pb);
    let summary = trainer::run::<B>(config, paths, &device, &mut bar, &STOP);
    bar.0.finish_and_clear();
    Ok(summary?)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let mut config = args.resolve()?;
    let model = if config.model.is_empty() {
        let source = crate::backend::default_model()?;
        config.model = source.to_string();
        source
    } else {
        llama_model::ModelSource::resolve(&config.model)?
    };
    let run_dir = match &args.resume {
        Some(dir) => dir.clone(),
        None => {
            let name = if config.run_name.is_empty() {
                chrono_name()
            } else {
                config.run_name.clone()
            };
            config.output_dir.join(name)
        }
    };
    eprintln!(
        "# resolved configuration (saved as {}/config.toml)",
        run_dir.display()
    );
    eprintln!("{}", config.to_toml().trim_end());
    let paths = RunPaths {
        model,
        run_dir: run_dir.clone(),
        resume: args.resume.is_some(),
    };
    // A device out-of-memory panic is reported as one error by the run, not as a backtrace.
    trainer::oom::install_quiet_oom_hook();
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: saving a checkpoint after this step (again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let summary = crate::backend::dispatch_train(Train {
        config: &config,
        paths: &paths,
    })?;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "done: {} steps, {} tokens in {:.1} s ({:.0} tok/s), peak RSS {:.0} MiB",
        summary.steps,
        summary.tokens,
        summary.wall_s,
        summary.tokens_per_s,
        mb(summary.peak_rss_bytes)
    );
    if let (Some(a), Some(b)) = (summary.eval_loss_before, summary.eval_loss_after) {
        eprintln!("validation loss {a:.4} -> {b:.4}");
    }
    eprintln!("run directory: {}", run_dir.display());
    // The result a script reads: one JSON line on stdout (summary.json plus the run directory).
    let mut result = serde_json::to_value(&summary)?;
    result["run_dir"] = serde_json::Value::String(run_dir.display().to_string());
    println!("{result}");
    Ok(())
}

/// `run-YYYYmmdd-HHMMSS` in UTC.
fn chrono_name() -> String {
    chrono::Utc::now().format("run-%Y%m%d-%H%M%S").to_string()
}
