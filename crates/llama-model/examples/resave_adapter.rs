//! Loads a PEFT adapter onto its base and saves it again with `save_adapter`:
//! `cargo run -p llama-model --example resave_adapter -- BASE_DIR ADAPTER_DIR OUT_DIR`.
//! Used with `scripts/fixtures/check_saved_adapter.py` to prove PEFT loads our adapter files.

use llama_model::{load_adapter, load_pretrained, save_adapter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: resave_adapter BASE_DIR ADAPTER_DIR OUT_DIR".into());
    }
    let device = Default::default();
    let mut model = load_pretrained::<burn_flex::Flex>(&args[1], &device)?;
    let config = load_adapter(&mut model, &args[2])?;
    save_adapter(&model, &config, &args[3])?;
    println!("{}", args[3]);
    Ok(())
}
