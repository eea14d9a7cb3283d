//! The server over HTTP, with a real client (reqwest): the OpenAI response shapes, streaming,
//! continuous batching against one-at-a-time decoding and `llama_model::generate`, adapters as
//! model names over one base, the queue bound, disconnects and bad requests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn_flex::Flex;
use serde_json::{Value, json};

use llama_model::{GenerationConfig, Llama, LlamaConfig, ModelSource, SamplingConfig, generate};
use llama_tokenizer::{LlamaTokenizer, Message};
use serve::{ModelName, ServeOptions, Server};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../llama-model/tests/fixtures/models")
        .join(name)
}

fn adapter_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../peft/tests/fixtures")
        .join(name)
}

fn options(max_batch: usize, queue: usize, context: usize) -> ServeOptions {
    ServeOptions {
        max_batch,
        queue,
        context,
        // The fixtures' end tokens are left out so that answers run to max_tokens and the
        // lengths under test are the ones asked for.
        eos_token_ids: Vec::new(),
        stop_on_signal: false,
    }
}

/// The fixture model `name` with the adapters `(model name, fixture)` loaded.
fn load(name: &str, adapters: &[(&str, &str)]) -> (Llama<B>, LlamaTokenizer) {
    let source = ModelSource::from_path(fixture(name)).unwrap();
    let mut model = source.load::<B>(&Default::default()).unwrap();
    for (as_name, dir) in adapters {
        llama_model::load_named_adapter(&mut model, adapter_fixture(dir), as_name).unwrap();
    }
    (model, source.tokenizer().unwrap())
}

fn start(
    model: Llama<B>,
    tokenizer: LlamaTokenizer,
    adapters: &[&str],
    options: ServeOptions,
) -> (Server, String) {
    let mut names = vec![ModelName {
        name: "base".into(),
        adapter: None,
    }];
    names.extend(adapters.iter().map(|a| ModelName {
        name: a.to_string(),
        adapter: Some(a.to_string()),
    }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(model, tokenizer, names, options, listener).unwrap();
    let url = format!("http://{}", server.addr());
    (server, url)
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A streamed request: its `data:` payloads in order.
async fn stream(url: &str, body: Value) -> Vec<String> {
    let mut resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let mut raw = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        raw.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(raw).unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"))
                .to_string()
        })
        .collect()
}

/// The text of every choice of a streamed chat or completion, and the finish reasons.
fn joined(events: &[String], n: usize) -> (Vec<String>, Vec<String>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut texts = vec![String::new(); n];
    let mut finish = vec![String::new(); n];
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            let piece = c["delta"]["content"].as_str().or(c["text"].as_str());
            texts[i].push_str(piece.unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish[i] = f.to_string();
            }
        }
    }
    (texts, finish)
}

fn greedy(model: &Llama<B>, prompt: &[u32], max_new_tokens: usize) -> Vec<u32> {
    let config = GenerationConfig {
        max_new_tokens,
        sampling: SamplingConfig::default(),
        eos_token_ids: Vec::new(),
        pad_token_id: 0,
    };
    generate(model, &[prompt.to_vec()], &config, |_, _| {}).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_unknown_routes() {
    let (model, tok) = load("mha_untied", &[("qv", "lora_qv")]);
    let (server, url) = start(model, tok, &["qv"], options(4, 8, 128));
    let models = get(&format!("{url}/v1/models")).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["base", "qv"]);
    assert_eq!(models["object"], "list");
    let health = get(&format!("{url}/health")).await;
    assert_eq!(
        health,
        json!({"status": "ok", "running": 0, "waiting": 0, "peak_batch": 0})
    );
    let (status, body) = post(&format!("{url}/v1/embeddings"), json!({})).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/chat/completions")
    );
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_is_generate_streamed_or_not() {
    let (model, tok) = load("gqa_llama3_tied", &[]);
    let messages = vec![
        Message::new("system", "You are terse."),
        Message::new("user", "Name three colours."),
    ];
    let prompt = tok.encode_chat(&messages, true).unwrap();
    let expected_ids = greedy(&model, &prompt, 20);
    let expected = tok.decode(&expected_ids, true).unwrap();
    let (server, url) = start(model, tok, &[], options(4, 8, 128));
    let body = json!({
        "model": "base",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Name three "}, {"type": "text", "text": "colours."}]},
        ],
        "max_tokens": 20,
        "temperature": 0,
    });
    let (status, resp) = post(&format!("{url}/v1/chat/completions"), body.clone()).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["model"], "base");
    let choice = &resp["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected.as_str());
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(
        resp["usage"],
        json!({"prompt_tokens": prompt.len(), "completion_tokens": 20, "total_tokens": prompt.len() + 20})
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = stream(&format!("{url}/v1/chat/completions"), streamed).await;
    let (texts, finish) = joined(&events, 1);
    assert_eq!(texts[0], expected);
    assert_eq!(finish[0], "length");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 20);

    // Legacy completions: the prompt is encoded with the tokenizer's special tokens.
    let (status, resp) = post(
        &format!("{url}/v1/completions"),
        json!({"model": "base", "prompt": "Once upon", "max_tokens": 7, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["object"], "text_completion");
    assert_eq!(resp["usage"]["completion_tokens"], 7);
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_streams_match_sixteen_sequential_requests() {
    let (model, tok) = load("gqa_llama3_tied", &[]);
    let (server, url) = start(model, tok, &[], options(16, 64, 128));
    let words = [
        "red",
        "a",
        "the long road",
        "x",
        "seven",
        "blue sky",
        "on",
        "it",
    ];
    let requests: Vec<Value> = (0..16)
        .map(|i| {
            // Prompts of different lengths and answers of different lengths, so that rows join
            // and leave the running batch at different steps.
            let prompt = format!("{} {}", words[i % 8], "and ".repeat(i % 5));
            json!({
                "model": "base",
                "prompt": prompt,
                "max_tokens": 6 + 3 * i,
                "temperature": 0,
                "stream": true,
            })
        })
        .collect();
    let endpoint = format!("{url}/v1/completions");
    let mut sequential = Vec::new();
    for r in &requests {
        sequential.push(joined(&stream(&endpoint, r.clone()).await, 1));
    }
    assert_eq!(get(&format!("{url}/health")).await["peak_batch"], 1);
    let handles: Vec<_> = requests
        .iter()
        .map(|r| {
            let (endpoint, r) = (endpoint.clone(), r.clone());
            tokio::spawn(async move { joined(&stream(&endpoint, r).await, 1) })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let concurrent = h.await.unwrap();
        assert_eq!(concurrent, sequential[i], "request {i}");
        assert_eq!(concurrent.1[0], "length");
    }
    let peak = get(&format!("{url}/health")).await["peak_batch"]
        .as_u64()
        .unwrap();
    assert!(
        peak > 4,
        "the concurrent requests were decoded together: peak batch {peak}"
    );
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adapters_are_model_names_over_one_base() {
    let (model, tok) = load("mha_untied", &[("qv", "lora_qv")]);
    let prompt = tok.encode("Hello there", true).unwrap();
    let mut base_model = model.clone();
    llama_model::set_active_adapter(&mut base_model, None);
    let base_text = tok.decode(&greedy(&base_model, &prompt, 12), true).unwrap();
    let lora_text = tok.decode(&greedy(&model, &prompt, 12), true).unwrap();
    assert_ne!(base_text, lora_text, "the adapter changes the answer");
    let (server, url) = start(model, tok, &["qv"], options(8, 16, 128));
    let endpoint = format!("{url}/v1/completions");
    // Both names at once, several times each: the engine switches adapters between steps.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let endpoint = endpoint.clone();
            let name = if i % 2 == 0 { "base" } else { "qv" };
            tokio::spawn(async move {
                let body = json!({"model": name, "prompt": "Hello there", "max_tokens": 12, "temperature": 0});
                (name, post(&endpoint, body).await)
            })
        })
        .collect();
    for h in handles {
        let (name, (status, resp)) = h.await.unwrap();
        assert_eq!(status, 200, "{resp}");
        let want = if name == "base" {
            &base_text
        } else {
            &lora_text
        };
        assert_eq!(resp["choices"][0]["text"], want.as_str(), "{name}");
        assert_eq!(resp["model"], name);
    }
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_is_seeded_per_choice_and_stop_strings_cut_the_answer() {
    let (model, tok) = load("gqa_llama3_tied", &[]);
    let (server, url) = start(model, tok, &[], options(8, 16, 128));
    let endpoint = format!("{url}/v1/completions");
    let body = json!({"model": "base", "prompt": "Once", "max_tokens": 16, "temperature": 1.0, "seed": 5, "n": 3});
    let (status, a) = post(&endpoint, body.clone()).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = post(&endpoint, body).await;
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same choices");
    assert_eq!(texts(&a).len(), 3);
    assert!(texts(&a)[0] != texts(&a)[1] || texts(&a)[1] != texts(&a)[2]);
    assert_eq!(a["usage"]["completion_tokens"], 48);

    let greedy = json!({"model": "base", "prompt": "Once", "max_tokens": 24, "temperature": 0});
    let (_, full) = post(&endpoint, greedy.clone()).await;
    let full = full["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 8, "{full:?}");
    let stop: String = chars[5..8].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let mut stopped = greedy.clone();
    stopped["stop"] = json!([stop]);
    let (_, resp) = post(&endpoint, stopped.clone()).await;
    assert_eq!(resp["choices"][0]["text"], cut);
    assert_eq!(resp["choices"][0]["finish_reason"], "stop");
    stopped["stream"] = json!(true);
    let (texts, finish) = joined(&stream(&endpoint, stopped).await, 1);
    assert_eq!(texts[0], cut);
    assert_eq!(finish[0], "stop");
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_clear_error() {
    let (model, tok) = load("gqa_llama3_tied", &[]);
    let (server, url) = start(model, tok, &[], options(4, 8, 64));
    let chat = format!("{url}/v1/chat/completions");
    let raw = reqwest::Client::new()
        .post(&chat)
        .body("{\"model\": \"base\", \"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{body}"
    );
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, status, param, needle) in [
        (
            json!({"model": "base", "messages": user, "temperature": "hot"}),
            400,
            "temperature",
            "expected f64",
        ),
        (json!({"model": "base"}), 400, "messages", "missing field"),
        (
            json!({"model": "gpt-4", "messages": user}),
            404,
            "model",
            "`gpt-4` does not exist; this server has: base",
        ),
        (
            json!({"model": "base", "messages": user, "n": 0}),
            400,
            "n",
            "expected 1 to",
        ),
        (
            json!({"model": "base", "messages": user, "max_tokens": 100}),
            400,
            "max_tokens",
            "maximum context length is 64 tokens",
        ),
        (
            json!({"model": "base", "messages": [{"role": "user", "content": "word ".repeat(80)}]}),
            400,
            "messages",
            "maximum context length is 64 tokens",
        ),
        (
            json!({"model": "base", "messages": [{"role": "robot", "content": "hi"}]}),
            400,
            "messages[0].role",
            "expected system",
        ),
        (
            json!({"model": "base", "messages": user, "logprobs": true}),
            400,
            "logprobs",
            "not supported",
        ),
    ] {
        let (got, resp) = post(&chat, body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
        assert_eq!(resp["error"]["param"], param, "{body}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // The server still answers after all that.
    let (status, _) = post(
        &chat,
        json!({"model": "base", "messages": user, "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().unwrap();
}

/// A random model with a long context, so that an answer left alone runs for a long time.
fn long_model() -> (Llama<B>, LlamaTokenizer) {
    let source = ModelSource::from_path(fixture("gqa_llama3_tied")).unwrap();
    let mut config: LlamaConfig = source.config().unwrap();
    config.max_position_embeddings = 1 << 16;
    let model = Llama::<B>::random(&config, 3, &Default::default());
    (model, source.tokenizer().unwrap())
}

async fn wait_for(url: &str, key: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = get(&format!("{url}/health")).await;
        if health[key] == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached {value}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_a_disconnect_frees_the_slot() {
    let (model, tok) = long_model();
    let (server, url) = start(model, tok, &[], options(1, 1, 1 << 16));
    let endpoint = format!("{url}/v1/completions");
    let long = json!({"model": "base", "prompt": "go", "max_tokens": 60000, "temperature": 0, "stream": true});
    // A: runs alone (max batch 1) for tens of thousands of tokens unless its client leaves.
    let mut a = reqwest::Client::new()
        .post(&endpoint)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status().as_u16(), 200);
    let _ = a.chunk().await.unwrap();
    wait_for(&url, "running", 1).await;
    wait_for(&url, "waiting", 0).await;
    // B waits in the queue of one; C finds it full.
    let b = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            post(
                &endpoint,
                json!({"model": "base", "prompt": "b", "max_tokens": 3, "temperature": 0}),
            )
            .await
        }
    });
    wait_for(&url, "waiting", 1).await;
    let (status, resp) = post(
        &endpoint,
        json!({"model": "base", "prompt": "c", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 429, "{resp}");
    assert_eq!(resp["error"]["code"], "queue_full");
    // A's client goes away: its slot is freed and B runs.
    drop(a);
    let (status, resp) = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("B ran after A's client left")
        .unwrap();
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["usage"]["completion_tokens"], 3);
    wait_for(&url, "running", 0).await;
    server.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_the_answers_under_way_finish() {
    let (model, tok) = long_model();
    let (server, url) = start(model, tok, &[], options(4, 8, 1 << 16));
    let endpoint = format!("{url}/v1/completions");
    let body = json!({"model": "base", "prompt": "go", "max_tokens": 3000, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let answer = tokio::spawn(async move { stream(&endpoint, body).await });
    wait_for(&url, "running", 1).await;
    tokio::task::spawn_blocking(move || server.shutdown().unwrap())
        .await
        .unwrap();
    let events = answer.await.unwrap();
    let (_, finish) = joined(&events, 1);
    assert_eq!(finish[0], "length", "the answer under way ran to its end");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3000);
    assert!(
        reqwest::get(format!("{url}/health")).await.is_err(),
        "no new connections after shutdown"
    );
}
