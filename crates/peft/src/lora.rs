//! The LoRA layer.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use quant::{DenseLinear, QuantBackend, QuantLinear};

use crate::error::{Error, Result};
use crate::format::LoraTensors;

/// The frozen layer an adapter wraps.
// One per adapted layer, built once: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum LoraBase<B: Backend> {
    /// Float weights (LoRA).
    Dense(DenseLinear<B>),
    /// 4/8-bit weights (QLoRA).
    Quant(QuantLinear<B>),
}

impl<B: Backend> LoraBase<B> {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            LoraBase::Dense(l) => l.dims(),
            LoraBase::Quant(l) => l.dims(),
        }
    }
}

impl<B: QuantBackend> LoraBase<B> {
    /// The base layer's output.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            LoraBase::Dense(l) => l.forward(x),
            LoraBase::Quant(l) => l.forward(x),
        }
    }

    /// The base weight as f32 `[out, in]` (dequantized for a quantized base), without gradient.
    /// Under autodiff a quantized base is dequantized on the inner backend, so the dense copy is
    /// never recorded on the tape.
    pub fn dense_weight(&self) -> Tensor<B, 2> {
        match self {
            LoraBase::Dense(l) => l.weight.val().detach().transpose(),
            LoraBase::Quant(l) => B::dequantize_weight(&l.weight).detach(),
        }
    }

    /// `x · Wᵀ` without the bias, in f32: `x` `[rows, in]` -> `[rows, out]`. Under autodiff a
    /// quantized base goes through [`QuantBackend::quant_matmul`], whose backward step
    /// dequantizes the weight again, so no dense copy of it is held for the backward pass (a
    /// dense base's weight is the layer's own parameter, shared, not copied).
    fn matmul_nobias(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            LoraBase::Dense(_) => x.matmul(self.dense_weight().transpose()),
            LoraBase::Quant(l) => B::quant_matmul(x, &l.weight, None),
        }
    }
}

/// Shape and scaling of one adapter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraSpec {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// Dropout probability on the adapter's input (training only).
    pub dropout: f64,
    /// rsLoRA: scale `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// DoRA: learn a magnitude per output feature.
    pub use_dora: bool,
}

impl LoraSpec {
    /// PEFT's defaults: r 8, alpha 8, no dropout, plain LoRA.
    pub fn new(r: usize) -> Self {
        Self {
            r,
            alpha: 8.0,
            dropout: 0.0,
            use_rslora: false,
            use_dora: false,
        }
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// The trainable part: `A` `[in, r]` and `B` `[r, out]` (held transposed from PEFT's `lora_A`
/// `[r, in]` and `lora_B` `[out, r]` so both matmuls are row-major), and DoRA's magnitude `[out]`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `A`, `[in_features, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// `B`, `[r, out_features]`.
    pub b: Param<Tensor<B, 2>>,
    /// DoRA magnitude `[out_features]`.
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    /// Rank, alpha, dropout, variants.
    #[module(skip)]
    pub spec: LoraSpec,
    /// Adapter name (PEFT's `adapter_name`; `"default"` unless several are loaded).
    #[module(skip)]
    pub name: String,
    /// The initial `A`, `B` of a PiSSA adapter, whose base now holds the residual `W - s·B₀A₀`:
    /// kept so the saved adapter can be converted to one that applies to the original weights.
    pub pissa_initial: Option<PissaInitial<B>>,
}

/// `A₀` `[in, r]` and `B₀` `[r, out]` as PiSSA initialised them (constants, not parameters).
#[derive(Module, Debug)]
pub struct PissaInitial<B: Backend> {
    /// `A₀`, `[in_features, r]`.
    pub a: Tensor<B, 2>,
    /// `B₀`, `[r, out_features]`.
    pub b: Tensor<B, 2>,
}

impl<B: Backend> LoraAdapter<B> {
    /// The adapter in PEFT's layouts as host data, as `adapter_model.safetensors` stores it:
    /// `lora_A` `[r, in]`, `lora_B` `[out, r]`, DoRA magnitude `[out]`. A PiSSA adapter (whose
    /// base holds `W - s·B₀A₀`) is converted as PEFT's `path_initial_model_for_weight_conversion`
    /// does: rank 2r with `A' = [A; A₀]`, `B' = [B, -B₀]`, so `W + s·B'A' = (W - s·B₀A₀) + s·BA`
    /// applies to the original model (its configuration: [`crate::LoraConfig::pissa_converted`]).
    pub fn to_peft_tensors(&self) -> LoraTensors {
        let mut a = self.a.val().transpose();
        let mut b = self.b.val().transpose();
        if let Some(init) = &self.pissa_initial {
            a = Tensor::cat(vec![a, init.a.clone().transpose()], 0);
            b = Tensor::cat(vec![b, init.b.clone().transpose().neg()], 1);
        }
        LoraTensors {
            lora_a: a.into_data(),
            lora_b: b.into_data(),
            magnitude: self.magnitude.as_ref().map(|m| m.val().into_data()),
        }
    }
}

/// A base layer with an adapter: `y = base(x) + scale · B(A(dropout(x)))`.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The frozen base.
    pub base: LoraBase<B>,
    /// The adapters this layer holds (several may be loaded; one is active at a time).
    pub adapters: Vec<LoraAdapter<B>>,
    /// Index of the active adapter; `None` runs the base alone (adapters disabled).
    #[module(skip)]
    pub active: Option<usize>,
    /// The active adapter folded into the base ([`LoraLinear::merge`]); while present the layer
    /// runs this one matmul. The base is left untouched so [`LoraLinear::unmerge`] is exact.
    pub merged: Option<DenseLinear<B>>,
}

/// How far re-quantizing a merged weight moved it: `q = quant(W + ΔW)` against `W + ΔW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundingError {
    /// Largest `|dequant(q) - (W + ΔW)|`.
    pub max_abs: f64,
    /// Root mean square of the difference.
    pub rms: f64,
    /// Frobenius norm of the difference over that of `W + ΔW`.
    pub relative: f64,
    /// Frobenius norm of the adapter's delta `ΔW` over that of `W + ΔW`: an error of this size
    /// or larger means the rounding erased much of what the adapter learned.
    pub delta_relative: f64,
}

impl<B: Backend> LoraLinear<B> {
    /// The active adapter, if any.
    pub fn active_adapter(&self) -> Option<&LoraAdapter<B>> {
        self.active.and_then(|i| self.adapters.get(i))
    }

    /// Activates the adapter called `name` (`None`, or a name this layer lacks, disables them).
    pub fn set_active(&mut self, name: Option<&str>) {
        self.merged = None;
        self.active = name.and_then(|n| self.adapters.iter().position(|a| a.name == n));
    }

    /// [`LoraLinear::add_peft_adapter`] from host data (what [`crate::format::AdapterWeights::take`]
    /// returns), uploaded to `device`.
    pub fn add_peft_tensors(
        &mut self,
        name: &str,
        spec: LoraSpec,
        tensors: LoraTensors,
        device: &B::Device,
    ) {
        let a = Tensor::<B, 2>::from_data(tensors.lora_a, device);
        let b = Tensor::<B, 2>::from_data(tensors.lora_b, device);
        let magnitude = tensors
            .magnitude
            .map(|m| Tensor::<B, 1>::from_data(m, device));
        self.add_peft_adapter(name, spec, a, b, magnitude);
    }

    /// Adds an adapter given in PEFT's layout (`lora_a` `[r, in]`, `lora_b` `[out, r]`) and makes
    /// it active. A name already present is replaced.
    pub fn add_peft_adapter(
        &mut self,
        name: &str,
        spec: LoraSpec,
        lora_a: Tensor<B, 2>,
        lora_b: Tensor<B, 2>,
        magnitude: Option<Tensor<B, 1>>,
    ) {
        let adapter = LoraAdapter {
            a: Param::from_tensor(lora_a.transpose()),
            b: Param::from_tensor(lora_b.transpose()),
            magnitude: magnitude.map(Param::from_tensor),
            spec,
            name: name.to_string(),
            pissa_initial: None,
        };
        self.merged = None;
        self.adapters.retain(|a| a.name != name);
        self.adapters.push(adapter);
        self.active = Some(self.adapters.len() - 1);
    }
}

impl<B: QuantBackend> LoraLinear<B> {
    /// Wraps `base` with a fresh adapter initialised as PEFT's `init_lora_weights=True` does:
    /// `A` kaiming-uniform with a = sqrt(5) (bound `1/sqrt(in)`), `B` zero, so the layer starts
    /// equal to its base. DoRA's magnitude starts at the row norms of the base weight.
    pub fn new(base: LoraBase<B>, spec: LoraSpec, device: &B::Device) -> Self {
        let mut layer = Self::wrap(base);
        // The default initialisation cannot fail.
        let _ = layer.add_adapter("default", spec, crate::InitLoraWeights::Default, device);
        layer
    }

    /// [`LoraLinear::new`] with PEFT's other initialisations: `"gaussian"` draws `A` from
    /// N(0, 1/r) with `B` zero; `false` leaves both as `nn.Linear` initialises them
    /// (kaiming-uniform, bound `1/sqrt(fan_in)`), so the adapter is not zero.
    pub fn with_init(
        base: LoraBase<B>,
        spec: LoraSpec,
        init: crate::InitLoraWeights,
        device: &B::Device,
    ) -> Result<Self> {
        let mut layer = Self::wrap(base);
        layer.add_adapter("default", spec, init, device)?;
        Ok(layer)
    }

    /// Wraps `base` with given adapter tensors in PEFT's layout: `lora_a` `[r, in]`, `lora_b`
    /// `[out, r]`, DoRA `magnitude` `[out]`.
    pub fn from_peft(
        base: LoraBase<B>,
        spec: LoraSpec,
        lora_a: Tensor<B, 2>,
        lora_b: Tensor<B, 2>,
        magnitude: Option<Tensor<B, 1>>,
    ) -> Self {
        let mut layer = Self::wrap(base);
        layer.add_peft_adapter("default", spec, lora_a, lora_b, magnitude);
        layer
    }

    /// The frozen `base` without any adapter yet.
    pub fn wrap(base: LoraBase<B>) -> Self {
        Self {
            base: base.no_grad(),
            adapters: Vec::new(),
            active: None,
            merged: None,
        }
    }

    /// Adds a freshly initialised adapter called `name` and makes it active. PiSSA replaces a
    /// dense base weight by its residual (and fails on a quantized base). The random values come
    /// from the host generator [`seed_adapter_init`] seeds, whatever the backend, so one seed
    /// gives the same adapter on the CPU and on a GPU.
    pub fn add_adapter(
        &mut self,
        name: &str,
        spec: LoraSpec,
        init: crate::InitLoraWeights,
        device: &B::Device,
    ) -> Result<()> {
        let (out, inp) = self.base.dims();
        let bound = 1.0 / (inp as f64).sqrt();
        if let crate::InitLoraWeights::Pissa { niter } = init {
            return self.add_pissa_adapter(name, spec, niter, device);
        }
        let a = match init {
            crate::InitLoraWeights::Gaussian => host_random::<B>(
                [inp, spec.r],
                Distribution::Normal(0.0, 1.0 / spec.r as f64),
                device,
            ),
            _ => host_random::<B>([inp, spec.r], Distribution::Uniform(-bound, bound), device),
        };
        let b = match init {
            crate::InitLoraWeights::Random => {
                let bound_b = 1.0 / (spec.r as f64).sqrt();
                host_random::<B>(
                    [spec.r, out],
                    Distribution::Uniform(-bound_b, bound_b),
                    device,
                )
            }
            _ => Tensor::<B, 2>::zeros([spec.r, out], device),
        };
        let magnitude = spec
            .use_dora
            .then(|| row_norms(self.base.dense_weight()).detach());
        self.add_peft_adapter(name, spec, a.transpose(), b.transpose(), magnitude);
        Ok(())
    }

    /// PEFT's PiSSA: with `W = U S Vᵀ`, `A = sqrt(S_r / s) V_rᵀ`, `B = U_r sqrt(S_r / s)` and the
    /// base becomes `W - s·B·A`, so the layer's output is unchanged and training starts along the
    /// principal directions. `niter`: randomized SVD (`pissa_niter_N`) instead of the exact one.
    fn add_pissa_adapter(
        &mut self,
        name: &str,
        spec: LoraSpec,
        niter: Option<usize>,
        device: &B::Device,
    ) -> Result<()> {
        let LoraBase::Dense(base) = &mut self.base else {
            return Err(Error::PissaNeedsFloatBase);
        };
        let (out, inp) = base.dims();
        let w = base.weight.val().transpose();
        let values = w
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::Device(format!("{e:?}")))?;
        let svd = match niter {
            None => crate::svd::svd_truncated(&values, out, inp, spec.r),
            Some(n) => crate::svd::svd_lowrank(&values, out, inp, spec.r, n, 0),
        };
        let r = svd.r;
        let scale = spec.scale();
        let root: Vec<f64> = svd.s.iter().map(|s| (s / scale).sqrt()).collect();
        // PEFT's layouts: lora_A [r, in] = diag(root) Vᵀ, lora_B [out, r] = U diag(root).
        let mut a = vec![0f32; r * inp];
        for k in 0..r {
            for j in 0..inp {
                a[k * inp + j] = (root[k] * svd.v[j * r + k]) as f32;
            }
        }
        let mut b = vec![0f32; out * r];
        for i in 0..out {
            for k in 0..r {
                b[i * r + k] = (svd.u[i * r + k] * root[k]) as f32;
            }
        }
        let a = Tensor::<B, 2>::from_data(TensorData::new(a, [r, inp]), device);
        let b = Tensor::<B, 2>::from_data(TensorData::new(b, [out, r]), device);
        let residual = w - b.clone().matmul(a.clone()).mul_scalar(scale);
        base.weight = Param::from_tensor(residual.transpose()).set_require_grad(false);
        let spec = LoraSpec { r, ..spec };
        // DoRA's magnitude: the norms of the full weight, residual plus adapter (PEFT's dora_init).
        let magnitude = spec.use_dora.then(|| {
            let full = self.base.dense_weight() + b.clone().matmul(a.clone()).mul_scalar(scale);
            row_norms(full).detach()
        });
        self.add_peft_adapter(name, spec, a.clone(), b.clone(), magnitude);
        if let Some(ad) = self.adapters.last_mut() {
            ad.pissa_initial = Some(PissaInitial {
                a: a.transpose(),
                b: b.transpose(),
            });
        }
        Ok(())
    }

    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        self.base.dims()
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[..., in_features]` -> `[..., out_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(m) = &self.merged {
            return m.forward(x);
        }
        let base = self.base.forward(x.clone());
        let Some(ad) = self.active_adapter() else {
            return base;
        };
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let (out, _) = self.dims();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        let xd = if ad.spec.dropout > 0.0 && B::ad_enabled(&x2.device()) {
            // Inverted dropout, as torch.nn.Dropout in training mode.
            let keep = 1.0 - ad.spec.dropout;
            let mask =
                Tensor::<B, 2>::random(x2.shape(), Distribution::Bernoulli(keep), &x2.device());
            (x2.clone() * mask).div_scalar(keep)
        } else {
            x2.clone()
        };
        let scale = ad.spec.scale();
        let lora = xd.clone().matmul(ad.a.val()).matmul(ad.b.val());
        let mut out_dims = dims;
        out_dims[D - 1] = out;
        let delta = match &ad.magnitude {
            None => lora.mul_scalar(scale),
            Some(m) => {
                // DoRA as PEFT computes it: the norm of W + scale·BA per output row, detached;
                // result = base + (m/‖·‖ - 1) · xd Wᵀ + (m/‖·‖) · scale · lora.
                // The norm is computed from detached inputs (PEFT's `weight_norm.detach()`), so
                // none of it, and no dense copy of a quantized W, is recorded on the tape.
                let ba =
                    ad.b.val()
                        .detach()
                        .transpose()
                        .matmul(ad.a.val().detach().transpose())
                        .mul_scalar(scale);
                let norm = row_norms(self.base.dense_weight() + ba);
                let mag_scale = (m.val() / norm).unsqueeze::<2>();
                let base_nobias = self.base.matmul_nobias(xd);
                base_nobias * (mag_scale.clone() - 1.0) + lora.mul_scalar(scale) * mag_scale
            }
        };
        base + delta.reshape(out_dims)
    }
}

impl<B: QuantBackend> LoraLinear<B> {
    /// Folds the active adapter into a dense base: `W += scale · B·A` (DoRA: the merged row is rescaled
    /// to the learned magnitude). Returns the merged dense layer; for a quantized base the weight
    /// is dequantized to f32 first (the result stays dense, as PEFT's default).
    pub fn merged(&self) -> DenseLinear<B> {
        let (w, bias) = match &self.base {
            LoraBase::Dense(l) => (
                l.weight.val().detach().transpose(),
                l.bias.as_ref().map(|b| b.val().detach()),
            ),
            LoraBase::Quant(l) => (B::dequantize_weight(&l.weight).detach(), l.bias.clone()),
        };
        let Some(ad) = self.active_adapter() else {
            return DenseLinear::new(w.transpose(), bias);
        };
        let scale = ad.spec.scale();
        let delta =
            ad.b.val()
                .detach()
                .transpose()
                .matmul(ad.a.val().detach().transpose())
                .mul_scalar(scale);
        let mut merged = w + delta;
        if let Some(m) = &ad.magnitude {
            let norm = row_norms(merged.clone());
            merged = merged * (m.val().detach() / norm).unsqueeze_dim::<2>(1);
        }
        DenseLinear::new(merged.transpose(), bias)
    }
}

impl<B: QuantBackend> LoraLinear<B> {
    /// Folds the active adapter into the layer (PEFT's `merge_adapter`): the forward pass becomes
    /// one matmul by `W + scale·B·A`, for fast generation. The base and the adapter stay as they
    /// were, so [`LoraLinear::unmerge`] gives back the unmerged layer bit for bit; the price is one
    /// dense `[out, in]` weight per merged layer. To drop the base instead, take
    /// [`LoraLinear::merged`].
    pub fn merge(&mut self) {
        self.merged = Some(self.merged().no_grad());
    }

    /// Undoes [`LoraLinear::merge`] exactly.
    pub fn unmerge(&mut self) {
        self.merged = None;
    }

    /// Whether the layer currently runs merged.
    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }

    /// Merges the active adapter into a quantized base and quantizes the result again with the
    /// base's codec and settings, so the layer stays 4/8-bit. Rounding moves the merged weight
    /// (PEFT warns about it and keeps 4-bit merges dense); the returned [`RoundingError`] says by
    /// how much. An error for a dense base.
    pub fn merged_requantized(&self) -> quant::Result<(QuantLinear<B>, RoundingError)> {
        let LoraBase::Quant(q) = &self.base else {
            return Err(quant::Error::Shape(
                "re-quantizing a merge needs a quantized base; this layer's base is dense".into(),
            ));
        };
        let merged = self.merged().weight.val().transpose();
        let device = merged.device();
        let values = merged
            .to_data()
            .into_vec::<f32>()
            .map_err(|e| quant::Error::Shape(format!("reading the merged weight: {e:?}")))?;
        let weight = q.weight.requantize(&values, &device)?;
        let back = B::dequantize_weight(&weight)
            .to_data()
            .into_vec::<f32>()
            .map_err(|e| quant::Error::Shape(format!("reading the re-quantized weight: {e:?}")))?;
        let base = B::dequantize_weight(&q.weight)
            .to_data()
            .into_vec::<f32>()
            .map_err(|e| quant::Error::Shape(format!("reading the base weight: {e:?}")))?;
        let (mut max_abs, mut sq, mut norm, mut delta) = (0f64, 0f64, 0f64, 0f64);
        for ((&m, &r), &w) in values.iter().zip(&back).zip(&base) {
            let d = f64::from(r) - f64::from(m);
            max_abs = max_abs.max(d.abs());
            sq += d * d;
            norm += f64::from(m) * f64::from(m);
            delta += (f64::from(m) - f64::from(w)).powi(2);
        }
        let error = RoundingError {
            max_abs,
            rms: (sq / values.len().max(1) as f64).sqrt(),
            relative: (sq / norm).sqrt(),
            delta_relative: (delta / norm).sqrt(),
        };
        let layer = QuantLinear::new(weight, q.bias.clone()).with_compute_dtype(q.compute_dtype);
        Ok((layer, error))
    }
}

/// Euclidean norm of every row of `[out, in]`, `[out]`.
fn row_norms<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 1> {
    w.powi_scalar(2).sum_dim(1).sqrt().squeeze_dim(1)
}

/// Seeds the generator that [`LoraLinear::add_adapter`] draws initial adapters from.
///
/// The values are drawn on the host (burn-flex's generator) and copied to the layer's device:
/// a device's own generator (CubeCL's, burn-ndarray's) gives other numbers for the same seed,
/// and a run must start from the same adapter on every backend. On burn-flex the numbers are
/// those `Flex::seed` + `Tensor::random` on the device would give.
pub fn seed_adapter_init(seed: u64) {
    <burn_flex::Flex as Backend>::seed(&Default::default(), seed);
}

fn host_random<B: Backend>(
    shape: [usize; 2],
    distribution: Distribution,
    device: &B::Device,
) -> Tensor<B, 2> {
    let host = Tensor::<burn_flex::Flex, 2>::random(shape, distribution, &Default::default());
    Tensor::from_data(host.into_data(), device)
}
