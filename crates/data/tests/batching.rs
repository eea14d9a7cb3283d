//! From files to batches: the shipped dataset's splits, a seeded ratio split, padded and packed
//! batches (their tensors are tested in `trainer`'s `tests/batch_tensors.rs`).

use std::path::PathBuf;

use data::{
    Dataset, EncodeOptions, Encoder, IGNORE_INDEX, Loader, LoaderConfig, ReadOptions,
    TemplateChoice,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn encoder(max_seq_len: Option<usize>) -> Encoder {
    let options = EncodeOptions {
        template: TemplateChoice::ChatMl,
        max_seq_len,
        ..Default::default()
    };
    Encoder::from_dir(&root().join("tests/fixtures/tokenizers/chatml"), options).unwrap()
}

fn shipped(split: &str, enc: &Encoder) -> Dataset {
    let path = root()
        .join("../../data/alpaca-eval")
        .join(format!("{split}.jsonl"));
    Dataset::load(&[path], enc, ReadOptions::default()).unwrap()
}

#[test]
fn shipped_dataset_has_fixed_train_and_validation_splits() {
    let enc = encoder(None);
    let (train, valid) = (shipped("train", &enc), shipped("valid", &enc));
    assert_eq!((train.len(), valid.len()), (725, 80));
    assert_eq!(train.stats.format, Some(data::Format::Alpaca));
    assert!(train.examples.iter().all(|e| e.trained() > 0));
    // A ratio split is deterministic in its seed and keeps every example once.
    let (a, b) = train.clone().split(0.1, 42).unwrap();
    let (c, d) = train.clone().split(0.1, 42).unwrap();
    assert_eq!((a.len(), b.len()), (652, 73));
    assert_eq!((a.examples, b.examples.clone()), (c.examples, d.examples));
    let (_, e) = train.split(0.1, 43).unwrap();
    assert_ne!(b.examples, e.examples);
}

#[test]
fn thread_count_changes_nothing() {
    let enc = encoder(Some(64));
    let path = root().join("../../data/alpaca-eval/train.jsonl");
    let one =
        Dataset::load_with_threads(std::slice::from_ref(&path), &enc, ReadOptions::default(), 1)
            .unwrap();
    let three = Dataset::load_with_threads(&[path], &enc, ReadOptions::default(), 3).unwrap();
    assert_eq!(one.examples, three.examples);
    assert_eq!(one.stats, three.stats);
    assert!(one.stats.dropped > 0 && one.stats.truncated > 0);
    let bad = root().join("tests/fixtures/bad/malformed.jsonl");
    let skip = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let a = Dataset::load_with_threads(std::slice::from_ref(&bad), &enc, skip.clone(), 1).unwrap();
    let b = Dataset::load_with_threads(&[bad], &enc, skip, 2).unwrap();
    assert_eq!((a.examples, a.stats), (b.examples, b.stats));
}

#[test]
fn packed_batches_restart_positions_per_segment() {
    let enc = encoder(Some(256));
    let train = shipped("valid", &enc);
    let pad = enc.pad_id().unwrap();
    let config = LoaderConfig {
        batch_size: 4,
        seed: 7,
        pad_id: pad,
        packing: Some(256),
        ..Default::default()
    };
    let loader = Loader::new(&train.examples, config).unwrap();
    let batch = loader.iter().next().unwrap();
    assert_eq!((batch.rows, batch.seq), (4, 256));
    let segs = batch.segment_ids.as_ref().unwrap();
    // Positions restart at 0 where a new segment starts, and those labels are masked.
    for k in 0..batch.rows * batch.seq {
        let new_segment = k % batch.seq == 0 || segs[k] != segs[k - 1];
        if segs[k] > 0 && new_segment {
            assert_eq!(batch.position_ids[k], 0);
            assert_eq!(batch.labels[k], IGNORE_INDEX);
        }
        if segs[k] == 0 {
            assert_eq!((batch.input_ids[k], batch.attention_mask[k]), (pad, 0));
        }
    }
    // Packing efficiency of the whole split beats padding the same examples one per row.
    let lengths: Vec<usize> = train.examples.iter().map(|e| e.len()).collect();
    let packed = data::packing_efficiency(&lengths, 256).unwrap();
    let padded = data::padding_efficiency(
        &lengths,
        &LoaderConfig {
            batch_size: 4,
            ..Default::default()
        },
    );
    eprintln!("valid split: packing efficiency {packed:.3}, padding efficiency {padded:.3}");
    assert!(packed > padded);
}
