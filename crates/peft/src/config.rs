//! `LoraConfig`: the fields of PEFT's `adapter_config.json` that decide the computation. Every
//! other key PEFT writes must hold its default (an adapter that relies on a feature we do not
//! implement is an error naming the key, never silently a different model), and an unknown key
//! is an error too.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::lora::LoraSpec;

/// Which modules get adapters.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    /// Module names (matched on the last component, e.g. `q_proj`).
    Names(Vec<String>),
    /// Every linear layer but the LM head (`"all-linear"`).
    AllLinear,
}

/// How fresh adapter weights are initialised (`init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitLoraWeights {
    /// `true`: A kaiming-uniform, B zero.
    Default,
    /// `"gaussian"`: A normal(0, 1/r), B zero.
    Gaussian,
    /// `false`: random A and B (tests only in PEFT).
    Random,
    /// `"pissa"` (exact SVD) or `"pissa_niter_N"` (randomized SVD with `N` subspace iterations):
    /// A and B from the top-`r` singular triplets of the base weight, which keeps the residual.
    /// Float bases only, as in PEFT.
    Pissa {
        /// `None` for the exact decomposition.
        niter: Option<usize>,
    },
}

/// PEFT's `LoraConfig`, the parts that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Default rank.
    pub r: usize,
    /// Default alpha.
    pub lora_alpha: f64,
    /// Dropout on the adapter input.
    pub lora_dropout: f64,
    /// Modules to adapt.
    pub target_modules: TargetModules,
    /// rsLoRA scaling.
    pub use_rslora: bool,
    /// DoRA.
    pub use_dora: bool,
    /// Initialisation of new adapters.
    pub init_lora_weights: InitLoraWeights,
    /// Per-module rank overrides (key matched as a suffix of the module name).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// The base model the adapter was trained on.
    pub base_model_name_or_path: Option<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
            use_rslora: false,
            use_dora: false,
            init_lora_weights: InitLoraWeights::Default,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            base_model_name_or_path: None,
        }
    }
}

/// Keys PEFT writes that must hold an inert value here, with the test for it.
fn inert(key: &str, v: &Value) -> Option<bool> {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_array().is_some_and(|a| a.is_empty())
    };
    Some(match key {
        "fan_in_fan_out" | "lora_bias" | "use_qalora" | "ensure_weight_tying" => {
            v.is_null() || v == &Value::Bool(false)
        }
        "bias" => v.is_null() || v == "none",
        "layers_to_transform"
        | "layers_pattern"
        | "layer_replication"
        | "modules_to_save"
        | "exclude_modules"
        | "trainable_token_indices"
        | "target_parameters"
        | "loftq_config"
        | "eva_config"
        | "corda_config"
        | "megatron_config"
        | "alora_invocation_tokens"
        | "arrow_config"
        | "kasa_config"
        | "lora_ga_config"
        | "monteclora_config"
        | "velora_config"
        | "use_bdlora" => empty(v) || v == &Value::Bool(false),
        // Bookkeeping without effect on the computation.
        "peft_type" => v == "LORA",
        "task_type"
        | "revision"
        | "inference_mode"
        | "auto_mapping"
        | "megatron_core"
        | "peft_version"
        | "qalora_group_size"
        | "base_model_name_or_path" => true,
        _ => return None,
    })
}

impl LoraConfig {
    /// Reads `adapter_config.json` (a file, or a directory holding one). The error
    /// ([`Error::Config`]) names the file and the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join(crate::format::CONFIG_FILE);
        }
        let err = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        Self::from_json(&v).map_err(|e| err(e.to_string()))
    }

    /// Parses the JSON object; the error ([`Error::Option`]) names the key and what was expected.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Option("expected a JSON object".into()))?;
        let mut c = LoraConfig::default();
        for (key, val) in obj {
            let bad = |what: &str| Error::Option(format!("`{key}`: expected {what}, found {val}"));
            match key.as_str() {
                "r" => {
                    c.r = val
                        .as_u64()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| bad("a positive integer"))?
                        as usize
                }
                "lora_alpha" => c.lora_alpha = val.as_f64().ok_or_else(|| bad("a number"))?,
                "lora_dropout" => {
                    c.lora_dropout = val
                        .as_f64()
                        .filter(|p| (0.0..1.0).contains(p))
                        .ok_or_else(|| bad("a probability in [0, 1)"))?
                }
                "use_rslora" => c.use_rslora = val.as_bool().ok_or_else(|| bad("true or false"))?,
                "use_dora" => c.use_dora = val.as_bool().ok_or_else(|| bad("true or false"))?,
                "target_modules" => {
                    c.target_modules = match val {
                        Value::String(s) if s == "all-linear" => TargetModules::AllLinear,
                        Value::String(s) => TargetModules::Names(vec![s.clone()]),
                        Value::Array(a) => TargetModules::Names(
                            a.iter()
                                .map(|m| {
                                    m.as_str()
                                        .map(str::to_string)
                                        .ok_or_else(|| bad("module names"))
                                })
                                .collect::<Result<_>>()?,
                        ),
                        _ => return Err(bad("a list of module names or \"all-linear\"")),
                    }
                }
                "init_lora_weights" => {
                    c.init_lora_weights = match val {
                        Value::Bool(true) => InitLoraWeights::Default,
                        Value::Bool(false) => InitLoraWeights::Random,
                        Value::String(s) if s == "gaussian" => InitLoraWeights::Gaussian,
                        Value::String(s) if s == "pissa" => InitLoraWeights::Pissa { niter: None },
                        Value::String(s)
                            if s.strip_prefix("pissa_niter_")
                                .is_some_and(|n| n.parse::<usize>().is_ok()) =>
                        {
                            InitLoraWeights::Pissa {
                                niter: s["pissa_niter_".len()..].parse().ok(),
                            }
                        }
                        _ => {
                            return Err(bad(
                                "true, false, \"gaussian\", \"pissa\" or \"pissa_niter_N\" (other initialisations are not supported)",
                            ));
                        }
                    }
                }
                "rank_pattern" => {
                    for (k, r) in val.as_object().ok_or_else(|| bad("an object"))? {
                        c.rank_pattern.insert(
                            k.clone(),
                            r.as_u64()
                                .filter(|&r| r > 0)
                                .ok_or_else(|| bad("positive ranks"))?
                                as usize,
                        );
                    }
                }
                "alpha_pattern" => {
                    for (k, a) in val.as_object().ok_or_else(|| bad("an object"))? {
                        c.alpha_pattern
                            .insert(k.clone(), a.as_f64().ok_or_else(|| bad("numbers"))?);
                    }
                }
                other => match inert(other, val) {
                    Some(true) => {
                        if other == "base_model_name_or_path" {
                            c.base_model_name_or_path = val.as_str().map(str::to_string);
                        }
                    }
                    Some(false) => {
                        return Err(Error::Option(format!(
                            "`{other}` = {val} is not supported (only its default is)"
                        )));
                    }
                    None => return Err(Error::Option(format!("unknown option `{other}`"))),
                },
            }
        }
        Ok(c)
    }

    /// Whether the module `name` (e.g. `model.layers.0.self_attn.q_proj`) gets an adapter.
    pub fn targets(&self, name: &str) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        match &self.target_modules {
            TargetModules::AllLinear => last != "lm_head",
            TargetModules::Names(n) => n
                .iter()
                .any(|t| t == last || name == t || name.ends_with(&format!(".{t}"))),
        }
    }

    /// Rank, alpha and variants for the module `name`, with the patterns applied (a pattern key
    /// matches when the name ends with it on a dot boundary, as PEFT's regex does for plain names).
    pub fn spec_for(&self, name: &str) -> LoraSpec {
        let matches = |k: &str| name == k || name.ends_with(&format!(".{k}"));
        let r = self
            .rank_pattern
            .iter()
            .find(|(k, _)| matches(k))
            .map_or(self.r, |(_, &r)| r);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| matches(k))
            .map_or(self.lora_alpha, |(_, &a)| a);
        LoraSpec {
            r,
            alpha,
            dropout: self.lora_dropout,
            use_rslora: self.use_rslora,
            use_dora: self.use_dora,
        }
    }

    /// The configuration of a PiSSA adapter saved for the original model (PEFT's
    /// `path_initial_model_for_weight_conversion`): rank doubled, alpha scaled so `alpha / r` (or
    /// `alpha / sqrt(r)` with rsLoRA) is unchanged, plain initialisation. Goes with the tensors
    /// of [`crate::LoraAdapter::to_peft_tensors`].
    pub fn pissa_converted(&self) -> LoraConfig {
        let factor = if self.use_rslora {
            std::f64::consts::SQRT_2
        } else {
            2.0
        };
        let mut c = self.clone();
        c.r *= 2;
        c.lora_alpha *= factor;
        c.rank_pattern.values_mut().for_each(|r| *r *= 2);
        c.alpha_pattern.values_mut().for_each(|a| *a *= factor);
        c.init_lora_weights = InitLoraWeights::Default;
        c
    }

    /// The `adapter_config.json` PEFT writes for this configuration (`target_modules` resolved to
    /// the module names actually adapted, as PEFT does for `"all-linear"`).
    pub fn to_peft_json(&self, adapted: &[String]) -> Value {
        let init = match self.init_lora_weights {
            InitLoraWeights::Default => Value::Bool(true),
            InitLoraWeights::Random => Value::Bool(false),
            InitLoraWeights::Gaussian => Value::String("gaussian".into()),
            InitLoraWeights::Pissa { niter: None } => Value::String("pissa".into()),
            InitLoraWeights::Pissa { niter: Some(n) } => Value::String(format!("pissa_niter_{n}")),
        };
        serde_json::json!({
            "alpha_pattern": self.alpha_pattern,
            "base_model_name_or_path": self.base_model_name_or_path,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": init,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": self.rank_pattern,
            "target_modules": adapted,
            "task_type": "CAUSAL_LM",
            "use_dora": self.use_dora,
            "use_rslora": self.use_rslora,
        })
    }
}
