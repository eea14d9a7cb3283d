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

use std::path::PathBuf;

use common::{Ad, Golden, Tolerances, check_step_zero, check_steps, root};
use llama_model::{Llama, Projection, load_adapter, load_pretrained};
use peft::LoraBase;
use quant::{DeviceAbsmax, QuantLinear, QuantType, QuantWeight};

fn golden() -> PathBuf {
    root().join("crates/trainer/tests/fixtures/golden_qlora")
}

/// NF4 with double-quantized absmax.
fn is_nf4_dq(q: &QuantLinear<Ad>) -> bool {
    matches!(&q.weight, QuantWeight::Four(w)
        if w.meta.quant_type == QuantType::Nf4 && matches!(w.absmax, DeviceAbsmax::Nested(_)))
}

/// The saved bitsandbytes checkpoint as it loads (every decoder projection NF4, lm_head f32 as
/// transformers keeps it), with PEFT's initial adapter on each of the 14 projections.
fn model() -> Llama<Ad> {
    let mut model = load_pretrained::<Ad>(golden().join("base"), &Default::default()).unwrap();
    let projections = model.projections();
    assert_eq!(projections.len(), 2 * 7 + 1);
    for (name, p) in &projections {
        match (name.as_str(), p) {
            ("lm_head", Projection::Dense(_)) => {}
            (_, Projection::Quant(q)) if name != "lm_head" && is_nf4_dq(q) => {}
            _ => panic!("{name}: not what the bitsandbytes checkpoint holds"),
        }
    }
    load_adapter(&mut model, golden().join("initial_adapter")).unwrap();
    for (name, p) in model.projections() {
        match p {
            Projection::Lora(l) => {
                assert!(
                    matches!(&l.base, LoraBase::Quant(q) if is_nf4_dq(q)),
                    "{name}"
                );
            }
            _ => assert_eq!(name, "lm_head"),
        }
    }
    model
}

// The reference's 4-bit layers compute exactly the f32 math of LoRA on the dequantized weight
// (golden.json: bnb_cpu.step0_flat_kernel_vs_lora_on_f32_flat_dequant_copy, bit-identical), and
// so do ours (the dequantized weight feeds an f32 gemm), so the differences left are the f32
// rounding of two libraries' gemms, softmax and reductions — the LoRA test's. Same tolerances.
const TOLERANCES: Tolerances = Tolerances {
    step0: 1e-5,
    step0_grads: 1e-4,
    steps: 1e-4,
    // Adam's per-element normalisation turns rounding differences of near-zero gradients into
    // full-size update differences (see golden.rs).
    final_weights: 1e-3,
};

#[test]
fn qlora_step_zero_loss_and_every_adapter_gradient_match_pytorch_bitsandbytes() {
    check_step_zero(&model(), &Golden::open(&golden()), &TOLERANCES);
}

#[test]
fn qlora_ten_steps_match_pytorch_bitsandbytes_and_leave_the_base_bit_identical() {
    check_steps(model(), &Golden::open(&golden()), &TOLERANCES);
}

/// The fixture's own record: the reference ran bitsandbytes' Linear4bit layers with the flat
/// dequantization, and they matched x @ dequant(W)ᵀ exactly on this model.
#[test]
fn fixture_records_bitsandbytes_forward_equal_to_dequantize_matmul() {
    let g = Golden::open(&golden());
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
