//! `cargo xtask eval`: mean next-token loss and perplexity over a file of documents.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use llama_model::{Nll, sequence_nll};
use quant::QuantBackend;

use crate::backend::{Device, Job, model_source, spinner};

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face checkpoint directory, a `.gguf` file, or a hub id found in the local HF cache
    /// (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// UTF-8 text (one document per non-empty line) or JSONL with a `text` field (`.jsonl`).
    #[arg(long)]
    data: PathBuf,
    /// Documents longer than this many tokens are truncated (and counted on stderr).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Score as llama.cpp's `llama-perplexity -c N` does instead: the whole file tokenized as one
    /// text (BOS first when the tokenizer adds one), cut into chunks of N tokens (a partial last
    /// chunk dropped; each chunk starts with BOS when the tokenizer adds one), and only the
    /// predictions of the second half of each chunk counted.
    #[arg(long, value_name = "N")]
    llama_cpp_ctx: Option<usize>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Where to run.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

/// Reads the documents of `path`: non-empty lines, or the `text` field of each JSONL record.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut docs = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: not valid UTF-8 text", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let value: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), n + 1))?;
            match value.get("text").and_then(|t| t.as_str()) {
                Some(text) => docs.push(text.to_string()),
                None => bail!(
                    "{}:{}: expected an object with a string field `text`",
                    path.display(),
                    n + 1
                ),
            }
        } else {
            docs.push(line);
        }
    }
    if docs.is_empty() {
        bail!(
            "{}: no documents (the file has no non-empty line)",
            path.display()
        );
    }
    Ok(docs)
}

impl Job for Args {
    type Output = ();
    fn device(&self) -> Device {
        self.device
    }
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<()> {
        if let Some(n_ctx) = self.llama_cpp_ctx {
            return self.run_llama_cpp::<B>(n_ctx, device);
        }
        if let Some(n @ 0..=1) = self.max_seq_len {
            anyhow::bail!(
                "--max-seq-len {n}: expected at least 2 (a token and the next one it predicts)"
            );
        }
        let docs = read_documents(&self.data)?;
        let source = model_source(self.model.as_deref())?;
        let tokenizer = source.tokenizer()?;
        let pb = spinner(&format!("loading {source}"));
        let model = crate::backend::load_model::<B>(&source, self.adapter.as_deref(), &device)?;
        pb.finish_and_clear();
        let bos = model.config().bos_token_id.or(tokenizer.bos_token_id());
        let max_len = self
            .max_seq_len
            .unwrap_or(model.config().max_position_embeddings);
        let pb = indicatif::ProgressBar::new(docs.len() as u64);
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} documents, {elapsed} elapsed, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut sum = Nll::default();
        let mut truncated = 0usize;
        for doc in &docs {
            let mut ids: Vec<u32> = bos.into_iter().collect();
            ids.extend(tokenizer.encode(doc, false)?);
            if ids.len() > max_len {
                ids.truncate(max_len);
                truncated += 1;
            }
            let nll = sequence_nll(&model, &ids)?;
            sum.total += nll.total;
            sum.tokens += nll.tokens;
            pb.inc(1);
        }
        pb.finish_and_clear();
        if truncated > 0 {
            eprintln!("{truncated} document(s) longer than {max_len} tokens were truncated");
        }
        if sum.tokens == 0 {
            bail!(
                "{}: no token to predict (every document is a single token)",
                self.data.display()
            );
        }
        let loss = sum.mean();
        let ppl = loss.exp();
        if self.json {
            let out = serde_json::json!({"documents": docs.len(), "tokens": sum.tokens, "loss": loss, "perplexity": ppl});
            println!("{out}");
        } else {
            println!(
                "documents  {}\ntokens     {}\nloss       {loss:.6}\nperplexity {ppl:.4}",
                docs.len(),
                sum.tokens
            );
        }
        Ok(())
    }
}

impl Args {
    /// `--llama-cpp-ctx N`: `perplexity()` of llama.cpp's `tools/perplexity/perplexity.cpp`.
    fn run_llama_cpp<B: QuantBackend>(&self, n_ctx: usize, device: B::Device) -> Result<()> {
        if n_ctx < 4 {
            bail!("--llama-cpp-ctx {n_ctx}: expected at least 4 tokens per chunk");
        }
        let text = std::fs::read_to_string(&self.data)
            .with_context(|| format!("{}: not readable UTF-8 text", self.data.display()))?;
        let source = model_source(self.model.as_deref())?;
        let tokenizer = source.tokenizer()?;
        let model = crate::backend::load_model::<B>(&source, self.adapter.as_deref(), &device)?;
        let bos = model.config().bos_token_id.or(tokenizer.bos_token_id());
        let tokens = tokenizer.encode(&text, true)?;
        let add_bos = bos.is_some() && tokens.first().copied() == bos;
        let n_chunk = tokens.len() / n_ctx;
        if n_chunk == 0 {
            bail!(
                "{}: {} tokens, fewer than one chunk of {n_ctx}",
                self.data.display(),
                tokens.len()
            );
        }
        let first = n_ctx / 2;
        let mut sum = Nll::default();
        for j in 0..n_chunk {
            let mut chunk = tokens[j * n_ctx..(j + 1) * n_ctx].to_vec();
            if let (true, Some(b)) = (add_bos, bos) {
                chunk[0] = b;
            }
            // Causal model: the predictions at positions < first are those of the prefix.
            let all = sequence_nll(&model, &chunk)?;
            let head = sequence_nll(&model, &chunk[..first + 1])?;
            sum.total += all.total - head.total;
            sum.tokens += all.tokens - head.tokens;
        }
        let loss = sum.mean();
        let ppl = loss.exp();
        if self.json {
            let out = serde_json::json!({"chunks": n_chunk, "n_ctx": n_ctx, "tokens": sum.tokens, "loss": loss, "perplexity": ppl});
            println!("{out}");
        } else {
            println!(
                "chunks     {n_chunk} x {n_ctx}\ntokens     {}\nloss       {loss:.6}\nperplexity {ppl:.4}",
                sum.tokens
            );
        }
        Ok(())
    }
}
