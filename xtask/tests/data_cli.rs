//! `cargo xtask data` on the shipped dataset: the counts it prints are those of the library,
//! and a malformed line is one `error: file:line: reason` with exit status 1 (or, with
//! `--skip-invalid`, a summary on stderr).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn tokenizer() -> String {
    root()
        .join("crates/data/tests/fixtures/tokenizers/chatml")
        .display()
        .to_string()
}

#[test]
fn inspects_the_shipped_dataset() {
    let train = root().join("data/alpaca-eval/train.jsonl");
    let out = xtask(&[
        "data",
        "--data",
        train.to_str().unwrap(),
        "--model",
        &tokenizer(),
        "--template",
        "chatml",
        "--max-seq-len",
        "64",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "format            alpaca (template chatml)",
        "records           725",
        "length histogram",
        "packing efficiency (rows of 64)",
        "trained spans in ⟦ ⟧",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let kept: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("examples kept"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let dropped: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dropped (nothing to train)"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert_eq!(kept + dropped, 725);
    assert!(
        dropped > 0,
        "prompts longer than 64 tokens leave nothing to train"
    );
}

#[test]
fn malformed_line_is_one_error_or_a_skip_summary() {
    let bad = root().join("crates/data/tests/fixtures/bad/malformed.jsonl");
    let args = [
        "data",
        "--data",
        bad.to_str().unwrap(),
        "--model",
        &tokenizer(),
    ];
    let out = xtask(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}:2: malformed JSON", bad.display())),
        "{stderr}"
    );
    let out = xtask(&[&args[..], &["--skip-invalid"]].concat());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 invalid record(s) skipped"), "{stderr}");
}

#[test]
fn a_gguf_model_gives_its_chat_template_to_conversations() {
    // The GGUF carries its chat template in its metadata; `data` used to look for one in
    // tokenizer_config.json only and stopped with "the tokenizer has none".
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-data-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("chat.jsonl");
    std::fs::write(
        &data,
        r#"{"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on the mat"}]}
{"messages": [{"role": "user", "content": "a dog"}, {"role": "assistant", "content": "ran"}]}
"#,
    )
    .unwrap();
    let gguf = root().join("crates/llama-model/tests/fixtures/gguf/tiny.gguf");
    let out = xtask(&[
        "data",
        "--data",
        data.to_str().unwrap(),
        "--model",
        gguf.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("records           2"), "{stdout}");
    assert!(stdout.contains("messages (template auto)"), "{stdout}");
    assert!(stdout.contains("examples kept     2"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}
