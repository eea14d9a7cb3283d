//! Fuzz targets for every reader of untrusted input: one function per target taking the raw
//! bytes AFL++ produces. The same functions replay the committed seeds and every regression
//! input in `tests/corpus.rs`, so the targets build and run in every `cargo test`.
//!
//! A target must never panic, abort or hang: bad input is an `Err`. Each returns whether the
//! input was accepted all the way, which the corpus test uses to check the seeds stay valid.
//! Readers that take a path get the input written to a scratch directory of this process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_model::TensorSource;
use serde_json::Value;

/// A fuzz target: raw input in, `true` when every stage accepted it.
pub type Target = fn(&[u8]) -> bool;

/// Every target by name (`cargo xtask fuzz NAME`; seeds in `crates/fuzz/seeds/NAME`).
pub const TARGETS: [(&str, Target); 7] = [
    ("safetensors", safetensors),
    ("safetensors_index", safetensors_index),
    ("gguf", gguf),
    ("bnb_state", bnb_state),
    ("adapter_config", adapter_config),
    ("tokenizer_config", tokenizer_config),
    ("records", records),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Largest tensor (elements) a target converts after a successful open; the input itself bounds
/// the data, this only keeps one execution in milliseconds.
const MAX_ELEMENTS: usize = 1 << 20;

/// This process's scratch directory (removed by nobody: one per fuzzing process, in /tmp).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("llama-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// A fresh subdirectory `name` of the scratch directory holding `files`.
fn write_dir(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a fuzz input directory");
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).expect("write a fuzz input file");
    }
    dir
}

/// Reads every tensor of an opened checkpoint as f32 and raw.
fn read_tensors(source: &mut llama_model::SafetensorsSource) -> bool {
    let mut ok = true;
    for (key, shape) in source.keys() {
        if shape.iter().product::<usize>() > MAX_ELEMENTS {
            continue;
        }
        ok &= source.take_raw(&key).is_ok_and(|t| t.is_some());
        // F32/F16/BF16/F64 convert; other dtypes must be a clean error.
        let _ = source.take(&key, &shape);
        // A wrong shape must be an error, never a panic.
        let mut wrong = shape.clone();
        wrong.push(1);
        ok &= source.take(&key, &wrong).is_err();
    }
    ok
}

/// `model.safetensors`: the 8-byte length, the JSON header, dtypes, shapes and offsets.
pub fn safetensors(data: &[u8]) -> bool {
    let dir = write_dir("safetensors", &[("model.safetensors", data)]);
    match llama_model::SafetensorsSource::open(&dir) {
        Ok(mut source) => read_tensors(&mut source),
        Err(_) => false,
    }
}

/// Two valid shards (`model-0000{1,2}-of-00002.safetensors`) that an index may name.
fn shards() -> &'static [(String, Vec<u8>); 2] {
    static SHARDS: OnceLock<[(String, Vec<u8>); 2]> = OnceLock::new();
    SHARDS.get_or_init(|| {
        use safetensors::{Dtype, tensor::TensorView};
        let f32s: Vec<u8> = [1.0f32, -2.0, 0.5, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16s = [0x80u8, 0x3f, 0x00, 0x40, 0x80, 0xbf];
        let one = [
            ("a", TensorView::new(Dtype::F32, vec![2, 2], &f32s).unwrap()),
            ("b", TensorView::new(Dtype::BF16, vec![3], &bf16s).unwrap()),
        ];
        let u8s = [1u8, 2, 3, 4];
        let two = [
            ("c", TensorView::new(Dtype::F16, vec![2], &u8s).unwrap()),
            ("d", TensorView::new(Dtype::U8, vec![4], &u8s).unwrap()),
        ];
        [
            (
                "model-00001-of-00002.safetensors".to_string(),
                safetensors::serialize(one, None).unwrap(),
            ),
            (
                "model-00002-of-00002.safetensors".to_string(),
                safetensors::serialize(two, None).unwrap(),
            ),
        ]
    })
}

/// `model.safetensors.index.json` next to two valid shards: the weight map's shard names.
pub fn safetensors_index(data: &[u8]) -> bool {
    let [(n1, s1), (n2, s2)] = shards();
    let dir = write_dir(
        "safetensors_index",
        &[
            ("model.safetensors.index.json", data),
            (n1, s1.as_slice()),
            (n2, s2.as_slice()),
        ],
    );
    match llama_model::SafetensorsSource::open(&dir) {
        Ok(mut source) => read_tensors(&mut source),
        Err(_) => false,
    }
}

/// A `.gguf` file: header, metadata, tensor infos, the Llama config, the tokenizer (both the
/// transformers files and the live tokenizer) and every tensor's dequantization.
pub fn gguf(data: &[u8]) -> bool {
    use llama_model::gguf;
    let dir = write_dir("gguf", &[("model.gguf", data)]);
    let path = dir.join("model.gguf");
    let Ok(file) = gguf::GgufFile::open(&path) else {
        return false;
    };
    let mut ok = gguf::config_from_gguf(&file).is_ok();
    ok &= gguf::tokenizer_files(&file).is_ok();
    match gguf::tokenizer_from_gguf(&file) {
        Ok(tok) => {
            if let Ok(ids) = tok.encode("Hello world!", true) {
                let _ = tok.decode(&ids, false);
            }
        }
        Err(_) => ok = false,
    }
    for info in file.tensors() {
        if info.numel() <= MAX_ELEMENTS {
            let _ = file.dequantize(&info.name);
        }
    }
    drop(file);
    ok & gguf::GgufSource::open(&path).is_ok()
}

/// The bitsandbytes 4-bit quant-state JSON (`weight.quant_state.bitsandbytes__nf4`), read with
/// tensors shaped as the state says (so the fuzzer gets past the shape checks) and dequantized;
/// the same bytes as `config.json`'s `quantization_config` ([`quant::BnbConfig`]).
pub fn bnb_state(data: &[u8]) -> bool {
    use quant::{QuantType, RawTensor};
    let config_ok = serde_json::from_slice::<Value>(data)
        .ok()
        .is_some_and(|v| quant::BnbConfig::from_json(&v).is_ok());
    let parsed: Option<quant::QuantState4> = serde_json::from_slice(data).ok();
    // The weight shape config.json would give: the state's own when small, so reading proceeds.
    let expected = match parsed.as_ref().map(|s| s.shape.as_slice()) {
        Some(&[o, i]) if o.checked_mul(i).is_some_and(|n| n <= MAX_ELEMENTS) => [o, i],
        _ => [4, 64],
    };
    let quant_type = match parsed.as_ref().map(|s| s.quant_type.as_str()) {
        Some("fp4") => QuantType::Fp4,
        _ => QuantType::Nf4,
    };
    let nested = parsed
        .as_ref()
        .is_some_and(|s| s.nested_blocksize.is_some());
    let blocksize = parsed
        .as_ref()
        .map_or(64, |s| s.blocksize)
        .clamp(1, MAX_ELEMENTS);
    let numel = expected[0] * expected[1];
    let blocks = numel.div_ceil(blocksize);
    let prefix = "model.layers.0.mlp.up_proj";
    let state_key = format!(
        "{prefix}.weight.quant_state.bitsandbytes__{}",
        quant_type.name()
    );
    let mut take = |key: &str| -> quant::Result<Option<RawTensor>> {
        let suffix = key.strip_prefix(prefix).unwrap_or(key);
        Ok(Some(match suffix {
            s if s == &state_key[prefix.len()..] => {
                RawTensor::from_u8(vec![data.len()], data.to_vec())
            }
            ".weight" => RawTensor::from_u8(
                vec![numel.div_ceil(2), 1],
                (0..numel.div_ceil(2)).map(|i| i as u8).collect(),
            ),
            ".weight.quant_map" => RawTensor::from_f32(vec![16], &quant_type.code()),
            ".weight.absmax" if nested => {
                RawTensor::from_u8(vec![blocks], (0..blocks).map(|i| i as u8).collect())
            }
            ".weight.absmax" => RawTensor::from_f32(vec![blocks], &vec![0.5; blocks]),
            ".weight.nested_absmax" => RawTensor::from_f32(
                vec![blocks.div_ceil(256)],
                &vec![0.25; blocks.div_ceil(256)],
            ),
            ".weight.nested_quant_map" => {
                RawTensor::from_f32(vec![256], &quant::dynamic_map_signed())
            }
            _ => return Ok(None),
        }))
    };
    match quant::bnb::read_4bit(prefix, &state_key, expected, &mut take) {
        Ok(q) => config_ok | quant::dequantize_4bit(&q).is_ok_and(|w| w.len() == numel),
        Err(_) => config_ok,
    }
}

/// `adapter_config.json`: parsed, queried, and written back the way PEFT does, which must read
/// again with the same settings.
pub fn adapter_config(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let Ok(config) = peft::LoraConfig::from_json(&v) else {
        return false;
    };
    let names: Vec<String> = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.mlp.down_proj",
    ]
    .into_iter()
    .filter(|n| config.targets(n))
    .map(String::from)
    .collect();
    for n in &names {
        let _ = config.spec_for(n);
    }
    let _ = config.pissa_converted();
    let written = config.to_peft_json(&names);
    let again = peft::LoraConfig::from_json(&written).unwrap_or_else(|e| {
        panic!("adapter_config.json written for {config:?} does not read back: {e}\n{written}")
    });
    assert_eq!(
        (
            again.r,
            again.lora_alpha,
            again.lora_dropout,
            again.use_rslora,
            again.use_dora,
            &again.init_lora_weights,
            &again.rank_pattern,
            &again.alpha_pattern,
            &again.base_model_name_or_path,
        ),
        (
            config.r,
            config.lora_alpha,
            config.lora_dropout,
            config.use_rslora,
            config.use_dora,
            &config.init_lora_weights,
            &config.rank_pattern,
            &config.alpha_pattern,
            &config.base_model_name_or_path,
        ),
        "adapter_config.json round trip changed a setting"
    );
    true
}

/// `tokenizer_config.json`: special tokens and the chat template, compiled and rendered for a
/// short conversation with and without the generation prompt.
pub fn tokenizer_config(data: &[u8]) -> bool {
    use llama_tokenizer::{ChatTemplate, Message, TokenizerConfig};
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let config = TokenizerConfig::from_json(&v);
    let Some(source) = &config.chat_template else {
        return false;
    };
    let bos = config.bos_token.as_deref().unwrap_or("<s>");
    let eos = config.eos_token.as_deref().unwrap_or("</s>");
    let Ok(template) = ChatTemplate::new(source, bos, eos) else {
        return false;
    };
    let messages = [
        Message::new("system", "You are terse."),
        Message::new("user", "Hi {{ there }} <s>"),
        Message::new("assistant", "Hello."),
        Message::new("user", "Bye"),
    ];
    let with = template.render(&messages, true).is_ok();
    let without = template.render(&messages[..3], false).is_ok();
    with && without
}

/// Dataset files: the first byte picks JSONL, a JSON array, CSV or Parquet, the rest is the file.
/// Every record is read, its format detected from the first and each parsed.
pub fn records(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    let name = match kind % 4 {
        0 => "data.jsonl",
        1 => "data.json",
        2 => "data.csv",
        _ => "data.parquet",
    };
    let dir = write_dir("records", &[(name, body)]);
    let Ok(iter) = data::read_file(&dir.join(name)) else {
        return false;
    };
    let map = data::FieldMap::default();
    let mut format = None;
    let mut ok = true;
    for rec in iter.take(10_000) {
        let Ok(rec) = rec else {
            ok = false;
            continue;
        };
        let f = match format {
            Some(f) => f,
            None => match data::Format::detect(&rec, &map) {
                Ok(f) => *format.insert(f),
                Err(_) => return false,
            },
        };
        ok &= data::format::parse(&rec, f, &map).is_ok();
    }
    ok
}
