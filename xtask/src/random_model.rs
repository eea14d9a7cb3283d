//! `cargo xtask random-model`: a checkpoint of random weights in a preset shape, for benches and
//! load measurements without downloading anything.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use llama_model::{Llama, LlamaConfig, SaveDtype, save_checkpoint};

/// Arguments of `random-model`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shape preset (llama2-7b, llama2-13b, llama3.1-8b, llama3.1-70b, llama3.2-1b, llama3.2-3b, tiny).
    #[arg(long, default_value = "llama3.2-1b")]
    preset: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace a non-empty output directory (refused by default).
    #[arg(long)]
    overwrite: bool,
    /// Stored dtype: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Shard size limit in MB (0 = one file).
    #[arg(long, default_value_t = 0)]
    shard_mb: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let config = LlamaConfig::preset(&args.preset).ok_or_else(|| {
        anyhow!(
            "unknown preset \"{}\": expected one of {:?}",
            args.preset,
            LlamaConfig::PRESETS
        )
    })?;
    let dtype = SaveDtype::parse(&args.dtype)?;
    let out = crate::out_dir::OutDir::begin(&args.out, args.overwrite)?;
    let device = burn_ndarray::NdArrayDevice::Cpu;
    eprintln!(
        "building a random {} model ({:.2}B parameters)",
        args.preset,
        config.num_parameters() as f64 / 1e9
    );
    let pb = crate::backend::spinner("initialising weights");
    let model = Llama::<burn_ndarray::NdArray<f32>>::random(&config, args.seed, &device);
    pb.set_message(format!("writing {}", args.out.display()));
    let shard = (args.shard_mb > 0).then_some(args.shard_mb * 1_000_000);
    let files = save_checkpoint(&model, out.path(), dtype, shard)?;
    let files: Vec<_> = files.iter().map(|f| out.final_path(f)).collect();
    let dir = out.commit()?;
    pb.finish_and_clear();
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    // The result a script reads: the checkpoint directory.
    println!("{}", dir.display());
    Ok(())
}
