//! Prompt and chat templates: the model's own Jinja `chat_template`, the built-in `llama2`,
//! `llama3` and `chatml` Jinja templates, and the Stanford Alpaca prompt.
//!
//! Rendering goes through `llama_tokenizer::ChatTemplate` (the same minijinja setup as inference),
//! so the text equals transformers' `apply_chat_template(messages, tokenize=False)`. Trained
//! spans come from `{% generation %}` tags when the template has them (transformers'
//! `return_assistant_tokens_mask`), otherwise from rendering each assistant turn's prefix:
//! the text an assistant message adds after the generation prompt is trained.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use llama_tokenizer::{ChatTemplate, Message};

use crate::error::{Error, Result};

/// Which template renders conversations and Alpaca records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's `chat_template` for conversations; the Alpaca prompt for Alpaca records.
    Auto,
    /// The model's `chat_template` for everything conversational, Alpaca records included.
    Model,
    /// Built-in Llama 2 `[INST]` template.
    Llama2,
    /// Built-in Llama 3 header template.
    Llama3,
    /// Built-in ChatML (`<|im_start|>` / `<|im_end|>`).
    ChatMl,
    /// Stanford Alpaca prompt (single-turn only).
    Alpaca,
}

impl FromStr for TemplateChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "model" => Self::Model,
            "llama2" => Self::Llama2,
            "llama3" => Self::Llama3,
            "chatml" => Self::ChatMl,
            "alpaca" => Self::Alpaca,
            _ => {
                return Err(Error::Config(format!(
                    "unknown template `{s}`: expected auto, model, llama2, llama3, chatml or alpaca"
                )));
            }
        })
    }
}

impl fmt::Display for TemplateChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Model => "model",
            Self::Llama2 => "llama2",
            Self::Llama3 => "llama3",
            Self::ChatMl => "chatml",
            Self::Alpaca => "alpaca",
        })
    }
}

/// Source of a built-in Jinja template (with `{% generation %}` tags around assistant output).
pub fn builtin_source(choice: TemplateChoice) -> Option<&'static str> {
    match choice {
        TemplateChoice::Llama2 => Some(include_str!("../templates/llama2.jinja")),
        TemplateChoice::Llama3 => Some(include_str!("../templates/llama3.jinja")),
        TemplateChoice::ChatMl => Some(include_str!("../templates/chatml.jinja")),
        _ => None,
    }
}

/// Alpaca prompt for an instruction with an input.
pub const ALPACA_PROMPT_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
/// Alpaca prompt for an instruction alone.
pub const ALPACA_PROMPT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// The Alpaca prompt (everything before the response).
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.is_empty() {
        ALPACA_PROMPT.replace("{instruction}", instruction)
    } else {
        ALPACA_PROMPT_INPUT
            .replace("{instruction}", instruction)
            .replace("{input}", input)
    }
}

const GEN_START: char = '\u{E000}';
const GEN_END: char = '\u{E001}';

/// Replaces `{% generation %}` / `{% endgeneration %}` (with any `-` trim markers) by sentinel
/// characters; returns the new source and whether any tag was found.
fn mark_generation_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some(end) = tail.find("%}") else {
            out.push_str(tail);
            return (out, found);
        };
        let inner = &tail[2..end];
        let (ltrim, rtrim) = (inner.starts_with('-'), inner.ends_with('-'));
        let word = inner.trim_matches('-').trim();
        let sentinel = match word {
            "generation" => Some(GEN_START),
            "endgeneration" => Some(GEN_END),
            _ => None,
        };
        match sentinel {
            Some(c) => {
                found = true;
                let l = if ltrim { "-" } else { "" };
                let r = if rtrim { "-" } else { "" };
                out.push_str(&format!("{{{{{l} '{c}' {r}}}}}"));
            }
            None => out.push_str(&tail[..end + 2]),
        }
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// A compiled chat template that also reports which bytes of its output are trained.
#[derive(Debug)]
pub struct ChatRenderer {
    template: ChatTemplate,
    tagged: bool,
}

impl ChatRenderer {
    /// Compiles `source` with the tokenizer's special tokens.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let (source, tagged) = mark_generation_tags(source);
        let template = ChatTemplate::new(&source, bos_token, eos_token)?;
        Ok(Self { template, tagged })
    }

    fn render_raw(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template
            .render(messages, add_generation_prompt)
            .map_err(|e| Error::Template(e.to_string()))
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let text = self.render_raw(messages, add_generation_prompt)?;
        Ok(text.replace([GEN_START, GEN_END], ""))
    }

    /// The rendered conversation and the byte ranges of it that are trained (assistant output).
    pub fn render_with_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<Range<usize>>)> {
        let raw = self.render_raw(messages, add_generation_prompt)?;
        if self.tagged {
            let mut text = String::with_capacity(raw.len());
            let mut spans = Vec::new();
            let mut open = None;
            for c in raw.chars() {
                match c {
                    GEN_START => open = Some(text.len()),
                    GEN_END => {
                        if let Some(s) = open.take() {
                            spans.push(s..text.len());
                        }
                    }
                    _ => text.push(c),
                }
            }
            return Ok((text, spans));
        }
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render_raw(&messages[..i], true)?;
            let upto = self.render_raw(&messages[..=i], false)?;
            if !upto.starts_with(&before) || !raw.starts_with(&upto) {
                return Err(Error::Template(format!(
                    "cannot locate assistant turn {i}: the template does not render a \
                     conversation's beginning as a prefix of the whole (add {{% generation %}} \
                     tags to it, or use a built-in template)"
                )));
            }
            spans.push(before.len()..upto.len());
        }
        Ok((raw, spans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<Message> {
        vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "Bye"),
            Message::new("assistant", "Bye!"),
        ]
    }

    #[test]
    fn generation_tags_and_prefix_rendering_give_the_same_spans() {
        let tagged = ChatRenderer::new(
            builtin_source(TemplateChoice::ChatMl).unwrap(),
            "",
            "<|im_end|>",
        )
        .unwrap();
        let plain_src = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let plain = ChatRenderer::new(plain_src, "", "<|im_end|>").unwrap();
        let (t1, s1) = tagged.render_with_spans(&conv(), false).unwrap();
        let (t2, s2) = plain.render_with_spans(&conv(), false).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(s1, s2);
        let trained: Vec<&str> = s1.iter().map(|r| &t1[r.clone()]).collect();
        assert_eq!(trained, ["Hello!<|im_end|>\n", "Bye!<|im_end|>\n"]);
        assert!(!tagged.render(&conv(), true).unwrap().contains(GEN_START));
    }

    #[test]
    fn alpaca_prompt_with_and_without_input() {
        assert!(alpaca_prompt("Add", "").ends_with("### Instruction:\nAdd\n\n### Response:\n"));
        assert!(alpaca_prompt("Add", "1 2").contains("### Input:\n1 2\n\n### Response:\n"));
    }
}
