//! `cargo xtask publish` on a finished run: the adapter folder (files, card metadata, the base
//! named in adapter_config.json, the same adapter weights), the merged folder (loads as a plain
//! checkpoint and gives the adapted model's logits), the GGUF beside it, and refusals.

use std::path::PathBuf;
use std::process::Output;

use burn::prelude::*;
use llama_model::{Llama, ModelInput, ModelSource, load_adapter};

type B = burn_flex::Flex;

mod common;

use common::{fixture_model, scratch, train_tiny, xtask};

fn base() -> PathBuf {
    fixture_model("mha_untied")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn logits(model: &Llama<B>) -> Vec<f32> {
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(vec![1i64, 5, 9, 33, 2, 17, 8], [1, 7]),
        &Default::default(),
    );
    model
        .forward(ModelInput::new(ids), None)
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn publish_writes_hub_folders_that_load_as_the_trained_model() {
    let dir = scratch("publish");
    let run = train_tiny(&dir, "r", 4, &["--lr", "1e-2", "--eval-every", "2"]);
    let mut tuned = ModelSource::from_path(base())
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    load_adapter(&mut tuned, run.join("adapter")).unwrap();
    let want = logits(&tuned);
    let plain = ModelSource::from_path(base())
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let moved = logits(&plain)
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 1e-3,
        "training moved the logits ({moved}), so the checks below can fail"
    );

    // The adapter folder.
    let folder = dir.join("pub");
    let printed = ok(xtask(&[
        "publish",
        "--run",
        run.to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
        "--base-model",
        "my-org/tiny-base",
        "--license",
        "mit",
    ]));
    assert_eq!(printed.trim(), folder.display().to_string());
    for f in [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "generation_config.json",
        "loss.png",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(folder.join(f).is_file(), "{f}");
    }
    let card = std::fs::read_to_string(folder.join("README.md")).unwrap();
    let front = card.split("---\n").nth(1).unwrap();
    for line in [
        "base_model: my-org/tiny-base",
        "library_name: peft",
        "license: mit",
        "pipeline_tag: text-generation",
        "- base_model:adapter:my-org/tiny-base",
    ] {
        assert!(front.contains(line), "{line} in:\n{front}");
    }
    assert!(card.contains("![training loss](loss.png)"));
    assert!(card.contains("| 4 |"), "the eval table has step 4:\n{card}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["base_model_name_or_path"], "my-org/tiny-base");
    assert_eq!(
        std::fs::read(folder.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
    );
    let generation: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(generation["eos_token_id"], 4);

    // A second publish into the same folder is refused without --overwrite.
    let again = xtask(&[
        "publish",
        "--run",
        run.to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));

    // The merged folder, with a GGUF: a dense checkpoint with the adapted model's logits.
    let merged = dir.join("merged");
    ok(xtask(&[
        "publish",
        "--run",
        run.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
        "--merged",
        "--gguf",
        "f32",
    ]));
    let card = std::fs::read_to_string(merged.join("README.md")).unwrap();
    assert!(card.contains("library_name: transformers"), "{card}");
    let dense = ModelSource::from_path(&merged)
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let got = logits(&dense);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "merged vs adapter logits differ by {diff}");
    let gguf = merged.join("mha_untied-f32.gguf");
    let from_gguf = ModelSource::from_path(&gguf)
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let diff = logits(&from_gguf)
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "GGUF vs adapter logits differ by {diff}");

    // Not a run directory: one error naming it.
    let bad = xtask(&[
        "publish",
        "--run",
        dir.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no config.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
