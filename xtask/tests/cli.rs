//! End-to-end checks of the command line on the shipped fixtures: `eval --json` prints one JSON
//! object whose loss matches transformers, `generate` streams the greedy continuation that
//! transformers produces, and bad input is one `error:` line with exit status 1.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/llama-model/tests/fixtures")
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn eval_json_matches_transformers_loss() {
    for name in ["mha_untied", "gqa_llama3_tied"] {
        let model = fixtures().join("models").join(name);
        let data = fixtures().join("eval.txt");
        let out = xtask(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.trim().lines().count(),
            1,
            "exactly one JSON line: {stdout}"
        );
        let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("expected.json")).unwrap())
                .unwrap();
        let want = &expected["eval"];
        assert_eq!(got["documents"], want["documents"]);
        assert_eq!(got["tokens"], want["tokens"]);
        let (loss, want_loss) = (
            got["loss"].as_f64().unwrap(),
            want["loss"].as_f64().unwrap(),
        );
        assert!(
            ((loss - want_loss) / want_loss).abs() <= 1e-5,
            "{name}: {loss} vs {want_loss}"
        );
        let ppl = got["perplexity"].as_f64().unwrap();
        assert!((ppl - loss.exp()).abs() <= 1e-9 * ppl);
    }
}

#[test]
fn eval_reads_jsonl_text_field() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures().join("eval.txt")).unwrap();
    let jsonl: String = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::json!({"text": l}).to_string() + "\n")
        .collect();
    let path = dir.join("eval.jsonl");
    std::fs::write(&path, jsonl).unwrap();
    let model = fixtures().join("models/mha_untied");
    let a = xtask(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        path.to_str().unwrap(),
        "--json",
    ]);
    let b = xtask(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        fixtures().join("eval.txt").to_str().unwrap(),
        "--json",
    ]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    // A JSONL record without `text` names the file and line.
    std::fs::write(&path, "{\"text\": \"ok\"}\n{\"body\": 1}\n").unwrap();
    let out = xtask(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("eval.jsonl:2") && err.contains("`text`"),
        "{err}"
    );
}

#[test]
fn generate_streams_the_library_greedy_answer() {
    use llama_model::{GenerationConfig, generate, load_pretrained};
    use llama_tokenizer::LlamaTokenizer;
    let model_dir = fixtures().join("models/mha_untied");
    let out = xtask(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        "The cat sat",
        "--max-new-tokens",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("tokens/s"), "{stderr}");

    // Same answer through the library (whose greedy decoding matches transformers, see
    // crates/llama-model/tests/parity.rs).
    type B = burn_ndarray::NdArray<f32>;
    let device = burn_ndarray::NdArrayDevice::Cpu;
    let model = load_pretrained::<B>(&model_dir, &device).unwrap();
    let tok = LlamaTokenizer::from_dir(&model_dir).unwrap();
    let mut eos = model.config().eos_token_ids.clone();
    eos.extend(tok.eos_token_id());
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        eos_token_ids: eos,
        ..Default::default()
    };
    let ids = generate(
        &model,
        &[tok.encode("The cat sat", true).unwrap()],
        &cfg,
        |_, _| {},
    )
    .unwrap();
    let want = tok.decode(&ids[0], true).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{want}\n"));
}

#[test]
fn bad_input_is_one_error_line() {
    let out = xtask(&["generate", "--model", "/no/such/model", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("/no/such/model"),
        "{err}"
    );

    let out = xtask(&["eval", "--data", "/no/such/file.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/no/such/file.txt"), "{err}");

    let long = "word ".repeat(400);
    let tiny = fixtures().join("models/gqa_llama3_tied");
    let out = xtask(&[
        "generate",
        "--model",
        tiny.to_str().unwrap(),
        "--prompt",
        &long,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_position_embeddings"), "{err}");
}

#[test]
fn quantize_writes_a_checkpoint_that_eval_runs() {
    let src = fixtures().join("models/mha_untied");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-quantize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = xtask(&[
        "quantize",
        "--model",
        src.to_str().unwrap(),
        "--method",
        "nf4",
        "--double-quant",
        "--out",
        out.to_str().unwrap(),
        "--report",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8(run.stdout).unwrap();
    // 2 layers x 7 projections, plus the total line.
    assert_eq!(
        report.lines().filter(|l| l.contains("_proj |")).count(),
        14,
        "{report}"
    );
    assert!(report.contains("**total**"), "{report}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Bytes of the quantized weights equal what transformers + bitsandbytes wrote for the same source.
    let ours = std::fs::read(out.join("model.safetensors")).unwrap();
    let theirs = std::fs::read(
        fixtures().join("../../../quant/tests/fixtures/models/mha_untied_nf4_dq/model.safetensors"),
    )
    .unwrap();
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&ours).unwrap(),
        safetensors::SafeTensors::deserialize(&theirs).unwrap(),
    );
    for (key, t) in b.tensors() {
        assert_eq!(a.tensor(&key).unwrap().data(), t.data(), "{key}");
    }
    let data = fixtures().join("eval.txt");
    let ev = xtask(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        ev.status.success(),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert!(got["loss"].as_f64().unwrap().is_finite());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn quantize_rejects_bad_options_in_one_line() {
    let src = fixtures().join("models/mha_untied");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-quantize-bad-{}", std::process::id()));
    for (args, needle) in [
        (vec!["--blocksize", "48"], "blocksize 48"),
        (vec!["--method", "q3"], "--method q3"),
        (vec!["--compute-dtype", "f64"], "f64"),
    ] {
        let mut all = vec![
            "quantize",
            "--model",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        all.extend(args);
        let run = xtask(&all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!out.exists(), "nothing written on bad input");
    }
}

#[test]
fn eval_and_generate_run_a_checkpoint_transformers_quantized() {
    // Saved by transformers + bitsandbytes (scripts/fixtures/make_quant_fixtures.py).
    let data = fixtures().join("eval.txt");
    for name in ["mha_untied_nf4_dq", "mha_untied_fp4", "mha_untied_int8"] {
        let model = fixtures()
            .join("../../../quant/tests/fixtures/models")
            .join(name);
        let ev = xtask(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            ev.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&ev.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
        assert_eq!(got["tokens"], 317, "{name}");
        assert!(got["loss"].as_f64().unwrap().is_finite(), "{name}");
        let run = xtask(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "hello",
            "--max-new-tokens",
            "4",
        ]);
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[test]
fn eval_and_generate_apply_a_peft_adapter() {
    let data = fixtures().join("eval.txt");
    let peft = fixtures().join("../../../peft/tests/fixtures");
    let loss = |model: &PathBuf, adapter: Option<&PathBuf>| {
        let mut args = vec![
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        let out = xtask(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let base = fixtures().join("models/mha_untied");
    let (plain, adapted) = (loss(&base, None), loss(&base, Some(&peft.join("lora_qv"))));
    assert!(
        adapted.is_finite() && (adapted - plain).abs() > 1e-3,
        "{plain} vs {adapted}"
    );
    let nf4 = fixtures().join("../../../quant/tests/fixtures/models/mha_untied_nf4_dq");
    let run = xtask(&[
        "generate",
        "--model",
        nf4.to_str().unwrap(),
        "--adapter",
        peft.join("qlora_all_linear").to_str().unwrap(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // A missing adapter directory is one error line naming it.
    let bad = xtask(&[
        "eval",
        "--model",
        base.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--adapter",
        "/nonexistent/adapter",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/adapter") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn merge_writes_a_dense_checkpoint_with_the_adapter_loss() {
    let data = fixtures().join("eval.txt");
    let base = fixtures().join("models/mha_untied");
    let adapter = fixtures().join("../../../peft/tests/fixtures/lora_qv");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = xtask(&[
        "merge",
        "--model",
        base.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("tokenizer.json").is_file());
    let eval = |args: &[&str]| {
        let mut all = vec!["eval", "--data", data.to_str().unwrap(), "--json"];
        all.extend(args);
        let o = xtask(&all);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let merged = eval(&["--model", out.to_str().unwrap()]);
    let adapted = eval(&[
        "--model",
        base.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(
        ((merged - adapted) / adapted).abs() < 1e-5,
        "{merged} vs {adapted}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn eval_with_a_peft_adapter_gives_peft_loss() {
    let data = fixtures().join("eval.txt");
    let root = fixtures().join("../../../..");
    let peft_dir = root.join("crates/peft/tests/fixtures");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(peft_dir.join("fixtures.json")).unwrap()).unwrap();
    for (name, case) in summary["cases"].as_object().unwrap() {
        let base = root.join(case["base"].as_str().unwrap());
        let adapter = peft_dir.join(name);
        let out = xtask(&[
            "eval",
            "--model",
            base.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (loss, want) = (
            got["loss"].as_f64().unwrap(),
            case["eval"]["loss"].as_f64().unwrap(),
        );
        assert_eq!(got["tokens"], case["eval"]["tokens"], "{name}");
        assert!(
            ((loss - want) / want).abs() <= 1e-5,
            "{name}: {loss} vs PEFT {want}"
        );
    }
}

fn eval_loss(model: &std::path::Path, adapter: Option<&std::path::Path>) -> f64 {
    let data = fixtures().join("eval.txt");
    let mut args = vec![
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--model",
        model.to_str().unwrap(),
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a.to_str().unwrap()]);
    }
    let o = xtask(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["loss"]
        .as_f64()
        .unwrap()
}

#[test]
fn merge_onto_the_float_weights_of_a_4bit_base() {
    // A QLoRA adapter trained on the NF4 model, merged onto the f32 model that was quantized.
    let nf4 = fixtures().join("../../../quant/tests/fixtures/models/mha_untied_nf4_dq");
    let float = fixtures().join("models/mha_untied");
    let adapter = fixtures().join("../../../peft/tests/fixtures/qlora_all_linear");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-merge-float-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = xtask(&[
        "merge",
        "--model",
        nf4.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--base-float",
        float.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none());
    let merged = eval_loss(&out, None);
    let on_float = eval_loss(&float, Some(&adapter));
    let on_nf4 = eval_loss(&nf4, Some(&adapter));
    assert!(
        ((merged - on_float) / on_float).abs() < 1e-5,
        "{merged} vs {on_float}"
    );
    assert_ne!(merged, on_nf4, "the float base, not the NF4 one, was used");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn merge_requantize_keeps_the_model_4bit_and_reports_rounding() {
    let nf4 = fixtures().join("../../../quant/tests/fixtures/models/mha_untied_nf4_dq");
    let adapter = fixtures().join("../../../peft/tests/fixtures/qlora_all_linear");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xtask-merge-requant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = xtask(&[
        "merge",
        "--model",
        nf4.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--requantize",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("re-quantized 14 merged modules") && stderr.contains("mean rounding"),
        "{stderr}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["quantization_config"]["bnb_4bit_quant_type"],
        serde_json::json!("nf4")
    );
    assert_eq!(
        config["quantization_config"]["bnb_4bit_use_double_quant"],
        serde_json::json!(true)
    );
    // The re-quantized model runs close to the adapter on its 4-bit base.
    let requantized = eval_loss(&out, None);
    let adapted = eval_loss(&nf4, Some(&adapter));
    assert!(
        ((requantized - adapted) / adapted).abs() < 0.05,
        "{requantized} vs {adapted}"
    );
    std::fs::remove_dir_all(&out).unwrap();

    // A dense base cannot be re-quantized.
    let float = fixtures().join("models/mha_untied");
    let lora = fixtures().join("../../../peft/tests/fixtures/lora_qv");
    let bad = xtask(&[
        "merge",
        "--model",
        float.to_str().unwrap(),
        "--adapter",
        lora.to_str().unwrap(),
        "--requantize",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a quantized checkpoint") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert!(!out.exists());
}

/// `train` prints its result as one JSON line on stdout (logs and progress go to stderr) and,
/// with `--report-to tensorboard`, leaves an event file; `loss.png` is drawn.
#[test]
fn train_prints_its_summary_on_stdout_and_writes_tensorboard_events() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("train.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| {
            serde_json::json!({"instruction": format!("Say {i}."), "output": i.to_string()})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let model = fixtures().join("models/mha_untied");
    let out = xtask(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--max-seq-len",
        "128",
        "--output-dir",
        dir.to_str().unwrap(),
        "--run-name",
        "tb",
        "--report-to",
        "tensorboard",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one result line on stdout: {stdout}");
    let result: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(result["steps"], 3);
    let run = PathBuf::from(result["run_dir"].as_str().unwrap());
    assert_eq!(run, dir.join("tb"));
    assert!(run.join("loss.png").is_file());
    let events: Vec<_> = std::fs::read_dir(run.join("tensorboard"))
        .unwrap()
        .collect();
    assert_eq!(events.len(), 1);
    assert!(stderr.contains("TensorBoard events:"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
