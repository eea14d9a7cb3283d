//! The run, as a recipe: set up (run directory, model, data), evaluate and sample before, train
//! with periodic evaluation and checkpoints, evaluate and sample after, save the adapter (PEFT
//! format) or the full model, report (metrics, plot, summary). [`run`] reads as that list; each
//! phase is one function below, in that order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use data::{Batch, Dataset, Loader, LoaderConfig};
use llama_model::{GenerationConfig, Llama, ModelSource};
use llama_tokenizer::{LlamaTokenizer, Message};
use quant::QuantBackend;

use crate::checkpoint::{self, TrainerState};
use crate::config::{Method, OnNonFinite, ReportTo, TrainConfig};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::loss::{count_targets, default_chunk_rows, summed_lm_loss};
use crate::optim::AdamW;
use crate::report::{self, Metric, Summary};
use crate::resume;
use crate::schedule::Schedule;
use crate::setup::{self, Splits};
use crate::step::{StepOptions, StepStats, train_step};

/// Where a run reports progress (the CLI draws a progress bar; tests collect).
pub trait Observer {
    /// After every optimizer step.
    fn step(&mut self, step: u64, total: u64, stats: &StepStats, tokens_per_s: f64);
    /// A line of information (evaluations, samples, checkpoints).
    fn info(&mut self, line: &str);
    /// A validation loss at `step` (0 = before training); hyperparameter search prunes on it.
    fn eval(&mut self, _step: u64, _loss: f64) {}
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
    /// The model: checkpoint directory, hub-cache snapshot or `.gguf` file, resolved once.
    pub model: ModelSource,
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
    // Set up.
    let started = Instant::now();
    let (mut state, resume_from, warnings) = open_run_dir(config, paths, observer)?;
    for w in &warnings {
        observer.info(w);
    }
    let model = open_model::<B>(config, paths, resume_from.as_deref(), device, observer)?;
    let data = open_data(config, paths, observer)?;
    let digest = resume::DataDigest::of(&data.train.examples);
    if resume_from.is_some()
        && let Some(w) = resume::compare_data(state.data.as_ref(), &digest)
    {
        observer.info(&w);
    }
    state.data = Some(digest);
    let loader = Loader::new(
        &data.train.examples,
        loader_config(config, data.pad_id, config.seed),
    )?;
    let mut run = Run::<B> {
        config,
        paths,
        device,
        started,
        parameters: llama_model::parameter_counts(&model),
        valid_batches: validation_batches(config, &data.valid, data.pad_id)?,
        tokenizer: data.tokenizer,
        optimizer: AdamW::new(config.optimizer),
        state,
        resume_from,
        tensorboard: None,
    };
    if config.report_to.contains(&ReportTo::Tensorboard) {
        let writer = crate::tensorboard::EventWriter::create(&paths.run_dir.join("tensorboard"))?;
        observer.info(&format!("TensorBoard events: {}", writer.path().display()));
        run.tensorboard = Some(writer);
    }
    // Loop, evaluate, save, report.
    run.evaluate_before(&model, observer)?;
    run.resume(observer)?;
    let (model, interrupted) = run.train(model, &loader, observer, stop)?;
    let eval_after = run.evaluate_after(&model, observer)?;
    if !interrupted {
        run.save_final(&model, observer)?;
    }
    run.report(eval_after, interrupted)
}

/// The trainer state, the checkpoint resumed from and the warnings for what this run changed.
type RunStart = (TrainerState, Option<PathBuf>, Vec<String>);

/// Checks the configuration, finds the checkpoint to resume from (`paths.resume`) with its
/// trainer state (refusing settings that changed the shapes of its state, warning about those
/// that change the course of the run), or starts afresh, then writes the run directory's
/// `config.toml`. What a crash during a save left there (`.checkpoint-N.tmp` and other
/// temporaries) is removed first, with a log line.
fn open_run_dir(
    config: &TrainConfig,
    paths: &RunPaths,
    observer: &mut dyn Observer,
) -> Result<RunStart> {
    config.validate()?;
    let run_dir = &paths.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    for leftover in crate::files::clean_stale(run_dir)? {
        observer.info(&leftover.to_string());
    }
    let config_file = run_dir.join("config.toml");
    let (state, resume_from, warnings) = if paths.resume {
        let (dir, state) = checkpoint::newest(run_dir)?;
        // A file an older version wrote may not parse any more: then the settings are not
        // compared, with a warning, rather than the run refused.
        let previous = config_file
            .is_file()
            .then(|| TrainConfig::from_file(&config_file).ok())
            .flatten();
        let warnings = match resume::saved_config(&dir, previous) {
            Ok(Some(old)) => resume::compare(&old, config, &dir)?,
            Ok(None) => Vec::new(),
            Err(e) => vec![format!(
                "warning: the settings of {} cannot be compared with this run's: {e}",
                dir.display()
            )],
        };
        (state, Some(dir), warnings)
    } else {
        (TrainerState::default(), None, Vec::new())
    };
    write_atomic(&config_file, |tmp| std::fs::write(tmp, config.to_toml()))?;
    Ok((state, resume_from, warnings))
}

/// The model of the run: the base with fresh adapters, or the checkpoint's adapters (its full
/// weights for `method = full`) when resuming.
fn open_model<B: AutodiffBackend + QuantBackend>(
    config: &TrainConfig,
    paths: &RunPaths,
    resume_from: Option<&Path>,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Llama<B>> {
    let resumed;
    let source = match (resume_from, config.method) {
        (Some(dir), Method::Full) => {
            resumed = ModelSource::from_path(dir)?;
            &resumed
        }
        _ => &paths.model,
    };
    let adapter = resume_from.filter(|_| config.method != Method::Full);
    let model = setup::load_model::<B>(config, source, adapter, device)?;
    observer.info(&format!(
        "model {} ({:?}): {}",
        paths.model,
        config.method,
        llama_model::trainable_summary(&model)
    ));
    Ok(model)
}

/// The training and validation examples, tokenized.
fn open_data(
    config: &TrainConfig,
    paths: &RunPaths,
    observer: &mut dyn Observer,
) -> Result<Splits> {
    let data = setup::load_data(config, &paths.model)?;
    observer.info(&format!(
        "data: {} training examples ({} truncated, {} dropped), {} validation",
        data.train.len(),
        data.train.stats.truncated,
        data.train.stats.dropped,
        data.valid.len()
    ));
    Ok(data)
}

fn loader_config(config: &TrainConfig, pad_id: u32, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size: config.batch_size,
        seed,
        pad_id,
        packing: config.packing.then_some(config.max_seq_len),
        group_by_length: config.group_by_length,
        ..LoaderConfig::default()
    }
}

/// The batches every evaluation runs: the validation set in order, the first `eval_batches`.
fn validation_batches(config: &TrainConfig, valid: &Dataset, pad_id: u32) -> Result<Vec<Batch>> {
    if valid.is_empty() {
        return Ok(Vec::new());
    }
    let loader = Loader::new(
        &valid.examples,
        LoaderConfig {
            shuffle: false,
            ..loader_config(config, pad_id, 0)
        },
    )?;
    let n = loader.batches_per_epoch();
    let n = if config.eval_batches == 0 {
        n
    } else {
        n.min(config.eval_batches)
    };
    Ok(loader.epoch(0).take(n).collect())
}

/// What the phases of a run share: everything but the model (which each phase borrows, and
/// training takes and hands back) and the training data (which the loader borrows).
struct Run<'a, B: AutodiffBackend> {
    config: &'a TrainConfig,
    paths: &'a RunPaths,
    device: &'a B::Device,
    /// The start of this process's run (metrics' `elapsed_s`, the summary's `wall_s`).
    started: Instant,
    /// `(trainable, total)` parameters.
    parameters: (usize, usize),
    valid_batches: Vec<Batch>,
    tokenizer: LlamaTokenizer,
    optimizer: AdamW<B::InnerBackend>,
    state: TrainerState,
    /// The checkpoint this run resumed from.
    resume_from: Option<PathBuf>,
    /// TensorBoard's event file (`report_to = ["tensorboard"]`).
    tensorboard: Option<crate::tensorboard::EventWriter>,
}

impl<B> Run<'_, B>
where
    B: AutodiffBackend + QuantBackend,
    B::InnerBackend: QuantBackend,
{
    fn metrics_path(&self) -> PathBuf {
        self.paths.run_dir.join("metrics.jsonl")
    }

    /// Appends `line` to `metrics.jsonl` and, with TensorBoard on, its scalars to the event
    /// file (the names transformers' Trainer uses; `tokens_per_s` is the run's average so far).
    fn record(&mut self, line: &Metric, tokens_per_s: Option<f64>) -> Result<()> {
        report::append_metric(&self.metrics_path(), line)?;
        if let Some(tb) = self.tensorboard.as_mut() {
            let mut scalars = Vec::new();
            if line.kind == "eval" {
                scalars.push(("eval/loss", line.loss));
            } else {
                scalars.push(("train/loss", line.loss));
                scalars.extend(line.lr.map(|v| ("train/learning_rate", v)));
                scalars.extend(line.grad_norm.map(|v| ("train/grad_norm", v)));
                scalars.extend(tokens_per_s.map(|v| ("train/tokens_per_s", v)));
            }
            tb.scalars(line.step, &scalars)?;
        }
        Ok(())
    }

    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Where the trained weights go: `adapter/`, or `model/` for `method = full`.
    fn output_dir(&self) -> PathBuf {
        self.paths
            .run_dir
            .join(if self.config.method == Method::Full {
                "model"
            } else {
                "adapter"
            })
    }

    fn validation_loss(&self, model: &Llama<B>) -> Option<f64> {
        evaluate(&model.clone().valid(), &self.valid_batches)
    }

    /// Greedy answers to the configured sample prompts, one `label | prompt -> answer` line each.
    fn show_samples(
        &self,
        model: &Llama<B>,
        observer: &mut dyn Observer,
        label: &str,
    ) -> Result<()> {
        let prompts = &self.config.sample_prompts;
        // A sample that cannot be produced (NaN logits after a diverged step, a prompt longer
        // than the context) is reported and does not stop the run before its weights are saved.
        match sample(
            &model.clone().valid(),
            &self.tokenizer,
            prompts,
            self.config.sample_tokens,
        ) {
            Ok(answers) => {
                for (p, a) in prompts.iter().zip(answers) {
                    observer.info(&format!("{label} | {p} -> {a}"));
                }
            }
            Err(e) => observer.info(&format!("{label} | samples skipped: {e}")),
        }
        Ok(())
    }

    /// A checkpoint of the current step.
    fn checkpoint(&self, model: &Llama<B>) -> Result<PathBuf> {
        checkpoint::save(
            &self.paths.run_dir,
            model,
            &self.optimizer,
            &self.state,
            self.config,
            self.paths.model.path(),
        )
    }

    /// Before training (a fresh run only): the validation loss and the sample answers.
    fn evaluate_before(&mut self, model: &Llama<B>, observer: &mut dyn Observer) -> Result<()> {
        if self.state.eval_loss_before.is_some() || self.resume_from.is_some() {
            return Ok(());
        }
        self.state.eval_loss_before = self.validation_loss(model);
        if let Some(l) = self.state.eval_loss_before {
            observer.info(&format!(
                "validation loss before: {l:.4} (perplexity {:.2})",
                l.exp()
            ));
            observer.eval(0, l);
            // Step 0 in TensorBoard; `metrics.jsonl` keeps it in the summary instead.
            if let Some(tb) = self.tensorboard.as_mut() {
                tb.scalars(0, &[("eval/loss", l)])?;
            }
        }
        self.show_samples(model, observer, "before")
    }

    /// Picks up where the checkpoint stopped: the metrics after its step dropped, the optimizer
    /// state loaded (a fresh run: an empty `metrics.jsonl`).
    fn resume(&mut self, observer: &mut dyn Observer) -> Result<()> {
        report::keep_metrics(&self.metrics_path(), self.state.step)?;
        if let Some(dir) = &self.resume_from {
            self.optimizer
                .load(&dir.join("optimizer.safetensors"), self.device)?;
            observer.info(&format!(
                "resumed from {} (step {})",
                dir.display(),
                self.state.step
            ));
        }
        Ok(())
    }

    /// Optimizer steps up to `max_steps`, or until `stop` (then a checkpoint is saved). Returns
    /// the trained model and whether it was interrupted.
    fn train(
        &mut self,
        mut model: Llama<B>,
        loader: &Loader,
        observer: &mut dyn Observer,
        stop: &AtomicBool,
    ) -> Result<(Llama<B>, bool)> {
        let schedule = Schedule {
            kind: self.config.schedule,
            warmup_steps: self.config.warmup_steps,
            total_steps: self.config.max_steps,
        };
        let mut batches = loader.resume(self.state.position);
        let (train_start, train_before) = (Instant::now(), self.state.train_seconds);
        while self.state.step < self.config.max_steps {
            if stop.load(Ordering::Relaxed) {
                let dir = self.checkpoint(&model)?;
                observer.info(&format!("interrupted: saved {}", dir.display()));
                return Ok((model, true));
            }
            let window: Vec<Batch> = batches.by_ref().take(self.config.grad_accum).collect();
            let stats;
            (model, stats) = self.step(model, &window, &schedule)?;
            self.check_finite(&stats, observer)?;
            self.state.step += 1;
            self.state.position = batches.position();
            self.state.tokens += stats.tokens;
            self.state.train_seconds = train_before + train_start.elapsed().as_secs_f64();
            let tps = self.state.tokens as f64 / self.state.train_seconds.max(1e-9);
            observer.step(self.state.step, self.config.max_steps, &stats, tps);
            let line = Metric::train(self.state.step, &stats, self.elapsed_s());
            self.record(&line, Some(tps))?;
            self.evaluate_and_save_periodically(&model, observer)?;
        }
        Ok((model, false))
    }

    /// One optimizer step over the micro-batches of `window`; out-of-memory becomes an error
    /// naming the sizes and what to change.
    fn step(
        &mut self,
        model: Llama<B>,
        window: &[Batch],
        schedule: &Schedule,
    ) -> Result<(Llama<B>, StepStats)> {
        let (config, step) = (self.config, self.state.step);
        // Dropout draws from the backend's generator: seeding it per step makes a resumed run
        // draw what the uninterrupted one drew.
        B::seed(self.device, config.seed.wrapping_add(step));
        let options = StepOptions {
            lr: config.optimizer.lr * schedule.factor(step),
            max_grad_norm: (config.max_grad_norm > 0.0).then_some(config.max_grad_norm),
            gradient_checkpointing: config.gradient_checkpointing,
            seed: config.seed.wrapping_add(step),
        };
        let optimizer = &mut self.optimizer;
        crate::oom::catch_out_of_memory(
            || train_step(model, window, optimizer, &options),
            |reason| out_of_memory_advice(config, window, step + 1, reason),
        )
        .map_err(Error::OutOfMemory)
    }

    /// A non-finite loss or gradient (the update was not applied): stop with an error, or count
    /// the step as skipped, as `on_non_finite` says.
    fn check_finite(&mut self, stats: &StepStats, observer: &mut dyn Observer) -> Result<()> {
        if stats.finite {
            return Ok(());
        }
        match self.config.on_non_finite {
            OnNonFinite::Stop => {
                let last = checkpoint::checkpoints(&self.paths.run_dir)
                    .pop()
                    .map_or("none".into(), |(_, d)| d.display().to_string());
                Err(Error::NonFinite(format!(
                    "step {}: loss {} / gradient norm {} is not finite; stopped without updating (last checkpoint: {last}). Lower the learning rate, or set on_non_finite = \"skip\"",
                    self.state.step + 1,
                    stats.loss,
                    stats.grad_norm
                )))
            }
            OnNonFinite::Skip => {
                self.state.skipped_steps += 1;
                observer.info(&format!(
                    "step {}: non-finite loss or gradient, update skipped",
                    self.state.step + 1
                ));
                Ok(())
            }
        }
    }

    /// Every `eval_every` steps the validation loss and samples, every `save_every` steps a
    /// checkpoint (not at the last step: the end of the run does both).
    fn evaluate_and_save_periodically(
        &mut self,
        model: &Llama<B>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let (config, step) = (self.config, self.state.step);
        let due = |every: u64| every > 0 && step % every == 0 && step < config.max_steps;
        if due(config.eval_every) {
            if let Some(l) = self.validation_loss(model) {
                observer.info(&format!(
                    "step {step}: validation loss {l:.4} (perplexity {:.2})",
                    l.exp()
                ));
                let line = Metric::eval(step, l, self.elapsed_s());
                self.record(&line, None)?;
                observer.eval(step, l);
            }
            self.show_samples(model, observer, &format!("step {step}"))?;
        }
        if due(config.save_every) {
            let dir = self.checkpoint(model)?;
            observer.info(&format!("saved {}", dir.display()));
        }
        Ok(())
    }

    /// After training: the validation loss (also when interrupted).
    fn evaluate_after(
        &mut self,
        model: &Llama<B>,
        observer: &mut dyn Observer,
    ) -> Result<Option<f64>> {
        let loss = self.validation_loss(model);
        if let Some(l) = loss {
            observer.info(&format!(
                "validation loss after: {l:.4} (perplexity {:.2})",
                l.exp()
            ));
            let line = Metric::eval(self.state.step, l, self.elapsed_s());
            self.record(&line, None)?;
            observer.eval(self.state.step, l);
        }
        Ok(loss)
    }

    /// The end of a finished run: sample answers, the last checkpoint, and the adapter (or
    /// model) directory.
    fn save_final(&self, model: &Llama<B>, observer: &mut dyn Observer) -> Result<()> {
        self.show_samples(model, observer, "after ")?;
        let dir = self.checkpoint(model)?;
        let out = self.output_dir();
        checkpoint::save_final_weights(model, self.config, self.paths.model.path(), &out)?;
        observer.info(&format!("wrote {} (and {})", out.display(), dir.display()));
        Ok(())
    }

    /// The summary, the model card beside a finished run's weights, `loss.png` and
    /// `summary.json`.
    fn report(self, eval_after: Option<f64>, interrupted: bool) -> Result<Summary> {
        let state = &self.state;
        let summary = Summary {
            steps: state.step,
            tokens: state.tokens,
            wall_s: self.elapsed_s(),
            train_s: state.train_seconds,
            tokens_per_s: state.tokens as f64 / state.train_seconds.max(1e-9),
            peak_rss_bytes: report::peak_rss_bytes(),
            eval_loss_before: state.eval_loss_before,
            eval_loss_after: eval_after,
            skipped_steps: state.skipped_steps,
            parameters: self.parameters,
            interrupted,
            resumed_from: self.resume_from.clone(),
        };
        if !interrupted {
            let card = crate::card::model_card(self.config, &self.config.model, &summary);
            write_atomic(&self.output_dir().join("README.md"), |tmp| {
                std::fs::write(tmp, card)
            })?;
        }
        report::write_summary(&self.paths.run_dir, &summary)?;
        Ok(summary)
    }
}
