//! The run configuration: one TOML file (every field optional, defaults below), overridable field
//! by field from the command line, printed at start and saved in the run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::AdamWConfig;
use crate::schedule::ScheduleKind;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every float parameter.
    Full,
    /// LoRA adapters on a float base.
    Lora,
    /// LoRA adapters on a 4-bit (NF4 + double quantization) base, as the QLoRA paper.
    Qlora,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "lora" => Ok(Self::Lora),
            "qlora" => Ok(Self::Qlora),
            other => Err(format!(
                "unknown method `{other}`; expected full, lora or qlora"
            )),
        }
    }
}

/// What to do when the loss or a gradient is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error; the last checkpoint stays as it was.
    Stop,
    /// Skip the update and go on (counted in the summary).
    Skip,
}

/// The adapter (`method = lora | qlora`), PEFT's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Rank.
    pub r: usize,
    /// Alpha (scale `alpha / r`).
    pub alpha: f64,
    /// Dropout on the adapter input.
    pub dropout: f64,
    /// Module names, or `["all-linear"]`.
    pub target_modules: Vec<String>,
    /// rsLoRA scaling `alpha / sqrt(r)`.
    pub use_rslora: bool,
    /// DoRA.
    pub use_dora: bool,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: vec!["all-linear".into()],
            use_rslora: false,
            use_dora: false,
        }
    }
}

/// The 4-bit base of `method = qlora`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantSection {
    /// `nf4` or `fp4`.
    pub quant_type: String,
    /// Quantize the absmax values again (QLoRA's double quantization).
    pub double_quant: bool,
    /// Elements per absmax block.
    pub blocksize: usize,
    /// Dtype of the 4-bit matmul: `auto` (f32 on CPU, bf16 on CUDA), `f32`, `bf16`, `f16`.
    pub compute_dtype: String,
}

impl Default for QuantSection {
    fn default() -> Self {
        Self {
            quant_type: "nf4".into(),
            double_quant: true,
            blocksize: 64,
            compute_dtype: "auto".into(),
        }
    }
}

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Model directory or `.gguf` file; empty = the embedded default model.
    pub model: String,
    /// Training data files or directories; empty = the shipped dataset.
    pub data: Vec<PathBuf>,
    /// Validation files; empty = hold out `valid_ratio` of the training data.
    pub valid_data: Vec<PathBuf>,
    /// Share of the training data held out for validation when `valid_data` is empty.
    pub valid_ratio: f64,
    /// Dataset format (`alpaca`, `messages`, `sharegpt`, `prompt_completion`, `text`); detected
    /// when empty.
    pub format: String,
    /// `full`, `lora` or `qlora`.
    pub method: Method,
    /// Where runs go: `<output_dir>/<run_name>/`.
    pub output_dir: PathBuf,
    /// Run name; a timestamp when empty.
    pub run_name: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Optimizer steps (each `grad_accum` micro-batches).
    pub max_steps: u64,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longest example in tokens (longer ones are truncated, counted).
    pub max_seq_len: usize,
    /// Pack several examples per row.
    pub packing: bool,
    /// Batch examples of similar length together (less padding), as transformers'
    /// `group_by_length`.
    pub group_by_length: bool,
    /// Train on prompt tokens too.
    pub train_on_prompt: bool,
    /// Activation (gradient) checkpointing: keep only each decoder layer's input in the forward
    /// pass and run the layer again in the backward pass (less memory, about a third more
    /// compute), as transformers' `gradient_checkpointing`.
    pub gradient_checkpointing: bool,
    /// AdamW.
    pub optimizer: AdamWConfig,
    /// Learning-rate schedule after warmup.
    pub schedule: ScheduleKind,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Global gradient-norm clipping (0 = none).
    pub max_grad_norm: f64,
    /// Evaluate every N steps (0 = only before and after).
    pub eval_every: u64,
    /// Validation batches per evaluation (0 = all).
    pub eval_batches: usize,
    /// Save a checkpoint every N steps (0 = only at the end).
    pub save_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// NaN/Inf loss or gradient.
    pub on_non_finite: OnNonFinite,
    /// Prompts answered before and after training and at every evaluation (chat template,
    /// greedy).
    pub sample_prompts: Vec<String>,
    /// New tokens per sample answer.
    pub sample_tokens: usize,
    /// Adapter settings.
    pub lora: LoraSection,
    /// 4-bit base settings.
    pub quant: QuantSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            data: Vec::new(),
            valid_data: Vec::new(),
            valid_ratio: 0.05,
            format: String::new(),
            method: Method::Qlora,
            output_dir: PathBuf::from("runs"),
            run_name: String::new(),
            device: "cpu".into(),
            seed: 42,
            max_steps: 100,
            batch_size: 4,
            grad_accum: 1,
            max_seq_len: 512,
            packing: false,
            group_by_length: false,
            train_on_prompt: false,
            gradient_checkpointing: false,
            optimizer: AdamWConfig::default(),
            schedule: ScheduleKind::Cosine,
            warmup_steps: 5,
            max_grad_norm: 1.0,
            eval_every: 0,
            eval_batches: 0,
            save_every: 0,
            keep_checkpoints: 2,
            on_non_finite: OnNonFinite::Stop,
            sample_prompts: Vec::new(),
            sample_tokens: 48,
            lora: LoraSection::default(),
            quant: QuantSection::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are errors naming the key and line.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.to_string().trim_end())))
    }

    /// The configuration as TOML (what the run directory's `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}\n"))
    }

    /// Range checks, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.max_steps == 0 {
            return bad("`max_steps` must be at least 1");
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("`batch_size` and `grad_accum` must be at least 1");
        }
        if self.max_seq_len < 2 {
            return bad("`max_seq_len` must be at least 2");
        }
        if !(0.0..1.0).contains(&self.valid_ratio) {
            return bad("`valid_ratio` must be in [0, 1)");
        }
        if self.max_grad_norm < 0.0 {
            return bad("`max_grad_norm` must be >= 0 (0 turns clipping off)");
        }
        if self.method != Method::Full && self.lora.r == 0 {
            return bad("`lora.r` must be at least 1");
        }
        if !matches!(self.device.as_str(), "cpu" | "cuda") {
            return bad("`device` must be cpu or cuda");
        }
        self.optimizer.validate()
    }
}
