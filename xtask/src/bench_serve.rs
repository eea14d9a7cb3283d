//! `cargo xtask bench-serve`: throughput and time to first token of the OpenAI-compatible server
//! with 1, 4 and 16 concurrent streaming clients, over real HTTP on the loopback interface.
//! Prints one JSON object per concurrency level on stdout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quant::QuantBackend;
use serde_json::{Value, json};
use serve::{ModelName, ServeOptions, Server};

use crate::backend::{Device, Job, model_source, spinner};

/// Arguments of `bench-serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Concurrent clients, comma-separated.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Requests each client sends, one after the other.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// Tokens per answer (end tokens are ignored so every answer has this length).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Most answers decoded together.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Where to run.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

/// One streamed request: seconds to the first text, seconds to the end, tokens.
struct Timing {
    first: f64,
    total: f64,
    tokens: usize,
}

fn one_request(url: &str, model: &str, prompt: &str, max_tokens: usize) -> Result<Timing> {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let resp = ureq::post(&format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(600))
        .send_json(body)
        .context("bench-serve request")?;
    let mut first = None;
    let mut tokens = 0;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)?;
        if let Some(e) = chunk.get("error") {
            anyhow::bail!("the server answered an error: {e}");
        }
        let has_text = chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty());
        if has_text && first.is_none() {
            first = Some(start.elapsed().as_secs_f64());
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = n as usize;
        }
    }
    let total = start.elapsed().as_secs_f64();
    Ok(Timing {
        first: first.unwrap_or(total),
        total,
        tokens,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one paragraph.",
    "List three uses of a llama.",
    "How do I boil an egg?",
    "Tell me a short story about a robot who learns to paint.",
    "What is 17 times 23?",
    "Why is the sky blue?",
];

impl Job for Args {
    type Output = ();
    fn device(&self) -> Device {
        self.device
    }
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<()> {
        if self.clients.contains(&0) || self.requests == 0 || self.max_tokens == 0 {
            anyhow::bail!("--clients, --requests and --max-tokens must be at least 1");
        }
        let source = model_source(self.model.as_deref())?;
        let tokenizer = source.tokenizer()?;
        let pb = spinner(&format!("loading {source}"));
        let model = source.load::<B>(&device)?;
        pb.finish_and_clear();
        let context = model.config().max_position_embeddings;
        let name = source.name();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let server = Server::start(
            model,
            tokenizer,
            vec![ModelName {
                name: name.clone(),
                adapter: None,
            }],
            ServeOptions {
                max_batch: self.max_batch,
                queue: 1024,
                context,
                // Answers run to max_tokens, so every level decodes the same number of tokens.
                eos_token_ids: Vec::new(),
                stop_on_signal: false,
            },
            listener,
        )?;
        let url = format!("http://{}", server.addr());
        one_request(&url, &name, PROMPTS[0], 4).context("warm-up request")?;
        eprintln!(
            "{:>7} {:>9} {:>11} {:>13} {:>13} {:>14}",
            "clients", "requests", "tokens/s", "TTFT median", "TTFT max", "per-stream t/s"
        );
        for &clients in &self.clients {
            let start = Instant::now();
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (url, name) = (url.clone(), name.clone());
                    let (requests, max_tokens) = (self.requests, self.max_tokens);
                    std::thread::spawn(move || -> Result<Vec<Timing>> {
                        (0..requests)
                            .map(|r| {
                                let prompt = PROMPTS[(c + r) % PROMPTS.len()];
                                one_request(&url, &name, prompt, max_tokens)
                            })
                            .collect()
                    })
                })
                .collect();
            let mut timings = Vec::new();
            for h in handles {
                let t = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
                timings.extend(t);
            }
            let wall = start.elapsed().as_secs_f64();
            let tokens: usize = timings.iter().map(|t| t.tokens).sum();
            let ttft: Vec<f64> = timings.iter().map(|t| t.first).collect();
            let ttft_max = ttft.iter().copied().fold(0.0, f64::max);
            let per_stream = median(
                timings
                    .iter()
                    .filter(|t| t.tokens > 1 && t.total > t.first)
                    .map(|t| (t.tokens - 1) as f64 / (t.total - t.first))
                    .collect(),
            );
            let ttft_median = median(ttft);
            eprintln!(
                "{clients:>7} {:>9} {:>11.1} {:>12.3}s {:>12.3}s {:>14.1}",
                timings.len(),
                tokens as f64 / wall,
                ttft_median,
                ttft_max,
                per_stream
            );
            println!(
                "{}",
                json!({
                    "model": name,
                    "device": self.device.to_string(),
                    "clients": clients,
                    "requests": timings.len(),
                    "max_tokens": self.max_tokens,
                    "completion_tokens": tokens,
                    "wall_s": wall,
                    "tokens_per_s": tokens as f64 / wall,
                    "ttft_median_s": ttft_median,
                    "ttft_max_s": ttft_max,
                    "per_stream_tokens_per_s_median": per_stream,
                    "peak_batch": ureq::get(&format!("{url}/health")).call().ok()
                        .and_then(|r| r.into_json::<Value>().ok())
                        .map(|h| h["peak_batch"].clone()),
                })
            );
        }
        server.shutdown()?;
        Ok(())
    }
}
