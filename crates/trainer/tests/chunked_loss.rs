//! The chunked loss (`loss_and_grads`, `summed_lm_loss`) against the plain autodiff path
//! (`causal_lm_loss` on the full logits, then `backward`): the same loss and the same gradient
//! for every trainable parameter — full fine-tuning with an untied head (the head's own gradient
//! written by hand) and with a tied one (head and embedding-lookup gradients summed), and LoRA
//! (frozen head). Chunks of 5 rows, so chunk edges fall inside rows; padding and masked labels
//! included.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn_autodiff::Autodiff;
use data::Batch;
use llama_model::{Llama, apply_lora, load_pretrained};
use peft::LoraConfig;
use trainer::{
    IGNORE_INDEX, NamedGrads, batch_tensors, causal_lm_loss, checkpointed_backward, count_targets,
    labels_tensor, loss_and_grads, summed_lm_loss,
};

type Ad = Autodiff<burn_flex::Flex>;

fn model(name: &str, lora: bool) -> Llama<Ad> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../llama-model/tests/fixtures/models")
        .join(name);
    let mut model = load_pretrained::<Ad>(&dir, &Default::default()).unwrap();
    if lora {
        let config = LoraConfig::from_json(&serde_json::json!({
            "r": 4, "lora_alpha": 8, "target_modules": "all-linear"
        }))
        .unwrap();
        apply_lora(&mut model, &config, 7).unwrap();
    }
    model
}

/// Two rows of 12: the second right-padded after 8 tokens; prompt labels masked.
fn batch(vocab: usize) -> Batch {
    let (rows, seq) = (2, 12);
    let input_ids: Vec<u32> = (0..rows * seq)
        .map(|k| ((k * 37 + 11) % vocab) as u32)
        .collect();
    let mut attention_mask = vec![1u8; rows * seq];
    let mut labels: Vec<i64> = input_ids.iter().map(|&t| i64::from(t)).collect();
    for t in 8..seq {
        attention_mask[seq + t] = 0;
        labels[seq + t] = IGNORE_INDEX;
    }
    for t in 0..3 {
        labels[t] = IGNORE_INDEX;
        labels[seq + t] = IGNORE_INDEX;
    }
    Batch {
        rows,
        seq,
        input_ids,
        attention_mask,
        labels,
        position_ids: (0..rows).flat_map(|_| 0..seq as u32).collect(),
        segment_ids: None,
    }
}

/// The same trainable parameters, each gradient within 1e-5 of the reference's largest value.
fn assert_same_grads(
    what: &str,
    reference: &NamedGrads<burn_flex::Flex>,
    got: &NamedGrads<burn_flex::Flex>,
) {
    let keys: Vec<_> = got.grads.keys().collect();
    assert_eq!(
        keys,
        reference.grads.keys().collect::<Vec<_>>(),
        "{what}: trainable parameters"
    );
    assert!(!keys.is_empty(), "{what}: no trainable parameters");
    for (key, r) in &reference.grads {
        let r: Vec<f32> = r.to_data().to_vec().unwrap();
        let c: Vec<f32> = got.grads[key].to_data().to_vec().unwrap();
        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = r
            .iter()
            .zip(&c)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{what}: gradient of {key} differs by {diff} (largest {scale})"
        );
    }
}

fn check(name: &str, lora: bool) {
    let model = model(name, lora);
    let device = Default::default();
    let b = batch(model.config().vocab_size);
    let n = count_targets(&b.labels, b.seq);
    let t = batch_tensors::<Ad>(&b, &device);

    let labels = labels_tensor::<Ad>(&b, &device);
    let reference = causal_lm_loss(model.forward(t.model_input(), None), labels, n);
    let ref_loss = f64::from(reference.clone().into_scalar());
    let mut ref_grads = NamedGrads::default();
    ref_grads.accumulate(&model, &reference.backward());

    let (loss, g) = loss_and_grads(&model, t.model_input(), &b.labels, n, 5);
    let mut grads = NamedGrads::default();
    grads.accumulate(&model, &g);

    let what = format!("{name} ({})", if lora { "lora" } else { "full" });
    assert!(
        (loss - ref_loss).abs() <= 1e-6 * ref_loss.abs(),
        "{what}: loss {loss} vs {ref_loss}"
    );
    assert_same_grads(&what, &ref_grads, &grads);

    // The value-only loss of evaluation, on the plain backend.
    let plain = model.valid();
    let tp = batch_tensors::<burn_flex::Flex>(&b, &device);
    let summed = summed_lm_loss(&plain, tp.model_input(), &b.labels, b.seq, 5);
    assert!(
        (summed / n as f64 - ref_loss).abs() <= 1e-6 * ref_loss.abs(),
        "{what}: evaluation loss {} vs {ref_loss}",
        summed / n as f64
    );
}

#[test]
fn full_untied_head_matches_autodiff() {
    check("mha_untied", false);
}

#[test]
fn full_tied_head_matches_autodiff() {
    check("gqa_llama3_tied", false);
}

#[test]
fn lora_matches_autodiff() {
    check("mha_untied", true);
    check("gqa_llama3_tied", true);
}

/// Activation checkpointing gives the gradients of the plain backward pass.
fn check_checkpointed(name: &str, lora: bool) {
    let model = model(name, lora);
    let device = Default::default();
    let b = batch(model.config().vocab_size);
    let n = count_targets(&b.labels, b.seq);
    let t = batch_tensors::<Ad>(&b, &device);
    let (loss, g) = loss_and_grads(&model, t.model_input(), &b.labels, n, 5);
    let mut plain = NamedGrads::default();
    plain.accumulate(&model, &g);
    let mut ckpt = NamedGrads::default();
    let ckpt_loss = checkpointed_backward(&model, t.model_input(), &b.labels, n, 5, 3, &mut ckpt);
    let what = format!(
        "{name} ({}) checkpointed",
        if lora { "lora" } else { "full" }
    );
    assert!(
        (loss - ckpt_loss).abs() <= 1e-6 * loss.abs(),
        "{what}: loss {ckpt_loss} vs {loss}"
    );
    assert_same_grads(&what, &plain, &ckpt);
}

#[test]
fn checkpointing_matches_plain_backward() {
    check_checkpointed("mha_untied", false);
    check_checkpointed("gqa_llama3_tied", false);
    check_checkpointed("gqa_llama3_tied", true);
}
