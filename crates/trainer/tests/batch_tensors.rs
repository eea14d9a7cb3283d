//! Batches as burn tensors (moved here from `data`'s `tests/batching.rs`, now that `data` has no
//! burn): a packed batch of the shipped dataset keeps its ids, positions and segments; labels stay
//! on the host and become a tensor only on request.

use std::path::PathBuf;

use data::{Batch, EncodeOptions, Encoder, Loader, LoaderConfig, ReadOptions, TemplateChoice};
use trainer::{batch_tensors, labels_tensor};

type B = burn_ndarray::NdArray<f32>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ints<const D: usize>(t: burn::tensor::Tensor<B, D, burn::tensor::Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

fn widen<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&x| x.into()).collect()
}

/// The first packed batch of the shipped validation split (ChatML tokenizer, 256 tokens).
fn packed_batch() -> Batch {
    let options = EncodeOptions {
        template: TemplateChoice::ChatMl,
        max_seq_len: Some(256),
        ..Default::default()
    };
    let dir = root().join("crates/data/tests/fixtures/tokenizers/chatml");
    let enc = Encoder::from_dir(&dir, options).unwrap();
    let path = root().join("data/alpaca-eval/valid.jsonl");
    let valid = data::Dataset::load(&[path], &enc, ReadOptions::default()).unwrap();
    let config = LoaderConfig {
        batch_size: 4,
        seed: 7,
        pad_id: enc.pad_id().unwrap(),
        packing: Some(256),
        ..Default::default()
    };
    let loader = Loader::new(&valid.examples, config).unwrap();
    loader.iter().next().unwrap()
}

#[test]
fn packed_batches_become_tensors_with_segments() {
    let batch = packed_batch();
    assert_eq!((batch.rows, batch.seq), (4, 256));
    let device = Default::default();
    let t = batch_tensors::<B>(&batch, &device);
    assert_eq!(t.input_ids.dims(), [4, 256]);
    assert_eq!(ints(t.input_ids.clone()), widen(&batch.input_ids));
    assert_eq!(ints(t.attention_mask.clone()), widen(&batch.attention_mask));
    assert_eq!(ints(t.position_ids.clone()), widen(&batch.position_ids));
    let segs = batch.segment_ids.as_ref().unwrap();
    assert_eq!(ints(t.segment_ids.clone().unwrap()), widen(segs));
    let input = t.model_input();
    assert!(input.segment_ids.is_some() && input.position_ids.is_some());
    assert_eq!(ints(labels_tensor::<B>(&batch, &device)), batch.labels);
}

#[test]
fn padded_batches_have_no_segments() {
    let batch = Batch {
        rows: 2,
        seq: 3,
        input_ids: vec![5, 6, 7, 8, 0, 0],
        attention_mask: vec![1, 1, 1, 1, 0, 0],
        labels: vec![-100, 6, 7, 8, -100, -100],
        position_ids: vec![0, 1, 2, 0, 0, 0],
        segment_ids: None,
    };
    let t = batch_tensors::<B>(&batch, &Default::default());
    assert!(t.segment_ids.is_none());
    assert_eq!(ints(t.attention_mask.clone()), [1, 1, 1, 1, 0, 0]);
    let input = t.model_input();
    assert!(input.segment_ids.is_none() && input.position_ids.is_some());
}
