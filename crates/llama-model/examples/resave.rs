//! Loads a checkpoint and saves it again (optionally sharded / in another dtype):
//! `cargo run -p llama-model --example resave -- IN_DIR OUT_DIR [f32|f16|bf16] [shard_bytes]`.
//! Used with `scripts/fixtures/check_saved_checkpoint.py` to prove transformers loads our files.

use llama_model::{SaveDtype, load_pretrained, save_checkpoint};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: resave IN_DIR OUT_DIR [f32|f16|bf16] [shard_bytes]".into());
    }
    let dtype = SaveDtype::parse(args.get(3).map_or("f32", String::as_str))?;
    let shard = args.get(4).map(|s| s.parse::<usize>()).transpose()?;
    let device = burn_ndarray::NdArrayDevice::Cpu;
    let model = load_pretrained::<burn_ndarray::NdArray<f32>>(&args[1], &device)?;
    for f in save_checkpoint(&model, &args[2], dtype, shard)? {
        println!("{}", f.display());
    }
    Ok(())
}
