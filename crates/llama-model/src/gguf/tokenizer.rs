//! The tokenizer a GGUF file describes (`tokenizer.ggml.*`), rebuilt as a Hugging Face
//! `tokenizer.json` and `tokenizer_config.json` so the `tokenizers` crate runs it and
//! `cargo xtask convert` can write it.
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`; the pre-tokenizer follows
//!   `tokenizer.ggml.pre` as llama.cpp does (`llama-bpe`/`llama3`: Llama 3's split regex and
//!   whole-word lookup before merging; `smollm`: single digits then GPT-2's regex;
//!   `default`/`gpt2`: GPT-2's regex).
//! - `llama`: SentencePiece BPE from `tokens` and `scores` with byte fallback; merges are
//!   derived from the vocabulary, ranked by the score of the merged piece (llama.cpp merges the
//!   best-scoring adjacent pair first).
//!
//! Control (and unknown) tokens become special added tokens, user-defined ones plain added tokens;
//! BOS/EOS follow `tokenizer.ggml.add_bos_token` / `add_eos_token`.

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::{Value, json};

use super::reader::GgufFile;
use crate::error::Result;
use llama_tokenizer::{LlamaTokenizer, TokenizerConfig};

/// llama.cpp's token types.
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

pub(crate) const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.json` and `tokenizer_config.json` contents for the tokenizer of `file`.
pub struct GgufTokenizerFiles {
    /// The `tokenizers` serialization (`tokenizer.json`).
    pub tokenizer_json: Value,
    /// transformers' `tokenizer_config.json`: special tokens, `add_bos_token`, chat template.
    pub tokenizer_config: Value,
}

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let arr = file
        .get(key)
        .ok_or_else(|| file.error(format!("missing `{key}` (an array of strings)")))?;
    let items = arr
        .as_array()
        .ok_or_else(|| file.error(format!("`{key}` is not an array; expected strings")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| file.error(format!("`{key}`[{i}] is {v:?}; expected a string")))
        })
        .collect()
}

fn number_array(file: &GgufFile, key: &str, len: usize) -> Result<Option<Vec<f64>>> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    let items = v
        .as_array()
        .ok_or_else(|| file.error(format!("`{key}` is not an array; expected numbers")))?;
    if items.len() != len {
        return Err(file.error(format!(
            "`{key}` has {} entries; expected one per token ({len})",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .ok_or_else(|| file.error(format!("`{key}`[{i}] is {v:?}; expected a number")))
        })
        .collect::<Result<Vec<f64>>>()
        .map(Some)
}

fn token_at<'a>(file: &GgufFile, tokens: &[&'a str], key: &str) -> Result<Option<&'a str>> {
    match file.get_u64(key)? {
        None => Ok(None),
        Some(id) => tokens.get(id as usize).copied().map(Some).ok_or_else(|| {
            file.error(format!(
                "`{key}` is {id}, outside the vocabulary of {} tokens",
                tokens.len()
            ))
        }),
    }
}

/// Builds the Hugging Face tokenizer files for the tokenizer stored in `file`.
pub fn tokenizer_files(file: &GgufFile) -> Result<GgufTokenizerFiles> {
    let model = file.get_str("tokenizer.ggml.model")?.ok_or_else(|| {
        file.error("missing `tokenizer.ggml.model` (\"gpt2\" or \"llama\")".into())
    })?;
    let tokens = string_array(file, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types: Vec<i64> = match number_array(file, "tokenizer.ggml.token_type", n)? {
        Some(t) => t.into_iter().map(|v| v as i64).collect(),
        None => vec![1; n],
    };
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    if vocab.len() != n {
        return Err(file.error("`tokenizer.ggml.tokens` holds the same token twice".into()));
    }
    let added: Vec<Value> = (0..n)
        .filter(|&i| matches!(types[i], UNKNOWN | CONTROL | USER_DEFINED))
        .map(|i| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": types[i] != USER_DEFINED})
        })
        .collect();
    let bos = token_at(file, &tokens, "tokenizer.ggml.bos_token_id")?;
    let eos = token_at(file, &tokens, "tokenizer.ggml.eos_token_id")?;
    let unk = token_at(file, &tokens, "tokenizer.ggml.unknown_token_id")?;
    let pad = token_at(file, &tokens, "tokenizer.ggml.padding_token_id")?;
    let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let (model_json, normalizer, pre_tokenizer, decoder, default_bos) = match model {
        "gpt2" => {
            let merges = string_array(file, "tokenizer.ggml.merges")?;
            let byte_level = |use_regex: bool| {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                       "use_regex": use_regex})
            };
            let (pre_tok, ignore_merges) = match pre {
                "llama-bpe" | "llama3" | "llama-v3" => (
                    json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT},
                         "behavior": "Isolated", "invert": false},
                        byte_level(false)]}),
                    true,
                ),
                "smollm" => (
                    json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                    false,
                ),
                "default" | "gpt2" => (byte_level(true), false),
                other => {
                    return Err(file.error(format!(
                        "`tokenizer.ggml.pre` is \"{other}\"; supported pre-tokenizers: default, gpt2, llama-bpe, llama3, smollm"
                    )));
                }
            };
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": ignore_merges, "vocab": vocab,
                "merges": merges});
            let decoder = byte_level(true);
            (model, Value::Null, pre_tok, decoder, ignore_merges)
        }
        "llama" => {
            let scores = number_array(file, "tokenizer.ggml.scores", n)?.ok_or_else(|| {
                file.error("missing `tokenizer.ggml.scores` (SentencePiece scores)".into())
            })?;
            let merges = spm_merges(&tokens, &scores);
            let prefix = file
                .get_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);
            let replace =
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
            let normalizer = if prefix {
                json!({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "\u{2581}"}, replace]})
            } else {
                replace
            };
            let mut steps = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let model = json!({"type": "BPE", "dropout": null, "unk_token": unk,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
                "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges});
            let decoder = json!({"type": "Sequence", "decoders": steps});
            (model, normalizer, Value::Null, decoder, true)
        }
        other => {
            return Err(file.error(format!(
                "`tokenizer.ggml.model` is \"{other}\"; expected \"gpt2\" or \"llama\""
            )));
        }
    };
    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_bos);
    let add_eos = file
        .get_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let post = post_processor(
        &tokens,
        add_bos.then_some(()).and(bos),
        add_eos.then_some(()).and(eos),
    );
    let tokenizer_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post,
        "decoder": decoder, "model": model_json,
    });
    let template = file.get_str("tokenizer.chat_template")?;
    let tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad,
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": false,
        "model_max_length": file.get_u64("llama.context_length")?.unwrap_or(2048),
        "chat_template": template,
    });
    Ok(GgufTokenizerFiles {
        tokenizer_json,
        tokenizer_config,
    })
}

/// A TemplateProcessing that puts BOS before and EOS after each sequence, as asked.
fn post_processor(tokens: &[&str], bos: Option<&str>, eos: Option<&str>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let id_of = |t: &str| tokens.iter().position(|x| *x == t).unwrap_or(0);
    let mut special = serde_json::Map::new();
    let seq = |name: &str, type_id: u32| {
        let mut items = Vec::new();
        if let Some(b) = bos {
            items.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
        }
        items.push(json!({"Sequence": {"id": name, "type_id": type_id}}));
        if let Some(e) = eos {
            items.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
        }
        items
    };
    for t in bos.iter().chain(eos.iter()) {
        special.insert(
            t.to_string(),
            json!({"id": t, "ids": [id_of(t)], "tokens": [t]}),
        );
    }
    let mut pair = seq("A", 0);
    pair.extend(seq("B", 1));
    json!({"type": "TemplateProcessing", "single": seq("A", 0), "pair": pair,
           "special_tokens": special})
}

/// SentencePiece merges from the vocabulary: every split of a piece into two pieces of the
/// vocabulary, ordered by the merged piece's score (best first), ties by the ids of the merged,
/// left and right pieces.
fn spm_merges(tokens: &[&str], scores: &[f64]) -> Vec<[String; 2]> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (k, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&piece[..k]), ids.get(&piece[k..])) {
                merges.push((scores[id], id, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    merges
        .into_iter()
        .map(|(_, _, l, r)| [tokens[l].to_string(), tokens[r].to_string()])
        .collect()
}

/// The tokenizer stored in `file`, with its special tokens and chat template.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<LlamaTokenizer> {
    let files = tokenizer_files(file)?;
    let inner =
        tokenizers::Tokenizer::from_str(&files.tokenizer_json.to_string()).map_err(|e| {
            file.error(format!(
                "the tokenizer built from `tokenizer.ggml.*` is invalid: {e}"
            ))
        })?;
    let config = TokenizerConfig::from_json(&files.tokenizer_config);
    LlamaTokenizer::from_config(inner, config)
        .map_err(|e| file.error(format!("`tokenizer.chat_template`: {e}")))
}
