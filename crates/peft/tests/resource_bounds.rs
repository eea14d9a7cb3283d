//! An adapter directory is untrusted input: `adapter_config.json` nested a million deep and an
//! `adapter_model.safetensors` whose header claims a huge header or tensor are each one error
//! naming the file; nothing is allocated from the declared sizes.

use std::path::{Path, PathBuf};

use peft::{AdapterWeights, LoraConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peft-bounds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn adapter_config_nested_a_million_deep_is_one_error() {
    let dir = scratch("deep");
    let n = 1_000_000;
    std::fs::write(
        dir.join("adapter_config.json"),
        format!("{{\"r\": {}8{}}}", "[".repeat(n), "]".repeat(n)),
    )
    .unwrap();
    let e = LoraConfig::from_file(&dir).unwrap_err().to_string();
    assert!(
        e.contains("adapter_config.json") && e.contains("recursion limit exceeded"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adapter_weights_with_huge_declared_sizes_are_one_error() {
    let dir = scratch("huge");
    let path = dir.join("adapter_model.safetensors");
    let header = "{\"base_model.model.x.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}";
    for (len, header) in [
        (u64::MAX, "{}"),
        (99_999_999, "{}"),
        (header.len() as u64, header),
    ] {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend([0u8; 4]);
        std::fs::write(&path, bytes).unwrap();
        let e = match AdapterWeights::open(&dir) {
            Ok(_) => panic!("a header of {len} bytes must be rejected"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&path.display().to_string()) && e.contains("truncated or corrupt"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
