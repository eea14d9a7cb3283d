//! Checkpoints: what a run saves to go on bit for bit — the adapter (PEFT format) or the full
//! weights, the optimizer state and the trainer state — written to a temporary directory, flushed
//! to disk and renamed, the last K kept; and the newest one found and read back to resume.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use llama_model::Llama;
use quant::QuantBackend;
use serde::{Deserialize, Serialize};

use crate::config::{Method, TrainConfig};
use crate::error::{Error, Result};
use crate::files::{aside, read_json, replace_dir, write_json};
use crate::optim::AdamW;
use crate::setup;

/// What a checkpoint records besides weights and optimizer state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// Where the data iterator stands.
    pub position: data::Position,
    /// Real tokens trained on so far.
    pub tokens: usize,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_steps: u64,
    /// Validation loss before training.
    pub eval_loss_before: Option<f64>,
    /// Seconds of training so far (for tokens/s over resumed runs).
    pub train_seconds: f64,
    /// The training data the position counts in (absent in checkpoints written before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::resume::DataDigest>,
}

/// `checkpoint-{step}` directories of a run, oldest first.
pub fn checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The newest checkpoint of `run_dir` and its trainer state (`--resume`).
pub fn newest(run_dir: &Path) -> Result<(PathBuf, TrainerState)> {
    let (_, dir) = checkpoints(run_dir).pop().ok_or_else(|| {
        Error::Config(format!(
            "--resume: no checkpoint-N directory in {}",
            run_dir.display()
        ))
    })?;
    let state = read_json(&dir.join("trainer_state.json"))?;
    Ok((dir, state))
}

/// Writes a checkpoint through `fill(tmp_dir)` into `.checkpoint-{step}.tmp`, flushes it to disk,
/// renames it to `checkpoint-{step}` (see [`replace_dir`]) and removes the oldest beyond `keep`.
/// A crash at any moment leaves every earlier checkpoint complete; a failed save (a full disk)
/// removes its temporary directory and returns [`Error::Save`] naming the file it was writing.
pub fn save_checkpoint(
    run_dir: &Path,
    step: u64,
    keep: usize,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = run_dir.join(format!("checkpoint-{step}"));
    let tmp = aside(&dir, "tmp");
    let failed = |source: Error| {
        let _ = std::fs::remove_dir_all(&tmp);
        Error::Save {
            dir: dir.clone(),
            source: Box::new(source),
        }
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| failed(Error::io(&tmp, e)))?;
    fill(&tmp).map_err(failed)?;
    replace_dir(&tmp, &dir).map_err(failed)?;
    let all = checkpoints(run_dir);
    if all.len() > keep.max(1) {
        for (_, old) in &all[..all.len() - keep.max(1)] {
            crate::files::remove_dir(old)?;
        }
    }
    Ok(dir)
}

/// The checkpoint of `state.step` in `run_dir`: weights, `optimizer.safetensors` and
/// `trainer_state.json`, keeping the last `config.keep_checkpoints`.
pub fn save<B: AutodiffBackend + QuantBackend>(
    run_dir: &Path,
    model: &Llama<B>,
    optimizer: &AdamW<B::InnerBackend>,
    state: &TrainerState,
    config: &TrainConfig,
    model_path: &Path,
) -> Result<PathBuf> {
    save_checkpoint(run_dir, state.step, config.keep_checkpoints, |tmp| {
        save_weights(model, config, model_path, tmp)?;
        optimizer.save(&tmp.join("optimizer.safetensors"))?;
        let config_file = tmp.join(crate::resume::CONFIG_FILE);
        std::fs::write(&config_file, config.to_toml()).map_err(|e| Error::io(&config_file, e))?;
        write_json(&tmp.join("trainer_state.json"), state)
    })
}

/// The trained weights into `dir`: the adapter (PEFT format, naming `model_path` as its base) for
/// `lora` / `qlora`, the full f32 checkpoint for `full`.
pub fn save_weights<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    config: &TrainConfig,
    model_path: &Path,
    dir: &Path,
) -> Result<()> {
    if config.method == Method::Full {
        llama_model::save_checkpoint(model, dir, llama_model::SaveDtype::F32, None)?;
    } else {
        let mut lora = setup::lora_config(config)?;
        lora.base_model_name_or_path = Some(model_path.display().to_string());
        llama_model::save_adapter(model, &lora, dir)?;
    }
    Ok(())
}

/// The weights into `out` (the run's `adapter/` or `model/`), replacing what was there: written
/// to `.adapter.tmp` (`.model.tmp`) beside it first, then swapped in by [`replace_dir`].
pub fn save_final_weights<B: AutodiffBackend + QuantBackend>(
    model: &Llama<B>,
    config: &TrainConfig,
    model_path: &Path,
    out: &Path,
) -> Result<()> {
    let tmp = aside(out, "tmp");
    let failed = |source: Error| {
        let _ = std::fs::remove_dir_all(&tmp);
        Error::Save {
            dir: out.to_path_buf(),
            source: Box::new(source),
        }
    };
    let _ = std::fs::remove_dir_all(&tmp);
    save_weights(model, config, model_path, &tmp).map_err(failed)?;
    replace_dir(&tmp, out).map_err(failed)
}
