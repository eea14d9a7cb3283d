//! AdamW exactly as PyTorch's `torch.optim.AdamW` computes it (decoupled weight decay, bias
//! corrections, `eps` added after the square root), with PyTorch's / TRL's defaults spelled out.
//! State is kept per parameter *name*, so it saves to and loads from a safetensors file and a
//! resumed run continues bit for bit.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grads::{NamedGrads, Path};

/// AdamW's settings. `Default` is PyTorch's `AdamW` with TRL's learning rate: lr 2e-4, betas
/// (0.9, 0.999), eps 1e-8, weight decay 0 (burn's own AdamW defaults to eps 1e-5 and weight
/// decay 1e-4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges PyTorch checks.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("optimizer: {what}")));
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return bad("`lr` must be >= 0");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("`beta1` and `beta2` must be in [0, 1)");
        }
        if [self.eps, self.weight_decay]
            .iter()
            .any(|v| v.is_nan() || *v < 0.0)
        {
            return bad("`eps` and `weight_decay` must be >= 0");
        }
        Ok(())
    }
}

/// First and second moments of one parameter (flattened).
#[derive(Debug, Clone)]
struct Moments<B: Backend> {
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
}

/// AdamW with its state.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    step: u64,
    state: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Updates every parameter of `module` that has a gradient in `grads`, with learning rate `lr`
    /// (the schedule's value for this step).
    pub fn step<AB, M>(&mut self, lr: f64, module: M, grads: &NamedGrads<B>) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let mut mapper = Updater::<AB> {
            path: Path::default(),
            opt: self,
            grads,
            lr,
        };
        module.map(&mut mapper)
    }

    /// Writes the state (`{name}.exp_avg`, `{name}.exp_avg_sq`, and the step count in the
    /// metadata) to `path`.
    pub fn save(&self, path: &FsPath) -> Result<()> {
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, m) in &self.state {
            for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
                let values = t
                    .to_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| Error::Checkpoint {
                        path: path.to_path_buf(),
                        message: format!("reading {name}.{suffix}: {e:?}"),
                    })?;
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                data.push((format!("{name}.{suffix}"), vec![values.len()], bytes));
            }
        }
        let views = data
            .iter()
            .map(|(k, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| Error::Checkpoint {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = std::collections::HashMap::from([
            ("step".to_string(), self.step.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.config).unwrap_or_default(),
            ),
        ]);
        crate::files::write_atomic(path, |tmp| {
            safetensors::serialize_to_file(views, Some(meta), tmp)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }

    /// Reads a state written by [`AdamW::save`] (the configuration stays this optimizer's).
    pub fn load(&mut self, path: &FsPath, device: &B::Device) -> Result<()> {
        let bad = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("corrupt optimizer state: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("corrupt optimizer state: {e}")))?;
        let step = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("missing `step` in the metadata".into()))?;
        let mut state = BTreeMap::new();
        for key in st.names() {
            let Some(name) = key.strip_suffix(".exp_avg") else {
                continue;
            };
            let read = |k: &str| -> Result<Tensor<B, 1>> {
                let t = st
                    .tensor(k)
                    .map_err(|_| bad(format!("missing tensor `{k}`")))?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape().len() != 1 {
                    return Err(bad(format!("`{k}`: expected a 1-D F32 tensor")));
                }
                let v: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let n = v.len();
                Ok(Tensor::from_data(TensorData::new(v, [n]), device))
            };
            state.insert(
                name.to_string(),
                Moments {
                    exp_avg: read(key)?,
                    exp_avg_sq: read(&format!("{name}.exp_avg_sq"))?,
                },
            );
        }
        self.step = step;
        self.state = state;
        Ok(())
    }
}

struct Updater<'a, AB: AutodiffBackend> {
    path: Path,
    opt: &'a mut AdamW<AB::InnerBackend>,
    grads: &'a NamedGrads<AB::InnerBackend>,
    lr: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Updater<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let name = self.path.name();
        let Some(grad) = self.grads.grads.get(&name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let c = self.opt.config;
        let step = self.opt.step as i32;
        let device = p.device();
        let m = self.opt.state.entry(name).or_insert_with(|| Moments {
            exp_avg: Tensor::zeros([n], &device),
            exp_avg_sq: Tensor::zeros([n], &device),
        });
        // torch.optim.AdamW, in its order of operations.
        let p = if c.weight_decay != 0.0 {
            p.mul_scalar((1.0 - self.lr * c.weight_decay) as f32)
        } else {
            p
        };
        let g = grad.clone();
        m.exp_avg =
            m.exp_avg.clone() + (g.clone() - m.exp_avg.clone()).mul_scalar((1.0 - c.beta1) as f32);
        m.exp_avg_sq = m.exp_avg_sq.clone().mul_scalar(c.beta2 as f32)
            + g.clone().mul_scalar((1.0 - c.beta2) as f32) * g;
        let bias1 = 1.0 - c.beta1.powi(step);
        let bias2_sqrt = (1.0 - c.beta2.powi(step)).sqrt();
        let step_size = self.lr / bias1;
        let denom = m
            .exp_avg_sq
            .clone()
            .sqrt()
            .div_scalar(bias2_sqrt as f32)
            .add_scalar(c.eps as f32);
        let p = p - (m.exp_avg.clone() / denom).mul_scalar(step_size as f32);
        let updated = Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
