//! The run configuration: one TOML file (every field optional, defaults below), overridable field
//! by field from the command line, printed at start and saved in the run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use quant::QuantType;

use crate::error::{Error, Result};
use crate::optim::AdamWConfig;
use crate::schedule::ScheduleKind;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error; the last checkpoint stays as it was.
    Stop,
    /// Skip the update and go on (counted in the summary).
    Skip,
}

/// Where a run's metrics go besides `metrics.jsonl` (transformers' `report_to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReportTo {
    /// TensorBoard event files in `<run>/tensorboard/` (`tensorboard --logdir runs`).
    Tensorboard,
}

/// Where the run trains: `cpu` (burn-flex), `ndarray` (burn-ndarray), `cuda` (GPU 0) or
/// `cuda:N`, `wgpu` (wgpu's default adapter: Vulkan, or Metal on macOS) or `wgpu:N` (the N-th
/// adapter `cargo xtask devices` lists). Written and read as that string (TOML, `--device`, `--set device=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    /// The CPU through burn-flex.
    #[default]
    Cpu,
    /// The CPU through burn-ndarray.
    Ndarray,
    /// NVIDIA GPU number N through burn-cuda (`cuda` is `cuda:0`).
    Cuda(usize),
    /// A wgpu adapter through burn-wgpu: `None` for wgpu's default, `Some(n)` for the n-th.
    Wgpu(Option<usize>),
}

impl Device {
    /// The accepted spellings, for error messages and help.
    pub const CHOICES: &'static str = "cpu, ndarray, cuda, cuda:N, wgpu or wgpu:N";
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "ndarray" => Ok(Self::Ndarray),
            "cuda" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu(None)),
            other => {
                let index = |prefix: &str| other.strip_prefix(prefix).and_then(|n| n.parse().ok());
                index("cuda:")
                    .map(Self::Cuda)
                    .or_else(|| index("wgpu:").map(|n| Self::Wgpu(Some(n))))
                    .ok_or_else(|| format!("unknown device `{other}`; expected {}", Self::CHOICES))
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Ndarray => f.write_str("ndarray"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Wgpu(None) => f.write_str("wgpu"),
            Self::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

impl TryFrom<String> for Device {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

/// Dtype of the 4-bit matmul of `method = qlora`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// f32 on the CPU, bf16 on CUDA.
    #[default]
    Auto,
    /// f32.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

impl ComputeDtype {
    /// The float dtype on `device` (`None`: f32, the weights' own).
    pub fn on(self, device: Device) -> Option<burn::tensor::FloatDType> {
        match (self, device) {
            (Self::Auto, Device::Cuda(_)) | (Self::Bf16, _) => Some(burn::tensor::FloatDType::BF16),
            (Self::F16, _) => Some(burn::tensor::FloatDType::F16),
            (Self::Auto, _) | (Self::F32, _) => None,
        }
    }
}

/// The layout of the data files (the data crate's [`data::Format`]), or `auto` to detect it
/// from the first record. An empty string (what older run directories saved) reads as `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(try_from = "String")]
pub enum DataFormat {
    /// Detected from the fields of the first record.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// `instruction`, optional `input`, `output` (Stanford Alpaca).
    #[serde(rename = "alpaca")]
    #[value(name = "alpaca")]
    Alpaca,
    /// `messages`: a list of `{role, content}`.
    #[serde(rename = "messages")]
    #[value(name = "messages")]
    Messages,
    /// `conversations`: a list of `{from, value}`.
    #[serde(rename = "sharegpt")]
    #[value(name = "sharegpt")]
    ShareGpt,
    /// `prompt` and `completion`.
    #[serde(rename = "prompt_completion")]
    #[value(name = "prompt_completion")]
    PromptCompletion,
    /// `text`: plain text, every token trained.
    #[serde(rename = "text")]
    #[value(name = "text")]
    Text,
}

impl std::str::FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() {
            return Ok(Self::Auto);
        }
        <Self as clap::ValueEnum>::from_str(s, false).map_err(|_| {
            format!(
                "unknown format `{s}`; expected auto, alpaca, messages, sharegpt, \
                 prompt_completion or text"
            )
        })
    }
}

impl TryFrom<String> for DataFormat {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl DataFormat {
    /// The data crate's format; `None` for `auto` (detect).
    pub fn to_data(self) -> Option<data::Format> {
        match self {
            Self::Auto => None,
            Self::Alpaca => Some(data::Format::Alpaca),
            Self::Messages => Some(data::Format::Messages),
            Self::ShareGpt => Some(data::Format::ShareGpt),
            Self::PromptCompletion => Some(data::Format::PromptCompletion),
            Self::Text => Some(data::Format::Text),
        }
    }
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
    pub quant_type: QuantType,
    /// Quantize the absmax values again (QLoRA's double quantization).
    pub double_quant: bool,
    /// Elements per absmax block.
    pub blocksize: usize,
    /// Dtype of the 4-bit matmul: `auto` (f32 on CPU, bf16 on CUDA), `f32`, `bf16`, `f16`.
    pub compute_dtype: ComputeDtype,
}

impl Default for QuantSection {
    fn default() -> Self {
        Self {
            quant_type: QuantType::Nf4,
            double_quant: true,
            blocksize: 64,
            compute_dtype: ComputeDtype::Auto,
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
    /// Dataset format (`alpaca`, `messages`, `sharegpt`, `prompt_completion`, `text`), or `auto`
    /// (the default) to detect it.
    pub format: DataFormat,
    /// `full`, `lora` or `qlora`.
    pub method: Method,
    /// Where runs go: `<output_dir>/<run_name>/`.
    pub output_dir: PathBuf,
    /// Run name; a timestamp when empty.
    pub run_name: String,
    /// `cpu`, `ndarray`, `cuda` or `cuda:N`.
    pub device: Device,
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
    /// Also report metrics to: `["tensorboard"]`.
    pub report_to: Vec<ReportTo>,
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
            format: DataFormat::Auto,
            method: Method::Qlora,
            output_dir: PathBuf::from("runs"),
            run_name: String::new(),
            device: Device::Cpu,
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
            report_to: Vec::new(),
            lora: LoraSection::default(),
            quant: QuantSection::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys and values are errors naming the key, its line and what
    /// was expected.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| {
            let key = e
                .span()
                .and_then(|span| key_at(&text, span))
                .map(|k| format!(", key `{k}`"))
                .unwrap_or_default();
            Error::Config(format!(
                "{}{key}: {}",
                path.display(),
                e.to_string().trim_end()
            ))
        })
    }

    /// Sets one field from `key=value` (`--set` on the command line): a dotted key
    /// (`quant.blocksize`, `optimizer.lr`) and a TOML value, where a bare word is a string
    /// (`schedule=linear`, `device=cuda:1`). A key or value the configuration does not take is
    /// an error naming the key and what it takes; the configuration is then unchanged.
    pub fn apply_override(&mut self, spec: &str) -> Result<()> {
        let (key, raw) = spec
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| Error::Config(format!("`{spec}`: expected KEY=VALUE")))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let mut table = toml::Table::try_from(&*self)
            .map_err(|e| Error::Config(format!("rendering the configuration: {e}")))?;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut node = &mut table;
        for p in parts {
            let sections = section_names(node);
            node = node
                .get_mut(p)
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| {
                    Error::Config(format!("`{key}`: no section `{p}`; sections: {sections}"))
                })?;
        }
        if node.get(last).is_none_or(toml::Value::is_table) {
            let fields: Vec<&str> = node
                .iter()
                .filter(|(_, v)| !v.is_table())
                .map(|(k, _)| k.as_str())
                .collect();
            return Err(Error::Config(format!(
                "`{key}`: unknown field; expected one of {}",
                fields.join(", ")
            )));
        }
        node.insert(last.to_string(), value);
        *self = table.try_into().map_err(|e: toml::de::Error| {
            Error::Config(format!("`{key}` = {raw}: {}", e.message().trim_end()))
        })?;
        Ok(())
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
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad("`max_grad_norm` must be >= 0 (0 turns clipping off)");
        }
        if self.method != Method::Full {
            if self.lora.r == 0 {
                return bad("`lora.r` must be at least 1");
            }
            if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
                return Err(Error::Config(format!(
                    "`lora.alpha` is {}: expected a positive number (PEFT's lora_alpha)",
                    self.lora.alpha
                )));
            }
            if !(0.0..1.0).contains(&self.lora.dropout) {
                return Err(Error::Config(format!(
                    "`lora.dropout` is {}: expected a probability in [0, 1)",
                    self.lora.dropout
                )));
            }
            if self.lora.target_modules.is_empty() {
                return bad(
                    "`lora.target_modules` is empty: expected module names (q_proj, v_proj, ...) or \"all-linear\"",
                );
            }
        }
        if !self.sample_prompts.is_empty() && self.sample_tokens == 0 {
            return bad("`sample_tokens` must be at least 1 when `sample_prompts` is set");
        }
        self.optimizer.validate()
    }
}

/// The sub-tables of `table`, for an error message.
fn section_names(table: &toml::Table) -> String {
    let names: Vec<&str> = table
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(k, _)| k.as_str())
        .collect();
    names.join(", ")
}

/// The dotted key whose name or value covers `span` in the TOML document `text` (where a
/// deserialization error points), e.g. `quant.quant_type`.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    fn walk(table: &toml::de::DeTable<'_>, span: &std::ops::Range<usize>) -> Option<Vec<String>> {
        let covers = |r: std::ops::Range<usize>| r.start <= span.start && span.end <= r.end;
        for (k, v) in table.iter() {
            if let toml::de::DeValue::Table(t) = v.get_ref()
                && let Some(mut inner) = walk(t, span)
            {
                inner.insert(0, k.get_ref().to_string());
                return Some(inner);
            }
            if covers(k.span()) || covers(v.span()) {
                return Some(vec![k.get_ref().to_string()]);
            }
        }
        None
    }
    let doc = toml::de::DeTable::parse(text).ok()?;
    walk(doc.get_ref(), &span).map(|path| path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<TrainConfig, String> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "trainer-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        let r = TrainConfig::from_file(&path).map_err(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        r
    }

    #[test]
    fn settings_read_their_names() {
        let c = parse(
            "device = \"cuda:1\"\nformat = \"sharegpt\"\nmethod = \"lora\"\n\
             schedule = \"linear\"\n[quant]\nquant_type = \"fp4\"\ncompute_dtype = \"bf16\"\n",
        )
        .unwrap();
        assert_eq!(c.device, Device::Cuda(1));
        assert_eq!(c.format, DataFormat::ShareGpt);
        assert_eq!(c.method, Method::Lora);
        assert_eq!(c.schedule, ScheduleKind::Linear);
        assert_eq!(c.quant.quant_type, QuantType::Fp4);
        assert_eq!(c.quant.compute_dtype, ComputeDtype::Bf16);
        // What older run directories saved still reads.
        let c = parse("device = \"cuda\"\nformat = \"\"\n").unwrap();
        assert_eq!((c.device, c.format), (Device::Cuda(0), DataFormat::Auto));
        for (text, device) in [
            ("wgpu", Device::Wgpu(None)),
            ("wgpu:2", Device::Wgpu(Some(2))),
        ] {
            assert_eq!(
                parse(&format!("device = \"{text}\"\n")).unwrap().device,
                device
            );
            assert_eq!(device.to_string(), text);
        }
        let e = parse("device = \"wgpu:x\"\n").unwrap_err().to_string();
        assert!(e.contains("wgpu:x") && e.contains("wgpu:N"), "{e}");
        // And what this one writes reads back the same.
        let c = TrainConfig {
            device: Device::Cuda(3),
            format: DataFormat::PromptCompletion,
            ..TrainConfig::default()
        };
        assert_eq!(toml::from_str::<TrainConfig>(&c.to_toml()).unwrap(), c);
        assert!(c.to_toml().contains("device = \"cuda:3\""));
    }

    #[test]
    fn unknown_values_name_the_key_and_the_choices() {
        for (text, key, choices) in [
            (
                "device = \"gpu\"\n",
                "`device`",
                "cpu, ndarray, cuda, cuda:N, wgpu or wgpu:N",
            ),
            (
                "format = \"csv\"\n",
                "`format`",
                "auto, alpaca, messages, sharegpt",
            ),
            (
                "[quant]\nquant_type = \"nf5\"\n",
                "`quant.quant_type`",
                "`fp4`",
            ),
            (
                "[quant]\ncompute_dtype = \"f64\"\n",
                "`quant.compute_dtype`",
                "`bf16`",
            ),
            ("schedule = \"step\"\n", "`schedule`", "`cosine`"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key) && e.contains(choices), "{text}: {e}");
        }
    }

    #[test]
    fn overrides_set_one_field() {
        let mut c = TrainConfig::default();
        for spec in [
            "quant.blocksize=128",
            "schedule=linear",
            "device=cuda:1",
            "optimizer.lr=1e-3",
            "format=alpaca",
            "sample_prompts=[\"hi\"]",
            "run_name=x",
        ] {
            c.apply_override(spec).unwrap();
        }
        assert_eq!(c.quant.blocksize, 128);
        assert_eq!(c.schedule, ScheduleKind::Linear);
        assert_eq!(c.device, Device::Cuda(1));
        assert_eq!(c.optimizer.lr, 1e-3);
        assert_eq!(c.format, DataFormat::Alpaca);
        assert_eq!(c.sample_prompts, ["hi"]);
        assert_eq!(c.run_name, "x");
    }

    #[test]
    fn bad_overrides_name_the_key_and_what_it_takes() {
        let mut c = TrainConfig::default();
        for (spec, want) in [
            (
                "device=gpu",
                "`device` = gpu: unknown device `gpu`; expected cpu, ndarray",
            ),
            (
                "quant.quant_type=nf5",
                "`quant.quant_type` = nf5: unknown variant `nf5`",
            ),
            ("max_steps=many", "`max_steps` = many:"),
            (
                "learning_rate=1",
                "`learning_rate`: unknown field; expected one of",
            ),
            ("lora=1", "`lora`: unknown field"),
            ("optim.lr=1", "`optim.lr`: no section `optim`; sections:"),
            ("max_steps", "`max_steps`: expected KEY=VALUE"),
        ] {
            let e = c.apply_override(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
        assert_eq!(c, TrainConfig::default());
    }
}
