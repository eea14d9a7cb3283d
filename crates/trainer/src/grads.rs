//! Gradients by parameter name: accumulated over micro-batches, clipped by their global norm as
//! `torch.nn.utils.clip_grad_norm_` does (burn's own clipping works per tensor).

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The gradients of a module's trainable parameters, keyed by their path in the module tree
/// (`layers.0.self_attn.q_proj.Lora.adapters.0.a`), flattened, on the inner backend.
#[derive(Debug, Clone)]
pub struct NamedGrads<B: Backend> {
    /// Path -> flattened gradient.
    pub grads: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> Default for NamedGrads<B> {
    fn default() -> Self {
        Self {
            grads: BTreeMap::new(),
        }
    }
}

/// Dotted path of the parameter being visited.
#[derive(Default)]
pub(crate) struct Path(Vec<String>);

impl Path {
    pub(crate) fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn name(&self) -> String {
        self.0.join(".")
    }
}

struct Collector<'a, B: AutodiffBackend> {
    path: Path,
    grads: &'a B::Gradients,
    out: &'a mut NamedGrads<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = param.val().grad(self.grads) else {
            return;
        };
        let n = g.shape().num_elements();
        let g = g.reshape([n]);
        let entry = self.out.grads.entry(self.path.name());
        match entry {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(g);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let sum = o.get().clone() + g;
                o.insert(sum);
            }
        }
    }
}

impl<B: Backend> NamedGrads<B> {
    /// Adds the gradients of `module`'s parameters found in `grads` (one micro-batch's backward
    /// pass) to these.
    pub fn accumulate<AB, M>(&mut self, module: &M, grads: &AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut c = Collector::<AB> {
            path: Path::default(),
            grads,
            out: self,
        };
        module.visit(&mut c);
    }

    /// The global L2 norm over all gradients (as one vector): per-tensor sums of squares added
    /// on the device, one read back to the host.
    pub fn global_norm(&self) -> f64 {
        let mut squares = self.grads.values().map(|g| g.clone().powi_scalar(2).sum());
        let Some(first) = squares.next() else {
            return 0.0;
        };
        let total: f32 = squares.fold(first, |a, b| a + b).into_scalar().elem();
        f64::from(total).sqrt()
    }

    /// `clip_grad_norm_(params, max_norm)`: when the global norm exceeds `max_norm`, every
    /// gradient is multiplied by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        self.clip_with_norm(norm, max_norm);
        norm
    }

    /// [`NamedGrads::clip_global_norm`] with the global norm already computed.
    pub fn clip_with_norm(&mut self, norm: f64, max_norm: f64) {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in self.grads.values_mut() {
                *g = g.clone().mul_scalar(coef as f32);
            }
        }
    }
}
