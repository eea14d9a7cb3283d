//! What the command-line tests of training, publishing and sweeping share: the binary, a tiny
//! instruction dataset, the fixture models, a scratch directory.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `xtask args` with `env` set (and HF_TOKEN / HF_ENDPOINT cleared unless given).
pub fn xtask_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Runs `xtask args`.
pub fn xtask(args: &[&str]) -> Output {
    xtask_env(args, &[])
}

/// A fixture model of `crates/llama-model/tests/fixtures/models`.
pub fn fixture_model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/llama-model/tests/fixtures/models")
        .join(name)
}

/// `dir/train.jsonl` with `n` alpaca records ("Say i." -> "i").
pub fn tiny_dataset(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("train.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"instruction": format!("Say {i}."), "output": i.to_string()})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// An empty scratch directory under the target's temporary directory.
pub fn scratch(tag: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `train` of a LoRA run `name` on the tiny dataset and the `mha_untied` fixture, with `extra`
/// arguments; returns the run directory.
pub fn train_tiny(dir: &Path, name: &str, steps: u64, extra: &[&str]) -> PathBuf {
    let data = tiny_dataset(dir, 16);
    let model = fixture_model("mha_untied");
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--max-steps",
        &steps,
        "--batch-size",
        "2",
        "--max-seq-len",
        "128",
        "--output-dir",
        dir.to_str().unwrap(),
        "--run-name",
        name,
    ];
    args.extend_from_slice(extra);
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(name)
}
