//! The tokenizers rebuilt from GGUF metadata against llama.cpp's own tokenizer test vectors
//! (`ggml-vocab-llama-{spm,bpe}.gguf` with `.inp`/`.out`, shipped in llama-cpp-python 0.3.36's
//! source package under `vendor/llama.cpp/models/`; see scripts/fixtures/make_gguf_fixtures.py).

use std::path::PathBuf;

use llama_model::gguf::{GgufFile, tokenizer_from_gguf};

fn vocab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/vocab")
        .join(name)
}

/// The (input, expected ids) cases of llama.cpp's `test-tokenizer-0` files.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(vocab(&format!("{name}.inp"))).unwrap();
    let out = std::fs::read_to_string(vocab(&format!("{name}.out"))).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // The file ends with a separator: the last piece is empty.
    assert_eq!(texts.pop(), Some(""));
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

fn check(name: &str) {
    let file = GgufFile::open(vocab(name)).unwrap();
    let tok = tokenizer_from_gguf(&file).unwrap();
    let cases = cases(name);
    assert_eq!(cases.len(), 46);
    let mut failed = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false).unwrap();
        if &got != want {
            failed.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    println!(
        "{name}: {}/{} cases match",
        cases.len() - failed.len(),
        cases.len()
    );
    assert!(
        failed.is_empty(),
        "{name}: {} mismatches:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn llama_spm_vocab_matches_llama_cpp_vectors() {
    check("ggml-vocab-llama-spm.gguf");
}

#[test]
fn llama_bpe_vocab_matches_llama_cpp_vectors() {
    check("ggml-vocab-llama-bpe.gguf");
}
