//! Parity with TRL 1.16 / transformers 5.23: `input_ids` and `labels` of every format (and
//! file kind) equal what `SFTTrainer` prepares, and rendered conversations equal
//! `apply_chat_template(tokenize=False)`. References: `scripts/fixtures/make_data_fixtures.py`.

use std::path::{Path, PathBuf};

use data::{
    Dataset, EncodeOptions, Encoder, FieldMap, Format, ReadOptions, TemplateChoice, format::parse,
    read_file,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn encoder(case: &Value) -> Encoder {
    let dir = fixtures()
        .join("tokenizers")
        .join(case["tokenizer"].as_str().unwrap());
    let options = EncodeOptions {
        template: case["template"].as_str().unwrap().parse().unwrap(),
        max_seq_len: case["max_seq_len"].as_u64().map(|n| n as usize),
        train_on_prompt: case["train_on_prompt"].as_bool().unwrap(),
        ..Default::default()
    };
    Encoder::from_dir(&dir, options).unwrap()
}

fn rendered_chats(path: &Path, enc: &Encoder) -> Vec<String> {
    let mut format = None;
    let mut out = Vec::new();
    for rec in read_file(path).unwrap() {
        let rec = rec.unwrap();
        let f = *format.get_or_insert_with(|| Format::detect(&rec, &FieldMap::default()).unwrap());
        let sample = enc
            .to_sample(parse(&rec, f, &FieldMap::default()).unwrap())
            .unwrap();
        if let data::Sample::Chat(_) = sample {
            out.push(enc.render(&sample).unwrap());
        }
    }
    out
}

#[test]
fn input_ids_and_labels_match_trl_for_every_format() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("parity/expected.json")).unwrap(),
    )
    .unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 13);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let path = fixtures()
            .join("parity")
            .join(case["file"].as_str().unwrap());
        let enc = encoder(case);
        let ds = Dataset::load(std::slice::from_ref(&path), &enc, ReadOptions::default()).unwrap();
        let want = case["examples"].as_array().unwrap();
        assert_eq!(ds.len(), want.len(), "{name}: example count");
        for (i, (got, want)) in ds.examples.iter().zip(want).enumerate() {
            let got_ids: Vec<i64> = got.input_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(
                got_ids,
                ids(&want["input_ids"]),
                "{name}: example {i} input_ids"
            );
            assert_eq!(
                got.labels,
                ids(&want["labels"]),
                "{name}: example {i} labels"
            );
        }
        let records = case["records"].as_u64().unwrap() as usize;
        assert_eq!(ds.stats.records, records, "{name}: records");
        assert_eq!(ds.stats.dropped, records - want.len(), "{name}: dropped");
        let texts: Vec<String> = case["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        if !texts.is_empty() {
            assert_eq!(rendered_chats(&path, &enc), texts, "{name}: rendered text");
        }
        let trained: usize = ds.examples.iter().map(|e| e.trained()).sum();
        eprintln!(
            "{name}: {} examples, {} dropped, {} truncated, {trained} trained tokens: equal to TRL",
            ds.len(),
            ds.stats.dropped,
            ds.stats.truncated
        );
        if case["template"] == "alpaca" {
            assert_eq!(enc.options().template, TemplateChoice::Alpaca);
        }
    }
}
