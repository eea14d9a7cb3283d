//! The GGUF reader against gguf-py 0.19.0 (`scripts/fixtures/make_gguf_fixtures.py`):
//! metadata of every value type, tensors of every supported ggml type dequantized bit for bit as
//! `gguf.quants.dequantize` does, and one clear error for each kind of bad file.

use std::path::{Path, PathBuf};

use llama_model::Error;
use llama_model::gguf::{GgmlType, GgufFile, MetaValue};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

#[test]
fn every_type_dequantizes_as_gguf_py_does() {
    let file = GgufFile::open(fixture("dequant.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    let types = [
        ("F32", GgmlType::F32),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q4_K", GgmlType::Q4_K),
        ("Q5_K", GgmlType::Q5_K),
        ("Q6_K", GgmlType::Q6_K),
    ];
    for (name, ty) in types {
        let info = file.tensor(&format!("{name}.weight")).unwrap();
        assert_eq!(info.ggml_type, ty);
        assert_eq!(info.shape(), vec![3, 512], "{name}");
        let got = file.dequantize(&format!("{name}.weight")).unwrap();
        let want = file.dequantize(&format!("{name}.expected")).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            mismatches, 0,
            "{name}: {mismatches} values differ from gguf-py"
        );
        // Not all zero: the fixture exercises real values.
        assert!(want.iter().filter(|v| **v != 0.0).count() > 1000, "{name}");
    }
}

#[test]
fn metadata_of_every_value_type() {
    let file = GgufFile::open(fixture("dequant.gguf")).unwrap();
    let text = std::fs::read_to_string(fixture("dequant.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = &json["metadata"];
    let get = |k: &str| file.get(k).unwrap().clone();
    assert_eq!(get("meta.u8"), MetaValue::U8(200));
    assert_eq!(get("meta.i8"), MetaValue::I8(-100));
    assert_eq!(get("meta.u16"), MetaValue::U16(60000));
    assert_eq!(get("meta.i16"), MetaValue::I16(-30000));
    assert_eq!(get("meta.u32"), MetaValue::U32(4_000_000_000));
    assert_eq!(get("meta.i32"), MetaValue::I32(-2_000_000_000));
    assert_eq!(get("meta.f32"), MetaValue::F32(0.15625));
    assert_eq!(get("meta.bool"), MetaValue::Bool(true));
    assert_eq!(get("meta.u64").as_u64(), want["meta.u64"].as_u64());
    assert_eq!(
        get("meta.i64"),
        MetaValue::I64(want["meta.i64"].as_i64().unwrap())
    );
    assert_eq!(
        get("meta.f64"),
        MetaValue::F64(want["meta.f64"].as_f64().unwrap())
    );
    assert_eq!(get("meta.string").as_str(), want["meta.string"].as_str());
    let ints: Vec<i64> = get("meta.array_i32")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as i64)
        .collect();
    assert_eq!(ints, vec![1, -2, 3]);
    let strs: Vec<&str> = want["meta.array_str"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let meta_strs = get("meta.array_str");
    let got: Vec<&str> = meta_strs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, strs);
    // Typed getters name the key on a type mismatch.
    let err = file.get_str("meta.u8").unwrap_err().to_string();
    assert!(
        err.contains("meta.u8") && err.contains("expected a string"),
        "{err}"
    );
}

/// A copy of `dequant.gguf` with `edit` applied, in a temp file.
fn edited(tag: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture("dequant.gguf")).unwrap();
    edit(&mut bytes);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gguf-{tag}-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_err(path: &Path) -> String {
    let err = GgufFile::open(path)
        .err()
        .expect("the file must be rejected");
    assert!(
        matches!(err, Error::Gguf { .. } | Error::Io { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    let _ = std::fs::remove_file(path);
    msg
}

/// Offset of the `type` field of the first tensor info (`F32.source`).
fn first_tensor_type_offset(bytes: &[u8]) -> usize {
    let name = b"F32.source";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    at + name.len() + 4 + 2 * 8
}

#[test]
fn version_2_reads_like_version_3() {
    let path = edited("v2", |b| b[4..8].copy_from_slice(&2u32.to_le_bytes()));
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(
        file.dequantize("Q4_K.weight").unwrap(),
        file.dequantize("Q4_K.expected").unwrap()
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn bad_files_get_one_clear_error() {
    let msg = open_err(&edited("magic", |b| b[0] = b'X'));
    assert!(msg.contains("not a GGUF file"), "{msg}");

    let msg = open_err(&edited("version", |b| {
        b[4..8].copy_from_slice(&7u32.to_le_bytes())
    }));
    assert!(
        msg.contains("version 7") && msg.contains("expected 2 or 3"),
        "{msg}"
    );

    let msg = open_err(&edited("trunc-header", |b| b.truncate(200)));
    assert!(msg.contains("truncated") && msg.contains("offset"), "{msg}");

    let msg = open_err(&edited("trunc-data", |b| b.truncate(b.len() - 100)));
    assert!(
        msg.contains("outside the file") && msg.contains("Q6_K.expected"),
        "{msg}"
    );

    let msg = open_err(&edited("type", |b| {
        let at = first_tensor_type_offset(b);
        b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    }));
    assert!(
        msg.contains("F32.source") && msg.contains("type id 99"),
        "{msg}"
    );

    let msg = open_err(&edited("offset", |b| {
        let at = first_tensor_type_offset(b) + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }));
    assert!(
        msg.contains("F32.source") && msg.contains("outside the file"),
        "{msg}"
    );

    // Found by fuzzing (crates/fuzz/regressions/gguf): a first dimension whose byte size
    // overflows u64 panicked with overflow checks and wrapped without them.
    let msg = open_err(&edited("huge-dim", |b| {
        let at = first_tensor_type_offset(b) - 2 * 8;
        b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    }));
    assert!(
        msg.contains("F32.source") && msg.contains("overflow"),
        "{msg}"
    );

    let msg = open_err(&edited("misaligned", |b| {
        let at = first_tensor_type_offset(b) + 4;
        b[at..at + 8].copy_from_slice(&4u64.to_le_bytes());
    }));
    assert!(msg.contains("alignment"), "{msg}");

    let msg = open_err(&edited("value-type", |b| {
        // The value type of the first metadata pair follows its key.
        let key = b"general.architecture";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        b[at..at + 4].copy_from_slice(&42u32.to_le_bytes());
    }));
    assert!(
        msg.contains("general.architecture") && msg.contains("value type 42"),
        "{msg}"
    );

    let msg = open_err(&edited("count", |b| {
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    }));
    assert!(msg.contains("tensor count"), "{msg}");

    let missing = fixture("no-such-file.gguf");
    let msg = GgufFile::open(&missing).err().unwrap().to_string();
    assert!(msg.contains("no-such-file.gguf"), "{msg}");
}
