//! The GGUF commands end to end on the committed tiny GGUF: `convert` writes a checkpoint that
//! evaluates to the same loss as the GGUF, `export-gguf` writes it back (every `--type`), and a
//! bad file or type is one `error:` line. The default model (`fetch-default`) is exercised by
//! `crates/llama-model/tests/gguf_model.rs` when it is in the cache.

use std::path::PathBuf;
use std::process::Command;

fn gguf_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/llama-model/tests/fixtures/gguf")
        .join(name)
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = xtask(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn eval_loss(model: &str, data: &str) -> f64 {
    let out = ok(&["eval", "--model", model, "--data", data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn convert_and_export_round_trip() {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-gguf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let data = tmp.join("data.txt");
    std::fs::write(&data, "the cat in the world\nHello, wörld 123!\n").unwrap();
    let data = data.to_str().unwrap();
    let tiny = gguf_fixture("tiny.gguf");
    let tiny = tiny.to_str().unwrap();
    let hf = tmp.join("hf");
    ok(&["convert", "--model", tiny, "--out", hf.to_str().unwrap()]);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(hf.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(
        cfg["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    let base = eval_loss(tiny, data);
    let converted = eval_loss(hf.to_str().unwrap(), data);
    assert!((base - converted).abs() < 1e-6, "{base} vs {converted}");
    for ty in ["f16", "q8_0", "q4_0", "q4_1"] {
        let out = tmp.join(format!("tiny-{ty}.gguf"));
        let out = out.to_str().unwrap();
        ok(&[
            "export-gguf",
            "--model",
            hf.to_str().unwrap(),
            "--out",
            out,
            "--type",
            ty,
        ]);
        let loss = eval_loss(out, data);
        // f16 is what the fixture stores: exact; 8- and 4-bit stay near.
        let tol = if ty == "f16" { 1e-6 } else { 0.5 };
        assert!((loss - base).abs() < tol, "{ty}: {loss} vs {base}");
        // The exported file runs through the chat template and generation.
        ok(&[
            "generate",
            "--model",
            out,
            "--prompt",
            "the cat",
            "--chat",
            "--max-new-tokens",
            "4",
        ]);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bad_gguf_input_is_one_error_line() {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-bad-{}.gguf", std::process::id()));
    std::fs::write(&tmp, b"GGUF\x03\x00\x00\x00").unwrap();
    let path = tmp.to_str().unwrap();
    let out = xtask(&["generate", "--model", path, "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(path) && err.contains("truncated"), "{err}");
    let tiny = gguf_fixture("tiny.gguf");
    let out = xtask(&[
        "export-gguf",
        "--model",
        tiny.to_str().unwrap(),
        "--out",
        path,
        "--type",
        "q2_k",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--type q2_k"), "{err}");
    let _ = std::fs::remove_file(tmp);
}

#[test]
fn quantize_a_gguf_writes_a_usable_directory_with_its_tokenizer() {
    let gguf = gguf_fixture("tiny.gguf");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gguf-quantize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    ok(&[
        "quantize",
        "--model",
        gguf.to_str().unwrap(),
        "--method",
        "nf4",
        "--out",
        out.to_str().unwrap(),
    ]);
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The directory runs on its own: generate reads its tokenizer and weights.
    ok(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
    ]);
    std::fs::remove_dir_all(&out).unwrap();
}
