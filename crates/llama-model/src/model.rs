//! `Llama`: embedding, decoder layers, final norm and LM head, with the forward pass used for
//! scoring, training and cached generation.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::module::embedding;

use quant::QuantBackend;

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::nn::attention::Attention;
use crate::nn::block::DecoderLayer;
use crate::nn::linear::{NamedTensor, Projection};
use crate::nn::mlp::Mlp;
use crate::nn::norm::RmsNorm;
use crate::nn::rope::RotaryEmbedding;
use crate::quantize::{QuantizeOptions, load_projection};
use crate::source::TensorSource;

/// Value added to attention scores of masked positions (finite, so fully masked rows of padding
/// stay finite instead of turning into NaN).
const MASKED: f32 = -1.0e9;

/// A Llama-family causal language model (`LlamaForCausalLM`).
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding, `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// LM head, `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<Projection<B>>,
    #[module(skip)]
    rope: RotaryEmbedding,
    #[module(skip)]
    config: LlamaConfig,
}

/// What every decoder layer of one pass shares: the rotary tables of its positions and the
/// attention bias (causal, padding, segments). See [`Llama::layer_inputs`].
#[derive(Debug, Clone)]
pub struct LayerInputs<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
}

/// The inputs of one forward pass.
#[derive(Debug, Clone)]
pub struct ModelInput<B: Backend> {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, past + seq]` (cached positions included).
    pub attention_mask: Option<Tensor<B, 2, Int>>,
    /// Rotary positions, `[batch, seq]`. When absent they are derived from the attention mask as
    /// transformers' `generate` does (count of real tokens before, so left padding is
    /// transparent), or run from the cache length without a mask.
    pub position_ids: Option<Tensor<B, 2, Int>>,
    /// Segment (example) ids of packed rows, `[batch, past + seq]`: a query attends only to keys
    /// of its own segment (block-diagonal causal attention), combined with the padding mask.
    pub segment_ids: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> ModelInput<B> {
    /// Unpadded input.
    pub fn new(input_ids: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
            segment_ids: None,
        }
    }

    /// Adds a padding mask.
    pub fn with_mask(mut self, attention_mask: Tensor<B, 2, Int>) -> Self {
        self.attention_mask = Some(attention_mask);
        self
    }

    /// Sets explicit rotary positions.
    pub fn with_positions(mut self, position_ids: Tensor<B, 2, Int>) -> Self {
        self.position_ids = Some(position_ids);
        self
    }

    /// Sets segment ids for packed rows (several examples per row, no attention across them);
    /// pair with position ids that restart at 0 for each example.
    pub fn with_segments(mut self, segment_ids: Tensor<B, 2, Int>) -> Self {
        self.segment_ids = Some(segment_ids);
        self
    }
}

impl<B: Backend> Llama<B> {
    /// Every projection with its Hugging Face module name (`model.layers.0.self_attn.q_proj`, ...,
    /// `lm_head` when untied), in checkpoint order.
    pub fn projections(&self) -> Vec<(String, &Projection<B>)> {
        let mut out = Vec::with_capacity(7 * self.layers.len() + 1);
        for (l, layer) in self.layers.iter().enumerate() {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            for (n, p) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{l}.{n}"), p));
            }
        }
        out.extend(self.lm_head.iter().map(|h| ("lm_head".to_string(), h)));
        out
    }

    /// [`Llama::projections`], mutable (to swap layer kinds in place).
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Projection<B>)> {
        let mut out = Vec::with_capacity(7 * self.layers.len() + 1);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
            for (n, p) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{l}.{n}"), p));
            }
        }
        out.extend(self.lm_head.iter_mut().map(|h| ("lm_head".to_string(), h)));
        out
    }
}

impl<B: QuantBackend> Llama<B> {
    /// Builds the model tensor by tensor from `src` (a checkpoint or a random initialiser),
    /// so at most one source tensor is held in host memory beside the model.
    pub fn from_source(
        config: &LlamaConfig,
        src: &mut dyn TensorSource,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_quantized(config, src, None, device)
    }

    /// [`Llama::from_source`], quantizing float projections as they are read when `quantize` is
    /// given (projections a bitsandbytes checkpoint already stores quantized load as they are).
    pub fn from_source_quantized(
        config: &LlamaConfig,
        src: &mut dyn TensorSource,
        quantize: Option<&QuantizeOptions>,
        device: &B::Device,
    ) -> Result<Self> {
        if let Some(q) = quantize {
            q.validate()?;
        }
        let c = config;
        let dense = |src: &mut dyn TensorSource,
                     prefix: &str,
                     shape: [usize; 2],
                     bias: bool,
                     device: &B::Device| {
            load_projection::<B>(src, c, prefix, shape, bias, quantize, device)
        };
        let (hd, h, i) = (c.head_dim, c.hidden_size, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let embed_tokens =
            src.tensor::<B, 2>("model.embed_tokens.weight", [c.vocab_size, h], device)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let ab = c.attention_bias;
            let self_attn = Attention {
                q_proj: dense(src, &format!("{p}.self_attn.q_proj"), [q, h], ab, device)?,
                k_proj: dense(src, &format!("{p}.self_attn.k_proj"), [kv, h], ab, device)?,
                v_proj: dense(src, &format!("{p}.self_attn.v_proj"), [kv, h], ab, device)?,
                o_proj: dense(src, &format!("{p}.self_attn.o_proj"), [h, q], ab, device)?,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_key_value_heads,
                head_dim: hd,
            };
            let mb = c.mlp_bias;
            let mlp = Mlp {
                gate_proj: dense(src, &format!("{p}.mlp.gate_proj"), [i, h], mb, device)?,
                up_proj: dense(src, &format!("{p}.mlp.up_proj"), [i, h], mb, device)?,
                down_proj: dense(src, &format!("{p}.mlp.down_proj"), [h, i], mb, device)?,
            };
            let norm = |name: &str, src: &mut dyn TensorSource| -> Result<RmsNorm<B>> {
                Ok(RmsNorm::new(
                    src.tensor::<B, 1>(&format!("{p}.{name}.weight"), [h], device)?,
                    c.rms_norm_eps,
                ))
            };
            let input_layernorm = norm("input_layernorm", src)?;
            let post_attention_layernorm = norm("post_attention_layernorm", src)?;
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm,
                post_attention_layernorm,
            });
        }
        let norm = RmsNorm::new(
            src.tensor::<B, 1>("model.norm.weight", [h], device)?,
            c.rms_norm_eps,
        );
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(dense(src, "lm_head", [c.vocab_size, h], false, device)?)
        };
        src.finish()?;
        let mut config = c.clone();
        if let Some(q) = quantize {
            config.quantization = Some(q.bnb_config());
        }
        Ok(Self {
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            norm,
            lm_head,
            rope: RotaryEmbedding::new(c),
            config,
        })
    }

    /// A model of random weights (normal, std 0.02; norms 1), deterministic for a seed.
    pub fn random(config: &LlamaConfig, seed: u64, device: &B::Device) -> Self {
        let mut src = crate::source::RandomSource::new(seed, 0.02);
        match Self::from_source(config, &mut src, device) {
            Ok(model) => model,
            Err(e) => unreachable!("a random source yields every tensor: {e}"),
        }
    }

    /// Sets the gemm dtype of every quantized weight, including the quantized bases of QLoRA
    /// adapters (bitsandbytes' `bnb_4bit_compute_dtype`: `Some(BF16)` / `Some(F16)` on CUDA;
    /// `None`, the default, computes in the activations' f32).
    pub fn set_quant_compute_dtype(&mut self, dtype: Option<burn::tensor::FloatDType>) {
        for (_, p) in self.projections_mut() {
            match p {
                Projection::Quant(q) => q.compute_dtype = dtype,
                Projection::Lora(l) => {
                    if let peft::LoraBase::Quant(q) = &mut l.base {
                        q.compute_dtype = dtype;
                    }
                }
                Projection::Dense(_) => {}
            }
        }
    }

    /// Forgets the `quantization_config` (after every projection was made dense).
    pub fn clear_quantization(&mut self) {
        self.config.quantization = None;
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Rotary tables and attention bias for a pass over `input` that starts `past` positions
    /// into the sequence.
    fn pass_inputs(&self, input: &ModelInput<B>, past: usize) -> LayerInputs<B> {
        let device = input.input_ids.device();
        let [b, s] = input.input_ids.dims();
        let total = past + s;
        let position_ids = match (&input.position_ids, &input.attention_mask) {
            (Some(p), _) => p.clone(),
            (None, Some(mask)) => {
                let pos = mask.clone().cumsum(1) - 1;
                let pos = pos.mask_fill(mask.clone().equal_elem(0), 1);
                pos.slice([0..b, past..total])
            }
            (None, None) => Tensor::<B, 1, Int>::arange(past as i64..total as i64, &device)
                .reshape([1, s])
                .expand([b, s]),
        };
        let mut bias = attention_bias::<B>(input.attention_mask.clone(), b, s, past, &device);
        if let Some(seg) = &input.segment_ids {
            let seg = segment_bias::<B>(seg.clone(), s, past, &device);
            bias = Some(match bias {
                Some(b) => b + seg,
                None => seg,
            });
        }
        let (cos, sin) = self.rope.cos_sin(position_ids);
        LayerInputs { cos, sin, bias }
    }

    /// What every decoder layer of an uncached pass over `input` shares (rotary tables,
    /// attention bias), for running the layers one at a time with [`Llama::layer_forward`]
    /// (activation checkpointing does).
    pub fn layer_inputs(&self, input: &ModelInput<B>) -> LayerInputs<B> {
        self.pass_inputs(input, 0)
    }

    /// Token embeddings.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` -> `[batch, seq, hidden]`
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        embedding(self.embed_tokens.val(), input_ids)
    }

    /// Decoder layer `index` alone, without a cache.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn layer_forward(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        inputs: &LayerInputs<B>,
    ) -> Tensor<B, 3> {
        self.layers[index].forward(x, &inputs.cos, &inputs.sin, inputs.bias.as_ref(), None)
    }

    /// Final hidden states (after the last norm).
    ///
    /// # Shapes
    /// - `input.input_ids`: `[batch, seq]` -> `[batch, seq, hidden]`
    pub fn forward_hidden(
        &self,
        input: ModelInput<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let s = input.input_ids.dims()[1];
        let past = cache.as_ref().map_or(0, |c| c.len());
        let inputs = self.pass_inputs(&input, past);
        let mut x = self.embed(input.input_ids);
        for (l, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c.layer(l), past));
            x = layer.forward(
                x,
                &inputs.cos,
                &inputs.sin,
                inputs.bias.as_ref(),
                layer_cache,
            );
        }
        if let Some(cache) = cache {
            cache.advance(s);
        }
        self.norm.forward(x)
    }

    /// Logits from final hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` -> `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                // Tied head: `E h^T` keeps the `[vocab, hidden]` embedding as the contiguous
                // operand (a transposed view of it would be copied on every call); only the
                // small hidden states and the logits are transposed.
                let [b, s, h] = hidden.dims();
                let flat: Tensor<B, 2> = hidden.reshape([b * s, h]);
                let logits_t = self.embed_tokens.val().matmul(flat.transpose());
                logits_t.transpose().reshape([b, s, self.config.vocab_size])
            }
        }
    }

    /// Next-token logits for every position.
    ///
    /// # Shapes
    /// - `input.input_ids`: `[batch, seq]` -> `[batch, seq, vocab]`
    pub fn forward(&self, input: ModelInput<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let hidden = self.forward_hidden(input, cache);
        self.logits(hidden)
    }

    /// Checks that token ids fit the vocabulary and the context fits the positions.
    pub fn check_ids(&self, ids: &[u32], extra: usize) -> Result<()> {
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary (vocab_size = {})",
                self.config.vocab_size
            )));
        }
        if ids.len() + extra > self.config.max_position_embeddings {
            return Err(Error::PromptTooLong {
                tokens: ids.len(),
                new: extra,
                max: self.config.max_position_embeddings,
            });
        }
        Ok(())
    }

    /// Every parameter under its Hugging Face key, in checkpoint order.
    pub fn named_tensors(&self) -> Vec<(String, NamedTensor<B>)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            NamedTensor::D2(self.embed_tokens.val()),
        )];
        let proj = |out: &mut Vec<(String, NamedTensor<B>)>, prefix: String, p: &Projection<B>| {
            for (suffix, t) in p.named_tensors() {
                out.push((format!("{prefix}.{suffix}"), t));
            }
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let a = &layer.self_attn;
            proj(&mut out, format!("{p}.self_attn.q_proj"), &a.q_proj);
            proj(&mut out, format!("{p}.self_attn.k_proj"), &a.k_proj);
            proj(&mut out, format!("{p}.self_attn.v_proj"), &a.v_proj);
            proj(&mut out, format!("{p}.self_attn.o_proj"), &a.o_proj);
            proj(&mut out, format!("{p}.mlp.gate_proj"), &layer.mlp.gate_proj);
            proj(&mut out, format!("{p}.mlp.up_proj"), &layer.mlp.up_proj);
            proj(&mut out, format!("{p}.mlp.down_proj"), &layer.mlp.down_proj);
            out.push((
                format!("{p}.input_layernorm.weight"),
                NamedTensor::D1(layer.input_layernorm.weight.val()),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                NamedTensor::D1(layer.post_attention_layernorm.weight.val()),
            ));
        }
        out.push((
            "model.norm.weight".to_string(),
            NamedTensor::D1(self.norm.weight.val()),
        ));
        if let Some(head) = &self.lm_head {
            proj(&mut out, "lm_head".to_string(), head);
        }
        out
    }
}

/// Additive mask `[batch, 1, seq, past + seq]` that hides keys of other segments from each query.
fn segment_bias<B: Backend>(
    segment_ids: Tensor<B, 2, Int>,
    s: usize,
    past: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let [b, total] = segment_ids.dims();
    let queries = segment_ids
        .clone()
        .slice([0..b, past..total])
        .reshape([b, s, 1])
        .expand([b, s, total]);
    let keys = segment_ids.reshape([b, 1, total]).expand([b, s, total]);
    let other = queries.not_equal(keys);
    Tensor::<B, 3>::zeros([b, s, total], device)
        .mask_fill(other, MASKED)
        .reshape([b, 1, s, total])
}

/// Additive attention mask `[batch, 1, seq, past + seq]`: causal over cache positions, plus the
/// padding mask over keys. `None` when nothing needs masking (one new token, no padding).
fn attention_bias<B: Backend>(
    attention_mask: Option<Tensor<B, 2, Int>>,
    b: usize,
    s: usize,
    past: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    let total = past + s;
    let causal = (s > 1).then(|| {
        let masked = Tensor::<B, 2, Bool>::tril_mask([s, total], past as i64, device);
        Tensor::<B, 2>::zeros([s, total], device)
            .mask_fill(masked, MASKED)
            .reshape([1, 1, s, total])
    });
    let padding = attention_mask.map(|m| {
        let pad = m.equal_elem(0);
        Tensor::<B, 2>::zeros([b, total], device)
            .mask_fill(pad, MASKED)
            .reshape([b, 1, 1, total])
    });
    match (causal, padding) {
        (Some(c), Some(p)) => Some(c + p),
        (Some(c), None) => Some(c),
        (None, Some(p)) => Some(p),
        (None, None) => None,
    }
}
