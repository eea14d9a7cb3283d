//! llm.c-style golden test against PyTorch + PEFT (scripts/fixtures/make_trainer_fixtures.py):
//! the loss and every adapter gradient of step 0, then the loss, gradient norm and learning rate
//! of 10 steps (accumulation 2, AdamW with weight decay, linear warmup schedule, global clipping)
//! and the adapter weights after them. The frozen base stays bit-identical. The checks live in
//! common/ (shared with golden_qlora.rs, the same on a 4-bit base).

mod common;

use std::path::PathBuf;

use common::{Ad, Golden, Tolerances, check_step_zero, check_steps, root};
use llama_model::{Llama, load_adapter, load_pretrained};

fn golden() -> PathBuf {
    root().join("crates/trainer/tests/fixtures/golden")
}

fn model() -> Llama<Ad> {
    let base = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    let mut model = load_pretrained::<Ad>(&base, &Default::default()).unwrap();
    load_adapter(&mut model, golden().join("initial_adapter")).unwrap();
    model
}

const TOLERANCES: Tolerances = Tolerances {
    step0: 1e-5,
    step0_grads: 1e-4,
    steps: 1e-4,
    // After 10 steps the adapters agree to 1e-3 of their largest value: Adam divides each
    // gradient by its own running RMS, so where a gradient is near zero (A's, early on) float
    // rounding differences between the two libraries become full-size update differences.
    final_weights: 1e-3,
};

#[test]
fn step_zero_loss_and_every_adapter_gradient_match_pytorch() {
    check_step_zero(&model(), &Golden::open(&golden()), &TOLERANCES);
}

#[test]
fn ten_steps_match_pytorch_and_leave_the_base_bit_identical() {
    check_steps(model(), &Golden::open(&golden()), &TOLERANCES);
}
