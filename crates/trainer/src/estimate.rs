//! The memory planner: what a training run holds, item by item, from the model shape and the run
//! settings — before anything is loaded. The activation and workspace terms follow what this
//! implementation keeps for the backward pass (f32 on CPU); they are checked against measured
//! peak memory of real runs in docs/benchmarks.md.

use llama_model::LlamaConfig;
use serde::Serialize;

use crate::config::Method;

/// What the estimate is for.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateInput {
    /// Model shape.
    pub model: LlamaConfig,
    /// full, lora or qlora.
    pub method: Method,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per micro-batch.
    pub batch: usize,
    /// LoRA rank (all linear layers but the LM head are adapted).
    pub rank: usize,
    /// Bytes per stored float weight: 4 (f32, the CPU default) or 2 (bf16/f16).
    pub weight_bytes: usize,
    /// Adapter dropout (> 0 keeps a mask and a dropped copy of each adapter input).
    pub dropout: bool,
    /// Activation checkpointing: the backward pass keeps each layer's input and one layer's
    /// activations at a time.
    pub gradient_checkpointing: bool,
}

impl EstimateInput {
    /// Checks the run settings: a plan for zero tokens, zero rows or a rank-0 adapter means
    /// nothing, so they are refused, named as `cargo xtask estimate` names them.
    pub fn validate(&self) -> Result<(), String> {
        if self.seq_len == 0 {
            return Err("--seq-len 0: expected at least 1 token per row".into());
        }
        if self.batch == 0 {
            return Err("--batch 0: expected at least 1 row per micro-batch".into());
        }
        if self.method != Method::Full && self.rank == 0 {
            return Err(format!(
                "--rank 0: a {} adapter needs a rank of at least 1",
                format!("{:?}", self.method).to_lowercase()
            ));
        }
        if !matches!(self.weight_bytes, 2 | 4) {
            return Err(format!(
                "{} bytes per weight: expected 2 (bf16/f16) or 4 (f32)",
                self.weight_bytes
            ));
        }
        Ok(())
    }
}

/// One line of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// What it is.
    pub name: &'static str,
    /// Bytes.
    pub bytes: u64,
}

/// The breakdown and its total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Items in order: weights, adapters, gradients, optimizer states, activations, workspace,
    /// runtime.
    pub items: Vec<Item>,
    /// Sum of the items.
    pub total: u64,
    /// Trainable parameters.
    pub trainable: u64,
    /// All parameters (quantized ones at their logical count).
    pub parameters: u64,
}

/// NF4/FP4 storage per weight with double quantization in blocks of 64: 4 bits of code, one u8
/// absmax code per 64, one f32 per 256 blocks.
const FOUR_BIT_BYTES: f64 = 0.5 + 1.0 / 64.0 + 4.0 / (64.0 * 256.0);

/// Bytes the process holds besides the model (binary, allocator, tokenizer, data), measured on
/// the CPU runs of docs/benchmarks.md.
const RUNTIME_BYTES: u64 = 64 << 20;

/// Estimates the peak memory of a training step.
pub fn estimate(input: &EstimateInput) -> Estimate {
    let m = &input.model;
    let (h, i, v, l) = (
        m.hidden_size as u64,
        m.intermediate_size as u64,
        m.vocab_size as u64,
        m.num_hidden_layers as u64,
    );
    let q = (m.num_attention_heads * m.head_dim) as u64;
    let kv = (m.num_key_value_heads * m.head_dim) as u64;
    let heads = m.num_attention_heads as u64;
    let linear_per_layer = h * q + 2 * h * kv + q * h + 3 * h * i;
    let linear = l * linear_per_layer;
    let total_params = m.num_parameters() as u64;
    let other = total_params - linear;
    let wb = input.weight_bytes as u64;
    let weights = match input.method {
        Method::Qlora => (linear as f64 * FOUR_BIT_BYTES) as u64 + other * wb,
        _ => total_params * wb,
    };
    // Adapters on every linear layer but the LM head: r·(in + out) each.
    let r = input.rank as u64;
    let adapter_params = if input.method == Method::Full {
        0
    } else {
        l * r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    };
    let trainable = if input.method == Method::Full {
        total_params
    } else {
        adapter_params
    };
    // Adapters, their gradients and AdamW's two moments are f32.
    let adapters = adapter_params * 4;
    let gradients = trainable * 4;
    let optimizer = trainable * 8;
    // Activations kept for the backward pass, f32, per token and layer: the two norm inputs and
    // outputs, q/k/v and their rotated copies, the attention output, the MLP's gate, up, SiLU
    // and product, the adapters' rank-r intermediates (and, with dropout, a mask and a dropped
    // copy of each adapter input); per row the softmax probabilities and scores (heads·s²).
    // With checkpointing only each layer's input stays; one layer's tape is rebuilt at a time.
    let t = (input.batch * input.seq_len) as u64;
    let s = input.seq_len as u64;
    let lora_per_token = if input.method == Method::Full {
        0
    } else {
        7 * r
            + if input.dropout {
                2 * (4 * h + 2 * h + i)
            } else {
                0
            }
    };
    let per_token_layer = 4 * h + 2 * q + 2 * kv + q + 5 * i + lora_per_token;
    let attention = input.batch as u64 * heads * s * s * 2;
    let one_layer = t * per_token_layer + attention;
    // The chunked loss: two chunks of logits-sized buffers alive at once (logits / their
    // exponentials, the gradient) of `default_chunk_rows` rows, and the hidden states' gradient.
    let chunk = (crate::loss::default_chunk_rows(m.vocab_size) as u64).min(t);
    let loss = 4 * (2 * chunk * v + 2 * t * h);
    let (activations, loss_or_layer) = if input.gradient_checkpointing {
        // Each layer's input; the loss and then one layer's tape at a time, never both.
        (4 * (l * t * h + t * 2 * h), loss.max(4 * one_layer))
    } else {
        (4 * (l * one_layer + t * 2 * h), loss)
    };
    // For a quantized base the largest dequantized weight twice (forward and the backward's
    // re-dequantization); full training holds the gradient of the largest matrix while it is
    // added.
    let largest = [h * q, h * kv, h * i, v * h].into_iter().max().unwrap_or(0);
    let dequant = if input.method == Method::Qlora {
        2 * h.max(q) * i.max(q) * 4
    } else {
        0
    };
    let workspace = loss_or_layer
        + dequant
        + if input.method == Method::Full {
            largest * 4
        } else {
            0
        };
    let items = vec![
        Item {
            name: "weights",
            bytes: weights,
        },
        Item {
            name: "adapters",
            bytes: adapters,
        },
        Item {
            name: "gradients",
            bytes: gradients,
        },
        Item {
            name: "optimizer states",
            bytes: optimizer,
        },
        Item {
            name: "activations",
            bytes: activations,
        },
        Item {
            name: "workspace",
            bytes: workspace,
        },
        Item {
            name: "runtime",
            bytes: RUNTIME_BYTES,
        },
    ];
    let total = items.iter().map(|i| i.bytes).sum();
    Estimate {
        items,
        total,
        trainable,
        parameters: total_params,
    }
}

/// Human units: `1.23 GB` (10^9), as GPU memory is sold.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(method: Method, weight_bytes: usize) -> EstimateInput {
        EstimateInput {
            model: LlamaConfig::llama3_1_8b(),
            method,
            seq_len: 512,
            batch: 1,
            rank: 16,
            weight_bytes,
            dropout: false,
            gradient_checkpointing: false,
        }
    }

    #[test]
    fn the_weights_row_of_the_seed_table() {
        // 8B parameters: ~32 GB in f32, ~16 GB in 16-bit, ~4 GB in 4-bit (embeddings and LM head
        // stay 16-bit in QLoRA, as bitsandbytes keeps them).
        let w = |m, b| estimate(&input(m, b)).items[0].bytes as f64 / 1e9;
        let f32 = w(Method::Lora, 4);
        let b16 = w(Method::Lora, 2);
        let q4 = w(Method::Qlora, 2);
        assert!((30.0..34.0).contains(&f32), "{f32}");
        assert!((15.0..17.0).contains(&b16), "{b16}");
        assert!((4.0..6.5).contains(&q4), "{q4}");
        let p = estimate(&input(Method::Lora, 4)).parameters;
        assert!((8.0e9..8.1e9).contains(&(p as f64)), "{p}");
    }
}
