//! llama.cpp tensor names <-> Hugging Face names, and llama.cpp's reordering of the query and
//! key projection rows.
//!
//! llama.cpp's converter permutes the rows of `q_proj` / `k_proj` within each head so that its
//! RoPE rotates adjacent pairs `(2i, 2i+1)`, where transformers rotates `(i, i + d/2)`. Row
//! `h*d + 2j + s` of the GGUF matrix is row `h*d + s*d/2 + j` of the Hugging Face one
//! (`s` in {0, 1}, `j < d/2`); [`unpermute_rows`] undoes it as transformers' GGUF loader does
//! and [`permute_rows`] applies it for the writer.

/// Per-layer tensors: llama.cpp suffix and Hugging Face suffix.
const LAYER: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Whole-model tensors.
const GLOBAL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

fn split_kind(name: &str) -> Option<(&str, &str)> {
    name.strip_suffix(".weight")
        .map(|s| (s, "weight"))
        .or_else(|| name.strip_suffix(".bias").map(|s| (s, "bias")))
}

/// The Hugging Face name of llama.cpp tensor `name` (`blk.3.attn_q.weight` ->
/// `model.layers.3.self_attn.q_proj.weight`), or `None` for names outside the Llama layout.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let hf = LAYER.iter().find(|(g, _)| *g == part)?.1;
        return Some(format!("model.layers.{layer}.{hf}.{kind}"));
    }
    let hf = GLOBAL.iter().find(|(g, _)| *g == stem)?.1;
    Some(format!("{hf}.{kind}"))
}

/// The llama.cpp name of Hugging Face tensor `name`, the inverse of [`gguf_to_hf`].
pub fn hf_to_gguf(name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some(rest) = stem.strip_prefix("model.layers.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let g = LAYER.iter().find(|(_, h)| *h == part)?.0;
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    let g = GLOBAL.iter().find(|(_, h)| *h == stem)?.0;
    Some(format!("{g}.{kind}"))
}

/// The number of heads whose rows llama.cpp reorders in Hugging Face tensor `hf_name`:
/// `heads` for `q_proj`, `kv_heads` for `k_proj`, `None` for every other tensor.
pub fn rope_heads(hf_name: &str, heads: usize, kv_heads: usize) -> Option<usize> {
    if hf_name.contains(".self_attn.q_proj.") {
        Some(heads)
    } else if hf_name.contains(".self_attn.k_proj.") {
        Some(kv_heads)
    } else {
        None
    }
}

/// Reorders rows (`row_len` values each) from llama.cpp's order to Hugging Face's, `heads`
/// heads of `rows / heads` rows each.
pub fn unpermute_rows(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    reorder(data, heads, row_len, false)
}

/// Reorders rows from Hugging Face's order to llama.cpp's (the inverse of [`unpermute_rows`]).
pub fn permute_rows(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    reorder(data, heads, row_len, true)
}

fn reorder(data: &[f32], heads: usize, row_len: usize, to_gguf: bool) -> Vec<f32> {
    let rows = data.len() / row_len;
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let gguf = h * d + 2 * j + s;
                let hf = h * d + s * half + j;
                let (from, to) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[to * row_len..(to + 1) * row_len]
                    .copy_from_slice(&data[from * row_len..(from + 1) * row_len]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.12.attn_q.weight",
                "model.layers.12.self_attn.q_proj.weight",
            ),
            ("blk.0.attn_k.bias", "model.layers.0.self_attn.k_proj.bias"),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
            (
                "blk.2.ffn_norm.weight",
                "model.layers.2.post_attention_layernorm.weight",
            ),
        ] {
            assert_eq!(gguf_to_hf(g).as_deref(), Some(h));
            assert_eq!(hf_to_gguf(h).as_deref(), Some(g));
        }
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
        assert_eq!(gguf_to_hf("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn permutation_matches_llama_cpp_converter() {
        // One head of 4 rows (d = 4): the converter's reshape(1, 2, 2).swapaxes(1, 2) maps
        // Hugging Face rows [0, 1, 2, 3] to GGUF order [0, 2, 1, 3].
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect(); // 4 rows of 2
        let g = permute_rows(&hf, 1, 2);
        assert_eq!(g, vec![0., 1., 4., 5., 2., 3., 6., 7.]);
        assert_eq!(unpermute_rows(&g, 1, 2), hf);
        let two: Vec<f32> = (0..16).map(|v| v as f32).collect(); // 2 heads of 4 rows of 2
        assert_eq!(unpermute_rows(&permute_rows(&two, 2, 2), 2, 2), two);
    }
}
