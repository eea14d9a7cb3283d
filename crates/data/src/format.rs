//! Dataset formats: detection from a record's fields, field-name overrides, and conversion of a
//! record into a [`Sample`] (a conversation, a prompt/completion pair, or plain text).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use llama_tokenizer::Message;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::reader::kind_name;
use crate::record::RawRecord;

/// The record layouts the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instruction`, optional `input`, `output` (Stanford Alpaca).
    Alpaca,
    /// `messages`: a list of `{role, content}` with roles system / user / assistant.
    Messages,
    /// `conversations`: a list of `{from, value}` with human / gpt / system.
    ShareGpt,
    /// `prompt` and `completion`: two strings, or two lists of messages.
    PromptCompletion,
    /// `text`: plain text, every token trained.
    Text,
}

impl Format {
    /// Every format with its name.
    pub const ALL: [(Format, &'static str); 5] = [
        (Format::Alpaca, "alpaca"),
        (Format::Messages, "messages"),
        (Format::ShareGpt, "sharegpt"),
        (Format::PromptCompletion, "prompt_completion"),
        (Format::Text, "text"),
    ];

    /// Detects the format from the fields of the first record (after field mapping).
    pub fn detect(record: &RawRecord, map: &FieldMap) -> Result<Format> {
        let has = |k: &str| map.get(record, k).is_some();
        let format = if has("messages") {
            Format::Messages
        } else if has("conversations") {
            Format::ShareGpt
        } else if has("prompt") && has("completion") {
            Format::PromptCompletion
        } else if has("instruction") && has("output") {
            Format::Alpaca
        } else if has("text") {
            Format::Text
        } else {
            let fields: Vec<&str> = record.fields.keys().map(String::as_str).collect();
            return Err(record.error(format!(
                "cannot detect the format from fields {fields:?}: expected `messages`, \
                 `conversations`, `prompt`+`completion`, `instruction`+`output` or `text` \
                 (map other names with e.g. `instruction=question`, or name the format)"
            )));
        };
        Ok(format)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Format::ALL
            .iter()
            .find(|(k, _)| k == self)
            .map_or("?", |(_, n)| n);
        f.write_str(name)
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown format `{s}`: expected alpaca, messages, sharegpt, prompt_completion or text"
                ))
            })
    }
}

/// Field-name overrides: `instruction=question` reads the `instruction` field from column
/// `question`.
#[derive(Debug, Clone, Default)]
pub struct FieldMap {
    map: HashMap<String, String>,
}

impl FieldMap {
    /// Parses `canonical=column` pairs.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self> {
        let mut map = HashMap::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (k, v) = spec.split_once('=').ok_or_else(|| {
                Error::Config(format!("field mapping `{spec}`: expected `field=column`"))
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(Error::Config(format!(
                    "field mapping `{spec}`: expected non-empty `field=column`"
                )));
            }
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self { map })
    }

    /// The column that holds `field`.
    pub fn column<'a>(&'a self, field: &'a str) -> &'a str {
        self.map.get(field).map_or(field, String::as_str)
    }

    /// The value of `field` in `record`, if present and not null.
    pub fn get<'r>(&self, record: &'r RawRecord, field: &str) -> Option<&'r Value> {
        record
            .fields
            .get(self.column(field))
            .filter(|v| !v.is_null())
    }
}

/// A record interpreted in its format.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A conversation (messages, ShareGPT, or Alpaca under a chat template).
    Chat(Vec<Message>),
    /// A conversational prompt followed by a conversational completion.
    ChatPromptCompletion {
        /// Messages of the prompt.
        prompt: Vec<Message>,
        /// Messages of the completion (assistant turns).
        completion: Vec<Message>,
    },
    /// A plain prompt and its completion.
    PromptCompletion {
        /// Untrained prompt text.
        prompt: String,
        /// Trained completion text.
        completion: String,
    },
    /// Plain text, every token trained.
    Text(String),
}

/// An Alpaca record: instruction, optional input, output.
#[derive(Debug, Clone, PartialEq)]
pub struct Alpaca {
    /// The task.
    pub instruction: String,
    /// Optional context for the task (empty when absent).
    pub input: String,
    /// The answer.
    pub output: String,
}

/// A record after format parsing, before templating.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An Alpaca record (rendered by the Alpaca prompt or a chat template).
    Alpaca(Alpaca),
    /// Any other record.
    Sample(Sample),
}

fn string_field(rec: &RawRecord, map: &FieldMap, field: &str, required: bool) -> Result<String> {
    let column = map.column(field);
    match map.get(rec, field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(rec.error(format!(
            "field `{column}`: expected a string, found {}",
            kind_name(other)
        ))),
        None if required => Err(rec.error(format!("missing field `{column}`: expected a string"))),
        None => Ok(String::new()),
    }
}

const ROLES: &str = "system, user or assistant";

fn messages(
    rec: &RawRecord,
    column: &str,
    value: &Value,
    role_key: &str,
    content_key: &str,
    role_of: fn(&str) -> Option<&'static str>,
    allowed: &str,
) -> Result<Vec<Message>> {
    let Value::Array(items) = value else {
        return Err(rec.error(format!(
            "field `{column}`: expected a list of messages, found {}",
            kind_name(value)
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(rec.error(format!(
                "`{column}[{i}]`: expected an object with `{role_key}` and `{content_key}`, found {}",
                kind_name(item)
            )));
        };
        let role = match m.get(role_key) {
            Some(Value::String(r)) => r,
            _ => {
                return Err(rec.error(format!(
                    "`{column}[{i}].{role_key}`: missing, expected a string ({allowed})"
                )));
            }
        };
        let role = role_of(role).ok_or_else(|| {
            rec.error(format!(
                "`{column}[{i}].{role_key}`: unknown role `{role}`, expected {allowed}"
            ))
        })?;
        let content = match m.get(content_key) {
            Some(Value::String(c)) => c.clone(),
            other => {
                return Err(rec.error(format!(
                    "`{column}[{i}].{content_key}`: expected a string, found {}",
                    other.map_or("nothing", kind_name)
                )));
            }
        };
        out.push(Message::new(role, content));
    }
    if out.is_empty() {
        return Err(rec.error(format!("field `{column}`: empty conversation")));
    }
    Ok(out)
}

fn openai_role(r: &str) -> Option<&'static str> {
    match r {
        "system" => Some("system"),
        "user" => Some("user"),
        "assistant" => Some("assistant"),
        _ => None,
    }
}

fn sharegpt_role(r: &str) -> Option<&'static str> {
    match r {
        "system" => Some("system"),
        "human" | "user" => Some("user"),
        "gpt" | "assistant" => Some("assistant"),
        _ => None,
    }
}

fn require_assistant(rec: &RawRecord, column: &str, msgs: &[Message]) -> Result<()> {
    if msgs.iter().any(|m| m.role == "assistant") {
        Ok(())
    } else {
        Err(rec.error(format!(
            "field `{column}`: conversation has no assistant turn: expected at least one \
             message to train on"
        )))
    }
}

/// Interprets `rec` in `format`.
pub fn parse(rec: &RawRecord, format: Format, map: &FieldMap) -> Result<Parsed> {
    let required = |field: &str| {
        map.get(rec, field).ok_or_else(|| {
            rec.error(format!(
                "missing field `{}` (format {format})",
                map.column(field)
            ))
        })
    };
    Ok(match format {
        Format::Alpaca => Parsed::Alpaca(Alpaca {
            instruction: string_field(rec, map, "instruction", true)?,
            input: string_field(rec, map, "input", false)?,
            output: string_field(rec, map, "output", true)?,
        }),
        Format::Text => Parsed::Sample(Sample::Text(string_field(rec, map, "text", true)?)),
        Format::Messages => {
            let column = map.column("messages");
            let msgs = messages(
                rec,
                column,
                required("messages")?,
                "role",
                "content",
                openai_role,
                ROLES,
            )?;
            require_assistant(rec, column, &msgs)?;
            Parsed::Sample(Sample::Chat(msgs))
        }
        Format::ShareGpt => {
            let column = map.column("conversations");
            let allowed = "system, human (user) or gpt (assistant)";
            let msgs = messages(
                rec,
                column,
                required("conversations")?,
                "from",
                "value",
                sharegpt_role,
                allowed,
            )?;
            require_assistant(rec, column, &msgs)?;
            Parsed::Sample(Sample::Chat(msgs))
        }
        Format::PromptCompletion => {
            let prompt = required("prompt")?;
            let completion = required("completion")?;
            match (prompt, completion) {
                (Value::String(p), Value::String(c)) => Parsed::Sample(Sample::PromptCompletion {
                    prompt: p.clone(),
                    completion: c.clone(),
                }),
                (Value::Array(_), Value::Array(_)) => {
                    let p = messages(
                        rec,
                        map.column("prompt"),
                        prompt,
                        "role",
                        "content",
                        openai_role,
                        ROLES,
                    )?;
                    let c = messages(
                        rec,
                        map.column("completion"),
                        completion,
                        "role",
                        "content",
                        openai_role,
                        ROLES,
                    )?;
                    require_assistant(rec, map.column("completion"), &c)?;
                    Parsed::Sample(Sample::ChatPromptCompletion {
                        prompt: p,
                        completion: c,
                    })
                }
                (p, c) => {
                    return Err(rec.error(format!(
                        "fields `{}`/`{}`: expected two strings or two lists of messages, found {} and {}",
                        map.column("prompt"),
                        map.column("completion"),
                        kind_name(p),
                        kind_name(c)
                    )));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Loc;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn rec(json: &str) -> RawRecord {
        RawRecord {
            path: Arc::new(PathBuf::from("t.jsonl")),
            loc: Loc::Line(3),
            fields: serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn detects_formats_and_honours_mapping() {
        let none = FieldMap::default();
        let cases = [
            (r#"{"messages":[]}"#, Format::Messages),
            (r#"{"conversations":[]}"#, Format::ShareGpt),
            (
                r#"{"prompt":"a","completion":"b"}"#,
                Format::PromptCompletion,
            ),
            (r#"{"instruction":"a","output":"b"}"#, Format::Alpaca),
            (r#"{"text":"a"}"#, Format::Text),
        ];
        for (j, f) in cases {
            assert_eq!(Format::detect(&rec(j), &none).unwrap(), f, "{j}");
        }
        let map = FieldMap::parse(&["instruction=question", "output=answer"]).unwrap();
        let r = rec(r#"{"question":"q","answer":"a"}"#);
        assert_eq!(Format::detect(&r, &map).unwrap(), Format::Alpaca);
        let Parsed::Alpaca(a) = parse(&r, Format::Alpaca, &map).unwrap() else {
            panic!()
        };
        assert_eq!((a.instruction.as_str(), a.output.as_str()), ("q", "a"));
        let err = Format::detect(&rec(r#"{"foo":1}"#), &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.jsonl:3: cannot detect the format"),
            "{err}"
        );
        assert!(FieldMap::parse(&["nonsense"]).is_err());
    }

    #[test]
    fn sharegpt_roles_map_and_bad_roles_fail() {
        let r =
            rec(r#"{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"yo"}]}"#);
        let Parsed::Sample(Sample::Chat(m)) =
            parse(&r, Format::ShareGpt, &FieldMap::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            m,
            vec![Message::new("user", "hi"), Message::new("assistant", "yo")]
        );
        let r = rec(r#"{"messages":[{"role":"robot","content":"hi"}]}"#);
        let err = parse(&r, Format::Messages, &FieldMap::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown role `robot`"), "{err}");
    }
}
