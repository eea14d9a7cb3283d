//! What a run reports: per-step metrics (`metrics.jsonl`), the loss plot (`loss.png`), the
//! end-of-run summary (`summary.json`) and the process's peak memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::{write_atomic, write_json};
use crate::step::StepStats;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Optimizer step (1-based: the update just made).
    pub step: u64,
    /// Training loss of the step, or the validation loss for `kind = "eval"` (`null` in the
    /// file when not finite).
    #[serde(deserialize_with = "nan_for_null")]
    pub loss: f64,
    /// `train` or `eval`.
    pub kind: String,
    /// Learning rate of the update (train).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Gradient norm before clipping (train).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Real tokens in the step (train).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Seconds since the start of the run.
    pub elapsed_s: f64,
}

impl Metric {
    /// The line of optimizer step `step`.
    pub fn train(step: u64, stats: &StepStats, elapsed_s: f64) -> Self {
        Self {
            step,
            loss: stats.loss,
            kind: "train".into(),
            lr: Some(stats.lr),
            grad_norm: Some(stats.grad_norm),
            tokens: Some(stats.tokens),
            elapsed_s,
        }
    }

    /// A validation-loss line.
    pub fn eval(step: u64, loss: f64, elapsed_s: f64) -> Self {
        Self {
            step,
            loss,
            kind: "eval".into(),
            lr: None,
            grad_norm: None,
            tokens: None,
            elapsed_s,
        }
    }
}

/// JSON has no NaN: serde_json writes non-finite numbers as `null`; read them back as NaN.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends a line to `metrics.jsonl` (one `write`, newline included: a crash can cut only the
/// last line short, and [`keep_metrics`] drops such a line).
pub fn append_metric(path: &Path, m: &Metric) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(m).unwrap_or_default() + "\n";
    f.write_all(line.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Reads `metrics.jsonl`, keeping the lines up to `step` (a resumed run rewrites the rest). A
/// last line without its newline (a crash in the middle of [`append_metric`]) is left out.
pub fn read_metrics(path: &Path, up_to: Option<u64>) -> Result<Vec<Metric>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        let m: Metric = serde_json::from_str(line).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?;
        if up_to.is_none_or(|s| m.step <= s) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Rewrites `metrics.jsonl` with its lines up to `step` only (a resumed run writes the rest
/// again; a fresh run starts it empty).
pub fn keep_metrics(path: &Path, step: u64) -> Result<()> {
    let kept = read_metrics(path, Some(step))?;
    write_atomic(path, |tmp| {
        let text: String = kept
            .iter()
            .map(|m| serde_json::to_string(m).unwrap_or_default() + "\n")
            .collect();
        std::fs::write(tmp, text)
    })
}

/// The end of a run's report: `loss.png` from `metrics.jsonl`, and `summary.json`.
pub fn write_summary(run_dir: &Path, summary: &Summary) -> Result<()> {
    let mut metrics = read_metrics(&run_dir.join("metrics.jsonl"), None)?;
    // The validation loss before training (kept in the summary) is the plot's step 0.
    if let Some(before) = summary.eval_loss_before
        && !metrics.iter().any(|m| m.kind == "eval" && m.step == 0)
    {
        metrics.insert(0, Metric::eval(0, before, 0.0));
    }
    let name = run_dir
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    crate::plot::loss_plot(
        &metrics,
        &format!("{name}: training loss"),
        &run_dir.join("loss.png"),
    )?;
    write_json(&run_dir.join("summary.json"), summary)
}

/// Peak resident set size of this process (`VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The end-of-run record, also `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Optimizer steps done.
    pub steps: u64,
    /// Real tokens trained on.
    pub tokens: usize,
    /// Seconds from start to end of this process's run (loading included).
    pub wall_s: f64,
    /// Seconds spent in training steps over the whole run (resumed parts included).
    pub train_s: f64,
    /// Training tokens per second of training time.
    pub tokens_per_s: f64,
    /// Peak resident memory of this process.
    pub peak_rss_bytes: u64,
    /// Validation loss before training.
    pub eval_loss_before: Option<f64>,
    /// Validation loss after training.
    pub eval_loss_after: Option<f64>,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_steps: u64,
    /// `(trainable, total)` parameters.
    pub parameters: (usize, usize),
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// The checkpoint this run resumed from.
    pub resumed_from: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_line_cut_short_by_a_crash_is_dropped_on_resume() {
        let dir = std::env::temp_dir().join(format!("trainer-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        for step in 1..=3 {
            append_metric(&path, &Metric::eval(step, 1.0 / step as f64, 0.5)).unwrap();
        }
        // A crash in the middle of the fourth append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"step\":4,\"lo").unwrap();
        assert_eq!(read_metrics(&path, None).unwrap().len(), 3);
        keep_metrics(&path, 2).unwrap();
        let kept = read_metrics(&path, None).unwrap();
        assert_eq!(kept.iter().map(|m| m.step).collect::<Vec<_>>(), [1, 2]);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        // A bad complete line is still an error naming the line.
        std::fs::write(&path, "{\"step\":1}\n").unwrap();
        let e = read_metrics(&path, None).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
