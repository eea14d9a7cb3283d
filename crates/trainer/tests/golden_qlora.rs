//! The QLoRA counterpart of golden.rs, against PyTorch + PEFT + bitsandbytes
//! (scripts/fixtures/make_qlora_golden_fixtures.py): the tiny Llama quantized by transformers'
//! BitsAndBytesConfig (NF4, double quantization, f32 compute) and saved with save_pretrained,
//! PEFT's initial LoRA adapter (r 4, alpha 8, all-linear) on it, then the loss and every adapter
//! gradient of step 0 and 10 training steps, as in the LoRA test.
//!
//! The reference dequantizes with bitsandbytes' flat block indexing (element i of the weight scaled
//! by absmax[i / 64], as its quantizer and CUDA kernel do): its stock CPU dequantization kernel
//! pairs scales with the wrong elements when in_features is not a multiple of 64 (down_proj, in
//! 160), so the script swaps it for bitsandbytes' own backend-independent one; golden.json's
//! "bnb_cpu" records the checks (training-mode Linear4bit forward/backward equal to the f32 math
//! on the dequantized weight, bit for bit) and what the stock kernel would have given.

mod common;

use common::{
    Ad, Golden, QLORA_TOLERANCES, check_step_zero, check_steps, qlora_golden, qlora_model,
};

#[test]
fn qlora_step_zero_loss_and_every_adapter_gradient_match_pytorch_bitsandbytes() {
    let device = Default::default();
    check_step_zero::<Ad>(
        &qlora_model(&device),
        &Golden::open(&qlora_golden()),
        &QLORA_TOLERANCES,
        &device,
    );
}

#[test]
fn qlora_ten_steps_match_pytorch_bitsandbytes_and_leave_the_base_bit_identical() {
    check_steps::<Ad>(
        qlora_model(&Default::default()),
        &Golden::open(&qlora_golden()),
        &QLORA_TOLERANCES,
    );
}

/// The fixture's own record: the reference ran bitsandbytes' Linear4bit layers with the flat
/// dequantization, and they matched x @ dequant(W)ᵀ exactly on this model.
#[test]
fn fixture_records_bitsandbytes_forward_equal_to_dequantize_matmul() {
    let g = Golden::open(&qlora_golden());
    let bnb = &g.summary["bnb_cpu"];
    let layers = bnb["layers"].as_object().unwrap();
    assert_eq!(layers.len(), 14);
    for (name, l) in layers {
        assert_eq!(
            l["max_abs_nograd_forward_minus_dequant_matmul"], 0.0,
            "{name}"
        );
        assert_eq!(
            l["max_abs_autograd_forward_minus_dequant_matmul"], 0.0,
            "{name}"
        );
        assert_eq!(l["input_grad_equal_ones_times_dequant"], true, "{name}");
    }
    assert_eq!(
        bnb["model_logits_flat_kernel"]["logits_equal_f32_copy"],
        true
    );
    let step0 = &bnb["step0_flat_kernel_vs_lora_on_f32_flat_dequant_copy"];
    assert_eq!(step0["loss_equal"], true);
    assert_eq!(step0["grads_equal"], true);
}
