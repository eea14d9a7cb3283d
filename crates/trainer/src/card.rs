//! The model card (`README.md`) written beside a trained adapter or model, in the layout the
//! Hugging Face hub reads (YAML front matter as PEFT's `save_pretrained` writes it).

use crate::config::{Method, TrainConfig};
use crate::report::Summary;

/// The card's text.
pub fn model_card(config: &TrainConfig, base_model: &str, summary: &Summary) -> String {
    let method = match config.method {
        Method::Full => "full fine-tuning",
        Method::Lora => "LoRA",
        Method::Qlora => "QLoRA (NF4 base)",
    };
    let library = if config.method == Method::Full {
        "transformers"
    } else {
        "peft"
    };
    let data: Vec<String> = config
        .data
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let loss = |l: Option<f64>| l.map_or("-".to_string(), |v| format!("{v:.4}"));
    format!(
        "---\nbase_model: {base_model}\nlibrary_name: {library}\ntags:\n- {}\n- sft\n- llama-rs\n---\n\n\
# {method} fine-tune of `{base_model}`\n\n\
Trained with `cargo xtask train` (this repository's `trainer` crate, burn {burn}).\n\n\
## Training\n\n\
| setting | value |\n|---|---|\n\
| method | {method} |\n| data | {data} |\n| steps | {steps} |\n| rows per step | {rows} |\n\
| max sequence length | {seq} |\n| learning rate | {lr} ({schedule:?}, {warmup} warmup steps) |\n\
| LoRA | r {r}, alpha {alpha}, dropout {dropout}, targets {targets:?} |\n| seed | {seed} |\n\n\
## Results\n\n\
| | value |\n|---|---|\n| validation loss before | {before} |\n| validation loss after | {after} |\n\
| tokens trained | {tokens} |\n| training time | {time:.1} s |\n\n\
## Use\n\n\
```\ncargo xtask generate --model {base_model} --adapter <this directory> --chat --prompt \"...\"\n```\n\n\
With Python: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{base_model}\"), \"<this directory>\")`.\n",
        if config.method == Method::Full {
            "full"
        } else {
            "lora"
        },
        burn = "0.21",
        data = data.join(", "),
        steps = summary.steps,
        rows = config.batch_size * config.grad_accum,
        seq = config.max_seq_len,
        lr = config.optimizer.lr,
        schedule = config.schedule,
        warmup = config.warmup_steps,
        r = config.lora.r,
        alpha = config.lora.alpha,
        dropout = config.lora.dropout,
        targets = config.lora.target_modules,
        seed = config.seed,
        before = loss(summary.eval_loss_before),
        after = loss(summary.eval_loss_after),
        tokens = summary.tokens,
        time = summary.train_s,
    )
}

/// What a hub card needs beyond the run: where it goes and how it is described.
#[derive(Debug, Clone)]
pub struct HubCard<'a> {
    /// `base_model`: a hub id (or a path, for local use).
    pub base_model: &'a str,
    /// `license` (a hub licence id, e.g. `apache-2.0`).
    pub license: &'a str,
    /// `datasets`: hub dataset ids.
    pub datasets: &'a [String],
    /// The folder holds the merged model rather than the adapter.
    pub merged: bool,
    /// The GGUF file in the folder, if any.
    pub gguf: Option<&'a str>,
    /// The validation losses `(step, loss)` of the run.
    pub evals: &'a [(u64, f64)],
    /// `loss.png` is in the folder.
    pub loss_plot: bool,
}

/// The `README.md` of a folder made for the Hugging Face hub (`cargo xtask publish`): the YAML
/// metadata the hub reads (`base_model`, `library_name`, `license`, `datasets`, `tags`,
/// `pipeline_tag`), the training configuration, a metrics table, the loss plot and how to load it.
pub fn hub_card(config: &TrainConfig, summary: &Summary, card: &HubCard) -> String {
    let method = match config.method {
        Method::Full => "full fine-tuning",
        Method::Lora => "LoRA",
        Method::Qlora => "QLoRA (NF4 base)",
    };
    let adapter = !card.merged && config.method != Method::Full;
    let library = if adapter { "peft" } else { "transformers" };
    let mut yaml = format!(
        "---\nbase_model: {}\nlibrary_name: {library}\nlicense: {}\npipeline_tag: text-generation\n",
        yaml_str(card.base_model),
        yaml_str(card.license)
    );
    if !card.datasets.is_empty() {
        yaml.push_str("datasets:\n");
        for d in card.datasets {
            yaml.push_str(&format!("- {}\n", yaml_str(d)));
        }
    }
    yaml.push_str("tags:\n");
    let kind = match config.method {
        Method::Full => "full-fine-tune",
        Method::Lora => "lora",
        Method::Qlora => "qlora",
    };
    for t in [kind, "sft", "llama-rs", "text-generation"] {
        yaml.push_str(&format!("- {t}\n"));
    }
    // The hub links an adapter to its base with this tag (only for hub ids, not paths).
    if adapter && yaml_str(card.base_model) == card.base_model && card.base_model.contains('/') {
        yaml.push_str(&format!("- base_model:adapter:{}\n", card.base_model));
    }
    if card.gguf.is_some() {
        yaml.push_str("- gguf\n");
    }
    yaml.push_str("---\n\n");
    let what = if adapter {
        "A PEFT adapter"
    } else {
        "A merged model"
    };
    let loss = |l: Option<f64>| l.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut body = format!(
        "# {method} fine-tune of `{base}`\n\n{what} trained with `cargo xtask train` (llama-rs, burn 0.21).\n\n",
        base = card.base_model
    );
    body.push_str("## Results\n\n| | value |\n|---|---|\n");
    body.push_str(&format!(
        "| validation loss before | {} |\n| validation loss after | {} |\n| steps | {} |\n| tokens trained | {} |\n| training time | {:.1} s |\n| peak memory (RSS) | {:.0} MiB |\n\n",
        loss(summary.eval_loss_before),
        loss(summary.eval_loss_after),
        summary.steps,
        summary.tokens,
        summary.train_s,
        summary.peak_rss_bytes as f64 / (1024.0 * 1024.0),
    ));
    if !card.evals.is_empty() {
        body.push_str("| step | validation loss | perplexity |\n|---:|---:|---:|\n");
        for (step, l) in card.evals {
            body.push_str(&format!("| {step} | {l:.4} | {:.2} |\n", l.exp()));
        }
        body.push('\n');
    }
    if card.loss_plot {
        body.push_str("![training loss](loss.png)\n\n");
    }
    body.push_str("## Use\n\n```python\n");
    if adapter {
        body.push_str(
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n\
model = AutoPeftModelForCausalLM.from_pretrained(\"<this folder or repo>\")\n\
tokenizer = AutoTokenizer.from_pretrained(\"<this folder or repo>\")\n",
        );
    } else {
        body.push_str(
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n\
model = AutoModelForCausalLM.from_pretrained(\"<this folder or repo>\")\n\
tokenizer = AutoTokenizer.from_pretrained(\"<this folder or repo>\")\n",
        );
    }
    body.push_str("```\n\n```sh\n");
    if adapter {
        body.push_str(&format!(
            "cargo xtask serve --model {} --adapter tuned=<this folder>\n",
            card.base_model
        ));
    } else {
        body.push_str("cargo xtask serve --model <this folder>\n");
    }
    if let Some(g) = card.gguf {
        body.push_str(&format!("llama-cli -m {g} -cnv\n"));
    }
    body.push_str("```\n\n## Training configuration\n\n```toml\n");
    body.push_str(config.to_toml().trim_end());
    body.push_str("\n```\n");
    yaml + &body
}

/// A YAML scalar: plain when safe, double-quoted otherwise.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !s.starts_with(['-', '.', '/']);
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_are_quoted_when_needed() {
        assert_eq!(
            yaml_str("HuggingFaceTB/SmolLM2-135M-Instruct"),
            "HuggingFaceTB/SmolLM2-135M-Instruct"
        );
        assert_eq!(yaml_str("/abs/path"), "\"/abs/path\"");
        assert_eq!(yaml_str("a: b"), "\"a: b\"");
    }
}
