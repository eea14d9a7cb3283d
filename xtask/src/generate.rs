//! `cargo xtask generate`: stream a model's answer to a prompt.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use llama_model::{GenerationConfig, SamplingConfig, generate};
use llama_tokenizer::Message;
use quant::QuantBackend;

use crate::backend::{Device, Job, end_tokens, model_source, spinner};

/// Arguments of `generate`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// Hugging Face checkpoint directory, a `.gguf` file, or a hub id found in the local HF cache
    /// (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The prompt.
    #[arg(long, default_value = "Once upon a time")]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    system: Option<String>,
    /// Most new tokens.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k filter (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (nucleus) filter (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to run.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

impl Job for Args {
    type Output = ();
    fn device(&self) -> Device {
        self.device
    }
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<()> {
        let sampling = SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        };
        // Checked before anything is loaded.
        sampling
            .validate()
            .map_err(|e| anyhow::anyhow!("--{}", e.replacen("top_p", "top-p", 1)))?;
        if self.max_new_tokens == 0 {
            anyhow::bail!("--max-new-tokens 0: expected at least 1 new token");
        }
        let source = model_source(self.model.as_deref())?;
        let tokenizer = source.tokenizer()?;
        let pb = spinner(&format!("loading {source}"));
        let model = crate::backend::load_model::<B>(&source, self.adapter.as_deref(), &device)?;
        pb.finish_and_clear();
        let prompt_ids = if self.chat {
            let mut messages = Vec::new();
            if let Some(system) = &self.system {
                messages.push(Message::new("system", system.clone()));
            }
            messages.push(Message::new("user", self.prompt.clone()));
            tokenizer.encode_chat(&messages, true)?
        } else {
            tokenizer.encode(&self.prompt, true)?
        };
        let (eos, pad) = end_tokens(&source, &tokenizer)?;
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            sampling,
            eos_token_ids: eos,
            pad_token_id: pad,
        };
        eprintln!("[{} prompt tokens]", prompt_ids.len());
        let mut produced: Vec<u32> = Vec::new();
        let mut printed = 0usize;
        let mut stdout = std::io::stdout().lock();
        let start = std::time::Instant::now();
        let mut decode_err = None;
        generate(&model, &[prompt_ids], &config, |_, tok| {
            produced.push(tok);
            // Decode the whole answer each time so multi-byte characters split across tokens
            // come out whole.
            match tokenizer.decode(&produced, true) {
                Ok(text) if text.len() > printed && text.is_char_boundary(printed) => {
                    let _ = stdout.write_all(&text.as_bytes()[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
                Ok(_) => {}
                Err(e) => decode_err = Some(e),
            }
        })?;
        if let Some(e) = decode_err {
            return Err(e).context("decoding generated tokens");
        }
        writeln!(stdout)?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "[{} tokens in {:.2}s, {:.1} tokens/s]",
            produced.len(),
            secs,
            produced.len() as f64 / secs
        );
        Ok(())
    }
}
