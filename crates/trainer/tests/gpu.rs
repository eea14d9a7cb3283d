//! The trainer on a GPU backend, held to the same references as on the CPU, and to the CPU
//! backend itself:
//! - the LoRA and QLoRA golden fixtures (PyTorch + PEFT [+ bitsandbytes]): step-0 loss and every
//!   adapter gradient, then 10 steps, with the CPU's tolerances; and the 10 losses and the adapter
//!   after them against burn-flex on the CPU;
//! - LoRA, rsLoRA and DoRA layers over a dense and an NF4 base: output and every gradient against
//!   the CPU;
//! - a checkpoint written on one backend resumes on the other;
//! - QLoRA with f16 compute (`--compute-dtype f16`) lowers the loss and stays near f32.
//!
//! - wgpu (Vulkan; Mesa's lavapipe in CI): `cargo test -p trainer --features wgpu --test gpu`.
//!   Without a Vulkan adapter each test binary prints one line and its tests return, unless
//!   `LLAMA_REQUIRE_GPU` is set (as `.ci/run` does): then they fail.
//! - CUDA: `cargo test -p trainer --features cuda --test gpu -- --ignored` on an NVIDIA machine
//!   (the tests are `#[ignore]`d so that a build without a GPU does not report them as passed).
//!
//! One binary, so the kernels compile once per run (lavapipe compiles each for seconds).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use burn::tensor::backend::{AutodiffBackend, DTypeUsage};
use burn::tensor::{DType, FloatDType};
use common::{
    Ad, Golden, LORA_TOLERANCES, QLORA_TOLERANCES, check_step_zero, check_steps, golden_steps,
    lora_golden, lora_model, max_rel, qlora_golden, qlora_model, root,
};
use peft::{LoraBase, LoraLinear, LoraSpec};
use quant::{DenseLinear, QuantBackend, QuantLinear, QuantType, QuantWeight, quantize_4bit};
use trainer::report::read_metrics;
use trainer::{Method, Observer, RunPaths, StepStats, TrainConfig, run};

/// The backends a GPU test runs on: autodiff over the GPU backend, whose inner backend also
/// quantizes.
trait Gpu: AutodiffBackend<InnerBackend: QuantBackend> + QuantBackend {}
impl<B: AutodiffBackend<InnerBackend: QuantBackend> + QuantBackend> Gpu for B {}

/// The tests take turns: runs seed process-wide generators, and lavapipe uses every core anyway.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each check on each GPU backend of the build: `$device` is `None` (one printed line) on a
/// machine without one.
macro_rules! gpu_tests {
    ($name:ident, $backend:ty, $device:expr, $setting:expr, $(#[$attr:meta])*) => {
        mod $name {
            type W = burn_autodiff::Autodiff<$backend>;
            $(#[$attr])*
            #[test]
            fn lora_golden_run_matches_pytorch_and_the_cpu() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::lora_golden_run::<W>(&d);
                }
            }
            $(#[$attr])*
            #[test]
            fn qlora_golden_run_matches_pytorch_bitsandbytes_and_the_cpu() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::qlora_golden_run::<W>(&d);
                }
            }
            $(#[$attr])*
            #[test]
            fn qlora_with_f16_compute_lowers_the_loss_and_stays_near_f32() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::qlora_f16::<W>(&d);
                }
            }
            $(#[$attr])*
            #[test]
            fn lora_rslora_and_dora_layers_match_the_cpu_forward_and_backward() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::layers_match_the_cpu::<W>(&d);
                }
            }
            $(#[$attr])*
            #[test]
            fn a_compute_dtype_the_device_lacks_is_one_clear_error() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::missing_compute_dtype::<W>(&d, $setting, stringify!($name));
                }
            }
            $(#[$attr])*
            #[test]
            fn a_checkpoint_resumes_on_the_other_backend() {
                let _turn = super::turn();
                if let Some(d) = $device {
                    super::resume_across_backends::<W>(&d, $setting, stringify!($name));
                }
            }
        }
    };
}

#[cfg(feature = "wgpu")]
gpu_tests!(
    wgpu,
    quant::gpu::Wgpu,
    quant::gpu::test_device(),
    trainer::Device::Wgpu(None),
);

#[cfg(feature = "cuda")]
gpu_tests!(
    cuda,
    quant::Cuda,
    Some(quant::CudaDevice::default()),
    trainer::Device::Cuda(0),
    #[ignore = "needs an NVIDIA GPU (libcuda); run with --ignored on a GPU machine"]
);

/// Per-step losses of the same 10 steps on wgpu and on the CPU agree to this (relative). Both run
/// f32 with the same formulas; what differs is the order of the sums inside the matmuls and
/// reductions (CubeCL's tiled kernels vs burn-flex's gemm), about 1e-7 per operation, which ten
/// steps of Adam (it normalises each gradient by its running RMS) grow to the 1e-6 range.
const CPU_LOSS_TOL: f64 = 1e-5;
/// The adapters after 10 steps, relative to each tensor's largest value: as against PyTorch
/// (common::LORA_TOLERANCES), Adam turns the rounding of near-zero gradients into full-size updates.
const CPU_WEIGHT_TOL: f64 = 1e-3;

fn compare_with_cpu(what: &str, gpu: &common::Worst, cpu: &common::Worst) {
    let mut worst = 0f64;
    for (step, (g, c)) in gpu.losses.iter().zip(&cpu.losses).enumerate() {
        let r = (g - c).abs() / c.abs();
        worst = worst.max(r);
        assert!(r <= CPU_LOSS_TOL, "{what} step {step}: wgpu {g} vs cpu {c}");
    }
    let mut worst_w = 0f64;
    for ((key, g), (_, c)) in gpu.adapter.iter().zip(&cpu.adapter) {
        let r = max_rel(g, c);
        worst_w = worst_w.max(r);
        assert!(r <= CPU_WEIGHT_TOL, "{what} {key}: wgpu vs cpu {r}");
    }
    eprintln!(
        "{what}: wgpu vs cpu over 10 steps: losses {worst:.3e} (relative), adapters {worst_w:.3e}"
    );
}

fn lora_golden_run<W: Gpu>(device: &W::Device) {
    let golden = Golden::open(&lora_golden());
    check_step_zero::<W>(&lora_model(device), &golden, &LORA_TOLERANCES, device);
    let on_gpu = check_steps::<W>(lora_model(device), &golden, &LORA_TOLERANCES);
    let on_cpu = check_steps::<Ad>(lora_model(&Default::default()), &golden, &LORA_TOLERANCES);
    compare_with_cpu("LoRA", &on_gpu, &on_cpu);
}

fn qlora_golden_run<W: Gpu>(device: &W::Device) {
    let golden = Golden::open(&qlora_golden());
    check_step_zero::<W>(&qlora_model(device), &golden, &QLORA_TOLERANCES, device);
    let on_gpu = check_steps::<W>(qlora_model(device), &golden, &QLORA_TOLERANCES);
    let on_cpu = check_steps::<Ad>(qlora_model(&Default::default()), &golden, &QLORA_TOLERANCES);
    compare_with_cpu("QLoRA", &on_gpu, &on_cpu);
}

/// f16 compute of the 4-bit matmuls (bitsandbytes' `bnb_4bit_compute_dtype`): the input and the
/// dequantized weight are rounded to f16 (11 significant bits, relative error 4.9e-4 each) and
/// the product is accumulated by the device's matmul, so losses move by about 1e-3 relative; the
/// adapter, its gradients and Adam's state stay f32. Over the 10 golden steps the loss falls as
/// with f32 and each step's loss stays within 1e-3 (relative) of the f32 run's (measured on
/// lavapipe: 2.2e-5).
fn qlora_f16<W: Gpu>(device: &W::Device) {
    assert!(
        W::dtype_usage(device, DType::F16).contains(DTypeUsage::Arithmetic),
        "the device has no f16 arithmetic (lavapipe and every CUDA GPU have it)"
    );
    let golden = Golden::open(&qlora_golden());
    let (_, f32_steps) = golden_steps::<W>(qlora_model(device), &golden);
    let mut half = qlora_model::<W>(device);
    half.set_quant_compute_dtype(Some(FloatDType::F16));
    let (_, f16_steps) = golden_steps::<W>(half, &golden);
    let losses = |s: &[StepStats]| s.iter().map(|s| s.loss).collect::<Vec<_>>();
    let (full, reduced) = (losses(&f32_steps), losses(&f16_steps));
    let mut worst = 0f64;
    for (step, (h, f)) in reduced.iter().zip(&full).enumerate() {
        assert!(f16_steps[step].finite, "step {step}: non-finite in f16");
        let r = (h - f).abs() / f;
        worst = worst.max(r);
        assert!(r <= 1e-3, "step {step}: f16 loss {h} vs f32 {f}");
    }
    // The fixture's windows repeat every 4 steps (8 micro-batches, accumulation 2): compare the
    // same window before and after training.
    assert!(
        reduced[8] < reduced[0] && reduced[9] < reduced[1],
        "f16 did not lower the loss: {reduced:?}"
    );
    eprintln!("f16 compute vs f32 over 10 QLoRA steps: losses {worst:.3e} (relative); {reduced:?}");
}

fn host(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(7919));
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn t2<B: Backend>(v: &[f32], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// One adapter layer over a dense or NF4 base, built from host values on `device`; returns its
/// output and the gradients of input, A, B (and DoRA's magnitude) for the upstream gradient `g`.
fn layer_pass<B: Gpu>(
    quantized: bool,
    spec: LoraSpec,
    device: &B::Device,
) -> Vec<(String, Vec<f32>)> {
    let (out, inp, r, rows) = (48, 100, spec.r, 5);
    let w = host(out * inp, 1, 0.2);
    let base = if quantized {
        let q = quantize_4bit(&w, QuantType::Nf4, 64, true).unwrap();
        LoraBase::Quant(QuantLinear::new(
            QuantWeight::from_4bit(&q, out, inp, device).unwrap(),
            None,
        ))
    } else {
        // DenseLinear holds `[in, out]`.
        let wt: Vec<f32> = (0..inp * out)
            .map(|k| w[(k % out) * inp + k / out])
            .collect();
        let bias = Tensor::from_data(TensorData::new(host(out, 2, 0.1), [out]), device);
        LoraBase::Dense(DenseLinear::new(t2(&wt, [inp, out], device), Some(bias)))
    };
    let a = t2::<B>(&host(r * inp, 3, 0.2), [r, inp], device);
    let b = t2::<B>(&host(out * r, 4, 0.2), [out, r], device);
    let m = spec.use_dora.then(|| {
        let v: Vec<f32> = host(out, 5, 1.0).iter().map(|x| x + 1.0).collect();
        Tensor::<B, 1>::from_data(TensorData::new(v, [out]), device)
    });
    let layer = LoraLinear::from_peft(base, spec, a, b, m);
    let x = t2::<B>(&host(rows * inp, 6, 2.0), [rows, inp], device).require_grad();
    let g = t2::<B>(&host(rows * out, 7, 2.0), [rows, out], device);
    let y = layer.forward(x.clone());
    let grads = (y.clone() * g).sum().backward();
    let ad = layer.active_adapter().unwrap();
    let flat = |t: Tensor<B::InnerBackend, 2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
    let mut got = vec![
        ("output".to_string(), flat(y.inner())),
        ("input grad".to_string(), flat(x.grad(&grads).unwrap())),
        ("A grad".to_string(), flat(ad.a.val().grad(&grads).unwrap())),
        ("B grad".to_string(), flat(ad.b.val().grad(&grads).unwrap())),
    ];
    if let Some(m) = &ad.magnitude {
        let gm = m.val().grad(&grads).unwrap().unsqueeze::<2>();
        got.push(("magnitude grad".to_string(), flat(gm)));
    }
    got
}

/// LoRA, rsLoRA and DoRA over a dense and an NF4 (double-quantized) base: output and every
/// gradient within 1e-5 of the CPU's, relative to each tensor's largest value (f32 matmuls that
/// sum in another order; the 4-bit codes dequantize to the same bits on both, tests in quant).
fn layers_match_the_cpu<W: Gpu>(device: &W::Device) {
    for quantized in [false, true] {
        for (rs, dora) in [(false, false), (true, false), (false, true)] {
            let spec = LoraSpec {
                r: 4,
                alpha: 16.0,
                dropout: 0.0,
                use_rslora: rs,
                use_dora: dora,
            };
            let gpu = layer_pass::<W>(quantized, spec, device);
            let cpu = layer_pass::<Ad>(quantized, spec, &Default::default());
            assert_eq!(gpu.len(), cpu.len());
            for ((what, g), (_, c)) in gpu.iter().zip(&cpu) {
                let r = max_rel(g, c);
                assert!(
                    r <= 1e-5,
                    "nf4 {quantized} rslora {rs} dora {dora}, {what}: {r}"
                );
            }
        }
    }
}

/// A small Alpaca-style file of 16 records.
fn dataset(dir: &Path) -> PathBuf {
    common::counting_data(dir, 16, 5)
}

struct StopAt(u64, &'static AtomicBool);

impl Observer for StopAt {
    fn step(&mut self, step: u64, _: u64, _: &StepStats, _: f64) {
        if step == self.0 {
            self.1.store(true, Ordering::Relaxed);
        }
    }
    fn info(&mut self, _: &str) {}
}

fn train_losses(run_dir: &Path) -> Vec<f64> {
    read_metrics(&run_dir.join("metrics.jsonl"), None)
        .unwrap()
        .iter()
        .filter(|m| m.kind == "train")
        .map(|m| m.loss)
        .collect()
}

/// A LoRA run of 4 steps (no dropout: each device draws its own masks), checkpointed at step 2:
/// stopped there on one backend and resumed on the other, its losses equal an uninterrupted CPU
/// run's within [`CPU_LOSS_TOL`]. The adapter initialisation is drawn on the host, so both
/// backends start from the same adapter.
fn resume_across_backends<W: Gpu>(device: &W::Device, setting: trainer::Device, tag: &str) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trainer-{tag}-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cpu_cfg = TrainConfig {
        data: vec![dataset(&tmp)],
        method: Method::Lora,
        max_steps: 4,
        batch_size: 2,
        grad_accum: 1,
        max_seq_len: 128,
        // One batch shape: lavapipe compiles (and autotunes) kernels per shape, for seconds each.
        packing: true,
        warmup_steps: 1,
        valid_ratio: 0.25,
        save_every: 2,
        seed: 3,
        ..TrainConfig::default()
    };
    cpu_cfg.optimizer.lr = 1e-2;
    cpu_cfg.lora.r = 4;
    cpu_cfg.lora.dropout = 0.0;
    let gpu_cfg = TrainConfig {
        device: setting,
        ..cpu_cfg.clone()
    };
    let paths = |name: &str, resume: bool| RunPaths {
        model: llama_model::ModelSource::from_path(
            root().join("crates/llama-model/tests/fixtures/models/mha_untied"),
        )
        .unwrap(),
        run_dir: tmp.join(name),
        resume,
    };
    let never = AtomicBool::new(false);
    let cpu = Default::default();
    run::<Ad>(
        &cpu_cfg,
        &paths("whole", false),
        &cpu,
        &mut trainer::Quiet,
        &never,
    )
    .unwrap();
    let want = train_losses(&tmp.join("whole"));
    assert_eq!(want.len(), 4);

    for (name, first_on_gpu) in [("cpu-then-gpu", false), ("gpu-then-cpu", true)] {
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let first = if first_on_gpu {
            run::<W>(
                &gpu_cfg,
                &paths(name, false),
                device,
                &mut StopAt(2, stop),
                stop,
            )
        } else {
            run::<Ad>(
                &cpu_cfg,
                &paths(name, false),
                &cpu,
                &mut StopAt(2, stop),
                stop,
            )
        }
        .unwrap();
        assert!(first.interrupted && first.steps == 2, "{name}");
        let second = if first_on_gpu {
            run::<Ad>(
                &cpu_cfg,
                &paths(name, true),
                &cpu,
                &mut trainer::Quiet,
                &never,
            )
        } else {
            run::<W>(
                &gpu_cfg,
                &paths(name, true),
                device,
                &mut trainer::Quiet,
                &never,
            )
        }
        .unwrap();
        assert_eq!(second.steps, 4, "{name}");
        let got = train_losses(&tmp.join(name));
        assert_eq!(got.len(), 4, "{name}");
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= CPU_LOSS_TOL * w.abs(),
                "{name} step {}: {g} vs the CPU run's {w}",
                step + 1
            );
        }
        eprintln!("{name}: losses {got:?} vs the CPU run's {want:?}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `quant.compute_dtype` (`--compute-dtype`) naming a half type the device has no arithmetic for
/// (bf16 on lavapipe) stops the run before the model loads, with one line naming the setting,
/// the device and what to use instead.
fn missing_compute_dtype<W: Gpu>(device: &W::Device, setting: trainer::Device, tag: &str) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trainer-{tag}-dtype-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut checked = 0;
    for (setting_dtype, dtype, name) in [
        (trainer::ComputeDtype::Bf16, DType::BF16, "bf16"),
        (trainer::ComputeDtype::F16, DType::F16, "f16"),
    ] {
        if W::dtype_usage(device, dtype).contains(DTypeUsage::Arithmetic) {
            continue;
        }
        let mut cfg = TrainConfig {
            data: vec![dataset(&tmp)],
            method: Method::Qlora,
            device: setting,
            max_steps: 1,
            ..TrainConfig::default()
        };
        cfg.quant.compute_dtype = setting_dtype;
        let paths = RunPaths {
            model: llama_model::ModelSource::from_path(
                root().join("crates/llama-model/tests/fixtures/models/mha_untied"),
            )
            .unwrap(),
            run_dir: tmp.join(name),
            resume: false,
        };
        let never = AtomicBool::new(false);
        let e = run::<W>(&cfg, &paths, device, &mut trainer::Quiet, &never)
            .err()
            .unwrap_or_else(|| panic!("{name} compute ran on a device without {name}"))
            .to_string();
        assert!(
            e.contains(&format!("quant.compute_dtype = {name}"))
                && e.contains(&format!("has no {name} arithmetic"))
                && e.contains("--compute-dtype f32"),
            "{e}"
        );
        checked += 1;
    }
    eprintln!("{tag}: {checked} missing half type(s) refused");
    let _ = std::fs::remove_dir_all(&tmp);
}
