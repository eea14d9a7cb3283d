//! llm.c-style golden test against PyTorch + PEFT (scripts/fixtures/make_trainer_fixtures.py):
//! the loss and every adapter gradient of step 0, then the loss, gradient norm and learning rate
//! of 10 steps (accumulation 2, AdamW with weight decay, linear warmup schedule, global clipping)
//! and the adapter weights after them. The frozen base stays bit-identical. The checks live in
//! common/ (shared with golden_qlora.rs, the same on a 4-bit base).

mod common;

use common::{Ad, Golden, LORA_TOLERANCES, check_step_zero, check_steps, lora_golden, lora_model};

#[test]
fn step_zero_loss_and_every_adapter_gradient_match_pytorch() {
    let device = Default::default();
    check_step_zero::<Ad>(
        &lora_model(&device),
        &Golden::open(&lora_golden()),
        &LORA_TOLERANCES,
        &device,
    );
}

#[test]
fn ten_steps_match_pytorch_and_leave_the_base_bit_identical() {
    check_steps::<Ad>(
        lora_model(&Default::default()),
        &Golden::open(&lora_golden()),
        &LORA_TOLERANCES,
    );
}
