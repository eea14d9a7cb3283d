//! PEFT's adapter directory without a model: PEFT-written adapters read into module maps, written
//! back tensor for tensor, and files that do not fit are errors naming the file and the key.

use std::path::{Path, PathBuf};

use peft::format::{AdapterWeights, lora_a_key, magnitude_key, module_of_key};
use peft::{LoraSpec, read_adapter, read_adapter_modules, write_adapter};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peft-format-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn keys_name_the_module() {
    let m = "model.layers.0.self_attn.q_proj";
    assert_eq!(
        lora_a_key(m),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(module_of_key(&lora_a_key(m)), Some(m));
    assert_eq!(module_of_key(&magnitude_key(m)), Some(m));
    assert_eq!(module_of_key("base_model.model.lm_head.weight"), None);
}

#[test]
fn peft_adapters_round_trip_tensor_for_tensor() {
    for name in ["lora_qv", "dora_attn"] {
        let src = fixture(name);
        let (config, modules) = read_adapter_modules(&src).unwrap();
        assert!(!modules.is_empty());
        for (module, t) in &modules {
            let spec = config.spec_for(module);
            assert_eq!(t.lora_a.shape[0], spec.r, "{module}");
            assert_eq!(t.lora_b.shape[1], spec.r, "{module}");
            assert_eq!(t.magnitude.is_some(), config.use_dora, "{module}");
        }
        let dir = scratch(name);
        write_adapter(&dir, &config, &modules).unwrap();
        let (config2, modules2) = read_adapter_modules(&dir).unwrap();
        assert_eq!(modules2, modules, "{name}");
        assert_eq!(
            (config2.r, config2.lora_alpha, config2.use_dora),
            (config.r, config.lora_alpha, config.use_dora)
        );
        // Same keys, shapes and f32 bytes as the file PEFT wrote.
        let theirs = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
        let ours = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        let (theirs, ours) = (
            SafeTensors::deserialize(&theirs).unwrap(),
            SafeTensors::deserialize(&ours).unwrap(),
        );
        let mut keys = theirs.names();
        keys.sort();
        let mut our_keys = ours.names();
        our_keys.sort();
        assert_eq!(keys, our_keys, "{name}");
        for k in keys {
            let (a, b) = (theirs.tensor(k).unwrap(), ours.tensor(k).unwrap());
            assert_eq!(a.shape(), b.shape(), "{k}");
            assert_eq!(a.data(), b.data(), "{k}");
        }
        assert!(!dir.join("adapter_model.safetensors.tmp").exists());
        assert!(!dir.join("adapter_config.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn tensors_that_do_not_fit_are_errors_naming_file_and_key() {
    let (config, mut weights) = read_adapter(fixture("lora_qv")).unwrap();
    let module = "model.layers.0.self_attn.q_proj";
    let spec = config.spec_for(module);
    // The fixture's q_proj is [64, 64]; claim another input size.
    let e = weights
        .take(module, &spec, (64, 32))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains(&lora_a_key(module))
            && e.contains("[4, 32]")
            && e.contains("[4, 64]"),
        "{e}"
    );
    // A module the file lacks.
    let e = weights
        .take("model.layers.9.self_attn.q_proj", &spec, (64, 64))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing tensor") && e.contains("layers.9.self_attn.q_proj.lora_A"),
        "{e}"
    );
    // DoRA asks for a magnitude the file does not hold.
    let dora = LoraSpec {
        use_dora: true,
        ..spec
    };
    let mut weights = AdapterWeights::open(fixture("lora_qv")).unwrap();
    let e = weights
        .take(module, &dora, (64, 64))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&magnitude_key(module)), "{e}");
    // Tensors left untaken.
    let weights = AdapterWeights::open(fixture("lora_qv")).unwrap();
    let e = weights.finish().unwrap_err().to_string();
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("unexpected tensor"),
        "{e}"
    );
}
