//! Bad input gets one clear error naming the file, the line / record / row, and what was
//! expected; `skip_invalid` skips, counts and summarizes malformed records instead.

use std::path::PathBuf;

use data::{Dataset, EncodeOptions, Encoder, Error, ReadOptions, TemplateChoice};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn bad(name: &str) -> PathBuf {
    fixtures().join("bad").join(name)
}

fn encoder() -> Encoder {
    let options = EncodeOptions {
        template: TemplateChoice::ChatMl,
        ..Default::default()
    };
    Encoder::from_dir(&fixtures().join("tokenizers/chatml"), options).unwrap()
}

fn load(path: PathBuf, skip_invalid: bool) -> data::Result<Dataset> {
    let options = ReadOptions {
        skip_invalid,
        ..Default::default()
    };
    Dataset::load(&[path], &encoder(), options)
}

/// The error message, which must start with the file's path and the location.
fn error(name: &str, location: &str) -> String {
    let err = load(bad(name), false).unwrap_err().to_string();
    let prefix = format!("{}{location}", bad(name).display());
    assert!(
        err.starts_with(&prefix),
        "expected `{prefix}...`, got `{err}`"
    );
    err
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let err = error("malformed.jsonl", ":2: ");
    assert!(err.contains("malformed JSON"), "{err}");
}

#[test]
fn skip_invalid_skips_counts_and_summarizes() {
    let ds = load(bad("malformed.jsonl"), true).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.stats.records, 3);
    assert_eq!(ds.stats.skipped, 1);
    let summary = ds.stats.skipped_summary();
    assert!(
        summary.starts_with("1 invalid record(s) skipped"),
        "{summary}"
    );
    assert!(
        summary.contains("malformed.jsonl:2: malformed JSON"),
        "{summary}"
    );
    // Every kind of record error is skippable.
    let ds = load(bad("missing_field.jsonl"), true).unwrap();
    assert_eq!((ds.len(), ds.stats.skipped), (1, 1));
}

#[test]
fn missing_field_is_named() {
    let err = error("missing_field.jsonl", ":2: ");
    assert!(err.contains("missing field `output`"), "{err}");
}

#[test]
fn unknown_role_is_named_with_the_allowed_ones() {
    let err = error("unknown_role.jsonl", ":1: ");
    assert!(
        err.contains("unknown role `wizard`, expected system, user or assistant"),
        "{err}"
    );
}

#[test]
fn conversation_without_assistant_turn_is_an_error() {
    let err = error("no_assistant.jsonl", ":1: ");
    assert!(err.contains("no assistant turn"), "{err}");
}

#[test]
fn empty_files_are_errors_even_when_skipping() {
    for name in ["empty.jsonl", "blank_lines.jsonl"] {
        let err = load(bad(name), true).unwrap_err();
        assert!(matches!(err, Error::File { .. }), "{err}");
        assert!(
            err.to_string().ends_with("file is empty: expected records"),
            "{err}"
        );
    }
}

#[test]
fn non_utf8_bytes_name_the_line() {
    let err = error("non_utf8.jsonl", ":2: ");
    assert!(err.contains("invalid UTF-8 at byte 13"), "{err}");
}

#[test]
fn json_array_element_that_is_not_an_object() {
    let err = error("not_object.json", ": record 2: ");
    assert!(
        err.contains("expected a JSON object, found a string"),
        "{err}"
    );
}

#[test]
fn csv_row_with_too_many_fields() {
    let err = error("ragged.csv", ":3: ");
    assert!(
        err.contains("expected 2 fields like the header, found 3"),
        "{err}"
    );
}

#[test]
fn parquet_column_of_wrong_type() {
    let err = error("wrong_type.parquet", ": row 1: ");
    assert!(
        err.contains("field `instruction`: expected a string, found a number"),
        "{err}"
    );
    let err = error("not_parquet.parquet", ": ");
    assert!(err.contains("not a readable Parquet file"), "{err}");
}

#[test]
fn unknown_file_kind() {
    let err = error("data.xml", ": ");
    assert!(err.contains("unknown file kind `.xml`"), "{err}");
}

#[test]
fn a_directory_reads_every_file_in_name_order() {
    let ds = load(bad("split_dir"), false).unwrap();
    assert_eq!(ds.len(), 3);
    let first = encoder()
        .tokenizer()
        .decode(&ds.examples[0].input_ids, false)
        .unwrap();
    assert!(first.contains("Give three tips"), "{first}");
    // Several paths: files one after another.
    let two = Dataset::load(
        &[bad("split_dir/part-0.jsonl"), bad("split_dir")],
        &encoder(),
        ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(two.len(), 4);
}

#[test]
fn bad_options_are_refused() {
    assert!("nonsense".parse::<data::Format>().is_err());
    assert!("nonsense".parse::<TemplateChoice>().is_err());
    assert!(data::FieldMap::parse(&["=x"]).is_err());
    let no_template = EncodeOptions {
        template: TemplateChoice::Model,
        ..Default::default()
    };
    // The parity tokenizers have a chat template; a bare tokenizer.json has none.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("data-bad-options");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tokenizers/chatml/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let err = Encoder::from_dir(&dir, no_template)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no chat_template"), "{err}");
}
