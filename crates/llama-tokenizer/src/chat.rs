//! Chat messages and the Jinja chat template of a checkpoint, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it.

use minijinja::{Environment, ErrorKind, Value as JValue, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A Jinja chat template as Hugging Face tokenizers carry it.
///
/// Compiled in minijinja's default environment: no loader is set, so `{% include %}`,
/// `{% import %}` and `{% extends %}` cannot reach the file system.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> std::result::Result<JValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `strftime_now(format)`: the current local date/time, Python `strftime` codes.
fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)` (transformers' `tojson`):
/// `", "` and `": "` separators, or newlines and `indent` spaces when given.
fn python_json(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                python_json(v, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn tojson(
    value: JValue,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(JValue::from_safe_string(out))
}

impl ChatTemplate {
    /// Compiles `source` with the special tokens it may reference.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template(e.to_string()))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The Jinja source the template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` as `tokenizer.apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::Template(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_and_strftime_follow_transformers() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ strftime_now('%Y') | length }}",
            "",
            "",
        )
        .unwrap();
        let out = t
            .render(&[Message::new("user", "h\u{e9}<\"x\">")], false)
            .unwrap();
        // Python: json.dumps(m, ensure_ascii=False) keeps non-ASCII and does not HTML-escape.
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"h\u{e9}<\\\"x\\\">\"}|{\n  \"role\": \"user\",\n  \"content\": \"h\u{e9}<\\\"x\\\">\"\n}|4"
        );
    }

    #[test]
    fn raise_exception_is_a_template_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(
            err.starts_with("chat template:") && err.contains("roles must alternate"),
            "{err}"
        );
    }

    #[test]
    fn templates_cannot_load_files() {
        // The default sandbox has no loader: includes fail instead of reading the file system.
        let path = std::env::current_dir().unwrap().join("Cargo.toml");
        let src = format!("{{% include '{}' %}}", path.display());
        let err = ChatTemplate::new(&src, "", "")
            .and_then(|t| t.render(&[], false))
            .unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err}");
    }

    #[test]
    fn special_tokens_and_generation_prompt_reach_the_template() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let msgs = [Message::new("user", "hi")];
        assert_eq!(t.render(&msgs, true).unwrap(), "<s>user:hi</s>assistant:");
        assert_eq!(t.render(&msgs, false).unwrap(), "<s>user:hi</s>");
        assert!(t.source().starts_with("{{ bos_token }}"));
    }
}
