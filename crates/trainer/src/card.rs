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
