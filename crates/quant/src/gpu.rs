//! wgpu adapters: what the machine has, and the one check every command makes before it uses
//! one (`--device wgpu` / `wgpu:N`), so that a missing driver or a missing feature is one line
//! rather than a panic inside wgpu.
//!
//! `wgpu:N` is the N-th adapter of [`adapters`] (the order wgpu enumerates them, which is the
//! order `cargo xtask devices` prints); `wgpu` is wgpu's high-performance default. What we need of
//! an adapter: the Vulkan backend on Linux and Windows (Metal on macOS), because the quantized
//! layers keep their 4-bit codes in `u8` buffers, which the SPIR-V and MSL compilers support and
//! plain WebGPU's WGSL does not; `u8` storage (Vulkan's `storageBuffer8BitAccess` with
//! `shaderInt8`) on the device, checked once its compute client exists.

pub use burn_wgpu::WgpuDevice;
use cubecl::features::TypeUsage;
pub use cubecl::ir::FloatKind;
use cubecl::ir::{ElemType, StorageType, UIntKind};
use cubecl::prelude::Runtime;

/// burn's wgpu backend as every command and test uses it: f32 floats, i32 ints, with fusion.
pub type Wgpu = burn_wgpu::Wgpu<f32, i32>;

/// One wgpu adapter, as [`adapters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// Position in the listing: `--device wgpu:{index}`.
    pub index: usize,
    /// The adapter's name (`llvmpipe (LLVM 15.0.6, 256 bits)` for Mesa's lavapipe).
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub kind: String,
    /// Graphics API (`Vulkan`, `Metal`, ...).
    pub backend: String,
    /// Driver name and version string as the driver reports them.
    pub driver: String,
    /// The largest buffer the adapter allows, in bytes (wgpu does not report memory size).
    pub max_buffer_bytes: u64,
    /// Half-precision arithmetic in shaders (`SHADER_F16`).
    pub shader_f16: bool,
    /// The burn device this adapter is selected by.
    pub device: WgpuDevice,
}

impl Adapter {
    /// Whether burn's wgpu runtime compiles for this adapter's API with `u8` buffers (SPIR-V for
    /// Vulkan, MSL for Metal); false for WebGPU, OpenGL and DX12 (WGSL).
    pub fn api_supported(&self) -> bool {
        matches!(self.backend.as_str(), "Vulkan" | "Metal")
    }
}

/// The graphics API our build compiles kernels for.
#[cfg(not(target_os = "macos"))]
type Api = burn_wgpu::graphics::Vulkan;
#[cfg(target_os = "macos")]
type Api = burn_wgpu::graphics::Metal;

/// Every adapter wgpu finds for the graphics API of this build (Vulkan, or Metal on macOS).
pub fn adapters() -> Vec<Adapter> {
    use burn_wgpu::graphics::GraphicsApi;
    let backend = <Api as GraphicsApi>::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let found = cubecl::future::block_on(instance.enumerate_adapters(backend.into()));
    let mut per_kind = std::collections::HashMap::<String, usize>::new();
    found
        .into_iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            let kind = format!("{:?}", info.device_type);
            let nth = per_kind.entry(kind.clone()).or_insert(0);
            let device = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(*nth),
                wgpu::DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(*nth),
                wgpu::DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(*nth),
                // burn selects the first CPU adapter only; `Other` adapters are its fallback list.
                wgpu::DeviceType::Cpu | wgpu::DeviceType::Other => WgpuDevice::Cpu,
            };
            *nth += 1;
            Adapter {
                index,
                name: info.name.clone(),
                kind,
                backend: format!("{:?}", info.backend),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_buffer_bytes: adapter.limits().max_buffer_size,
                shader_f16: adapter.features().contains(wgpu::Features::SHADER_F16),
                device,
            }
        })
        .collect()
}

/// How to get a Vulkan driver when there is none.
pub const NO_ADAPTER_HELP: &str = "no Vulkan adapter found: install the GPU's Vulkan driver and the loader (Debian/Ubuntu: `apt-get install libvulkan1 mesa-vulkan-drivers`; Mesa's lavapipe then runs the kernels on the CPU); `cargo xtask devices` lists what wgpu sees";

/// The burn device of `--device wgpu` (`index` `None`) or `wgpu:N`, after checking that the
/// adapter exists, that burn's wgpu runtime starts on it and that it stores `u8` buffers. The
/// error is one line naming the adapter and what is missing.
pub fn device(index: Option<usize>) -> Result<WgpuDevice, String> {
    let all = adapters();
    if all.is_empty() {
        return Err(NO_ADAPTER_HELP.to_string());
    }
    let (device, label) = match index {
        None => (WgpuDevice::DefaultDevice, "wgpu".to_string()),
        Some(n) => {
            let adapter = all.get(n).ok_or_else(|| {
                format!(
                    "--device wgpu:{n}: there are {} wgpu adapter(s), numbered from 0 ({}); `cargo xtask devices` lists them",
                    all.len(),
                    all.iter()
                        .map(|a| format!("{}: {}", a.index, a.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if !adapter.api_supported() {
                return Err(format!(
                    "--device wgpu:{n} ({}) uses {}: the quantized kernels need SPIR-V (Vulkan) or MSL (Metal) for u8 buffers",
                    adapter.name, adapter.backend
                ));
            }
            (
                adapter.device.clone(),
                format!("wgpu:{n} ({})", adapter.name),
            )
        }
    };
    let client = std::panic::catch_unwind(|| burn_wgpu::WgpuRuntime::client(&device))
        .map_err(|_| format!("--device {label}: burn's wgpu runtime could not start on it"))?;
    let u8_usage = client
        .properties()
        .type_usage(StorageType::Scalar(ElemType::UInt(UIntKind::U8)));
    if !u8_usage.contains(TypeUsage::Buffer) {
        return Err(format!(
            "--device {label}: the adapter has no 8-bit storage buffers (Vulkan storageBuffer8BitAccess and shaderInt8), which the 4-bit and int8 codes need"
        ));
    }
    Ok(device)
}

/// Whether the device stores and computes in `dtype` (`f16` / `bf16`): for
/// `--compute-dtype` checks and `cargo xtask devices`.
pub fn supports_float(device: &WgpuDevice, half: FloatKind) -> bool {
    let client = burn_wgpu::WgpuRuntime::client(device);
    let usage = client
        .properties()
        .type_usage(StorageType::Scalar(ElemType::Float(half)));
    usage.contains(TypeUsage::Buffer) && usage.contains(TypeUsage::Arithmetic)
}

/// For GPU tests: the default wgpu device, or `None` when this machine has none, with one line
/// per test binary saying why, unless `LLAMA_REQUIRE_GPU` is set (`.ci/run` sets it): then a
/// missing or unusable device panics, so a run that is meant to test the GPU never passes tests
/// that did not run.
pub fn test_device() -> Option<WgpuDevice> {
    static FOUND: std::sync::OnceLock<Result<WgpuDevice, String>> = std::sync::OnceLock::new();
    let mut first = false;
    let found = FOUND.get_or_init(|| {
        first = true;
        device(None)
    });
    match found {
        Ok(d) => Some(d.clone()),
        Err(e) if std::env::var_os("LLAMA_REQUIRE_GPU").is_none() => {
            if first {
                // Straight to stderr: the test harness captures `eprintln!` of passing tests.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "GPU tests skipped (no wgpu device; LLAMA_REQUIRE_GPU=1 makes them fail instead): {e}"
                );
            }
            None
        }
        Err(e) => panic!("LLAMA_REQUIRE_GPU is set and {e}"),
    }
}
