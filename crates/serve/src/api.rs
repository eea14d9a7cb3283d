//! The OpenAI request bodies we accept, and their checks. Fields we do not implement are refused
//! with a 400 naming them when they ask for something (`logprobs: true`, tools, penalties), and
//! accepted when they hold their default or `null`, as clients send them that way.

use serde::Deserialize;
use serde_json::{Value, json};

use llama_model::SamplingConfig;

/// An error answer: HTTP status and OpenAI's `{"error": {...}}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// OpenAI's error `code`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            param: Some(param.into()),
            kind: "invalid_request_error",
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    pub include_usage: Option<bool>,
}

/// A chat message's `content`: a string or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only `{"type": "text", "text": ...}` is supported.
    Parts(Vec<Value>),
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text; `null` for assistant messages that only called tools.
    #[serde(default)]
    pub content: Option<Content>,
}

/// The settings both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Params {
    /// Most new tokens (`max_completion_tokens` is the newer name).
    pub max_tokens: Option<u64>,
    /// See `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// 0 to 2; 1 when absent (OpenAI's default); 0 = greedy.
    pub temperature: Option<f64>,
    /// (0, 1]; 1 = off.
    pub top_p: Option<f64>,
    /// Top-k filter (vLLM's extension); 0 or -1 = off.
    pub top_k: Option<i64>,
    /// Choices per request.
    pub n: Option<u64>,
    /// Sampler seed; choice `i` uses `seed + i`.
    pub seed: Option<i64>,
    /// Stop strings (at most 4, as OpenAI).
    pub stop: Option<Stop>,
    /// Server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Refused unless 0.
    pub presence_penalty: Option<f64>,
    /// Refused unless 0.
    pub frequency_penalty: Option<f64>,
    /// Refused unless 1 (vLLM's extension).
    pub repetition_penalty: Option<f64>,
    /// Refused unless empty.
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// Refused unless false/0 (chat: bool; completions: an integer).
    pub logprobs: Option<Value>,
    /// Refused unless 0.
    pub top_logprobs: Option<u64>,
    /// Refused unless empty.
    pub tools: Option<Vec<Value>>,
    /// Refused unless empty/`none`/`auto`.
    pub tool_choice: Option<Value>,
    /// Refused unless `{"type": "text"}`.
    pub response_format: Option<Value>,
    /// Completions only: refused when true.
    pub echo: Option<bool>,
    /// Completions only: refused unless 1.
    pub best_of: Option<u64>,
    /// Completions only: refused unless empty.
    pub suffix: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// A name from `/v1/models`.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Settings (read from the same object by [`parse`]).
    #[serde(skip)]
    pub params: Params,
}

/// `prompt` of `/v1/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    Text(String),
    /// A list (only one prompt per request is supported).
    Many(Vec<Value>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A name from `/v1/models`.
    pub model: String,
    /// The text to continue.
    pub prompt: Prompt,
    /// Settings (read from the same object by [`parse`]).
    #[serde(skip)]
    pub params: Params,
}

/// A request body with the shared settings beside its own fields.
pub trait Request: serde::de::DeserializeOwned {
    /// Where the settings go.
    fn params_mut(&mut self) -> &mut Params;
}

impl Request for ChatRequest {
    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

impl Request for CompletionRequest {
    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

/// Parses a request body, naming the field of a type error. (The settings are read in a second
/// pass over the same object rather than with `#[serde(flatten)]`, which loses the field name.)
pub fn parse<T: Request>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        status: 400,
        message: format!("invalid JSON in the request body: {e}"),
        param: None,
        kind: "invalid_request_error",
        code: None,
    })?;
    if !value.is_object() {
        return Err(ApiError {
            status: 400,
            message: "the request body must be a JSON object".into(),
            param: None,
            kind: "invalid_request_error",
            code: None,
        });
    }
    let mut request: T = from_value(&value)?;
    *request.params_mut() = from_value(&value)?;
    Ok(request)
}

fn from_value<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let param = if path != "." && !path.is_empty() {
            Some(path)
        } else {
            // A missing field is reported at the top level: name it from serde's message.
            msg.strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string)
        };
        let message = match &param {
            Some(p) => format!("invalid request body: field `{p}`: {msg}"),
            None => format!("invalid request body: {msg}"),
        };
        ApiError {
            status: 400,
            message,
            param,
            kind: "invalid_request_error",
            code: None,
        }
    })
}

/// The checked settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `max_tokens`, if given.
    pub max_tokens: Option<usize>,
    /// Sampler settings of choice 0 (choice `i` adds `i` to the seed).
    pub sampling: SamplingConfig,
    /// Choices.
    pub n: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream as server-sent events.
    pub stream: bool,
    /// Send the usage chunk when streaming.
    pub include_usage: bool,
}

/// Most choices one request may ask for.
pub const MAX_N: u64 = 16;

impl Params {
    /// Checks every field; `default_seed` is used when `seed` is absent.
    pub fn check(&self, default_seed: u64) -> Result<Settings, ApiError> {
        let max_tokens = match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!("max_tokens {a} and max_completion_tokens {b} differ: give one"),
                ));
            }
            (a, b) => a.or(b),
        };
        if max_tokens == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens 0: expected at least 1",
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {temperature}: expected a number from 0 to 2"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p {top_p}: expected a number in (0, 1]"),
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("top_k {k}: expected a positive number, or 0 or -1 for off"),
                ));
            }
        };
        let n = self.n.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ApiError::invalid(
                "n",
                format!("n {n}: expected 1 to {MAX_N} choices"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                "stop",
                format!("{} stop strings: expected at most 4", stop.len()),
            ));
        }
        self.refuse_unsupported()?;
        Ok(Settings {
            max_tokens: max_tokens.map(|m| m as usize),
            sampling: SamplingConfig {
                temperature,
                top_k,
                top_p,
                seed: self.seed.map_or(default_seed, |s| s as u64),
            },
            n: n as usize,
            stop,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }

    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        let unsupported = |param: &str, what: &str| {
            Err(ApiError::invalid(
                param,
                format!("{param}: {what} is not supported by this server"),
            ))
        };
        for (name, value, neutral) in [
            ("presence_penalty", self.presence_penalty, 0.0),
            ("frequency_penalty", self.frequency_penalty, 0.0),
            ("repetition_penalty", self.repetition_penalty, 1.0),
        ] {
            if value.is_some_and(|v| v != neutral) {
                return unsupported(name, "a penalty other than the neutral value");
            }
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return unsupported("logit_bias", "a logit bias");
        }
        match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
            Some(_) => return unsupported("logprobs", "returning log-probabilities"),
        }
        if self.top_logprobs.is_some_and(|v| v > 0) {
            return unsupported("top_logprobs", "returning log-probabilities");
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return unsupported("tools", "tool calling");
        }
        match &self.tool_choice {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" || s == "auto" => {}
            Some(_) => return unsupported("tool_choice", "forcing a tool"),
        }
        match &self.response_format {
            None | Some(Value::Null) => {}
            Some(v) if v.get("type").and_then(Value::as_str) == Some("text") => {}
            Some(_) => return unsupported("response_format", "a structured response format"),
        }
        if self.echo == Some(true) {
            return unsupported("echo", "echoing the prompt");
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return unsupported("best_of", "best_of > 1");
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return unsupported("suffix", "a suffix");
        }
        Ok(())
    }
}

impl ChatMessage {
    /// The message as the chat template takes it.
    pub fn to_message(&self, index: usize) -> Result<llama_tokenizer::Message, ApiError> {
        let role = match self.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant" | "tool") => r,
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{index}].role"),
                    format!(
                        "messages[{index}].role `{other}`: expected system, developer, user, assistant or tool"
                    ),
                ));
            }
        };
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    match (
                        part.get("type").and_then(Value::as_str),
                        part.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("messages[{index}].content[{j}]"),
                                format!(
                                    "messages[{index}].content[{j}]: only {{\"type\": \"text\", \"text\": ...}} parts are supported"
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        Ok(llama_tokenizer::Message::new(role, content))
    }
}

impl Prompt {
    /// The one prompt of the request.
    pub fn text(&self) -> Result<&str, ApiError> {
        match self {
            Prompt::Text(t) => Ok(t),
            Prompt::Many(v) => match v.as_slice() {
                [Value::String(t)] => Ok(t),
                _ => Err(ApiError::invalid(
                    "prompt",
                    "prompt: expected a string (or a list holding one string); token-id prompts and several prompts per request are not supported",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_field() {
        let e = parse::<ChatRequest>(br#"{"model":"m","messages":[],"temperature":"hot"}"#)
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e:?}");
        let e = parse::<ChatRequest>(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"), "{e:?}");
        let e = parse::<ChatRequest>(br#"{"model":"m", "messages": [{"role": 3}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{e:?}");
        let e = parse::<ChatRequest>(b"{not json").unwrap_err();
        assert!(e.message.contains("invalid JSON"), "{e:?}");
    }

    #[test]
    fn defaults_follow_openai_and_nulls_are_absent() {
        let r: ChatRequest = parse(
            br#"{"model":"m","messages":[],"logprobs":null,"n":null,"stop":null,"tools":null}"#,
        )
        .unwrap();
        let s = r.params.check(7).unwrap();
        assert_eq!(s.sampling.temperature, 1.0);
        assert_eq!(s.sampling.seed, 7);
        assert_eq!(s.n, 1);
        assert!(!s.stream);
    }

    #[test]
    fn out_of_range_and_unsupported_settings_are_refused_by_name() {
        for (body, param) in [
            (r#"{"temperature": 2.5}"#, "temperature"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"n": 0}"#, "n"),
            (r#"{"max_tokens": 0}"#, "max_tokens"),
            (r#"{"stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"logprobs": true}"#, "logprobs"),
            (r#"{"presence_penalty": 0.5}"#, "presence_penalty"),
            (r#"{"tools": [{"type": "function"}]}"#, "tools"),
            (
                r#"{"response_format": {"type": "json_object"}}"#,
                "response_format",
            ),
        ] {
            let p: Params = serde_json::from_str(body).unwrap();
            let e = p.check(0).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
    }

    #[test]
    fn content_parts_are_joined_and_other_parts_refused() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.to_message(0).unwrap().content, "ab");
        let m: ChatMessage =
            serde_json::from_str(r#"{"role":"user","content":[{"type":"image_url"}]}"#).unwrap();
        assert_eq!(
            m.to_message(2).unwrap_err().param.as_deref(),
            Some("messages[2].content[0]")
        );
    }
}
