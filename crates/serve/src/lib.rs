//! `serve`: an OpenAI-compatible HTTP server over one loaded Llama model and any number of LoRA
//! adapters on top of it.
//!
//! - `POST /v1/chat/completions` (the model's chat template), `POST /v1/completions`,
//!   `GET /v1/models`, `GET /health`; `stream: true` answers as server-sent events ending in
//!   `data: [DONE]`.
//! - The base model and each adapter are separate `model` names over the same weights; the
//!   adapter is switched per decoding step, never reloaded.
//! - Requests are decoded together with continuous batching ([`engine`]): new requests join the
//!   running batch between decoding steps; a bounded queue answers 429 when it is full.
//!
//! The HTTP side runs on tokio (axum); the model lives on one engine thread, so any burn
//! backend works, including those whose tensors are not `Sync`.

pub mod api;
pub mod engine;
mod http;
pub mod text;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use llama_model::{Llama, set_active_adapter};
use llama_tokenizer::LlamaTokenizer;
use quant::QuantBackend;

pub use engine::{EngineConfig, Event, Finish};

/// A name clients use in `model`, and the adapter it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    /// The `model` value.
    pub name: String,
    /// The adapter loaded under that name on the model (`None`: the base model).
    pub adapter: Option<String>,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most answers decoded together.
    pub max_batch: usize,
    /// Most requests' choices waiting to join the batch; more get 429.
    pub queue: usize,
    /// Most positions (prompt + answer) of one answer.
    pub context: usize,
    /// Tokens that end an answer.
    pub eos_token_ids: Vec<u32>,
    /// Stop on Ctrl-C (SIGINT) or SIGTERM, after the answers under way have ended.
    pub stop_on_signal: bool,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    engine: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `model` (with its adapters already loaded under the names in `names`) on
    /// `listener`, and returns at once.
    ///
    /// # Errors
    /// When the listener cannot be used by tokio, or `names` is empty or names an adapter twice.
    pub fn start<B: QuantBackend>(
        mut model: Llama<B>,
        tokenizer: LlamaTokenizer,
        names: Vec<ModelName>,
        options: ServeOptions,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        if names.is_empty() {
            return Err(invalid("serve: no model name to serve".into()));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].iter().any(|m| m.name == n.name) {
                return Err(invalid(format!(
                    "serve: model name `{}` given twice",
                    n.name
                )));
            }
        }
        if options.max_batch == 0 || options.context < 2 {
            return Err(invalid(format!(
                "serve: max_batch {} and context {}: expected at least 1 and 2",
                options.max_batch, options.context
            )));
        }
        set_active_adapter(&mut model, None);
        let vocab_size = model.config().vocab_size;
        let tokenizer = Arc::new(tokenizer);
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let engine = engine::Engine::new(
            model,
            tokenizer.clone(),
            EngineConfig {
                max_batch: options.max_batch,
                context: options.context,
                eos_token_ids: options.eos_token_ids.clone(),
            },
            waiting.clone(),
            running.clone(),
            peak.clone(),
        );
        let engine = std::thread::Builder::new()
            .name("serve-engine".into())
            .spawn(move || engine.run(jobs_rx))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = http::State::new(
            names,
            tokenizer,
            jobs_tx,
            [waiting, running, peak],
            &options,
            vocab_size,
        );
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let stop_on_signal = options.stop_on_signal;
        let http = std::thread::Builder::new()
            .name("serve-http".into())
            .spawn(move || http::serve(listener, state, shutdown_rx, stop_on_signal))?;
        Ok(Self {
            addr,
            shutdown: Some(shutdown_tx),
            http: Some(http),
            engine: Some(engine),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections, lets the answers under way end, and returns.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    /// Waits until the server stops (on a signal, with `stop_on_signal`).
    pub fn wait(mut self) -> std::io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> std::io::Result<()> {
        let http = self.http.take().map(|h| h.join());
        // The HTTP side held the only job sender: the engine ends after the last answer.
        let engine = self.engine.take().map(|h| h.join());
        if let Some(Err(_)) = engine {
            return Err(std::io::Error::other("the serve engine thread panicked"));
        }
        match http {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the HTTP thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            let _ = self.join();
        }
    }
}
