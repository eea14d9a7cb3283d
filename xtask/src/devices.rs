//! `cargo xtask devices`: what this machine can run on: the CPU, CUDA GPUs (when built with
//! `cuda`) and wgpu adapters (when built with `wgpu`: name, kind, API, driver, largest buffer,
//! f16 and the 8-bit storage the quantized layers need), each with its `--device` spelling.

use anyhow::Result;

/// Arguments of `devices` (none).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("--device cpu      CPU, {cores} threads (burn-flex)");
    println!("--device ndarray  CPU, {cores} threads (burn-ndarray)");
    cuda();
    wgpu();
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda() {
    match crate::backend::check_device(trainer::Device::Cuda(0)) {
        Ok(()) => println!("--device cuda[:N] NVIDIA driver found (libcuda.so.1)"),
        Err(e) => println!("cuda: {e}"),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() {
    println!(
        "cuda: not in this binary (build with `cargo run --release -p xtask --features cuda -- ...`)"
    );
}

#[cfg(feature = "wgpu")]
fn wgpu() {
    let all = quant::gpu::adapters();
    if all.is_empty() {
        println!("wgpu: {}", quant::gpu::NO_ADAPTER_HELP);
        return;
    }
    for a in all {
        let usable = if a.api_supported() {
            match quant::gpu::device(Some(a.index)) {
                Ok(d) => format!(
                    "8-bit storage yes, f16 compute {}, bf16 compute {}",
                    yes(quant::gpu::supports_float(&d, quant::gpu::FloatKind::F16)),
                    yes(quant::gpu::supports_float(&d, quant::gpu::FloatKind::BF16))
                ),
                Err(e) => format!("not usable: {e}"),
            }
        } else {
            format!("not usable: {} (needs Vulkan or Metal)", a.backend)
        };
        println!(
            "--device wgpu:{}  {} ({}, {}, driver {}), largest buffer {:.1} GiB, shader f16 {}; {usable}",
            a.index,
            a.name,
            a.kind,
            a.backend,
            a.driver,
            a.max_buffer_bytes as f64 / (1u64 << 30) as f64,
            yes(a.shader_f16),
        );
    }
}

#[cfg(feature = "wgpu")]
fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() {
    println!("wgpu: {}", crate::backend::NO_WGPU);
}
