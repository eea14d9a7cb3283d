//! PEFT's adapter directory, model-agnostic: `adapter_config.json` ([`LoraConfig`]) and
//! `adapter_model.safetensors`, whose keys name the adapted module
//! (`base_model.model.<module>.lora_A.weight` `[r, in]`, `….lora_B.weight` `[out, r]`,
//! `….lora_magnitude_vector` `[out]` with DoRA) and whose tensors are F32, F16 or BF16.
//!
//! Reading: [`read_adapter`] gives the configuration and the [`AdapterWeights`] of the file; the
//! caller [takes](AdapterWeights::take) the tensors of every module it adapts, checked against the
//! rank and the module's shape, then [finishes](AdapterWeights::finish), which fails if the file
//! holds tensors nobody took. [`read_adapter_modules`] reads everything into a map from module
//! path (`model.layers.0.self_attn.q_proj`) to [`LoraTensors`].
//!
//! Writing: [`write_adapter`] writes such a map (as f32) with its configuration; each file goes to
//! a temporary name first and is renamed, so an interrupted save never clobbers a good file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use quant::RawTensor;
use safetensors::{Dtype, SafeTensors};

use crate::config::LoraConfig;
use crate::error::{Error, Result};
use crate::lora::LoraSpec;

/// The configuration file of an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

const PREFIX: &str = "base_model.model.";
const LORA_A: &str = ".lora_A.weight";
const LORA_B: &str = ".lora_B.weight";
const MAGNITUDE: &str = ".lora_magnitude_vector";

/// PEFT's key of `lora_A` for `module`: `base_model.model.<module>.lora_A.weight`.
pub fn lora_a_key(module: &str) -> String {
    format!("{PREFIX}{module}{LORA_A}")
}

/// PEFT's key of `lora_B` for `module`: `base_model.model.<module>.lora_B.weight`.
pub fn lora_b_key(module: &str) -> String {
    format!("{PREFIX}{module}{LORA_B}")
}

/// PEFT's key of DoRA's magnitude for `module`: `base_model.model.<module>.lora_magnitude_vector`.
pub fn magnitude_key(module: &str) -> String {
    format!("{PREFIX}{module}{MAGNITUDE}")
}

/// The module path a PEFT key belongs to (`None` for a key outside PEFT's LoRA layout).
pub fn module_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    [LORA_A, LORA_B, MAGNITUDE]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
        .filter(|m| !m.is_empty())
}

/// The tensors of one adapted module in PEFT's layouts, as host data.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTensors {
    /// `lora_A`, `[r, in_features]`.
    pub lora_a: TensorData,
    /// `lora_B`, `[out_features, r]`.
    pub lora_b: TensorData,
    /// DoRA's magnitude, `[out_features]`.
    pub magnitude: Option<TensorData>,
}

/// The tensors of an `adapter_model.safetensors`, as stored, until they are taken.
#[derive(Debug)]
pub struct AdapterWeights {
    path: PathBuf,
    tensors: HashMap<String, RawTensor>,
}

/// Float values of a stored tensor (F32, F16, BF16, F64); `None` for another dtype.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

impl AdapterWeights {
    /// Reads `adapter_model.safetensors` from the adapter directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: path.clone(),
            message: format!("truncated or corrupt safetensors file: {e}"),
        })?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(key, view)| {
                let raw = RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: view.data().to_vec(),
                };
                (key, raw)
            })
            .collect();
        Ok(Self { path, tensors })
    }

    /// The safetensors file, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module paths the file holds LoRA tensors for (not yet taken), sorted.
    pub fn modules(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .tensors
            .keys()
            .filter_map(|k| module_of_key(k))
            .collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The stored shape of `key`, if present.
    fn shape_of(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// Removes `key`, checked to have `shape`, as f32 data.
    fn take_key(&mut self, key: String, shape: Vec<usize>) -> Result<TensorData> {
        let Some(t) = self.tensors.get(&key) else {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                key,
                expected: shape,
            });
        };
        if t.shape != shape {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                key,
                expected: shape,
                found: t.shape.clone(),
            });
        }
        let values = to_f32(t.dtype, &t.bytes).ok_or_else(|| Error::Safetensors {
            path: self.path.clone(),
            message: format!(
                "tensor `{key}` has dtype {:?}; expected F32, F16 or BF16",
                t.dtype
            ),
        })?;
        self.tensors.remove(&key);
        Ok(TensorData::new(values, shape))
    }

    /// Removes and returns the tensors of `module`, whose base layer is `[out, inp]`
    /// (`(out_features, in_features)`): `lora_A` `[spec.r, inp]`, `lora_B` `[out, spec.r]` and,
    /// with DoRA, the magnitude `[out]`. A missing tensor, another shape or a dtype other than
    /// F32 / F16 / BF16 is an error naming the file and the key.
    pub fn take(
        &mut self,
        module: &str,
        spec: &LoraSpec,
        dims: (usize, usize),
    ) -> Result<LoraTensors> {
        let (out, inp) = dims;
        let lora_a = self.take_key(lora_a_key(module), vec![spec.r, inp])?;
        let lora_b = self.take_key(lora_b_key(module), vec![out, spec.r])?;
        let magnitude = if spec.use_dora {
            Some(self.take_key(magnitude_key(module), vec![out])?)
        } else {
            None
        };
        Ok(LoraTensors {
            lora_a,
            lora_b,
            magnitude,
        })
    }

    /// Fails ([`Error::UnexpectedTensor`], naming the first in sorted order) if tensors were
    /// left untaken: every tensor of an adapter file must be used.
    pub fn finish(self) -> Result<()> {
        let mut unused: Vec<String> = self.tensors.into_keys().collect();
        unused.sort();
        match unused.first() {
            Some(first) => Err(Error::UnexpectedTensor {
                path: self.path,
                key: first.clone(),
                count: unused.len(),
            }),
            None => Ok(()),
        }
    }
}

/// Reads the adapter directory `dir`: its `adapter_config.json` and `adapter_model.safetensors`.
pub fn read_adapter(dir: impl AsRef<Path>) -> Result<(LoraConfig, AdapterWeights)> {
    let dir = dir.as_ref();
    let config = LoraConfig::from_file(dir)?;
    let weights = AdapterWeights::open(dir)?;
    Ok((config, weights))
}

/// Reads the adapter directory `dir` whole: its configuration and, for every module the file
/// holds tensors for, those tensors (shapes taken from the file and checked against each other
/// and the configuration's rank for that module). A module the configuration does not target,
/// or a key outside PEFT's layout, is an error.
pub fn read_adapter_modules(
    dir: impl AsRef<Path>,
) -> Result<(LoraConfig, BTreeMap<String, LoraTensors>)> {
    let (config, mut weights) = read_adapter(dir)?;
    let mut modules = BTreeMap::new();
    for module in weights.modules() {
        if !config.targets(&module) {
            continue;
        }
        let spec = config.spec_for(&module);
        let dim = |key: String, axis: usize| {
            weights
                .shape_of(&key)
                .and_then(|s| s.get(axis).copied())
                .unwrap_or(0)
        };
        let dims = (dim(lora_b_key(&module), 0), dim(lora_a_key(&module), 1));
        let tensors = weights.take(&module, &spec, dims)?;
        modules.insert(module, tensors);
    }
    weights.finish()?;
    Ok((config, modules))
}

/// Little-endian f32 bytes of `data` (converted from its dtype).
fn f32_bytes(key: &str, data: &TensorData, path: &Path) -> Result<Vec<u8>> {
    let data = data.clone().convert::<f32>();
    let values = data.as_slice::<f32>().map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: format!("{key}: {e:?}"),
    })?;
    Ok(values.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes an adapter directory `dir` (created if needed) as PEFT does: `adapter_model.safetensors`
/// with `modules`' tensors as f32 under PEFT's keys (metadata `format: pt`), and
/// `adapter_config.json` from `config` with `target_modules` resolved to the module names
/// adapted (the last component of each module path, as PEFT writes for `"all-linear"`).
pub fn write_adapter(
    dir: impl AsRef<Path>,
    config: &LoraConfig,
    modules: &BTreeMap<String, LoraTensors>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (module, t) in modules {
        let parts = [
            (lora_a_key(module), Some(&t.lora_a)),
            (lora_b_key(module), Some(&t.lora_b)),
            (magnitude_key(module), t.magnitude.as_ref()),
        ];
        for (key, data) in parts {
            if let Some(data) = data {
                let bytes = f32_bytes(&key, data, &path)?;
                tensors.push((key, data.shape.to_vec(), bytes));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, s, d)| {
            let v =
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).map_err(|e| {
                    Error::Safetensors {
                        path: path.clone(),
                        message: format!("{k}: {e}"),
                    }
                })?;
            Ok((k.clone(), v))
        })
        .collect::<Result<_>>()?;
    let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| Error::Safetensors {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;

    let mut names: Vec<String> = modules
        .keys()
        .map(|m| m.rsplit('.').next().unwrap_or(m).to_string())
        .collect();
    names.sort();
    names.dedup();
    let path = dir.join(CONFIG_FILE);
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&config.to_peft_json(&names)).map_err(|source| {
        Error::Json {
            path: path.clone(),
            source,
        }
    })?;
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}
