//! `cargo xtask data`: reads a dataset the way training will (format, template, tokenization,
//! masking, truncation) and prints what it holds: counts, a token-length histogram, the masked
//! share, truncated / dropped / skipped counts, padding and packing efficiency, and one rendered
//! example with its trained spans marked. Streams the files: memory stays bounded whatever
//! their size.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use data::{
    EncodeOptions, Encoder, Example, FieldMap, Format, LoaderConfig, ReadOptions, TemplateChoice,
    Truncation, packing_efficiency, padding_efficiency, stream,
};

/// Arguments of `data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data files or directories (JSONL, JSON, Parquet, CSV, text); repeat for several.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Model directory with tokenizer.json (and tokenizer_config.json for the chat template).
    #[arg(long)]
    model: PathBuf,
    /// alpaca, messages, sharegpt, prompt_completion or text (default: detected).
    #[arg(long)]
    format: Option<String>,
    /// auto, model, llama2, llama3, chatml or alpaca.
    #[arg(long, default_value = "auto")]
    template: String,
    /// Truncate examples to this many tokens (and pack rows of this length).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Keep the end of over-long examples instead of the start.
    #[arg(long)]
    keep_end: bool,
    /// Train on prompt tokens too.
    #[arg(long)]
    train_on_prompt: bool,
    /// Field-name override `field=column` (e.g. `instruction=question`); repeatable.
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Skip malformed records (counted and summarized) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Encoding threads (default: every available core).
    #[arg(long)]
    threads: Option<usize>,
    /// Batch size for the padding-efficiency figures.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

/// Length histogram buckets: powers of two.
fn bucket(len: usize) -> usize {
    len.max(1).next_power_of_two().trailing_zeros() as usize
}

/// The example's text with trained spans between `⟦` and `⟧`.
fn marked(encoder: &Encoder, ex: &Example) -> Result<String> {
    let mut out = String::new();
    let mut start = 0;
    while start < ex.len() {
        let trained = ex.labels[start] != data::IGNORE_INDEX;
        let mut end = start;
        while end < ex.len() && (ex.labels[end] != data::IGNORE_INDEX) == trained {
            end += 1;
        }
        let text = encoder
            .tokenizer()
            .decode(&ex.input_ids[start..end], false)
            .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        if trained {
            out.push_str(&format!("⟦{text}⟧"));
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    Ok(out)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let template: TemplateChoice = args.template.parse()?;
    let options = EncodeOptions {
        template,
        max_seq_len: args.max_seq_len,
        truncation: if args.keep_end {
            Truncation::KeepEnd
        } else {
            Truncation::KeepStart
        },
        train_on_prompt: args.train_on_prompt,
    };
    // A model directory or a `.gguf` file: the tokenizer and its settings, then the encoder.
    let encoder = llama_model::ModelSource::resolve(&args.model.to_string_lossy())
        .and_then(|source| source.tokenizer())
        .map_err(anyhow::Error::from)
        .and_then(|tok| Ok(Encoder::from_tokenizer(&tok, options)?))
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let read = ReadOptions {
        format: args
            .format
            .as_deref()
            .map(str::parse::<Format>)
            .transpose()?,
        fields: FieldMap::parse(&args.fields)?,
        skip_invalid: args.skip_invalid,
    };
    let started = Instant::now();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut examples = stream(&args.data, &encoder, read)?.with_threads(threads);
    let mut lengths = Vec::new();
    let mut first = None;
    for ex in examples.by_ref() {
        let ex = ex?;
        lengths.push(ex.len());
        if first.is_none() {
            first = Some(ex);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = examples.stats().clone();
    if lengths.is_empty() {
        bail!(
            "no example left: {} records read, {} dropped, {} skipped",
            stats.records,
            stats.dropped,
            stats.skipped
        );
    }
    let format = stats.format.map_or("?".to_string(), |f| f.to_string());
    println!("format            {format} (template {template})");
    println!("records           {}", stats.records);
    println!("examples kept     {}", stats.kept);
    println!("truncated         {}", stats.truncated);
    println!("dropped (nothing to train) {}", stats.dropped);
    println!("skipped invalid   {}", stats.skipped);
    println!(
        "tokens            {} ({} trained)",
        stats.tokens, stats.trained_tokens
    );
    println!("masked share      {:.1}%", 100.0 * stats.masked_share());
    let (min, max) = (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    println!(
        "tokens/example    min {min}, median {}, mean {:.1}, max {max}",
        sorted[sorted.len() / 2],
        stats.tokens as f64 / lengths.len() as f64
    );
    println!("length histogram");
    let mut counts = vec![0usize; bucket(*max) + 1];
    for &l in &lengths {
        counts[bucket(l)] += 1;
    }
    let top = *counts.iter().max().unwrap();
    for (b, &c) in counts.iter().enumerate().skip(bucket(*min)) {
        let lo = if b == 0 { 1 } else { (1usize << (b - 1)) + 1 };
        let bar = "#".repeat((40 * c).div_ceil(top.max(1)));
        println!("  {lo:>6}..{:<6} {c:>8} {bar}", 1usize << b);
    }
    for group in [false, true] {
        let cfg = LoaderConfig {
            batch_size: args.batch_size,
            group_by_length: group,
            ..Default::default()
        };
        println!(
            "padding efficiency (batch {}, {}) {:.1}%",
            args.batch_size,
            if group {
                "grouped by length"
            } else {
                "shuffled"
            },
            100.0 * padding_efficiency(&lengths, &cfg)
        );
    }
    if let Some(cap) = args.max_seq_len {
        println!(
            "packing efficiency (rows of {cap}) {:.1}%",
            100.0 * packing_efficiency(&lengths, cap)?
        );
    }
    println!(
        "throughput        {:.0} tokens/s, {:.0} examples/s ({secs:.2} s, {threads} threads)",
        stats.tokens as f64 / secs,
        stats.kept as f64 / secs
    );
    if stats.skipped > 0 {
        eprintln!("{}", stats.skipped_summary());
    }
    if let Some(ex) = first {
        println!(
            "\nfirst example ({} tokens, trained spans in ⟦ ⟧):\n{}",
            ex.len(),
            marked(&encoder, &ex)?
        );
    }
    Ok(())
}
