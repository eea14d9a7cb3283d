//! LoRA layer invariants: a zero `B` leaves the base output bit for bit (also with alpha != r,
//! the candle-lora bug), merged and unmerged outputs agree, and under autodiff only the adapter
//! gets gradients. (Parity with PEFT's own outputs comes with the fixture script.)

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use peft::{LoraBase, LoraLinear, LoraSpec};
use quant::{DenseLinear, QuantLinear, QuantType, QuantWeight, quantize_4bit};

type B = Flex;

fn dense<B2: Backend>(out: usize, inp: usize, seed: u64, device: &B2::Device) -> DenseLinear<B2> {
    B2::seed(device, seed);
    let w = Tensor::<B2, 2>::random([inp, out], Distribution::Normal(0.0, 0.05), device);
    let b = Tensor::<B2, 1>::random([out], Distribution::Normal(0.0, 0.05), device);
    DenseLinear::new(w, Some(b))
}

fn nf4<B2: quant::QuantBackend>(out: usize, inp: usize, device: &B2::Device) -> QuantLinear<B2> {
    let w: Vec<f32> = (0..out * inp)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
        .collect();
    let q = quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap();
    QuantLinear::new(QuantWeight::from_4bit(&q, out, inp, device).unwrap(), None)
}

fn spec(r: usize, alpha: f64, rs: bool, dora: bool) -> LoraSpec {
    LoraSpec {
        r,
        alpha,
        dropout: 0.0,
        use_rslora: rs,
        use_dora: dora,
    }
}

#[test]
fn zero_b_equals_the_base_exactly() {
    let device = Default::default();
    let x = Tensor::<B, 3>::random([2, 3, 64], Distribution::Normal(0.0, 1.0), &device);
    for (r, alpha, rs, dora) in [
        (8, 8.0, false, false),
        (4, 16.0, false, false),
        (4, 16.0, true, false),
        (8, 32.0, false, true),
    ] {
        let base = dense::<B>(48, 64, 1, &device);
        let want = base.forward(x.clone()).into_data();
        let layer = LoraLinear::new(LoraBase::Dense(base), spec(r, alpha, rs, dora), &device);
        assert_eq!(
            layer.forward(x.clone()).into_data(),
            want,
            "r {r} alpha {alpha} rslora {rs} dora {dora}"
        );
    }
    let q = nf4::<B>(48, 64, &device);
    let want = q.forward(x.clone()).into_data();
    let layer = LoraLinear::new(LoraBase::Quant(q), spec(4, 16.0, false, false), &device);
    assert_eq!(layer.forward(x).into_data(), want, "QLoRA");
}

#[test]
fn merged_matches_unmerged() {
    let device = Default::default();
    let x = Tensor::<B, 2>::random([5, 64], Distribution::Normal(0.0, 1.0), &device);
    for (r, alpha, rs, dora) in [
        (8, 16.0, false, false),
        (4, 16.0, true, false),
        (8, 8.0, false, true),
    ] {
        for quantized in [false, true] {
            let base = if quantized {
                LoraBase::Quant(nf4::<B>(48, 64, &device))
            } else {
                LoraBase::Dense(dense::<B>(48, 64, 2, &device))
            };
            let (out, inp) = base.dims();
            let a = Tensor::<B, 2>::random([r, inp], Distribution::Normal(0.0, 0.1), &device);
            let b = Tensor::<B, 2>::random([out, r], Distribution::Normal(0.0, 0.1), &device);
            let mag = dora
                .then(|| Tensor::<B, 1>::random([out], Distribution::Uniform(0.5, 1.5), &device));
            let layer = LoraLinear::from_peft(base, spec(r, alpha, rs, dora), a, b, mag);
            let y = layer.forward(x.clone());
            let merged = layer.merged().forward(x.clone());
            y.into_data().assert_approx_eq::<f32>(
                &merged.into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }
}

#[test]
fn only_the_adapter_gets_gradients() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    for dora in [false, true] {
        let layer = LoraLinear::new(
            LoraBase::Dense(dense::<A>(16, 32, 3, &device)),
            spec(4, 8.0, false, dora),
            &device,
        );
        // 4x32 A + 4x16 B (+ 16 magnitudes); the base's 32x16 + 16 are frozen.
        let trainable = 4 * 32 + 4 * 16 + if dora { 16 } else { 0 };
        let x = Tensor::<A, 2>::random([3, 32], Distribution::Normal(0.0, 1.0), &device);
        let grads = layer.forward(x).sum().backward();
        let ad = layer.active_adapter().unwrap();
        assert!(ad.a.val().grad(&grads).is_some() && ad.b.val().grad(&grads).is_some());
        assert_eq!(
            ad.magnitude
                .as_ref()
                .map(|m| m.val().grad(&grads).is_some()),
            dora.then_some(true)
        );
        let LoraBase::Dense(base) = &layer.base else {
            unreachable!()
        };
        assert!(
            base.weight.val().grad(&grads).is_none(),
            "base weight is frozen"
        );
        assert!(
            base.bias.as_ref().unwrap().val().grad(&grads).is_none(),
            "base bias is frozen"
        );
        let total = layer.num_params();
        assert_eq!(total, trainable + 32 * 16 + 16);
    }
}

#[test]
fn gaussian_and_random_initialisations() {
    let device = Default::default();
    let x = Tensor::<B, 2>::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
    let base = dense::<B>(48, 64, 5, &device);
    let want = base.forward(x.clone()).into_data();
    let g = LoraLinear::with_init(
        LoraBase::Dense(base.clone()),
        spec(16, 16.0, false, false),
        peft::InitLoraWeights::Gaussian,
        &device,
    )
    .unwrap();
    assert_eq!(
        g.forward(x.clone()).into_data(),
        want,
        "gaussian keeps B = 0"
    );
    let a: Vec<f32> = g
        .active_adapter()
        .unwrap()
        .a
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let std = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - 1.0 / 16.0).abs() < 0.01, "A ~ N(0, 1/r): std {std}");
    let r = LoraLinear::with_init(
        LoraBase::Dense(base),
        spec(16, 16.0, false, false),
        peft::InitLoraWeights::Random,
        &device,
    )
    .unwrap();
    assert_ne!(
        r.forward(x).into_data(),
        want,
        "init_lora_weights=false: B is random"
    );
}

/// DoRA's output and gradients (input, A, B, magnitude) against the formula written out on the
/// dense weight: `base + (m/‖W + sBA‖ - 1) · x Wᵀ + (m/‖W + sBA‖) · s · x A B`, the norm detached
/// as in PEFT. On an NF4 base (QDoRA) the layer never records the dequantized weight on the tape
/// (the norm comes from detached inputs, `x Wᵀ` from the quantized matmul that dequantizes again
/// in the backward pass); the numbers stay those of the dense formula.
#[test]
fn dora_values_and_gradients_match_the_dense_formula() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    for quantized in [false, true] {
        let base = if quantized {
            LoraBase::Quant(nf4::<A>(48, 64, &device))
        } else {
            LoraBase::Dense(dense::<A>(48, 64, 4, &device))
        };
        let (out, inp) = base.dims();
        A::seed(&device, 11);
        let a = Tensor::<A, 2>::random([4, inp], Distribution::Normal(0.0, 0.1), &device);
        let b = Tensor::<A, 2>::random([out, 4], Distribution::Normal(0.0, 0.1), &device);
        let m = Tensor::<A, 1>::random([out], Distribution::Uniform(0.5, 1.5), &device);
        let s = spec(4, 16.0, false, true);
        let layer = LoraLinear::from_peft(base, s, a, b, Some(m));
        let x = Tensor::<A, 2>::random([5, inp], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<A, 2>::random([5, out], Distribution::Normal(0.0, 1.0), &device);

        let x1 = x.clone().require_grad();
        let y = layer.forward(x1.clone());
        let grads = (y.clone() * g.clone()).sum().backward();

        let ad = layer.active_adapter().unwrap();
        let x2 = x.require_grad();
        let w = layer.base.dense_weight();
        let scale = s.scale();
        let ba =
            ad.b.val()
                .transpose()
                .matmul(ad.a.val().transpose())
                .mul_scalar(scale);
        let norm = (w.clone() + ba)
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .squeeze_dim::<1>(1)
            .detach();
        let mag = (ad.magnitude.as_ref().unwrap().val() / norm).unsqueeze::<2>();
        let lora = x2.clone().matmul(ad.a.val()).matmul(ad.b.val());
        let reference = layer.base.forward(x2.clone())
            + x2.clone().matmul(w.transpose()) * (mag.clone() - 1.0)
            + lora.mul_scalar(scale) * mag;
        let ref_grads = (reference.clone() * g).sum().backward();

        let close = |ours: Tensor<Flex, 2>, want: Tensor<Flex, 2>, what: &str| {
            let d: f32 = (ours - want).abs().max().into_scalar();
            assert!(d <= 1e-5, "quantized {quantized}, {what}: {d}");
        };
        close(y.inner(), reference.inner(), "output");
        close(
            x1.grad(&grads).unwrap(),
            x2.grad(&ref_grads).unwrap(),
            "input gradient",
        );
        close(
            ad.a.val().grad(&grads).unwrap(),
            ad.a.val().grad(&ref_grads).unwrap(),
            "A gradient",
        );
        close(
            ad.b.val().grad(&grads).unwrap(),
            ad.b.val().grad(&ref_grads).unwrap(),
            "B gradient",
        );
        let m = ad.magnitude.as_ref().unwrap().val();
        close(
            m.grad(&grads).unwrap().unsqueeze(),
            m.grad(&ref_grads).unwrap().unsqueeze(),
            "magnitude gradient",
        );
    }
}
