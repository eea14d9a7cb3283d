//! `cargo xtask serve`: an OpenAI-compatible HTTP server over a model and its LoRA adapters.

use std::path::PathBuf;

use anyhow::{Context, Result};
use quant::QuantBackend;
use serve::{ModelName, ServeOptions, Server};

use crate::backend::{Device, Job, end_tokens, model_source, spinner};

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face checkpoint directory, a `.gguf` file, or a hub id found in the local HF cache
    /// (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The `model` name of the base model (default: the directory's name or the GGUF's stem).
    #[arg(long)]
    name: Option<String>,
    /// A PEFT LoRA adapter served as the model NAME over the same base: `NAME=DIR`; repeatable.
    #[arg(long = "adapter", value_name = "NAME=DIR")]
    adapters: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most answers decoded together (continuous batching).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Most answers waiting to join the batch; requests beyond get HTTP 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Most tokens (prompt + answer) of one answer (default: the model's max_position_embeddings).
    #[arg(long)]
    context: Option<usize>,
    /// Where to run.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

/// `NAME=DIR` of `--adapter`.
fn adapter_arg(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => anyhow::bail!(
            "--adapter {spec}: expected NAME=DIR (the model name clients use, and a PEFT adapter directory)"
        ),
    }
}

impl Job for Args {
    type Output = ();
    fn device(&self) -> Device {
        self.device
    }
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<()> {
        let adapters = self
            .adapters
            .iter()
            .map(|a| adapter_arg(a))
            .collect::<Result<Vec<_>>>()?;
        if self.max_batch == 0 {
            anyhow::bail!("--max-batch 0: expected at least 1");
        }
        let source = model_source(self.model.as_deref())?;
        let config = source.config()?;
        let context = self.context.unwrap_or(config.max_position_embeddings);
        if context < 2 || context > config.max_position_embeddings {
            anyhow::bail!(
                "--context {context}: expected 2 to the model's max_position_embeddings ({})",
                config.max_position_embeddings
            );
        }
        let base = self.name.clone().unwrap_or_else(|| source.name());
        let mut names = vec![ModelName {
            name: base,
            adapter: None,
        }];
        for (name, _) in &adapters {
            if names.iter().any(|n| &n.name == name) {
                anyhow::bail!("--adapter {name}=...: the model name `{name}` is already taken");
            }
            names.push(ModelName {
                name: name.clone(),
                adapter: Some(name.clone()),
            });
        }
        let tokenizer = source.tokenizer()?;
        let (eos, _) = end_tokens(&source, &tokenizer)?;
        let pb = spinner(&format!("loading {source}"));
        let mut model = source.load::<B>(&device)?;
        for (name, dir) in &adapters {
            llama_model::load_named_adapter(&mut model, dir, name)
                .with_context(|| format!("--adapter {name}"))?;
        }
        pb.finish_and_clear();
        let addr = format!("{}:{}", self.host, self.port);
        let listener = std::net::TcpListener::bind(&addr)
            .with_context(|| format!("--host {} --port {}: cannot listen", self.host, self.port))?;
        let server = Server::start(
            model,
            tokenizer,
            names.clone(),
            ServeOptions {
                max_batch: self.max_batch,
                queue: self.queue,
                context,
                eos_token_ids: eos,
                stop_on_signal: true,
            },
            listener,
        )?;
        let listed: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
        eprintln!(
            "serving {} on {} (max batch {}, queue {}, context {context}); Ctrl-C stops",
            listed.join(", "),
            self.device,
            self.max_batch,
            self.queue
        );
        println!("http://{}/v1", server.addr());
        server.wait()?;
        eprintln!("serve: stopped");
        Ok(())
    }
}
