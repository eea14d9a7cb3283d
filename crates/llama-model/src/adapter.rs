//! Adapters on a Llama model: each targeted projection becomes [`Projection::Lora`] around its
//! dense or quantized base. The PEFT file format (`adapter_config.json` +
//! `adapter_model.safetensors`, key names, dtypes, shape checks) is `peft::format`'s; this module
//! maps it onto the model's projections.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use peft::format::{AdapterWeights, CONFIG_FILE};
use peft::{InitLoraWeights, LoraBase, LoraConfig, LoraLinear};
use quant::{DenseLinear, QuantBackend};

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::nn::linear::Projection;

/// The LoRA layer in `proj`, wrapping its dense or quantized base first if needed.
fn lora_slot<'a, B: QuantBackend>(
    proj: &'a mut Projection<B>,
    device: &B::Device,
) -> &'a mut LoraLinear<B> {
    if !matches!(proj, Projection::Lora(_)) {
        let placeholder = Projection::Dense(DenseLinear::new(Tensor::zeros([1, 1], device), None));
        let base = match std::mem::replace(proj, placeholder) {
            Projection::Dense(d) => LoraBase::Dense(d),
            Projection::Quant(q) => LoraBase::Quant(q),
            Projection::Lora(_) => unreachable!("checked above"),
        };
        *proj = Projection::Lora(LoraLinear::wrap(base));
    }
    match proj {
        Projection::Lora(l) => l,
        _ => unreachable!("wrapped above"),
    }
}

/// Stops gradients to every parameter the model has so far (embeddings, norms, LM head, dense
/// bases, adapters loaded before), as PEFT freezes the base model: adapters added afterwards are
/// the only trainable parameters. Tensors are shared, not copied.
fn freeze<B: Backend>(model: &mut Llama<B>) {
    use burn::module::Module;
    *model = model.clone().no_grad();
}

/// PEFT's check that the configuration adapts something: an error naming the targets and the
/// module names the model has when none matches (an adapter for another architecture, a typo).
fn check_targets<B: Backend>(
    model: &Llama<B>,
    config: &LoraConfig,
) -> std::result::Result<(), String> {
    let names: Vec<String> = model.projections().into_iter().map(|(n, _)| n).collect();
    if names.iter().any(|n| config.targets(n)) {
        return Ok(());
    }
    let mut kinds: Vec<&str> = names
        .iter()
        .map(|n| n.rsplit('.').next().unwrap_or(n))
        .collect();
    kinds.sort();
    kinds.dedup();
    let targets = match &config.target_modules {
        peft::TargetModules::Names(n) => format!("{n:?}"),
        peft::TargetModules::AllLinear => "\"all-linear\"".into(),
    };
    Err(format!(
        "`target_modules` {targets} match no module of this Llama model; its linear layers are {}",
        kinds.join(", ")
    ))
}

/// Loads the PEFT adapter in `dir` onto `model` as the adapter `"default"`. Every tensor of the
/// file must be used, every targeted module must have its `lora_A` / `lora_B` (and
/// `lora_magnitude_vector` with DoRA), with the shapes the config and the model imply.
pub fn load_adapter<B: QuantBackend>(
    model: &mut Llama<B>,
    dir: impl AsRef<Path>,
) -> Result<LoraConfig> {
    load_named_adapter(model, dir, "default")
}

/// Activates the adapter `name` on every projection (`None` disables adapters: the base model's
/// output). Projections that lack that adapter run their base.
pub fn set_active_adapter<B: Backend>(model: &mut Llama<B>, name: Option<&str>) {
    for (_, proj) in model.projections_mut() {
        if let Projection::Lora(l) = proj {
            l.set_active(name);
        }
    }
}

/// [`load_adapter`] under `name`, beside adapters already loaded; it becomes the active one.
pub fn load_named_adapter<B: QuantBackend>(
    model: &mut Llama<B>,
    dir: impl AsRef<Path>,
    adapter_name: &str,
) -> Result<LoraConfig> {
    let dir = dir.as_ref();
    let config = LoraConfig::from_file(dir)?;
    check_targets(model, &config).map_err(|message| Error::Config {
        path: dir.join(CONFIG_FILE),
        message,
    })?;
    let mut weights = AdapterWeights::open(dir)?;
    let device = model.embed_tokens.val().device();
    freeze(model);
    for (name, proj) in model.projections_mut() {
        if !config.targets(&name) {
            continue;
        }
        let spec = config.spec_for(&name);
        let tensors = weights.take(&name, &spec, proj.dims())?;
        lora_slot(proj, &device).add_peft_tensors(adapter_name, spec, tensors, &device);
    }
    set_active_adapter(model, Some(adapter_name));
    weights.finish()?;
    Ok(config)
}

/// Wraps every projection that `config` targets with a fresh adapter (PEFT's initialisation:
/// A kaiming-uniform, B zero, so the model starts equal to its base; DoRA's magnitude from the
/// base weight norms). Dense bases give LoRA, quantized bases QLoRA.
pub fn apply_lora<B: QuantBackend>(
    model: &mut Llama<B>,
    config: &LoraConfig,
    seed: u64,
) -> Result<()> {
    let device = model.embed_tokens.val().device();
    // Drawn on the host: the same adapter for `seed` on every backend.
    peft::seed_adapter_init(seed);
    check_targets(model, config).map_err(Error::InvalidArgument)?;
    freeze(model);
    if matches!(config.init_lora_weights, InitLoraWeights::Pissa { .. })
        && let Some((name, _)) = model
            .projections()
            .into_iter()
            .find(|(n, p)| config.targets(n) && !matches!(p, Projection::Dense(_)))
    {
        return Err(Error::InvalidArgument(format!(
            "init_lora_weights \"pissa\": {name} is not a float layer; PiSSA decomposes float weights (initialise on the float model, then quantize the residual, as PEFT requires)"
        )));
    }
    for (name, proj) in model.projections_mut() {
        if !config.targets(&name) {
            continue;
        }
        if matches!(proj, Projection::Lora(_)) {
            return Err(Error::InvalidArgument(format!(
                "{name} already has an adapter"
            )));
        }
        let spec = config.spec_for(&name);
        lora_slot(proj, &device)
            .add_adapter("default", spec, config.init_lora_weights, &device)
            .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// `(trainable, total)` parameter counts, as PEFT's `print_trainable_parameters` reports them:
/// trainable = adapter parameters; total = every float parameter plus the logical number of
/// values of each quantized weight.
pub fn parameter_counts<B: QuantBackend>(model: &Llama<B>) -> (usize, usize) {
    use burn::module::Module;
    let (mut trainable, mut quantized) = (0usize, 0usize);
    for (_, p) in model.projections() {
        let quant_dims = match p {
            Projection::Lora(l) => {
                trainable += l.adapters.iter().map(|a| a.num_params()).sum::<usize>();
                match &l.base {
                    LoraBase::Quant(q) => Some(q.dims()),
                    LoraBase::Dense(_) => None,
                }
            }
            Projection::Quant(q) => Some(q.dims()),
            Projection::Dense(_) => None,
        };
        if let Some((o, i)) = quant_dims {
            quantized += o * i;
        }
    }
    (trainable, model.num_params() + quantized)
}

/// PEFT's `print_trainable_parameters` line:
/// `trainable params: 8,192 || all params: 140,288 || trainable%: 5.8394`.
pub fn trainable_summary<B: QuantBackend>(model: &Llama<B>) -> String {
    fn grouped(n: usize) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
    let (trainable, total) = parameter_counts(model);
    format!(
        "trainable params: {} || all params: {} || trainable%: {:.4}",
        grouped(trainable),
        grouped(total),
        100.0 * trainable as f64 / total.max(1) as f64
    )
}

/// Writes the model's adapters in PEFT's format: `adapter_config.json` (from `config`, with
/// `base_model_name_or_path` when given) and `adapter_model.safetensors` with PEFT's key names
/// and layouts (`lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`, `lora_magnitude_vector`
/// `[out]`), each file written to a temporary name and renamed ([`peft::write_adapter`]).
pub fn save_adapter<B: QuantBackend>(
    model: &Llama<B>,
    config: &LoraConfig,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let mut modules = BTreeMap::new();
    let (mut pissa, mut plain) = (0, 0);
    for (name, p) in model.projections() {
        let Projection::Lora(l) = p else { continue };
        let Some(ad) = l.active_adapter() else {
            continue;
        };
        // PiSSA adapters are saved converted for the original model (rank 2r), with the
        // configuration to match.
        if ad.pissa_initial.is_some() {
            pissa += 1;
        } else {
            plain += 1;
        }
        modules.insert(name, ad.to_peft_tensors());
    }
    if pissa > 0 && plain > 0 {
        return Err(Error::InvalidArgument(
            "some adapters were PiSSA-initialised and some not; save them separately".into(),
        ));
    }
    let config = if pissa > 0 {
        config.pissa_converted()
    } else {
        config.clone()
    };
    peft::write_adapter(dir, &config, &modules)?;
    Ok(())
}

/// PEFT's `merge_and_unload`: every adapter is folded into its base (`W + scale·B·A`, DoRA
/// rescaled), which becomes a dense layer. With `dequantize_rest`, quantized projections without
/// an adapter are dequantized too, so the model is fully dense (its `quantization_config` is
/// dropped) and saves as a plain float checkpoint. Returns how many adapters were merged.
pub fn merge_adapters<B: QuantBackend>(model: &mut Llama<B>, dequantize_rest: bool) -> usize {
    let mut merged = 0;
    for (_, proj) in model.projections_mut() {
        let dense = match &*proj {
            Projection::Lora(l) => {
                merged += 1;
                Some(l.merged())
            }
            Projection::Quant(q) if dequantize_rest => Some(DenseLinear::new(
                B::dequantize_weight(&q.weight).transpose(),
                q.bias.clone(),
            )),
            _ => None,
        };
        if let Some(d) = dense {
            *proj = Projection::Dense(d);
        }
    }
    if dequantize_rest {
        model.clear_quantization();
    }
    merged
}

/// PEFT's `merge_and_unload` for a quantized model that should stay quantized: every adapter on
/// a 4/8-bit base is folded in (dequantized to f32, `W + scale·B·A` added) and the sum quantized
/// again with the base's codec, blocksize and double quantization, so the model keeps its
/// `quantization_config` and saves as a bitsandbytes checkpoint. Adapters on dense bases merge
/// densely. Returns the rounding error of each re-quantized module (PEFT only warns that rounding
/// may change generations; here it is measured).
pub fn merge_adapters_requantized<B: QuantBackend>(
    model: &mut Llama<B>,
) -> Result<Vec<(String, peft::RoundingError)>> {
    let mut report = Vec::new();
    for (name, proj) in model.projections_mut() {
        let Projection::Lora(l) = &*proj else {
            continue;
        };
        let merged = match &l.base {
            LoraBase::Quant(_) => {
                let (q, error) = l
                    .merged_requantized()
                    .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
                report.push((name, error));
                Projection::Quant(q)
            }
            LoraBase::Dense(_) => Projection::Dense(l.merged()),
        };
        *proj = merged;
    }
    Ok(report)
}

/// PEFT's `merge_adapter` / `unmerge_adapter`: with `merged`, every adapted projection runs as
/// one matmul by its merged weight (fast generation) while the adapters stay loaded; `false`
/// restores the unmerged layers exactly. Returns how many projections changed state.
pub fn set_merged<B: QuantBackend>(model: &mut Llama<B>, merged: bool) -> usize {
    let mut n = 0;
    for (_, proj) in model.projections_mut() {
        if let Projection::Lora(l) = proj
            && l.is_merged() != merged
        {
            if merged {
                l.merge()
            } else {
                l.unmerge()
            }
            n += 1;
        }
    }
    n
}
