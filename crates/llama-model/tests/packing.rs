//! Packed rows: several examples in one row with segment ids and restarting positions give each
//! example the logits it gets when run alone (no attention across examples).

mod common;

use burn::prelude::*;
use common::{B, DEVICE, max_abs_diff, model_dir};
use llama_model::{ModelInput, load_pretrained};

fn ids(v: Vec<i64>) -> Tensor<B, 2, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), &DEVICE)
}

fn logits(model: &llama_model::Llama<B>, input: ModelInput<B>) -> Vec<f32> {
    model
        .forward(input, None)
        .into_data()
        .iter::<f32>()
        .collect()
}

#[test]
fn packed_row_logits_equal_each_example_alone() {
    for name in ["gqa_llama3_tied", "mha_untied"] {
        let model = load_pretrained::<B>(model_dir(name), &DEVICE).unwrap();
        let vocab = model.config().vocab_size;
        let examples: [Vec<i64>; 3] = [
            vec![0, 17, 250, 31, 99, 4],
            vec![0, 5, 300, 12],
            vec![0, 44, 45, 46, 47, 48, 49, 4],
        ];
        // Row: the three examples, then two padding tokens.
        let mut row = Vec::new();
        let (mut pos, mut seg, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in examples.iter().enumerate() {
            row.extend_from_slice(e);
            pos.extend(0..e.len() as i64);
            seg.extend(std::iter::repeat_n(i as i64 + 1, e.len()));
            mask.extend(std::iter::repeat_n(1i64, e.len()));
        }
        row.extend([0, 0]);
        pos.extend([0, 0]);
        seg.extend([0, 0]);
        mask.extend([0, 0]);
        let packed = logits(
            &model,
            ModelInput::new(ids(row))
                .with_mask(ids(mask))
                .with_positions(ids(pos))
                .with_segments(ids(seg.clone())),
        );
        let mut start = 0;
        for e in &examples {
            let alone = logits(&model, ModelInput::new(ids(e.clone())));
            let part = &packed[start * vocab..(start + e.len()) * vocab];
            let diff = max_abs_diff(part, &alone);
            eprintln!(
                "{name}: example of {} tokens: max |diff| = {diff:e}",
                e.len()
            );
            assert!(diff <= 1e-5, "{name}: packed logits differ by {diff}");
            start += e.len();
        }
        // Without segments the later examples see the earlier ones: the test can fail.
        let unsegmented = logits(
            &model,
            ModelInput::new(ids(examples.concat())).with_positions(ids(examples
                .iter()
                .flat_map(|e| 0..e.len() as i64)
                .collect())),
        );
        let second = &unsegmented[examples[0].len() * vocab..(examples[0].len() + 4) * vocab];
        let alone = logits(&model, ModelInput::new(ids(examples[1].clone())));
        assert!(max_abs_diff(second, &alone) > 1e-3);
    }
}
