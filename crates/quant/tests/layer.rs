//! `QuantLinear` on the device: storage really is packed, every dequantization path (burn tensor
//! ops, the multi-threaded host path, each CPU backend) gives the reference codec's bits, and
//! under autodiff the input gets the f32 layer's gradient while the weight gets none.

mod common;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use burn_ndarray::NdArray;
use common::{bits, gaussian};
use quant::{
    QuantBackend, QuantLinear, QuantType, QuantWeight, dequantize_4bit, dequantize_on_host,
    int8_vectorwise_dequant, int8_vectorwise_quant, quantize_4bit,
};

fn tensor_bits<B: Backend>(t: Tensor<B, 2>) -> Vec<u32> {
    bits(&t.into_data().to_vec::<f32>().unwrap())
}

/// (out, in, blocksize): exact blocks, a partial trailing block, an odd element count, and enough
/// blocks for a partial nested group of 256.
const SHAPES: [(usize, usize, usize); 4] =
    [(64, 128, 64), (33, 100, 64), (7, 9, 32), (96, 1000, 32)];

fn check_dequant_paths<B: QuantBackend>(device: &B::Device) {
    for (seed, &(out, inp, bs)) in SHAPES.iter().enumerate() {
        let w = gaussian(out * inp, seed as u64);
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            for dq in [false, true] {
                let q = quantize_4bit(&w, qt, bs, dq).unwrap();
                let want = bits(&dequantize_4bit(&q).unwrap());
                let dev = QuantWeight::<B>::from_4bit(&q, out, inp, device).unwrap();
                let what = format!("{qt:?} dq={dq} [{out}, {inp}] blocks of {bs}");
                assert_eq!(
                    tensor_bits(dev.dequantize_generic()),
                    want,
                    "generic: {what}"
                );
                assert_eq!(tensor_bits(dequantize_on_host(&dev)), want, "host: {what}");
                assert_eq!(
                    tensor_bits(B::dequantize_weight(&dev)),
                    want,
                    "backend: {what}"
                );
                assert_eq!(
                    dev.to_host().unwrap(),
                    quant::HostWeight::Four {
                        q,
                        out_features: out,
                        in_features: inp
                    }
                );
            }
        }
        let q8 = int8_vectorwise_quant(&w, out, inp, 0.0).unwrap();
        let want = bits(&int8_vectorwise_dequant(&q8));
        let dev = QuantWeight::<B>::from_int8(&q8, 6.0, device).unwrap();
        assert_eq!(
            tensor_bits(dev.dequantize_generic()),
            want,
            "generic int8 [{out}, {inp}]"
        );
        assert_eq!(
            tensor_bits(B::dequantize_weight(&dev)),
            want,
            "backend int8 [{out}, {inp}]"
        );
        assert_eq!(
            dev.to_host().unwrap(),
            quant::HostWeight::Int8 {
                q: q8,
                threshold: 6.0
            }
        );
    }
}

#[test]
fn dequantization_is_bit_exact_on_every_path_flex() {
    check_dequant_paths::<Flex>(&Default::default());
}

#[test]
fn dequantization_is_bit_exact_on_every_path_ndarray() {
    check_dequant_paths::<NdArray<f32>>(&Default::default());
}

#[test]
fn storage_is_packed_on_the_device() {
    let device = Default::default();
    let (out, inp) = (512usize, 1024usize);
    let n = out * inp;
    let w = gaussian(n, 7);
    let q = quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap();
    let dev = QuantWeight::<Flex>::from_4bit(&q, out, inp, &device).unwrap();
    let QuantWeight::Four(w4) = &dev else {
        unreachable!()
    };
    assert_eq!(w4.packed.dtype(), DType::U8);
    assert_eq!(w4.packed.dims(), [n / 2]);
    let quant::DeviceAbsmax::Nested(nested) = &w4.absmax else {
        panic!("double quant expected")
    };
    assert_eq!(nested.codes.dtype(), DType::U8);
    let blocks = n / 64;
    // Codes + one u8 per block + one f32 per 256 blocks + the offset; then the two codebooks
    // (dynamic map 256 f32, nibble-pair table 256x2 f32) every layer carries.
    let payload = n / 2 + blocks + 4 * blocks.div_ceil(256) + 4;
    assert_eq!(dev.device_bytes(), payload + 1024 + 2048);
    let bits_per_param = 8.0 * payload as f64 / n as f64;
    assert!((bits_per_param - 4.127).abs() < 0.001, "{bits_per_param}");

    // Without double quantization: one f32 absmax per block of 64 = 4.5 bits.
    let q = quantize_4bit(&w, QuantType::Nf4, 64, false).unwrap();
    let dev = QuantWeight::<Flex>::from_4bit(&q, out, inp, &device).unwrap();
    assert_eq!(dev.device_bytes(), n / 2 + 4 * blocks + 2048);

    // LLM.int8: one byte per weight plus an f32 per row.
    let q8 = int8_vectorwise_quant(&w, out, inp, 0.0).unwrap();
    let dev = QuantWeight::<Flex>::from_int8(&q8, 6.0, &device).unwrap();
    let QuantWeight::Int8(w8) = &dev else {
        unreachable!()
    };
    assert_eq!(w8.cb.dtype(), DType::I8);
    assert_eq!(dev.device_bytes(), n + 4 * out);
}

fn dense_reference<B: Backend>(w: &QuantWeight<B>) -> Tensor<B, 2> {
    // The f32 layer: the same dequantized weight as a plain tensor.
    w.dequantize_generic()
}

fn check_gradients<B: burn::tensor::backend::AutodiffBackend + QuantBackend>(device: &B::Device)
where
    B::InnerBackend: QuantBackend,
{
    let (rows, out, inp) = (5usize, 48usize, 96usize);
    let w = gaussian(out * inp, 11);
    let bias: Vec<f32> = gaussian(out, 12);
    for weight in [
        QuantWeight::<B>::from_4bit(
            &quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap(),
            out,
            inp,
            device,
        )
        .unwrap(),
        QuantWeight::<B>::from_4bit(
            &quantize_4bit(&w, QuantType::Fp4, 32, false).unwrap(),
            out,
            inp,
            device,
        )
        .unwrap(),
        QuantWeight::<B>::from_int8(
            &int8_vectorwise_quant(&w, out, inp, 0.0).unwrap(),
            6.0,
            device,
        )
        .unwrap(),
    ] {
        let layer = QuantLinear::new(weight, Some(Tensor::from_floats(bias.as_slice(), device)));
        assert_eq!(
            layer.num_params(),
            0,
            "a quantized layer has nothing to train"
        );
        let x_data = TensorData::new(gaussian(rows * inp, 13), [rows, inp]);
        let r_data = TensorData::new(gaussian(rows * out, 14), [rows, out]);

        let x = Tensor::<B, 2>::from_data(x_data.clone(), device).require_grad();
        let y = layer.forward(x.clone());
        let loss = (y.clone() * Tensor::from_data(r_data.clone(), device)).sum();
        let grads = loss.backward();
        let gx = x.grad(&grads).expect("input gradient");

        // The f32 layer with the same weight, differentiated by burn itself.
        let w_dense = dense_reference(&layer.weight).detach();
        let xr = Tensor::<B, 2>::from_data(x_data, device).require_grad();
        let yr = xr.clone().matmul(w_dense.transpose())
            + Tensor::<B, 1>::from_floats(bias.as_slice(), device).unsqueeze::<2>();
        let lossr = (yr.clone() * Tensor::from_data(r_data, device)).sum();
        let gradsr = lossr.backward();
        let gxr = xr.grad(&gradsr).unwrap();

        y.into_data()
            .assert_approx_eq::<f32>(&yr.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        gx.into_data()
            .assert_approx_eq::<f32>(&gxr.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    }
}

#[test]
fn input_gradient_matches_the_f32_layer_flex() {
    check_gradients::<Autodiff<Flex>>(&Default::default());
}

#[test]
fn input_gradient_matches_the_f32_layer_ndarray() {
    check_gradients::<Autodiff<NdArray<f32>>>(&Default::default());
}

#[test]
fn forward_matches_finite_differences() {
    // d(sum(y * r)) / dx_ij by central differences in f64 on the dequantized weight.
    type B = Autodiff<Flex>;
    let device = Default::default();
    let (rows, out, inp) = (2usize, 6usize, 64usize);
    let w = gaussian(out * inp, 21);
    let q = quantize_4bit(&w, QuantType::Nf4, 64, false).unwrap();
    let wd = dequantize_4bit(&q).unwrap();
    let layer = QuantLinear::<B>::new(QuantWeight::from_4bit(&q, out, inp, &device).unwrap(), None);
    let xv = gaussian(rows * inp, 22);
    let r = gaussian(rows * out, 23);
    let x =
        Tensor::<B, 2>::from_data(TensorData::new(xv.clone(), [rows, inp]), &device).require_grad();
    let loss = (layer.forward(x.clone())
        * Tensor::from_data(TensorData::new(r.clone(), [rows, out]), &device))
    .sum();
    let g = x
        .grad(&loss.backward())
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let f = |xs: &[f64]| -> f64 {
        let mut s = 0.0;
        for i in 0..rows {
            for o in 0..out {
                let y: f64 = (0..inp)
                    .map(|k| xs[i * inp + k] * f64::from(wd[o * inp + k]))
                    .sum();
                s += y * f64::from(r[i * out + o]);
            }
        }
        s
    };
    let x64: Vec<f64> = xv.iter().map(|&v| f64::from(v)).collect();
    for j in [0, 1, 17, 63, 64, 100, 127] {
        let h = 1e-3;
        let (mut p, mut m) = (x64.clone(), x64.clone());
        p[j] += h;
        m[j] -= h;
        let fd = (f(&p) - f(&m)) / (2.0 * h);
        assert!(
            (fd - f64::from(g[j])).abs() < 1e-5,
            "x[{j}]: finite difference {fd}, autodiff {}",
            g[j]
        );
    }
}

#[test]
fn compute_dtype_runs_the_gemm_in_bf16_and_f16() {
    // bitsandbytes' `bnb_4bit_compute_dtype`: meant for CUDA; burn-flex runs bf16/f16 too, so the
    // path is checked here against the f32 result at half-precision tolerance.
    type A = Autodiff<Flex>;
    let device = Default::default();
    let (rows, out, inp) = (4usize, 32usize, 128usize);
    let w = gaussian(out * inp, 31);
    let q = quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap();
    let x_data = TensorData::new(gaussian(rows * inp, 32), [rows, inp]);
    let run = |dtype: Option<burn::tensor::FloatDType>| {
        let layer =
            QuantLinear::<A>::new(QuantWeight::from_4bit(&q, out, inp, &device).unwrap(), None)
                .with_compute_dtype(dtype);
        let x = Tensor::<A, 2>::from_data(x_data.clone(), &device).require_grad();
        let y = layer.forward(x.clone());
        assert_eq!(y.dtype(), DType::F32, "output keeps the input dtype");
        let g = x.grad(&y.clone().sum().backward()).unwrap();
        (
            y.into_data().to_vec::<f32>().unwrap(),
            g.into_data().to_vec::<f32>().unwrap(),
        )
    };
    let (y32, g32) = run(None);
    for dt in [
        burn::tensor::FloatDType::BF16,
        burn::tensor::FloatDType::F16,
    ] {
        let (y, g) = run(Some(dt));
        let scale = y32.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = y
            .iter()
            .zip(&y32)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err > 0.0 && err < 2e-2 * scale,
            "{dt:?}: forward error {err} vs scale {scale}"
        );
        let gscale = g32.iter().fold(0f32, |m, v| m.max(v.abs()));
        let gerr = g
            .iter()
            .zip(&g32)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            gerr > 0.0 && gerr < 2e-2 * gscale,
            "{dt:?}: gradient error {gerr} vs scale {gscale}"
        );
    }
}
