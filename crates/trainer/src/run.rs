//! The run: one loop a newcomer can read top to bottom (nanoGPT's shape). Load, evaluate and
//! sample before, train with periodic evaluation and checkpoints, evaluate and sample after,
//! write the adapter (PEFT format) or the full checkpoint, the metrics and the summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use data::{Batch, Loader, LoaderConfig, Position};
use llama_model::{GenerationConfig, Llama};
use llama_tokenizer::{LlamaTokenizer, Message};
use quant::QuantBackend;

use crate::config::{Method, OnNonFinite, TrainConfig};
use crate::error::{Error, Result};
use crate::loss::{count_targets, default_chunk_rows, summed_lm_loss};
use crate::optim::AdamW;
use crate::report::{self, Metric, Summary, TrainerState};
use crate::schedule::Schedule;
use crate::setup::{self, Splits};
use crate::step::{StepOptions, StepStats, train_step};

/// Where a run reports progress (the CLI draws a progress bar; tests collect).
pub trait Observer {
    /// After every optimizer step.
    fn step(&mut self, step: u64, total: u64, stats: &StepStats, tokens_per_s: f64);
    /// A line of information (evaluations, samples, checkpoints).
    fn info(&mut self, line: &str);
}

/// An observer that prints nothing.
pub struct Quiet;

impl Observer for Quiet {
    fn step(&mut self, _: u64, _: u64, _: &StepStats, _: f64) {}
    fn info(&mut self, _: &str) {}
}

/// Paths a run needs besides its configuration.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The model directory or `.gguf` file (already resolved).
    pub model: PathBuf,
    /// The run directory (`<output_dir>/<run_name>`).
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
}

/// Mean next-token loss over (up to `limit`) validation batches, without autodiff.
pub fn evaluate<B: QuantBackend>(model: &Llama<B>, batches: &[Batch]) -> Option<f64> {
    let device = model.embed_tokens.val().device();
    let (mut total, mut count) = (0.0f64, 0usize);
    for b in batches {
        let n = count_targets(&b.labels, b.seq);
        if n == 0 {
            continue;
        }
        let t = crate::batch::batch_tensors::<B>(b, &device);
        let chunk = default_chunk_rows(model.config().vocab_size);
        total += summed_lm_loss(model, t.model_input(), &b.labels, b.seq, chunk);
        count += n;
    }
    (count > 0).then(|| total / count as f64)
}

/// Greedy answers to `prompts` through the chat template (raw text without one).
pub fn sample<B: QuantBackend>(
    model: &Llama<B>,
    tokenizer: &LlamaTokenizer,
    prompts: &[String],
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in prompts {
        let ids = if tokenizer.chat_template().is_some() {
            tokenizer.encode_chat(&[Message::new("user", p.as_str())], true)?
        } else {
            tokenizer.encode(p, true)?
        };
        let config = GenerationConfig {
            max_new_tokens,
            eos_token_ids: tokenizer.eos_token_id().into_iter().collect(),
            ..GenerationConfig::default()
        };
        let new = llama_model::generate(model, &[ids], &config, |_, _| {})?;
        out.push(tokenizer.decode(&new[0], true)?.trim().to_string());
    }
    Ok(out)
}

/// The out-of-memory error of a step: what ran out, at which sizes, and what to change.
fn out_of_memory_advice(config: &TrainConfig, window: &[Batch], step: u64, reason: &str) -> String {
    let rows = window
        .iter()
        .map(|b| b.rows)
        .max()
        .unwrap_or(config.batch_size);
    let seq = window
        .iter()
        .map(|b| b.seq)
        .max()
        .unwrap_or(config.max_seq_len);
    let mut tips = Vec::new();
    if config.batch_size > 1 {
        tips.push(format!(
            "--batch-size {} --grad-accum {} (same effective batch)",
            config.batch_size.div_ceil(2),
            config.grad_accum * 2
        ));
    }
    if !config.gradient_checkpointing {
        tips.push("--gradient-checkpointing".into());
    }
    tips.push(format!(
        "a shorter --max-seq-len (now {})",
        config.max_seq_len
    ));
    if config.method != Method::Qlora {
        tips.push("--method qlora (4-bit base)".into());
    }
    format!(
        "out of device memory at step {step}: micro-batch of {rows} rows x {seq} tokens \
         (batch_size {}, grad_accum {}, max_seq_len {}, method {:?}){}. \
         Try {}; `cargo xtask estimate` shows what fits ({reason})",
        config.batch_size,
        config.grad_accum,
        config.max_seq_len,
        config.method,
        if config.gradient_checkpointing {
            ", gradient checkpointing on"
        } else {
            ""
        },
        tips.join(", or ")
    )
}

/// Greedy answers to the configured sample prompts, one `label | prompt -> answer` line each.
fn show_samples<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    tokenizer: &LlamaTokenizer,
    config: &TrainConfig,
    observer: &mut dyn Observer,
    label: &str,
) -> Result<()>
where
    B::InnerBackend: QuantBackend,
{
    let prompts = &config.sample_prompts;
    for (p, a) in prompts.iter().zip(sample(
        &model.clone().valid(),
        tokenizer,
        prompts,
        config.sample_tokens,
    )?) {
        observer.info(&format!("{label} | {p} -> {a}"));
    }
    Ok(())
}

fn save_weights<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    config: &TrainConfig,
    model_path: &Path,
    dir: &Path,
) -> Result<()> {
    if config.method == Method::Full {
        llama_model::save_checkpoint(model, dir, llama_model::SaveDtype::F32, None)?;
    } else {
        let mut lora = setup::lora_config(config)?;
        lora.base_model_name_or_path = Some(model_path.display().to_string());
        llama_model::save_adapter(model, &lora, dir)?;
    }
    Ok(())
}

/// Runs `config` to the end (or to Ctrl-C through `stop`) and returns the summary.
pub fn run<B>(
    config: &TrainConfig,
    paths: &RunPaths,
    device: &B::Device,
    observer: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<Summary>
where
    B: AutodiffBackend + QuantBackend,
    B::InnerBackend: QuantBackend,
{
    let started = Instant::now();
    config.validate()?;
    let run_dir = &paths.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    crate::checkpoint::write_atomic(&run_dir.join("config.toml"), |tmp| {
        std::fs::write(tmp, config.to_toml())
    })?;

    // Where to start: a fresh run, or the newest checkpoint.
    let resume_from = if paths.resume {
        let (_, dir) = report::checkpoints(run_dir).pop().ok_or_else(|| {
            Error::Config(format!(
                "--resume: no checkpoint-N directory in {}",
                run_dir.display()
            ))
        })?;
        Some(dir)
    } else {
        None
    };
    let mut state = match &resume_from {
        Some(dir) => report::read_json::<TrainerState>(&dir.join("trainer_state.json"))?,
        None => TrainerState {
            step: 0,
            position: Position::default(),
            tokens: 0,
            skipped_steps: 0,
            eval_loss_before: None,
            train_seconds: 0.0,
        },
    };

    // Model and data.
    let model_source: PathBuf = match (&resume_from, config.method) {
        (Some(dir), Method::Full) => dir.clone(),
        _ => paths.model.clone(),
    };
    let adapter = resume_from
        .as_deref()
        .filter(|_| config.method != Method::Full);
    let mut model = setup::load_model::<B>(config, &model_source, adapter, device)?;
    let parameters = llama_model::parameter_counts(&model);
    observer.info(&format!(
        "model {} ({:?}): {}",
        paths.model.display(),
        config.method,
        llama_model::trainable_summary(&model)
    ));
    let Splits {
        train,
        valid,
        pad_id,
        tokenizer,
    } = setup::load_data(config, &paths.model)?;
    observer.info(&format!(
        "data: {} training examples ({} truncated, {} dropped), {} validation",
        train.len(),
        train.stats.truncated,
        train.stats.dropped,
        valid.len()
    ));
    let loader_config = |seed: u64| LoaderConfig {
        batch_size: config.batch_size,
        seed,
        pad_id,
        packing: config.packing.then_some(config.max_seq_len),
        group_by_length: config.group_by_length,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(&train.examples, loader_config(config.seed))
        .map_err(|e| Error::Config(e.to_string()))?;
    let valid_batches: Vec<Batch> = if valid.is_empty() {
        Vec::new()
    } else {
        let l = Loader::new(
            &valid.examples,
            LoaderConfig {
                shuffle: false,
                ..loader_config(0)
            },
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let n = l.batches_per_epoch();
        let n = if config.eval_batches == 0 {
            n
        } else {
            n.min(config.eval_batches)
        };
        l.epoch(0).take(n).collect()
    };

    // Before.
    let eval_now = |model: &Llama<B>| evaluate(&model.clone().valid(), &valid_batches);
    if state.eval_loss_before.is_none() && resume_from.is_none() {
        state.eval_loss_before = eval_now(&model);
        if let Some(l) = state.eval_loss_before {
            observer.info(&format!(
                "validation loss before: {l:.4} (perplexity {:.2})",
                l.exp()
            ));
        }
        show_samples(&model, &tokenizer, config, observer, "before")?;
    }

    // Train.
    let metrics_path = run_dir.join("metrics.jsonl");
    let kept = report::read_metrics(&metrics_path, Some(state.step))?;
    crate::checkpoint::write_atomic(&metrics_path, |tmp| {
        let text: String = kept
            .iter()
            .map(|m| serde_json::to_string(m).unwrap_or_default() + "\n")
            .collect();
        std::fs::write(tmp, text)
    })?;
    let mut optimizer = AdamW::<B::InnerBackend>::new(config.optimizer);
    if let Some(dir) = &resume_from {
        optimizer.load(&dir.join("optimizer.safetensors"), device)?;
        observer.info(&format!(
            "resumed from {} (step {})",
            dir.display(),
            state.step
        ));
    }
    let schedule = Schedule {
        kind: config.schedule,
        warmup_steps: config.warmup_steps,
        total_steps: config.max_steps,
    };
    let mut batches = loader.resume(state.position);
    let train_start = Instant::now();
    let train_before = state.train_seconds;
    let mut interrupted = false;
    let checkpoint =
        |model: &Llama<B>, optimizer: &AdamW<B::InnerBackend>, state: &TrainerState| {
            report::save_checkpoint(run_dir, state.step, config.keep_checkpoints, |tmp| {
                save_weights(model, config, &paths.model, tmp)?;
                optimizer.save(&tmp.join("optimizer.safetensors"))?;
                report::write_json(&tmp.join("trainer_state.json"), state)
            })
        };
    while state.step < config.max_steps {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            let dir = checkpoint(&model, &optimizer, &state)?;
            observer.info(&format!("interrupted: saved {}", dir.display()));
            break;
        }
        let window: Vec<Batch> = batches.by_ref().take(config.grad_accum).collect();
        // Dropout draws from the backend's generator: seeding it per step makes a resumed run
        // draw what the uninterrupted one drew.
        B::seed(device, config.seed.wrapping_add(state.step));
        let options = StepOptions {
            lr: config.optimizer.lr * schedule.factor(state.step),
            max_grad_norm: (config.max_grad_norm > 0.0).then_some(config.max_grad_norm),
            gradient_checkpointing: config.gradient_checkpointing,
            seed: config.seed.wrapping_add(state.step),
        };
        let step = state.step + 1;
        let (m, stats) = crate::oom::catch_out_of_memory(
            || train_step(model, &window, &mut optimizer, &options),
            |reason| out_of_memory_advice(config, &window, step, reason),
        )
        .map_err(Error::OutOfMemory)?;
        model = m;
        if !stats.finite {
            match config.on_non_finite {
                OnNonFinite::Stop => {
                    let last = report::checkpoints(run_dir)
                        .pop()
                        .map_or("none".into(), |(_, d)| d.display().to_string());
                    return Err(Error::NonFinite(format!(
                        "step {}: loss {} / gradient norm {} is not finite; stopped without updating (last checkpoint: {last}). Lower the learning rate, or set on_non_finite = \"skip\"",
                        state.step + 1,
                        stats.loss,
                        stats.grad_norm
                    )));
                }
                OnNonFinite::Skip => {
                    state.skipped_steps += 1;
                    observer.info(&format!(
                        "step {}: non-finite loss or gradient, update skipped",
                        state.step + 1
                    ));
                }
            }
        }
        state.step += 1;
        state.position = batches.position();
        state.tokens += stats.tokens;
        state.train_seconds = train_before + train_start.elapsed().as_secs_f64();
        let tps = state.tokens as f64 / state.train_seconds.max(1e-9);
        observer.step(state.step, config.max_steps, &stats, tps);
        report::append_metric(
            &metrics_path,
            &Metric {
                step: state.step,
                loss: stats.loss,
                kind: "train".into(),
                lr: Some(stats.lr),
                grad_norm: Some(stats.grad_norm),
                tokens: Some(stats.tokens),
                elapsed_s: started.elapsed().as_secs_f64(),
            },
        )?;
        if config.eval_every > 0
            && state.step % config.eval_every == 0
            && state.step < config.max_steps
        {
            if let Some(l) = eval_now(&model) {
                observer.info(&format!(
                    "step {}: validation loss {l:.4} (perplexity {:.2})",
                    state.step,
                    l.exp()
                ));
                report::append_metric(
                    &metrics_path,
                    &Metric::eval(state.step, l, started.elapsed().as_secs_f64()),
                )?;
            }
            show_samples(
                &model,
                &tokenizer,
                config,
                observer,
                &format!("step {}", state.step),
            )?;
        }
        if config.save_every > 0
            && state.step % config.save_every == 0
            && state.step < config.max_steps
        {
            let dir = checkpoint(&model, &optimizer, &state)?;
            observer.info(&format!("saved {}", dir.display()));
        }
    }

    // After.
    let eval_after = eval_now(&model);
    if let Some(l) = eval_after {
        observer.info(&format!(
            "validation loss after: {l:.4} (perplexity {:.2})",
            l.exp()
        ));
        report::append_metric(
            &metrics_path,
            &Metric::eval(state.step, l, started.elapsed().as_secs_f64()),
        )?;
    }
    if !interrupted {
        show_samples(&model, &tokenizer, config, observer, "after ")?;
        let dir = checkpoint(&model, &optimizer, &state)?;
        let out = run_dir.join(if config.method == Method::Full {
            "model"
        } else {
            "adapter"
        });
        let tmp = run_dir.join(".final.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        save_weights(&model, config, &paths.model, &tmp)?;
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        }
        std::fs::rename(&tmp, &out).map_err(|e| Error::io(&out, e))?;
        observer.info(&format!("wrote {} (and {})", out.display(), dir.display()));
    }
    let summary = Summary {
        steps: state.step,
        tokens: state.tokens,
        wall_s: started.elapsed().as_secs_f64(),
        train_s: state.train_seconds,
        tokens_per_s: state.tokens as f64 / state.train_seconds.max(1e-9),
        peak_rss_bytes: report::peak_rss_bytes(),
        eval_loss_before: state.eval_loss_before,
        eval_loss_after: eval_after,
        skipped_steps: state.skipped_steps,
        parameters,
        interrupted,
        resumed_from: resume_from,
    };
    if !interrupted {
        let out = run_dir.join(if config.method == Method::Full {
            "model"
        } else {
            "adapter"
        });
        let card = crate::card::model_card(config, &config.model, &summary);
        crate::checkpoint::write_atomic(&out.join("README.md"), |tmp| std::fs::write(tmp, card))?;
    }
    let metrics = report::read_metrics(&metrics_path, None)?;
    crate::plot::loss_plot(&metrics, &run_dir.join("loss.png"))?;
    report::write_json(&run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}
