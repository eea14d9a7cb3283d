//! The catalogue of bad inputs: one table of cases, each a command line over files it prepares,
//! and what its one error line must name (the file, the key or the line, and what was expected).
//! Every case must exit with status 1, print exactly one `error:` line, never panic, and never
//! repeat its cause (`x: not found: not found`). Grow it with every bad input found.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/llama-model/tests/fixtures")
}

fn fixture_model() -> PathBuf {
    fixtures().join("models/mha_untied")
}

fn eval_text() -> String {
    fixtures().join("eval.txt").display().to_string()
}

fn xtask(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// A copy of the fixture model in `dir/model` with `edit` applied to its config.json.
fn model_with_config(dir: &Path, edit: impl Fn(&mut Value)) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(fixture_model()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
    }
    let path = out.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    out
}

/// `eval` of the shipped text on a model whose config.json went through `edit`.
fn eval_with_config(dir: &Path, edit: impl Fn(&mut Value)) -> Vec<String> {
    let model = model_with_config(dir, edit);
    args(&["eval", "--model", &s(&model), "--data", &eval_text()])
}

/// `generate` on the fixture model with `extra` flags.
fn generate(extra: &[&str]) -> Vec<String> {
    let mut a = args(&["generate", "--model", &s(&fixture_model())]);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// `data` over one file named `name` holding `text`.
fn data_file(dir: &Path, name: &str, text: &str) -> Vec<String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    args(&["data", "--model", &s(&fixture_model()), "--data", &s(&path)])
}

/// A small Alpaca-style dataset.
fn alpaca(dir: &Path) -> PathBuf {
    let path = dir.join("train.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| {
            json!({"instruction": format!("Say the number {i}."), "output": format!("{i} is the number.")})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// `train` on the fixture model and a small dataset with `extra` flags.
fn train(dir: &Path, extra: &[&str]) -> Vec<String> {
    let data = alpaca(dir);
    let mut a = args(&[
        "train",
        "--model",
        &s(&fixture_model()),
        "--data",
        &s(&data),
        "--method",
        "lora",
        "--output-dir",
        &s(&dir.join("runs")),
        "--run-name",
        "r",
    ]);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// The fixture model with its first float tensor's first value set to NaN.
fn nan_model(dir: &Path) -> PathBuf {
    let model = model_with_config(dir, |_| {});
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (_, info) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| *k != "__metadata__" && v["dtype"] == "F32")
        .unwrap();
    let start = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    model
}

struct Case {
    name: &'static str,
    /// Prepares the inputs in the given (empty) directory; returns the command line.
    setup: fn(&Path) -> Vec<String>,
    /// What the error line must contain.
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    // Models and config.json.
    Case {
        name: "model directory missing",
        setup: |d| {
            args(&[
                "eval",
                "--model",
                &s(&d.join("nope")),
                "--data",
                &eval_text(),
            ])
        },
        expect: &["nope", "model not found"],
    },
    Case {
        name: "config.json truncated",
        setup: |d| {
            let m = model_with_config(d, |_| {});
            std::fs::write(m.join("config.json"), "{\"model_type\": \"llama\",").unwrap();
            args(&["eval", "--model", &s(&m), "--data", &eval_text()])
        },
        expect: &["config.json", "invalid JSON", "line 1"],
    },
    Case {
        name: "config.json negative rms_norm_eps",
        setup: |d| eval_with_config(d, |c| c["rms_norm_eps"] = json!(-1e-6)),
        expect: &["config.json", "`rms_norm_eps`", "positive"],
    },
    Case {
        name: "config.json hidden_size 0",
        setup: |d| eval_with_config(d, |c| c["hidden_size"] = json!(0)),
        expect: &["config.json", "`hidden_size` is 0"],
    },
    Case {
        name: "config.json vocab_size 0",
        setup: |d| eval_with_config(d, |c| c["vocab_size"] = json!(0)),
        expect: &["config.json", "`vocab_size` is 0"],
    },
    Case {
        name: "config.json intermediate_size 0",
        setup: |d| eval_with_config(d, |c| c["intermediate_size"] = json!(0)),
        expect: &["config.json", "`intermediate_size` is 0"],
    },
    Case {
        name: "config.json negative rope_theta",
        setup: |d| eval_with_config(d, |c| c["rope_theta"] = json!(-10000.0)),
        expect: &["config.json", "`rope_theta`"],
    },
    Case {
        name: "config.json llama3 scaling with high <= low frequency factor",
        setup: |d| {
            eval_with_config(d, |c| {
                c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
                    "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                    "original_max_position_embeddings": 64})
            })
        },
        expect: &["config.json", "`rope_scaling.high_freq_factor`"],
    },
    Case {
        name: "config.json another architecture",
        setup: |d| eval_with_config(d, |c| c["model_type"] = json!("gpt2")),
        expect: &["config.json", "model_type", "\"llama\""],
    },
    Case {
        name: "config.json kv heads do not divide heads",
        setup: |d| eval_with_config(d, |c| c["num_key_value_heads"] = json!(3)),
        expect: &["config.json", "num_key_value_heads"],
    },
    Case {
        name: "config.json size of the wrong type",
        setup: |d| eval_with_config(d, |c| c["hidden_size"] = json!("64")),
        expect: &["config.json", "invalid type", "line"],
    },
    Case {
        name: "safetensors truncated",
        setup: |d| {
            let m = model_with_config(d, |_| {});
            let p = m.join("model.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            args(&["eval", "--model", &s(&m), "--data", &eval_text()])
        },
        expect: &["model.safetensors"],
    },
    Case {
        name: "tokenizer.json broken",
        setup: |d| {
            let m = model_with_config(d, |_| {});
            std::fs::write(m.join("tokenizer.json"), "{").unwrap();
            args(&["generate", "--model", &s(&m), "--prompt", "hi"])
        },
        expect: &["tokenizer.json"],
    },
    Case {
        name: "NaN weights",
        setup: |d| args(&["generate", "--model", &s(&nan_model(d)), "--prompt", "hi"]),
        expect: &["NaN or infinite logits", "check the checkpoint"],
    },
    // Generation settings.
    Case {
        name: "negative temperature",
        setup: |_| generate(&["--temperature", "-1"]),
        expect: &["--temperature -1", ">= 0"],
    },
    Case {
        name: "NaN temperature",
        setup: |_| generate(&["--temperature", "NaN"]),
        expect: &["--temperature NaN"],
    },
    Case {
        name: "top-p above 1",
        setup: |_| generate(&["--top-p", "2"]),
        expect: &["--top-p 2", "(0, 1]"],
    },
    Case {
        name: "top-p 0",
        setup: |_| generate(&["--top-p", "0"]),
        expect: &["--top-p 0", "(0, 1]"],
    },
    Case {
        name: "negative top-p",
        setup: |_| generate(&["--top-p", "-0.5"]),
        expect: &["--top-p -0.5"],
    },
    Case {
        name: "no new tokens",
        setup: |_| generate(&["--max-new-tokens", "0"]),
        expect: &["--max-new-tokens 0"],
    },
    Case {
        name: "prompt longer than the context",
        setup: |_| generate(&["--prompt", &"word ".repeat(400)]),
        expect: &["max_position_embeddings"],
    },
    Case {
        name: "eval with rows too short to predict anything",
        setup: |_| {
            args(&[
                "eval",
                "--model",
                &s(&fixture_model()),
                "--data",
                &eval_text(),
                "--max-seq-len",
                "1",
            ])
        },
        expect: &["--max-seq-len 1", "at least 2"],
    },
    // Adapters.
    Case {
        name: "adapter directory missing",
        setup: |d| {
            args(&[
                "eval",
                "--model",
                &s(&fixture_model()),
                "--adapter",
                &s(&d.join("none")),
                "--data",
                &eval_text(),
            ])
        },
        expect: &["none"],
    },
    Case {
        name: "adapter_config.json with rank 0",
        setup: |d| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../crates/peft/tests/fixtures/lora_qv");
            let a = d.join("adapter");
            std::fs::create_dir_all(&a).unwrap();
            for f in ["adapter_config.json", "adapter_model.safetensors"] {
                std::fs::copy(src.join(f), a.join(f)).unwrap();
            }
            let p = a.join("adapter_config.json");
            let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            c["r"] = json!(0);
            std::fs::write(&p, c.to_string()).unwrap();
            args(&[
                "eval",
                "--model",
                &s(&fixture_model()),
                "--adapter",
                &s(&a),
                "--data",
                &eval_text(),
            ])
        },
        expect: &["adapter_config.json", "`r`"],
    },
    // Datasets.
    Case {
        name: "eval data file missing",
        setup: |d| {
            args(&[
                "eval",
                "--model",
                &s(&fixture_model()),
                "--data",
                &s(&d.join("missing.txt")),
            ])
        },
        expect: &["missing.txt", "No such file"],
    },
    Case {
        name: "CSV text after a closing quote",
        setup: |d| data_file(d, "bad.csv", "instruction,output\nhi,there\n\"a\"b,c\n"),
        expect: &["bad.csv:3", "field 1", "closing quote"],
    },
    Case {
        name: "CSV quote never closed",
        setup: |d| data_file(d, "bad.csv", "instruction,output\nhi,\"there\nmore,rows\n"),
        expect: &["bad.csv:2", "field 2", "never closed"],
    },
    Case {
        name: "CSV row with another number of fields",
        setup: |d| data_file(d, "bad.csv", "instruction,output\nhi,there,extra\n"),
        expect: &["bad.csv:2", "fields"],
    },
    Case {
        name: "JSONL line that is not JSON",
        setup: |d| {
            data_file(
                d,
                "d.jsonl",
                "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \n",
            )
        },
        expect: &["d.jsonl:2"],
    },
    Case {
        name: "dataset of an unknown kind",
        setup: |d| data_file(d, "d.xlsx", "x"),
        expect: &["d.xlsx", "unknown file kind", ".jsonl"],
    },
    // The memory planner.
    Case {
        name: "estimate with no tokens per row",
        setup: |_| args(&["estimate", "--model", "llama3.2-1b", "--seq-len", "0"]),
        expect: &["--seq-len 0"],
    },
    Case {
        name: "estimate with no rows",
        setup: |_| args(&["estimate", "--model", "llama3.2-1b", "--batch", "0"]),
        expect: &["--batch 0"],
    },
    Case {
        name: "estimate with rank 0",
        setup: |_| args(&["estimate", "--model", "llama3.2-1b", "--rank", "0"]),
        expect: &["--rank 0"],
    },
    Case {
        name: "estimate with negative memory",
        setup: |_| args(&["estimate", "--model", "llama3.2-1b", "--gpu-memory", "-3GB"]),
        expect: &["--gpu-memory -3GB", "positive"],
    },
    Case {
        name: "estimate with an unknown dtype",
        setup: |_| args(&["estimate", "--model", "llama3.2-1b", "--dtype", "f8"]),
        expect: &["--dtype f8"],
    },
    // Outputs that would replace a model.
    Case {
        name: "merge into a directory holding a model",
        setup: |d| {
            let out = model_with_config(d, |_| {});
            args(&[
                "merge",
                "--model",
                &s(&fixture_model()),
                "--adapter",
                &s(&PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../crates/peft/tests/fixtures/lora_qv")),
                "--out",
                &s(&out),
            ])
        },
        expect: &["--out", "not empty", "config.json", "--overwrite"],
    },
    Case {
        name: "quantize into a directory holding a model",
        setup: |d| {
            let out = model_with_config(d, |_| {});
            args(&[
                "quantize",
                "--model",
                &s(&fixture_model()),
                "--out",
                &s(&out),
            ])
        },
        expect: &["--out", "not empty", "--overwrite"],
    },
    Case {
        name: "export-gguf over an existing file",
        setup: |d| {
            let out = d.join("m.gguf");
            std::fs::write(&out, "old").unwrap();
            args(&[
                "export-gguf",
                "--model",
                &s(&fixture_model()),
                "--out",
                &s(&out),
            ])
        },
        expect: &["m.gguf", "exists", "--overwrite"],
    },
    // Serving.
    Case {
        name: "serve with an adapter without a name",
        setup: |_| {
            args(&[
                "serve",
                "--model",
                &s(&fixture_model()),
                "--adapter",
                "some/dir",
            ])
        },
        expect: &["--adapter some/dir", "NAME=DIR"],
    },
    Case {
        name: "serve with a missing adapter directory",
        setup: |d| {
            let missing = d.join("no-adapter");
            vec![
                "serve".into(),
                "--model".into(),
                s(&fixture_model()),
                "--adapter".into(),
                format!("tuned={}", s(&missing)),
                "--port".into(),
                "0".into(),
            ]
        },
        expect: &["--adapter tuned: ", "no-adapter", "No such file"],
    },
    Case {
        name: "serve with a context beyond the model's positions",
        setup: |_| {
            args(&[
                "serve",
                "--model",
                &s(&fixture_model()),
                "--context",
                "100000",
                "--port",
                "0",
            ])
        },
        expect: &["--context 100000", "max_position_embeddings"],
    },
    Case {
        name: "serve on a port that is taken",
        setup: |_| {
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = taken.local_addr().unwrap().port().to_string();
            // Kept open for the life of the test process.
            std::mem::forget(taken);
            args(&["serve", "--model", &s(&fixture_model()), "--port", &port])
        },
        expect: &["--port", "cannot listen", "in use"],
    },
    // Training settings.
    Case {
        name: "train with lora.alpha 0",
        setup: |d| train(d, &["--set", "lora.alpha=0"]),
        expect: &["`lora.alpha`", "positive"],
    },
    Case {
        name: "train with dropout 1.5",
        setup: |d| train(d, &["--set", "lora.dropout=1.5"]),
        expect: &["`lora.dropout`", "[0, 1)"],
    },
    Case {
        name: "train with a NaN clipping norm",
        setup: |d| train(d, &["--set", "max_grad_norm=nan"]),
        expect: &["`max_grad_norm`"],
    },
    Case {
        name: "train with a negative learning rate",
        setup: |d| train(d, &["--set", "optimizer.lr=-1"]),
        expect: &["`lr`", ">= 0"],
    },
    Case {
        name: "train with an unknown quantization type",
        setup: |d| train(d, &["--set", "quant.quant_type=nf5"]),
        expect: &["quant.quant_type", "nf4"],
    },
    Case {
        name: "train with an unknown key",
        setup: |d| train(d, &["--set", "lora.rank=8"]),
        expect: &["`lora.rank`", "unknown field", "r"],
    },
    Case {
        name: "train config file with an unknown key",
        setup: |d| {
            let cfg = d.join("train.toml");
            std::fs::write(&cfg, "max_steps = 1\nbatch_sise = 2\n").unwrap();
            train(d, &["--config", &s(&cfg)])
        },
        expect: &["train.toml", "batch_sise"],
    },
    Case {
        name: "train with sample prompts but no sample tokens",
        setup: |d| {
            train(
                d,
                &[
                    "--set",
                    "sample_prompts=[\"hi\"]",
                    "--set",
                    "sample_tokens=0",
                ],
            )
        },
        expect: &["`sample_tokens`"],
    },
];

/// The error line of a failed run, after the generic checks.
fn try_error_line(case: &str, out: &Output) -> Result<String, String> {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1) {
        return Err(format!(
            "{case}: exit status {:?}; stderr:\n{err}",
            out.status.code()
        ));
    }
    if err.contains("panicked") {
        return Err(format!("{case}: panicked:\n{err}"));
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    if errors.len() != 1 {
        return Err(format!("{case}: one error line expected:\n{err}"));
    }
    let line = errors[0].to_string();
    let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 8).collect();
    for (i, p) in parts.iter().enumerate() {
        if parts[i + 1..].contains(p) {
            return Err(format!("{case}: the cause `{p}` is repeated: {line}"));
        }
    }
    Ok(line)
}

fn error_line(case: &str, out: &Output) -> String {
    try_error_line(case, out).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_bad_input_gives_one_error_naming_it() {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("catalogue-{}", std::process::id()));
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let dir = root.join(i.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = xtask(&(case.setup)(&dir));
        let line = match try_error_line(case.name, &out) {
            Ok(line) => line,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let missing: Vec<&&str> = case.expect.iter().filter(|e| !line.contains(**e)).collect();
        if !missing.is_empty() {
            failures.push(format!("{}: missing {missing:?} in: {line}", case.name));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

fn digest(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_refused_merge_leaves_the_model_there_untouched() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("merge-keep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = model_with_config(&dir, |_| {});
    let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), digest(&p)))
        .collect();
    let adapter =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/peft/tests/fixtures/lora_qv");
    let run = |extra: &[&str]| {
        let mut a = args(&[
            "merge",
            "--model",
            &s(&fixture_model()),
            "--adapter",
            &s(&adapter),
            "--out",
            &s(&out),
        ]);
        a.extend(extra.iter().map(|x| x.to_string()));
        xtask(&a)
    };
    let refused = run(&[]);
    error_line("merge without --overwrite", &refused);
    for (p, bytes) in &before {
        assert_eq!(&digest(p), bytes, "{} changed", p.display());
    }
    // With --overwrite the directory holds exactly the new model: no stale file of the old one.
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    let done = run(&["--overwrite"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!out.join("stale.txt").exists());
    assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resuming_refuses_shape_changes_and_warns_about_course_changes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resume-changes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let first = xtask(&train(
        &dir,
        &[
            "--lora-r",
            "4",
            "--max-steps",
            "2",
            "--save-every",
            "1",
            "--batch-size",
            "2",
        ],
    ));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let run = dir.join("runs/r");
    let ckpt = run.join("checkpoint-2");
    let kept = |p: &Path| {
        (
            digest(&p.join("adapter_model.safetensors")),
            digest(&run.join("config.toml")),
        )
    };
    let before = kept(&ckpt);

    let resume = |extra: &[&str]| {
        let mut a = args(&["train", "--resume", &s(&run)]);
        a.extend(extra.iter().map(|x| x.to_string()));
        xtask(&a)
    };
    // Another rank: refused, naming the setting and both values; nothing changed.
    let out = resume(&["--lora-r", "8", "--max-steps", "3"]);
    let line = error_line("resume with another rank", &out);
    assert!(
        line.contains("`lora.r` 4 -> 8") && line.contains("checkpoint-2"),
        "{line}"
    );
    assert_eq!(kept(&ckpt), before);
    // DoRA on a LoRA checkpoint and another method: refused too.
    let out = resume(&["--set", "lora.use_dora=true", "--max-steps", "3"]);
    let line = error_line("resume with DoRA", &out);
    assert!(line.contains("`lora.use_dora` false -> true"), "{line}");
    let out = resume(&["--method", "full", "--max-steps", "3"]);
    let line = error_line("resume with another method", &out);
    assert!(line.contains("`method` \"lora\" -> \"full\""), "{line}");

    // Another batch size and other data: the run goes on, with one warning naming each.
    std::fs::write(
        dir.join("train.jsonl"),
        json!({"instruction": "Other data.", "output": "Indeed."}).to_string()
            + "\n"
            + &json!({"instruction": "More.", "output": "Yes."}).to_string(),
    )
    .unwrap();
    let out = resume(&[
        "--batch-size",
        "1",
        "--max-steps",
        "3",
        "--data",
        &s(&dir.join("train.jsonl")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: resuming with `batch_size` 2 -> 1"),
        "{err}"
    );
    assert!(
        err.contains("warning: resuming on other training data"),
        "{err}"
    );
    assert!(run.join("checkpoint-3").is_dir());
    let _ = std::fs::remove_dir_all(&dir);
}
