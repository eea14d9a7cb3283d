//! Replays every committed seed (`seeds/TARGET/`) and every input a fuzzing run found
//! (`regressions/TARGET/`) through the fuzz targets, so the targets keep building and running
//! without AFL++ and every crash stays fixed. A panic here is a regression.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let target = fuzz::target(name).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = inputs(&root.join("seeds").join(name));
    assert!(!seeds.is_empty(), "no seeds for `{name}`");
    // Seeds are valid inputs written by the reference tools: every one must be accepted, so
    // the fuzzer starts from inputs that reach the deepest code.
    for seed in &seeds {
        let bytes = std::fs::read(seed).unwrap();
        assert!(
            target(&bytes),
            "seed {} is rejected by `{name}`",
            seed.display()
        );
    }
    // Regressions only have to be handled without a panic (most are errors).
    for input in inputs(&root.join("regressions").join(name)) {
        let bytes = std::fs::read(&input).unwrap();
        let _ = target(&bytes);
    }
}

#[test]
fn every_target_has_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = fuzz::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names);
}

#[test]
fn safetensors() {
    replay("safetensors");
}

#[test]
fn safetensors_index() {
    replay("safetensors_index");
}

#[test]
fn gguf() {
    replay("gguf");
}

#[test]
fn bnb_state() {
    replay("bnb_state");
}

#[test]
fn adapter_config() {
    replay("adapter_config");
}

#[test]
fn tokenizer_config() {
    replay("tokenizer_config");
}

#[test]
fn records() {
    replay("records");
}
