//! Tokenization with completion-only labels, as TRL's `SFTTrainer` prepares a dataset:
//! `labels` is `-100` on every token that is not assistant / completion output (unless
//! `train_on_prompt`), EOS is appended to plain text and completions, then sequences are
//! truncated to `max_seq_len` and examples left with no trained token are dropped.

use std::path::Path;

use llama_tokenizer::{LlamaTokenizer, Message, TokenizerConfig};

use crate::error::{Error, Result};
use crate::format::{Parsed, Sample};
use crate::template::{ChatRenderer, TemplateChoice, alpaca_prompt, builtin_source};

/// Label of a token the loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// `input_ids[i]` where trained, [`IGNORE_INDEX`] elsewhere (not shifted: the model shifts).
    pub labels: Vec<i64>,
}

impl Example {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// True when there is no token.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of trained tokens.
    pub fn trained(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Which end of an over-long example is kept (TRL's `truncation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Keep the first `max_seq_len` tokens (`keep_start`, TRL's default).
    #[default]
    KeepStart,
    /// Keep the last `max_seq_len` tokens (`keep_end`).
    KeepEnd,
}

/// Options of [`Encoder`].
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Template for conversations and Alpaca records.
    pub template: TemplateChoice,
    /// Longest example in tokens; `None` keeps everything.
    pub max_seq_len: Option<usize>,
    /// Which end survives truncation.
    pub truncation: Truncation,
    /// Train on prompt tokens too (every label is the token).
    pub train_on_prompt: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            template: TemplateChoice::Auto,
            max_seq_len: None,
            truncation: Truncation::KeepStart,
            train_on_prompt: false,
        }
    }
}

/// The outcome of encoding one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A usable example; `truncated` when `max_seq_len` cut it.
    Kept {
        /// The example.
        example: Example,
        /// Whether truncation shortened it.
        truncated: bool,
    },
    /// No trained token was left (after truncation); the example is dropped.
    Dropped {
        /// Whether truncation removed the trained tokens.
        truncated: bool,
    },
}

/// Turns parsed records into [`Example`]s.
pub struct Encoder {
    tokenizer: tokenizers::Tokenizer,
    eos_token: Option<String>,
    pad_token: Option<String>,
    model_template: Option<ChatRenderer>,
    builtin: Option<ChatRenderer>,
    options: EncodeOptions,
}

impl Encoder {
    /// Loads `tokenizer.json` and `tokenizer_config.json` of a model directory.
    pub fn from_dir(dir: &Path, options: EncodeOptions) -> Result<Self> {
        Self::from_tokenizer(&LlamaTokenizer::from_dir(dir)?, options)
    }

    /// An encoder over a loaded tokenizer and its config (from a directory or a GGUF file).
    pub fn from_tokenizer(tokenizer: &LlamaTokenizer, options: EncodeOptions) -> Result<Self> {
        Self::new(
            tokenizer.inner().clone(),
            tokenizer.config().clone(),
            options,
        )
    }

    /// An encoder over a tokenizer and its config.
    pub fn new(
        tokenizer: tokenizers::Tokenizer,
        config: TokenizerConfig,
        options: EncodeOptions,
    ) -> Result<Self> {
        if options.max_seq_len == Some(0) {
            return Err(Error::Config("max_seq_len must be at least 1".into()));
        }
        let bos = config.bos_token.clone().unwrap_or_default();
        let eos = config.eos_token.clone().unwrap_or_default();
        let model_template = match &config.chat_template {
            Some(src) => Some(ChatRenderer::new(src, &bos, &eos)?),
            None => None,
        };
        let builtin = match builtin_source(options.template) {
            Some(src) => Some(ChatRenderer::new(src, &bos, &eos)?),
            None => None,
        };
        if options.template == TemplateChoice::Model && model_template.is_none() {
            return Err(Error::Config(
                "template `model` asked for, but the tokenizer has no chat_template".into(),
            ));
        }
        Ok(Self {
            tokenizer,
            eos_token: config.eos_token,
            pad_token: config.pad_token,
            model_template,
            builtin,
            options,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &EncodeOptions {
        &self.options
    }

    /// The padding id: `pad_token`, else `eos_token` (as TRL falls back), if in the vocabulary.
    pub fn pad_id(&self) -> Option<u32> {
        [&self.pad_token, &self.eos_token]
            .into_iter()
            .flatten()
            .find_map(|t| self.tokenizer.token_to_id(t))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    fn chat(&self) -> Result<&ChatRenderer> {
        self.builtin
            .as_ref()
            .or(self.model_template.as_ref())
            .ok_or_else(|| {
                Error::Config(
                    "conversations need a chat template: the tokenizer has none, so pick one \
                     of llama2, llama3, chatml or alpaca"
                        .into(),
                )
            })
    }

    /// Resolves Alpaca records and the Alpaca template into plain samples.
    pub fn to_sample(&self, parsed: Parsed) -> Result<Sample> {
        let alpaca_text = matches!(
            self.options.template,
            TemplateChoice::Auto | TemplateChoice::Alpaca
        );
        Ok(match parsed {
            Parsed::Alpaca(a) if alpaca_text => Sample::PromptCompletion {
                prompt: alpaca_prompt(&a.instruction, &a.input),
                completion: a.output,
            },
            Parsed::Alpaca(a) => {
                let user = if a.input.is_empty() {
                    a.instruction
                } else {
                    format!("{}\n\n{}", a.instruction, a.input)
                };
                Sample::Chat(vec![
                    Message::new("user", user),
                    Message::new("assistant", a.output),
                ])
            }
            Parsed::Sample(Sample::Chat(msgs))
                if self.options.template == TemplateChoice::Alpaca =>
            {
                match msgs.as_slice() {
                    [u, a] if u.role == "user" && a.role == "assistant" => {
                        Sample::PromptCompletion {
                            prompt: alpaca_prompt(&u.content, ""),
                            completion: a.content.clone(),
                        }
                    }
                    _ => {
                        return Err(Error::Template(
                            "the alpaca template takes one user and one assistant message".into(),
                        ));
                    }
                }
            }
            Parsed::Sample(s) => s,
        })
    }

    /// The text the model sees for `sample` (EOS appended where TRL appends it) and the
    /// trained byte ranges of it.
    pub fn render(&self, sample: &Sample) -> Result<String> {
        Ok(match sample {
            Sample::Chat(m) => self.chat()?.render(m, false)?,
            Sample::ChatPromptCompletion { prompt, completion } => self
                .chat()?
                .render(&[prompt.clone(), completion.clone()].concat(), false)?,
            Sample::PromptCompletion { prompt, completion } => {
                format!("{prompt}{}", self.with_eos(completion))
            }
            Sample::Text(t) => self.with_eos(t),
        })
    }

    fn with_eos(&self, text: &str) -> String {
        match &self.eos_token {
            Some(eos) if !text.ends_with(eos.as_str()) => format!("{text}{eos}"),
            _ => text.to_string(),
        }
    }

    fn encode_text(&self, text: &str, special: bool) -> Result<tokenizers::Encoding> {
        self.tokenizer
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Token ids and labels of `sample`, before truncation.
    pub fn tokenize(&self, sample: &Sample) -> Result<Example> {
        let all = self.options.train_on_prompt;
        let (input_ids, labels): (Vec<u32>, Vec<i64>) = match sample {
            Sample::Text(_) => {
                let ids = self
                    .encode_text(&self.render(sample)?, true)?
                    .get_ids()
                    .to_vec();
                let labels = ids.iter().map(|&i| i as i64).collect();
                (ids, labels)
            }
            Sample::PromptCompletion { prompt, .. } => {
                let prompt_ids = self.encode_text(prompt, true)?;
                let full = self.encode_text(&self.render(sample)?, true)?;
                let ids = full.get_ids().to_vec();
                let start = if all {
                    0
                } else {
                    common_prefix(prompt_ids.get_ids(), &ids)
                };
                (ids.clone(), label(&ids, |i| i >= start))
            }
            Sample::Chat(msgs) => {
                let (text, spans) = self.chat()?.render_with_spans(msgs, false)?;
                let enc = self.encode_text(&text, false)?;
                let ids = enc.get_ids().to_vec();
                let offsets = enc.get_offsets();
                let labels = label(&ids, |i| {
                    let (s, e) = offsets[i];
                    all || spans.iter().any(|r| s < r.end && e > r.start && e > s)
                });
                (ids, labels)
            }
            Sample::ChatPromptCompletion { prompt, completion } => {
                let chat = self.chat()?;
                let prompt_ids = self.encode_text(&chat.render(prompt, true)?, false)?;
                let msgs = [prompt.clone(), completion.clone()].concat();
                let (text, spans) = chat.render_with_spans(&msgs, false)?;
                let enc = self.encode_text(&text, false)?;
                let ids = enc.get_ids().to_vec();
                let offsets = enc.get_offsets();
                let start = common_prefix(prompt_ids.get_ids(), &ids);
                let labels = label(&ids, |i| {
                    let (s, e) = offsets[i];
                    all || (i >= start && spans.iter().any(|r| s < r.end && e > r.start && e > s))
                });
                (ids, labels)
            }
        };
        Ok(Example { input_ids, labels })
    }

    /// Tokenizes, truncates to `max_seq_len`, and drops examples with nothing to train on.
    pub fn encode(&self, sample: &Sample) -> Result<Encoded> {
        let mut ex = self.tokenize(sample)?;
        let mut truncated = false;
        if let Some(max) = self.options.max_seq_len
            && ex.len() > max
        {
            truncated = true;
            match self.options.truncation {
                Truncation::KeepStart => {
                    ex.input_ids.truncate(max);
                    ex.labels.truncate(max);
                }
                Truncation::KeepEnd => {
                    let cut = ex.len() - max;
                    ex.input_ids.drain(..cut);
                    ex.labels.drain(..cut);
                }
            }
        }
        Ok(if ex.trained() == 0 {
            Encoded::Dropped { truncated }
        } else {
            Encoded::Kept {
                example: ex,
                truncated,
            }
        })
    }
}

fn label(ids: &[u32], trained: impl Fn(usize) -> bool) -> Vec<i64> {
    ids.iter()
        .enumerate()
        .map(|(i, &t)| if trained(i) { t as i64 } else { IGNORE_INDEX })
        .collect()
}

/// Number of leading tokens two sequences share (TRL's `common_prefix_length`).
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
