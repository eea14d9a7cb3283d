//! Paths read from files stay inside their directory: a sharded checkpoint's
//! `model.safetensors.index.json` naming `../x.safetensors`, an absolute path or `a/../../x` in
//! its `weight_map` is refused with one error naming the index file, the key and the name —
//! before anything outside the directory is opened.

use std::path::{Path, PathBuf};

use llama_model::SafetensorsSource;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-paths-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/mha_untied/model.safetensors")
}

#[test]
fn shard_names_outside_the_checkpoint_are_refused() {
    let root = scratch("shards");
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    // A valid safetensors file just outside the checkpoint, which a traversal would read.
    std::fs::copy(fixture_weights(), root.join("outside.safetensors")).unwrap();
    let absolute = root.join("outside.safetensors").display().to_string();
    for name in [
        "../outside.safetensors",
        absolute.as_str(),
        "sub/../../outside.safetensors",
        "./../outside.safetensors",
        "",
    ] {
        let index = serde_json::json!({
            "metadata": {},
            "weight_map": {"model.embed_tokens.weight": name},
        });
        let path = dir.join("model.safetensors.index.json");
        std::fs::write(&path, index.to_string()).unwrap();
        let err = SafetensorsSource::open(&dir)
            .err()
            .expect("must be refused")
            .to_string();
        assert!(
            err.starts_with(&path.display().to_string())
                && err.contains("weight_map[\"model.embed_tokens.weight\"]")
                && err.contains(&format!("\"{name}\""))
                && err.contains("inside the checkpoint directory"),
            "{name}: {err}"
        );
    }
    // A plain name inside the directory still works.
    std::fs::copy(
        fixture_weights(),
        dir.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&std::fs::read(fixture_weights()).unwrap())
        .unwrap()
        .names()
        .into_iter()
        .map(|n| (n.to_string(), "model-00001-of-00001.safetensors"))
        .collect::<std::collections::BTreeMap<_, _>>();
    let index = serde_json::json!({"metadata": {}, "weight_map": st});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    SafetensorsSource::open(&dir).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
