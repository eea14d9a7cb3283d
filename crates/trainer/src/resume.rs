//! What a resumed run may change. A checkpoint holds tensors whose shapes follow some settings
//! (method, LoRA rank, target modules, DoRA): changing one of those on resume would train and
//! save an adapter whose `adapter_config.json` says one thing and whose weights another, so it is
//! refused, naming the setting and both values. Settings that change which examples come next or
//! how they are weighed (data, batch size, sequence length, seed, optimizer, schedule, ...) are
//! allowed with a warning naming them, as transformers' `Trainer` warns on a changed batch size:
//! the run goes on, but it is no longer the run an uninterrupted one would have been. Bookkeeping
//! settings (`max_steps`, evaluation and saving cadence, device, ...) change freely: extending a
//! run with a larger `max_steps` is the common reason to resume.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// Settings that fix the shapes of the saved state: refused when they change.
const SHAPE_KEYS: &[&str] = &["method", "lora.r", "lora.target_modules", "lora.use_dora"];

/// Settings that change nothing a checkpoint holds nor the examples and updates that follow.
const FREE_KEYS: &[&str] = &[
    "max_steps",
    "output_dir",
    "run_name",
    "device",
    "eval_every",
    "eval_batches",
    "save_every",
    "keep_checkpoints",
    "sample_prompts",
    "sample_tokens",
    "on_non_finite",
    "gradient_checkpointing",
];

/// The file each checkpoint keeps its run's configuration in.
pub const CONFIG_FILE: &str = "train_config.toml";

/// A digest of the tokenized training examples, saved in the trainer state so that a resumed run
/// notices data that changed behind an unchanged path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDigest {
    /// Training examples.
    pub examples: usize,
    /// Their tokens.
    pub tokens: usize,
    /// FNV-1a (64-bit) over every example's ids and labels, in order, as hex.
    pub hash: String,
}

impl DataDigest {
    /// The digest of `examples`.
    pub fn of(examples: &[data::Example]) -> Self {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        let mut tokens = 0;
        for e in examples {
            tokens += e.input_ids.len();
            eat(&(e.input_ids.len() as u64).to_le_bytes());
            e.input_ids.iter().for_each(|t| eat(&t.to_le_bytes()));
            e.labels.iter().for_each(|l| eat(&l.to_le_bytes()));
        }
        Self {
            examples: examples.len(),
            tokens,
            hash: format!("{h:016x}"),
        }
    }
}

/// Every setting as `dotted.key -> TOML value`.
fn flatten(config: &TrainConfig) -> Result<Vec<(String, toml::Value)>> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => out.push((key, other.clone())),
            }
        }
    }
    let table = toml::Table::try_from(config)
        .map_err(|e| Error::Config(format!("rendering the configuration: {e}")))?;
    let mut out = Vec::new();
    walk("", &table, &mut out);
    Ok(out)
}

/// Compares the configuration the checkpoint was trained with (`old`) to this run's: an error
/// naming every shape setting that changed (old and new value), else the warnings for settings
/// that change the course of the run.
pub fn compare(old: &TrainConfig, new: &TrainConfig, checkpoint: &Path) -> Result<Vec<String>> {
    let old = flatten(old)?;
    let new = flatten(new)?;
    let mut refused = Vec::new();
    let mut warnings = Vec::new();
    for (key, now) in &new {
        let before = old.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if before == Some(now) || FREE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let before = before.map_or_else(|| "(unset)".to_string(), ToString::to_string);
        let change = format!("`{key}` {before} -> {now}");
        if SHAPE_KEYS.contains(&key.as_str()) {
            refused.push(change);
        } else {
            warnings.push(change);
        }
    }
    if !refused.is_empty() {
        return Err(Error::Config(format!(
            "--resume from {}: {} changed the shapes of the saved state; resume with the checkpoint's value, or start a new run (another run_name or output_dir)",
            checkpoint.display(),
            refused.join(", ")
        )));
    }
    Ok(warnings
        .into_iter()
        .map(|w| {
            format!(
                "warning: resuming with {w}: the run goes on, but no longer as an uninterrupted run would"
            )
        })
        .collect())
}

/// The warning for training data that differ from the checkpoint's (`None` when they match or
/// the checkpoint predates the digest).
pub fn compare_data(old: Option<&DataDigest>, new: &DataDigest) -> Option<String> {
    let old = old?;
    (old != new).then(|| {
        format!(
            "warning: resuming on other training data ({} examples, {} tokens, digest {} -> {} examples, {} tokens, digest {}): the saved position counts batches of the old data, so the examples that follow are not the ones an uninterrupted run would see",
            old.examples, old.tokens, old.hash, new.examples, new.tokens, new.hash
        )
    })
}

/// The configuration a checkpoint was trained with: its own copy, else (checkpoints written
/// before it kept one) the run directory's `config.toml` as it was before this run started.
pub fn saved_config(
    checkpoint: &Path,
    run_dir_config: Option<TrainConfig>,
) -> Result<Option<TrainConfig>> {
    let own = checkpoint.join(CONFIG_FILE);
    if own.is_file() {
        return TrainConfig::from_file(&own).map(Some);
    }
    Ok(run_dir_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_rank_is_refused_naming_both_values() {
        let old = TrainConfig::default();
        let mut new = old.clone();
        new.lora.r = old.lora.r * 2;
        let err = compare(&old, &new, Path::new("run/checkpoint-3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("`lora.r` {} -> {}", old.lora.r, new.lora.r)),
            "{err}"
        );
        assert!(err.contains("run/checkpoint-3"), "{err}");
    }

    #[test]
    fn batch_size_warns_and_max_steps_is_free() {
        let old = TrainConfig::default();
        let mut new = old.clone();
        new.max_steps += 100;
        assert!(compare(&old, &new, Path::new("c")).unwrap().is_empty());
        new.batch_size += 1;
        let w = compare(&old, &new, Path::new("c")).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("`batch_size`"), "{w:?}");
    }

    #[test]
    fn the_data_digest_sees_a_changed_label() {
        let a = vec![data::Example {
            input_ids: vec![1, 2, 3],
            labels: vec![-100, 2, 3],
        }];
        let mut b = a.clone();
        b[0].labels[0] = 1;
        let (da, db) = (DataDigest::of(&a), DataDigest::of(&b));
        assert_eq!(da.examples, db.examples);
        assert_ne!(da.hash, db.hash);
        assert!(compare_data(Some(&da), &db).is_some());
        assert!(compare_data(Some(&da), &da.clone()).is_none());
        assert!(compare_data(None, &db).is_none());
    }
}
