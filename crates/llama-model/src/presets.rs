//! Shapes of published Llama checkpoints (no weights), for memory estimates, benches and random
//! models of a realistic size. Values are those of the models' own `config.json`.

use crate::config::{LlamaConfig, RopeScaling};

fn llama2(hidden: usize, inter: usize, layers: usize, heads: usize) -> LlamaConfig {
    LlamaConfig {
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 4096,
        vocab_size: 32_000,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        attention_bias: false,
        mlp_bias: false,
        torch_dtype: Some("float16".into()),
        quantization: None,
    }
}

fn llama3(
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    factor: f64,
    tied: bool,
) -> LlamaConfig {
    LlamaConfig {
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: 8,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
        max_position_embeddings: 131_072,
        vocab_size: 128_256,
        tie_word_embeddings: tied,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
        attention_bias: false,
        mlp_bias: false,
        torch_dtype: Some("bfloat16".into()),
        quantization: None,
    }
}

impl LlamaConfig {
    /// Llama-2-7B.
    pub fn llama2_7b() -> Self {
        llama2(4096, 11_008, 32, 32)
    }
    /// Llama-2-13B.
    pub fn llama2_13b() -> Self {
        llama2(5120, 13_824, 40, 40)
    }
    /// Llama-3.1-8B.
    pub fn llama3_1_8b() -> Self {
        llama3(4096, 14_336, 32, 32, 8.0, false)
    }
    /// Llama-3.1-70B.
    pub fn llama3_1_70b() -> Self {
        llama3(8192, 28_672, 80, 64, 8.0, false)
    }
    /// Llama-3.2-1B.
    pub fn llama3_2_1b() -> Self {
        llama3(2048, 8192, 16, 32, 32.0, true)
    }
    /// Llama-3.2-3B.
    pub fn llama3_2_3b() -> Self {
        llama3(3072, 8192, 28, 24, 32.0, true)
    }
    /// A tiny Llama-3-style shape (GQA, llama3 RoPE scaling, tied head) for tests and demos.
    pub fn tiny() -> Self {
        let mut c = llama3(64, 160, 2, 4, 8.0, true);
        c.num_key_value_heads = 2;
        c.vocab_size = 512;
        c.max_position_embeddings = 256;
        c.rope_scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32,
        };
        c.bos_token_id = Some(0);
        c.eos_token_ids = vec![1];
        c.torch_dtype = Some("float32".into());
        c
    }

    /// Looks a preset up by name (`llama2-7b`, `llama3.2-1b`, `tiny`, ...).
    pub fn preset(name: &str) -> Option<Self> {
        let cfg = match name.to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
            "llama2-7b" | "llama-2-7b" => Self::llama2_7b(),
            "llama2-13b" | "llama-2-13b" => Self::llama2_13b(),
            "llama3.1-8b" | "llama-3.1-8b" => Self::llama3_1_8b(),
            "llama3.1-70b" | "llama-3.1-70b" => Self::llama3_1_70b(),
            "llama3.2-1b" | "llama-3.2-1b" => Self::llama3_2_1b(),
            "llama3.2-3b" | "llama-3.2-3b" => Self::llama3_2_3b(),
            "tiny" => Self::tiny(),
            _ => return None,
        };
        Some(cfg)
    }

    /// Names accepted by [`LlamaConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &[
        "llama2-7b",
        "llama2-13b",
        "llama3.1-8b",
        "llama3.1-70b",
        "llama3.2-1b",
        "llama3.2-3b",
        "tiny",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parameter_counts_match_published_sizes() {
        // Published totals: 6.74B, 13.0B, 8.03B, 70.6B, 1.24B, 3.21B.
        let billions = |c: LlamaConfig| c.num_parameters() as f64 / 1e9;
        assert!((billions(LlamaConfig::llama2_7b()) - 6.738).abs() < 0.01);
        assert!((billions(LlamaConfig::llama2_13b()) - 13.016).abs() < 0.01);
        assert!((billions(LlamaConfig::llama3_1_8b()) - 8.030).abs() < 0.01);
        assert!((billions(LlamaConfig::llama3_1_70b()) - 70.554).abs() < 0.02);
        assert!((billions(LlamaConfig::llama3_2_1b()) - 1.236).abs() < 0.01);
        assert!((billions(LlamaConfig::llama3_2_3b()) - 3.213).abs() < 0.01);
        for name in LlamaConfig::PRESETS {
            assert!(LlamaConfig::preset(name).is_some(), "{name}");
        }
    }
}
