//! The decoding engine: one thread owns the model and runs every answer being generated.
//!
//! Continuous batching: the answers of one model name (the base, or one adapter over it) share
//! one batched decoding step. A new request is prefilled alone, between two steps, and its
//! keys/values then join the running batch's cache: the rows share the cache's position axis,
//! so a shorter history is left-padded (masked) and a longer one makes room by padding the
//! others. A row leaves the batch as soon as it ends or its client goes away, and positions no
//! row needs any more are dropped when the cache is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

use burn::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use llama_model::{KvCache, Llama, ModelInput, Sampler, SamplingConfig, set_active_adapter};
use llama_tokenizer::LlamaTokenizer;
use quant::QuantBackend;

use crate::text::TextStream;

/// Why an answer ended, as OpenAI's `finish_reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl Finish {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What the engine reports about one choice.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text of choice `choice`.
    Text {
        /// The choice's index.
        choice: usize,
        /// New text.
        text: String,
    },
    /// Choice `choice` ended after `tokens` generated tokens.
    Done {
        /// The choice's index.
        choice: usize,
        /// Why.
        finish: Finish,
        /// Tokens generated (the end token included).
        tokens: usize,
    },
    /// Choice `choice` failed.
    Failed {
        /// The choice's index.
        choice: usize,
        /// What happened.
        message: String,
    },
}

/// One answer to generate.
#[derive(Debug)]
pub struct Job {
    /// The adapter to run (`None`: the base model).
    pub adapter: Option<String>,
    /// Prompt tokens (not empty; prompt + `max_tokens` fit the context).
    pub prompt: Vec<u32>,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Sampler of this choice.
    pub sampling: SamplingConfig,
    /// Stop strings.
    pub stop: Vec<String>,
    /// The choice's index in its request.
    pub choice: usize,
    /// Where its events go; when the receiver is gone the answer is dropped.
    pub events: UnboundedSender<Event>,
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most rows decoded together (over all model names).
    pub max_batch: usize,
    /// Most positions (prompt + answer) of one row.
    pub context: usize,
    /// Tokens that end an answer.
    pub eos_token_ids: Vec<u32>,
}

struct Row {
    job: Job,
    /// 1 where this row has a cached position, 0 for padding.
    mask: Vec<i64>,
    tokens: Vec<u32>,
    sampler: Sampler,
    text: TextStream,
}

struct Batch<B: Backend> {
    adapter: Option<String>,
    cache: Option<KvCache<B>>,
    rows: Vec<Row>,
}

/// The engine; [`Engine::run`] consumes it on its own thread.
pub struct Engine<B: QuantBackend> {
    model: Llama<B>,
    tokenizer: Arc<LlamaTokenizer>,
    config: EngineConfig,
    batches: Vec<Batch<B>>,
    active_adapter: Option<Option<String>>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// How a row goes on after a token.
enum Next {
    Continue,
    End(Finish),
    Gone,
}

impl<B: QuantBackend> Engine<B> {
    /// An engine over `model` (with its adapters loaded under their names); `waiting` counts
    /// the jobs sent and not yet taken, the engine keeps the number of answers under way in
    /// `running` and the most rows one decoding step has run in `peak`.
    pub fn new(
        model: Llama<B>,
        tokenizer: Arc<LlamaTokenizer>,
        config: EngineConfig,
        waiting: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            config,
            batches: Vec::new(),
            active_adapter: None,
            waiting,
            running,
            peak,
        }
    }

    fn active_rows(&self) -> usize {
        self.batches.iter().map(|b| b.rows.len()).sum()
    }

    /// Serves jobs until every sender of `jobs` is gone and every answer has ended.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        loop {
            if self.active_rows() == 0 {
                self.running.store(0, Ordering::SeqCst);
                if !open {
                    return;
                }
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while open && self.active_rows() < self.config.max_batch {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            for i in 0..self.batches.len() {
                self.step(i);
            }
            self.batches.retain(|b| !b.rows.is_empty());
            self.running.store(self.active_rows(), Ordering::SeqCst);
        }
    }

    fn activate(&mut self, adapter: &Option<String>) {
        if self.active_adapter.as_ref() != Some(adapter) {
            set_active_adapter(&mut self.model, adapter.as_deref());
            self.active_adapter = Some(adapter.clone());
        }
    }

    /// Prefills `job`'s prompt alone, picks its first token, and adds it to its model's batch.
    fn admit(&mut self, job: Job) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if job.events.is_closed() {
            return;
        }
        self.activate(&job.adapter);
        let device = self.model.embed_tokens.device();
        let p = job.prompt.len();
        let ids: Vec<i64> = job.prompt.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, p]), &device);
        let mut cache = KvCache::new(self.model.config(), 1, p, &device);
        let hidden = self
            .model
            .forward_hidden(ModelInput::new(ids), Some(&mut cache));
        let h = hidden.dims()[2];
        let logits = self.model.logits(hidden.slice([0..1, p - 1..p, 0..h]));
        let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
        let mut row = Row {
            mask: vec![1; p],
            tokens: Vec::new(),
            sampler: Sampler::new(job.sampling.clone()),
            text: TextStream::new(job.stop.clone()),
            job,
        };
        match self.choose(&mut row, &values) {
            Next::Continue => {}
            Next::End(finish) => return Self::end(&row, finish),
            Next::Gone => return,
        }
        let adapter = row.job.adapter.clone();
        let at = match self.batches.iter().position(|b| b.adapter == adapter) {
            Some(at) => at,
            None => {
                self.batches.push(Batch {
                    adapter,
                    cache: None,
                    rows: Vec::new(),
                });
                self.batches.len() - 1
            }
        };
        let batch = &mut self.batches[at];
        match batch.cache.as_mut() {
            None => batch.cache = Some(cache),
            Some(shared) => {
                let len = shared.len();
                if p > len {
                    // The new history is the longest: pad every running row in front.
                    let pad = p - len;
                    let capacity = shared.capacity().max(p);
                    shared.relayout(0, pad, capacity);
                    for r in &mut batch.rows {
                        r.mask.splice(0..0, std::iter::repeat_n(0, pad));
                    }
                }
                let len = shared.len();
                cache.relayout(0, len - p, shared.capacity());
                row.mask.splice(0..0, std::iter::repeat_n(0, len - p));
                shared.append_rows(cache);
            }
        }
        batch.rows.push(row);
    }

    /// One decoding step of batch `i`.
    fn step(&mut self, i: usize) {
        let adapter = self.batches[i].adapter.clone();
        self.activate(&adapter);
        let context = self.config.context;
        let batch = &mut self.batches[i];
        let Some(cache) = batch.cache.as_mut() else {
            return;
        };
        let len = cache.len();
        if len + 1 > cache.capacity() {
            if len + 1 > context {
                // Every row is shorter than the context (prompt + max_tokens fit it), so every
                // row has padding in front: drop the positions no row uses.
                let drop = batch
                    .rows
                    .iter()
                    .map(|r| r.mask.iter().take_while(|&&m| m == 0).count())
                    .min()
                    .unwrap_or(0);
                cache.relayout(drop, 0, cache.capacity());
                for r in &mut batch.rows {
                    r.mask.drain(..drop);
                }
            } else {
                let capacity = (2 * cache.capacity()).max(len + 1).min(context);
                cache.relayout(0, 0, capacity);
            }
        }
        let b = batch.rows.len();
        self.peak.fetch_max(b, Ordering::SeqCst);
        let t = cache.len() + 1;
        let device = self.model.embed_tokens.device();
        let ids: Vec<i64> = batch
            .rows
            .iter()
            .map(|r| *r.tokens.last().expect("a running row has a token") as i64)
            .collect();
        let mut padded = false;
        let mut mask = Vec::with_capacity(b * t);
        for r in &mut batch.rows {
            r.mask.push(1);
            padded |= r.mask.contains(&0);
            mask.extend_from_slice(&r.mask);
        }
        let mut input = ModelInput::new(Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids, [b, 1]),
            &device,
        ));
        if padded {
            input = input.with_mask(Tensor::from_data(TensorData::new(mask, [b, t]), &device));
        }
        let hidden = self.model.forward_hidden(input, Some(cache));
        let values: Vec<f32> = self
            .model
            .logits(hidden)
            .into_data()
            .iter::<f32>()
            .collect();
        let vocab = values.len() / b;
        let rows = std::mem::take(&mut self.batches[i].rows);
        let mut kept = Vec::with_capacity(b);
        let mut keep_index = Vec::with_capacity(b);
        for (r, mut row) in rows.into_iter().enumerate() {
            match self.choose(&mut row, &values[r * vocab..(r + 1) * vocab]) {
                Next::Continue => {
                    kept.push(row);
                    keep_index.push(r);
                }
                Next::End(finish) => Self::end(&row, finish),
                Next::Gone => {}
            }
        }
        let batch = &mut self.batches[i];
        if kept.is_empty() {
            batch.cache = None;
        } else if kept.len() < b
            && let Some(cache) = batch.cache.as_mut()
        {
            cache.select_rows(&keep_index);
        }
        batch.rows = kept;
    }

    /// Picks `row`'s next token from its logits and sends the text it adds.
    fn choose(&self, row: &mut Row, logits: &[f32]) -> Next {
        if logits.iter().any(|v| !v.is_finite()) {
            let _ = row.job.events.send(Event::Failed {
                choice: row.job.choice,
                message: format!(
                    "the model produced non-finite logits after {} tokens",
                    row.tokens.len()
                ),
            });
            return Next::Gone;
        }
        let token = row.sampler.sample(logits);
        row.tokens.push(token);
        let choice = row.job.choice;
        let send = |row: &Row, text: String| {
            text.is_empty() || row.job.events.send(Event::Text { choice, text }).is_ok()
        };
        let ended = self.config.eos_token_ids.contains(&token);
        let text = match self.tokenizer.decode(&row.tokens, true) {
            Ok(text) => text,
            Err(e) => {
                let _ = row.job.events.send(Event::Failed {
                    choice,
                    message: format!("decoding the generated tokens: {e}"),
                });
                return Next::Gone;
            }
        };
        if ended {
            let rest = row.text.finish(&text);
            return if send(row, rest) {
                Next::End(Finish::Stop)
            } else {
                Next::Gone
            };
        }
        let delta = row.text.update(&text);
        if !send(row, delta.text) {
            return Next::Gone;
        }
        if delta.stopped {
            return Next::End(Finish::Stop);
        }
        if row.tokens.len() >= row.job.max_tokens
            || row.job.prompt.len() + row.tokens.len() >= self.config.context
        {
            let rest = row.text.finish(&text);
            return if send(row, rest) {
                Next::End(Finish::Length)
            } else {
                Next::Gone
            };
        }
        if row.job.events.is_closed() {
            return Next::Gone;
        }
        Next::Continue
    }

    fn end(row: &Row, finish: Finish) {
        let _ = row.job.events.send(Event::Done {
            choice: row.job.choice,
            finish,
            tokens: row.tokens.len(),
        });
    }
}
