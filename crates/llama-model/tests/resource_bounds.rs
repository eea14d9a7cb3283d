//! Sizes a file declares never drive allocation: GGUF headers claiming 2^60 tensors, metadata
//! pairs, array elements or string bytes, arrays nested a million deep, tensor dimensions whose
//! product overflows; safetensors headers claiming a huge header or tensor; `config.json` and
//! `model.safetensors.index.json` nested a million deep. Each is one error naming the file, and
//! none allocates what it claims (the test process would abort if one did).

use std::path::{Path, PathBuf};

use llama_model::gguf::GgufFile;
use llama_model::{LlamaConfig, SafetensorsSource};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-bounds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const HUGE: u64 = 1 << 60;

/// A GGUF v3 file: header with `n_tensors` and `n_kv`, then `body`.
fn gguf(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend(body);
    b
}

/// A GGUF string: `u64` length, bytes.
fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend(s.as_bytes());
    b
}

fn gguf_error(tag: &str, bytes: Vec<u8>) -> String {
    let dir = scratch(&format!("gguf-{tag}"));
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path)
        .err()
        .expect("must be rejected")
        .to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn gguf_counts_and_lengths_are_checked_against_the_file() {
    let e = gguf_error("tensors", gguf(HUGE, 0, &[]));
    assert!(
        e.contains("tensor count") && e.contains(&HUGE.to_string()),
        "{e}"
    );
    let e = gguf_error("kv", gguf(0, HUGE, &[]));
    assert!(e.contains("metadata count"), "{e}");
    let mut key = HUGE.to_le_bytes().to_vec();
    key.extend([0u8; 8]);
    let e = gguf_error("key", gguf(0, 1, &key));
    assert!(e.contains("length of metadata key"), "{e}");

    let mut value = string("general.name");
    value.extend(8u32.to_le_bytes());
    value.extend(HUGE.to_le_bytes());
    let e = gguf_error("string", gguf(0, 1, &value));
    assert!(
        e.contains("length of string value of `general.name`"),
        "{e}"
    );

    let mut array = string("tokenizer.ggml.scores");
    array.extend(9u32.to_le_bytes());
    array.extend(6u32.to_le_bytes());
    array.extend(HUGE.to_le_bytes());
    let e = gguf_error("array", gguf(0, 1, &array));
    assert!(
        e.contains("array length") && e.contains("tokenizer.ggml.scores"),
        "{e}"
    );

    let mut tensor = string("t");
    tensor.extend(2u32.to_le_bytes());
    tensor.extend((1u64 << 62).to_le_bytes());
    tensor.extend(2u64.to_le_bytes());
    tensor.extend(0u32.to_le_bytes()); // F32
    tensor.extend(0u64.to_le_bytes());
    let e = gguf_error("dims", gguf(1, 0, &tensor));
    assert!(e.contains("tensor `t`") && e.contains("overflow"), "{e}");
}

#[test]
fn gguf_arrays_nested_a_million_deep_are_one_error() {
    let depth = 1_000_000;
    let mut body = string("a");
    body.extend(9u32.to_le_bytes());
    for _ in 0..depth {
        body.extend(9u32.to_le_bytes());
        body.extend(1u64.to_le_bytes());
    }
    body.extend(4u32.to_le_bytes());
    body.extend(0u64.to_le_bytes());
    let e = gguf_error("nested", gguf(0, 1, &body));
    assert!(
        e.contains("array `a`") && e.contains("nests arrays more than"),
        "{e}"
    );
}

fn safetensors_error(tag: &str, bytes: Vec<u8>) -> String {
    let dir = scratch(&format!("st-{tag}"));
    let path = dir.join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = SafetensorsSource::open(&dir)
        .err()
        .expect("must be rejected")
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

/// A safetensors file: the header length, the header, the data.
fn safetensors(header_len: u64, header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = header_len.to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

#[test]
fn safetensors_header_and_shapes_are_checked_against_the_file() {
    let e = safetensors_error("len", safetensors(u64::MAX, "{}", &[]));
    assert!(e.contains("HeaderTooLarge") || e.contains("header"), "{e}");
    let e = safetensors_error("len2", safetensors(99_999_999, "{}", &[]));
    assert!(e.contains("truncated or corrupt"), "{e}");
    for (tag, shape) in [
        ("shape", "[1048576, 1048576]"),
        ("overflow", "[4294967296, 4294967296, 4294967296]"),
    ] {
        let header =
            format!("{{\"w\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[0,4]}}}}");
        let e = safetensors_error(tag, safetensors(header.len() as u64, &header, &[0; 4]));
        assert!(e.contains("truncated or corrupt"), "{e}");
    }
}

#[test]
fn json_nested_a_million_deep_is_one_error() {
    let n = 1_000_000;
    let deep = format!("{{\"hidden_size\": {}1{}}}", "[".repeat(n), "]".repeat(n));
    let dir = scratch("deep-json");
    let config = dir.join("config.json");
    std::fs::write(&config, &deep).unwrap();
    let e = LlamaConfig::from_file(&config).unwrap_err().to_string();
    // Typed parsing stops at the first wrong type or at serde_json's recursion limit: either
    // way one error naming the file, not a stack overflow.
    assert!(e.contains("config.json") && !e.contains('\n'), "{e}");
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(&index, deep.replace("hidden_size", "weight_map")).unwrap();
    let e = SafetensorsSource::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors.index.json") && !e.contains('\n'),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
