//! The HTTP side: routes, request checks, and turning engine events into OpenAI responses.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use llama_tokenizer::LlamaTokenizer;

use crate::api::{self, ApiError, ChatRequest, CompletionRequest, Settings};
use crate::engine::{Event, Job};
use crate::{ModelName, ServeOptions};

pub(crate) struct State {
    names: Vec<ModelName>,
    tokenizer: Arc<LlamaTokenizer>,
    jobs: Sender<Job>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    queue: usize,
    context: usize,
    vocab_size: usize,
    created: u64,
    next_id: AtomicU64,
}

impl State {
    pub(crate) fn new(
        names: Vec<ModelName>,
        tokenizer: Arc<LlamaTokenizer>,
        jobs: Sender<Job>,
        [waiting, running, peak]: [Arc<AtomicUsize>; 3],
        options: &ServeOptions,
        vocab_size: usize,
    ) -> Self {
        Self {
            names,
            tokenizer,
            jobs,
            waiting,
            running,
            peak,
            queue: options.queue,
            context: options.context,
            vocab_size,
            created: now(),
            next_id: AtomicU64::new(1),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the HTTP server until `shutdown` fires (or a signal, with `stop_on_signal`), then waits
/// for the requests under way.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    state: State,
    shutdown: tokio::sync::oneshot::Receiver<()>,
    stop_on_signal: bool,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new()
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .fallback(not_found)
            .with_state(Arc::new(state));
        let stop = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = signal(stop_on_signal) => {
                    eprintln!("serve: stopping after the answers under way (Ctrl-C again to kill)");
                }
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    })
}

async fn signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.body())).into_response()
}

fn server_error(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 500,
        message: message.into(),
        param: None,
        kind: "server_error",
        code: None,
    }
}

/// `{"status": "ok", "running": answers being decoded, "waiting": answers queued,
/// "peak_batch": most answers one decoding step has run}`.
async fn health(Extract(st): Extract<Arc<State>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "running": st.running.load(Ordering::SeqCst),
        "waiting": st.waiting.load(Ordering::SeqCst),
        "peak_batch": st.peak.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(ApiError {
        status: 404,
        message: format!(
            "no route {method} {uri}: this server has GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions"
        ),
        param: None,
        kind: "invalid_request_error",
        code: Some("not_found"),
    })
}

async fn models(Extract(st): Extract<Arc<State>>) -> Response {
    let data: Vec<Value> = st
        .names
        .iter()
        .map(|n| {
            json!({
                "id": n.name,
                "object": "model",
                "created": st.created,
                "owned_by": "llama-rs",
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Which endpoint an answer is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// A request handed to the engine, waiting for its events.
struct Pending {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    n: usize,
    prompt_tokens: usize,
    stream: bool,
    include_usage: bool,
    events: UnboundedReceiver<Event>,
}

async fn chat(Extract(st): Extract<Arc<State>>, body: Bytes) -> Response {
    let pending = (|| {
        let req: ChatRequest = api::parse(&body)?;
        let settings = req.params.check(st.fresh_seed())?;
        let adapter = st.adapter_of(&req.model)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages: expected at least one message",
            ));
        }
        let messages = req
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.to_message(i))
            .collect::<Result<Vec<_>, _>>()?;
        if st.tokenizer.chat_template().is_none() {
            return Err(ApiError::invalid(
                "messages",
                "this model's tokenizer has no chat_template: use /v1/completions",
            ));
        }
        let prompt = st
            .tokenizer
            .encode_chat(&messages, true)
            .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))?;
        st.submit(
            Kind::Chat,
            &req.model,
            adapter,
            prompt,
            "messages",
            settings,
        )
    })();
    match pending {
        Ok(p) => p.respond().await,
        Err(e) => error(e),
    }
}

async fn completions(Extract(st): Extract<Arc<State>>, body: Bytes) -> Response {
    let pending = (|| {
        let req: CompletionRequest = api::parse(&body)?;
        let settings = req.params.check(st.fresh_seed())?;
        let adapter = st.adapter_of(&req.model)?;
        let text = req.prompt.text()?;
        let prompt = st
            .tokenizer
            .encode(text, true)
            .map_err(|e| ApiError::invalid("prompt", format!("tokenizing the prompt: {e}")))?;
        st.submit(
            Kind::Completion,
            &req.model,
            adapter,
            prompt,
            "prompt",
            settings,
        )
    })();
    match pending {
        Ok(p) => p.respond().await,
        Err(e) => error(e),
    }
}

impl State {
    fn fresh_seed(&self) -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ self.next_id.load(Ordering::Relaxed).rotate_left(32)
    }

    fn adapter_of(&self, model: &str) -> Result<Option<String>, ApiError> {
        match self.names.iter().find(|n| n.name == model) {
            Some(n) => Ok(n.adapter.clone()),
            None => {
                let names: Vec<&str> = self.names.iter().map(|n| n.name.as_str()).collect();
                Err(ApiError {
                    status: 404,
                    message: format!(
                        "The model `{model}` does not exist; this server has: {}",
                        names.join(", ")
                    ),
                    param: Some("model".into()),
                    kind: "invalid_request_error",
                    code: Some("model_not_found"),
                })
            }
        }
    }

    /// Checks the lengths, reserves room in the queue and sends one job per choice.
    fn submit(
        &self,
        kind: Kind,
        model: &str,
        adapter: Option<String>,
        prompt: Vec<u32>,
        prompt_param: &str,
        settings: Settings,
    ) -> Result<Pending, ApiError> {
        let p = prompt.len();
        if p == 0 {
            return Err(ApiError::invalid(
                prompt_param,
                format!("{prompt_param}: the prompt is empty (0 tokens)"),
            ));
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(ApiError::invalid(
                prompt_param,
                format!(
                    "{prompt_param}: token id {bad} is outside the model's vocabulary of {}",
                    self.vocab_size
                ),
            ));
        }
        if p >= self.context {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::invalid(
                    prompt_param,
                    format!(
                        "This model's maximum context length is {} tokens; the prompt has {p} tokens, which leaves no room for an answer",
                        self.context
                    ),
                )
            });
        }
        let max_tokens = settings.max_tokens.unwrap_or(self.context - p);
        if p + max_tokens > self.context {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::invalid(
                    "max_tokens",
                    format!(
                        "This model's maximum context length is {} tokens; the prompt has {p} tokens and max_tokens is {max_tokens} ({} in all)",
                        self.context,
                        p + max_tokens
                    ),
                )
            });
        }
        let n = settings.n;
        let reserved = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w + n <= self.queue).then_some(w + n)
            });
        if reserved.is_err() {
            return Err(ApiError {
                status: 429,
                message: format!(
                    "the queue is full ({} answers waiting to start): try again later",
                    self.queue
                ),
                param: None,
                kind: "rate_limit_error",
                code: Some("queue_full"),
            });
        }
        let (tx, rx) = unbounded_channel();
        for choice in 0..n {
            let mut sampling = settings.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(choice as u64);
            let job = Job {
                adapter: adapter.clone(),
                prompt: prompt.clone(),
                max_tokens,
                sampling,
                stop: settings.stop.clone(),
                choice,
                events: tx.clone(),
            };
            if self.jobs.send(job).is_err() {
                self.waiting.fetch_sub(n - choice, Ordering::SeqCst);
                return Err(server_error("the decoding engine has stopped"));
            }
        }
        let number = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = match kind {
            Kind::Chat => format!("chatcmpl-{number}"),
            Kind::Completion => format!("cmpl-{number}"),
        };
        Ok(Pending {
            kind,
            id,
            model: model.to_string(),
            created: now(),
            n,
            prompt_tokens: p,
            stream: settings.stream,
            include_usage: settings.include_usage,
            events: rx,
        })
    }
}

impl Pending {
    fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn object(&self) -> &'static str {
        match (self.kind, self.stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    async fn respond(self) -> Response {
        if self.stream {
            return self.stream_response();
        }
        let mut pending = self;
        let n = pending.n;
        let mut texts = vec![String::new(); n];
        let mut finishes: Vec<Option<&'static str>> = vec![None; n];
        let mut completion = 0;
        while finishes.iter().any(Option::is_none) {
            match pending.events.recv().await {
                Some(Event::Text { choice, text }) => texts[choice].push_str(&text),
                Some(Event::Done {
                    choice,
                    finish,
                    tokens,
                }) => {
                    finishes[choice] = Some(finish.as_str());
                    completion += tokens;
                }
                Some(Event::Failed { message, .. }) => return error(server_error(message)),
                None => return error(server_error("the decoding engine stopped")),
            }
        }
        let choices: Vec<Value> = (0..n)
            .map(|i| match pending.kind {
                Kind::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": null,
                    "finish_reason": finishes[i],
                }),
                Kind::Completion => json!({
                    "index": i,
                    "text": texts[i],
                    "logprobs": null,
                    "finish_reason": finishes[i],
                }),
            })
            .collect();
        axum::Json(json!({
            "id": pending.id,
            "object": pending.object(),
            "created": pending.created,
            "model": pending.model,
            "system_fingerprint": null,
            "choices": choices,
            "usage": pending.usage(completion),
        }))
        .into_response()
    }

    /// One chunk with `choices` (and `usage: null` when the usage chunk comes at the end).
    fn chunk(&self, choices: Value) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }

    fn text_chunk(&self, choice: usize, text: &str, finish: Option<&str>) -> String {
        let body = match self.kind {
            Kind::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!([{"index": choice, "delta": delta, "logprobs": null, "finish_reason": finish}])
            }
            Kind::Completion => {
                json!([{"index": choice, "text": text, "logprobs": null, "finish_reason": finish}])
            }
        };
        self.chunk(body)
    }

    fn stream_response(self) -> Response {
        let mut queued = VecDeque::new();
        if self.kind == Kind::Chat {
            for i in 0..self.n {
                queued.push_back(self.chunk(json!([{
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": null,
                }])));
            }
        }
        let state = StreamState {
            done: vec![false; self.n],
            completion: 0,
            queued,
            finished: false,
            pending: self,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(data) = st.queued.pop_front() {
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), st));
                }
                if st.finished {
                    return None;
                }
                let event = st.pending.events.recv().await;
                st.handle(event);
            }
        });
        Sse::new(stream).into_response()
    }
}

struct StreamState {
    pending: Pending,
    done: Vec<bool>,
    completion: usize,
    queued: VecDeque<String>,
    finished: bool,
}

impl StreamState {
    fn handle(&mut self, event: Option<Event>) {
        match event {
            Some(Event::Text { choice, text }) => {
                let chunk = self.pending.text_chunk(choice, &text, None);
                self.queued.push_back(chunk);
            }
            Some(Event::Done {
                choice,
                finish,
                tokens,
            }) => {
                self.done[choice] = true;
                self.completion += tokens;
                let chunk = self.pending.text_chunk(choice, "", Some(finish.as_str()));
                self.queued.push_back(chunk);
                if self.done.iter().all(|&d| d) {
                    if self.pending.include_usage {
                        let mut last = json!({
                            "id": self.pending.id,
                            "object": self.pending.object(),
                            "created": self.pending.created,
                            "model": self.pending.model,
                            "system_fingerprint": null,
                            "choices": [],
                        });
                        last["usage"] = self.pending.usage(self.completion);
                        self.queued.push_back(last.to_string());
                    }
                    self.end();
                }
            }
            Some(Event::Failed { message, .. }) => {
                self.queued
                    .push_back(server_error(message).body().to_string());
                self.end();
            }
            None => {
                self.queued.push_back(
                    server_error("the decoding engine stopped")
                        .body()
                        .to_string(),
                );
                self.end();
            }
        }
    }

    fn end(&mut self) {
        self.queued.push_back("[DONE]".into());
        self.finished = true;
    }
}
