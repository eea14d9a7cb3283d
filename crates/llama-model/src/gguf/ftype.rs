//! llama.cpp file types (`general.file_type`, the TYPE argument of `llama-quantize`) and, for
//! the K-quant mixes, llama.cpp's choice of a ggml type per tensor: `llama_tensor_get_type` and
//! `tensor_type_fallback` in `src/llama-quant.cpp` of llama-cpp-python 0.3.36's llama.cpp, for
//! the llama architecture (no experts). `tests/gguf_kquants.rs` checks the choice against what
//! that `llama-quantize` wrote for two tiny models.

use std::fmt;
use std::str::FromStr;

use super::dequant::GgmlType;

/// What `export-gguf --type` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

const ALL: [(FileType, &str, u32); 11] = [
    (FileType::F32, "f32", 0),
    (FileType::F16, "f16", 1),
    (FileType::BF16, "bf16", 32),
    (FileType::Q8_0, "q8_0", 7),
    (FileType::Q4_0, "q4_0", 2),
    (FileType::Q4_1, "q4_1", 3),
    (FileType::Q4_K_S, "q4_k_s", 14),
    (FileType::Q4_K_M, "q4_k_m", 15),
    (FileType::Q5_K_S, "q5_k_s", 16),
    (FileType::Q5_K_M, "q5_k_m", 17),
    (FileType::Q6_K, "q6_k", 18),
];

impl FileType {
    /// llama.cpp's `llama_ftype` value, stored as `general.file_type`.
    pub fn id(self) -> u32 {
        ALL.iter()
            .find(|(t, ..)| *t == self)
            .map(|a| a.2)
            .unwrap_or(0)
    }

    /// The lower-case name (`q4_k_m`), as `--type` takes it.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(t, ..)| *t == self)
            .map(|a| a.1)
            .unwrap_or("?")
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        ALL.iter().map(|a| a.1).collect::<Vec<_>>().join(", ")
    }

    /// `llama_ftype_get_default_type`: the type of most matrices.
    pub fn default_type(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q8_0 => GgmlType::Q8_0,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }

    /// Whether the per-tensor types follow llama.cpp's K-quant mix ([`llama_cpp_tensor_types`]);
    /// the other types encode every matrix in [`FileType::default_type`] (F16 where a row is not
    /// a whole number of blocks), as this exporter always did.
    pub fn is_k_mix(self) -> bool {
        matches!(
            self,
            FileType::Q4_K_S
                | FileType::Q4_K_M
                | FileType::Q5_K_S
                | FileType::Q5_K_M
                | FileType::Q6_K
        )
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        ALL.iter()
            .find(|a| a.1 == l)
            .map(|a| a.0)
            .ok_or_else(|| format!("unknown GGUF file type (expected one of {})", Self::names()))
    }
}

/// The hyper-parameters the choice depends on.
#[derive(Debug, Clone, Copy)]
pub struct MixModel {
    /// `llama.block_count`.
    pub n_layer: usize,
    /// `llama.attention.head_count`.
    pub n_head: usize,
    /// `llama.attention.head_count_kv`.
    pub n_head_kv: usize,
}

/// `llama_model_loader::weight_name_comparer`: by the `blk.N.` layer (-1 for none), then name.
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// `tensor_allows_quantization` for llama tensors: matrices whose name ends in `weight` and
/// that are not norms.
fn allows_quantization(name: &str, ndims: usize) -> bool {
    ndims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
}

/// `tensor_type_fallback`: a K-quant whose block does not divide the row length becomes the
/// 32-value type llama.cpp names, and F16 if that does not divide it either.
fn fallback(ty: GgmlType, ncols: usize) -> GgmlType {
    if ncols.is_multiple_of(ty.block().0) {
        return ty;
    }
    let to = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(to.block().0) {
        to
    } else {
        GgmlType::F16
    }
}

/// The ggml type `llama-quantize` gives each tensor of a llama model for `ftype`, or `None` for
/// a tensor it does not quantize (1-D tensors, norms: they keep their type). `tensors` are
/// llama.cpp names with PyTorch-order shapes (`[rows, row length]`), in any order.
///
/// Mirrors llama.cpp: tensors are visited sorted by layer then name, which is the order its
/// `attn_v` and `ffn_down` counters see them in; `output.weight` (or `token_embd.weight` when the
/// embeddings are tied) becomes Q6_K, or Q8_0 when its rows are not a multiple of its block;
/// with Q4_K_M and Q5_K_M, `attn_v` and `ffn_down` of the layers where `use_more_bits` holds
/// (the first and last eighth and every third in between) become Q6_K; Q4_K_S gives the first
/// four `attn_v` and the first eighth of `ffn_down` Q5_K; 80-layer GQA models (70B) raise a
/// Q4_K `attn_v` to Q5_K; then [`fallback`].
pub fn llama_cpp_tensor_types(
    ftype: FileType,
    model: MixModel,
    tensors: &[(String, Vec<usize>)],
) -> Vec<Option<GgmlType>> {
    use FileType::*;
    let default = ftype.default_type();
    let tied = !tensors.iter().any(|(n, _)| n == "output.weight");
    let n_wv = tensors
        .iter()
        .filter(|(n, _)| n.contains("attn_v.weight"))
        .count() as i64;
    let n_down = model.n_layer as i64;
    let is_70b = model.n_layer == 80 && model.n_head != model.n_head_kv;
    let use_more_bits = |i: i64, n: i64| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (&tensors[a].0, &tensors[b].0);
        (layer_of(na), na).cmp(&(layer_of(nb), nb))
    });
    let (mut i_wv, mut i_down) = (0i64, 0i64);
    let mut out = vec![None; tensors.len()];
    for i in order {
        let (name, shape) = &tensors[i];
        if !allows_quantization(name, shape.len()) {
            continue;
        }
        let ncols = *shape.last().unwrap_or(&0);
        let mut ty = default;
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            if name == "output.weight" || (tied && name == "token_embd.weight") {
                if !ncols.is_multiple_of(ty.block().0) {
                    ty = GgmlType::Q8_0;
                } else if ty != GgmlType::Q8_0 {
                    ty = GgmlType::Q6_K;
                }
            } else if name == "token_embd.weight" {
                // the default type
            } else if name.contains("attn_v.weight") {
                if matches!(ftype, Q4_K_M | Q5_K_M) && use_more_bits(i_wv, n_wv) {
                    ty = GgmlType::Q6_K;
                } else if ftype == Q4_K_S && i_wv < 4 {
                    ty = GgmlType::Q5_K;
                }
                if is_70b && matches!(ty, GgmlType::Q3_K | GgmlType::Q4_K) {
                    ty = GgmlType::Q5_K;
                }
                i_wv += 1;
            } else if name.contains("ffn_down") {
                let (il, n) = (i_down, n_down);
                if matches!(ftype, Q4_K_M | Q5_K_M) && use_more_bits(il, n) {
                    ty = GgmlType::Q6_K;
                } else if ftype == Q4_K_S && il < n / 8 {
                    ty = GgmlType::Q5_K;
                }
                i_down += 1;
            }
            ty = fallback(ty, ncols);
        }
        out[i] = Some(ty);
    }
    out
}
