//! `adapter_config.json`: what PEFT 0.21.2 writes parses; options that would change the model in
//! ways not implemented, and unknown options, are errors naming the key.

use std::path::PathBuf;

use peft::{LoraConfig, TargetModules};
use serde_json::json;

fn fixture_config(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("adapter_config.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn peft_written_configs_parse() {
    let c = LoraConfig::from_json(&fixture_config("dora_attn")).unwrap();
    assert_eq!(
        (c.r, c.lora_alpha, c.use_dora, c.use_rslora),
        (4, 8.0, true, false)
    );
    assert!(
        c.targets("model.layers.1.self_attn.o_proj") && !c.targets("model.layers.1.mlp.up_proj")
    );
    let c = LoraConfig::from_json(&fixture_config("rslora_all_linear")).unwrap();
    assert!(c.use_rslora);
    assert!((c.spec_for("model.layers.0.mlp.up_proj").scale() - 8.0 / 8f64.sqrt()).abs() < 1e-12);
    let all = LoraConfig::from_json(&json!({"target_modules": "all-linear"})).unwrap();
    assert_eq!(all.target_modules, TargetModules::AllLinear);
    assert!(all.targets("model.layers.0.mlp.down_proj") && !all.targets("lm_head"));
}

#[test]
fn patterns_override_rank_and_alpha() {
    let c = LoraConfig::from_json(&json!({"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"layers.1.mlp.down_proj": 2}}))
        .unwrap();
    assert_eq!(c.spec_for("model.layers.0.self_attn.q_proj").r, 4);
    assert_eq!(c.spec_for("model.layers.0.self_attn.k_proj").r, 8);
    assert_eq!(c.spec_for("model.layers.1.mlp.down_proj").alpha, 2.0);
    assert_eq!(c.spec_for("model.layers.0.mlp.down_proj").alpha, 16.0);
}

#[test]
fn unsupported_and_unknown_options_are_errors() {
    for (cfg, needle) in [
        (json!({"bias": "all"}), "`bias` = \"all\" is not supported"),
        (json!({"fan_in_fan_out": true}), "`fan_in_fan_out`"),
        (json!({"layers_to_transform": [0]}), "`layers_to_transform`"),
        (json!({"modules_to_save": ["lm_head"]}), "`modules_to_save`"),
        (json!({"peft_type": "IA3"}), "`peft_type`"),
        (json!({"init_lora_weights": "olora"}), "`init_lora_weights`"),
        (
            json!({"init_lora_weights": "pissa_niter_x"}),
            "`init_lora_weights`",
        ),
        (json!({"r": 0}), "`r`: expected a positive integer"),
        (json!({"lora_dropout": 1.5}), "`lora_dropout`"),
        (json!({"use_magic": true}), "unknown option `use_magic`"),
    ] {
        let e = LoraConfig::from_json(&cfg).unwrap_err().to_string();
        assert!(e.contains(needle), "{cfg}: {e}");
    }
}
