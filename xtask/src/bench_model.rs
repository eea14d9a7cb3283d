//! `cargo xtask bench-model`: peak RSS while loading, prefill (forward) tokens/s and cached
//! generation tokens/s of a checkpoint. Prints one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use llama_model::{GenerationConfig, ModelInput, generate};
use quant::QuantBackend;

use crate::backend::{Device, Job, peak_rss_bytes, rss_bytes};

/// Arguments of `bench-model`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (e.g. made by `cargo xtask random-model`).
    #[arg(long)]
    model: PathBuf,
    /// Sequence length of the forward (prefill) measurement.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Tokens generated in the decode measurement.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Repetitions of the forward measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
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
        let rss_before = rss_bytes().unwrap_or(0);
        let start = Instant::now();
        let pb = crate::backend::spinner(&format!("loading {}", self.model.display()));
        let model =
            llama_model::ModelSource::resolve(&self.model.to_string_lossy())?.load::<B>(&device)?;
        B::sync(&device)?;
        pb.finish_and_clear();
        let load_s = start.elapsed().as_secs_f64();
        let load_peak = peak_rss_bytes().unwrap_or(0);
        let rss_loaded = rss_bytes().unwrap_or(0);
        let config = model.config().clone();
        let param_bytes = config.num_parameters() as u64 * 4;
        eprintln!(
            "loaded in {load_s:.1}s: peak RSS {:.2} GB, RSS after load {:.2} GB, f32 parameters {:.2} GB",
            load_peak as f64 / 1e9,
            rss_loaded as f64 / 1e9,
            param_bytes as f64 / 1e9
        );
        let ids: Vec<i64> = (0..self.seq_len)
            .map(|i| (i * 7919 % (config.vocab_size - 1) + 1) as i64)
            .collect();
        let pb = crate::backend::spinner("measuring forward and decode speed");
        let mut times = Vec::new();
        for _ in 0..self.repeats.max(1) {
            let input = Tensor::<B, 2, Int>::from_data(
                TensorData::new(ids.clone(), [1, self.seq_len]),
                &device,
            );
            let t = Instant::now();
            let logits = model.forward(ModelInput::new(input), None);
            let _ = logits.slice([0..1, 0..1, 0..1]).into_data();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let forward_s = times[times.len() / 2];
        let prompt: Vec<u32> = ids[..8.min(ids.len())].iter().map(|&t| t as u32).collect();
        let gen_cfg = GenerationConfig {
            max_new_tokens: self.gen_tokens,
            ..Default::default()
        };
        let t = Instant::now();
        let mut first_token_s = None;
        let out = generate(&model, &[prompt], &gen_cfg, |_, _| {
            first_token_s.get_or_insert_with(|| t.elapsed().as_secs_f64());
        })?;
        let total_s = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let n = out[0].len();
        let first = first_token_s.unwrap_or(total_s);
        let decode_tps = if n > 1 {
            (n - 1) as f64 / (total_s - first)
        } else {
            f64::NAN
        };
        let report = serde_json::json!({
            "model": self.model.display().to_string(),
            "parameters": config.num_parameters(),
            "load_seconds": load_s,
            "rss_before_load_bytes": rss_before,
            "load_peak_rss_bytes": load_peak,
            "rss_after_load_bytes": rss_loaded,
            "f32_parameter_bytes": param_bytes,
            "forward_seq_len": self.seq_len,
            "forward_seconds_median": forward_s,
            "forward_tokens_per_s": self.seq_len as f64 / forward_s,
            "generated_tokens": n,
            "decode_tokens_per_s": decode_tps,
        });
        println!("{report}");
        Ok(())
    }
}
