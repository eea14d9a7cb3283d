//! Bad quantized checkpoints and options: one clear error naming the file and tensor, never a
//! panic or a silently wrong model.

use std::path::{Path, PathBuf};

use llama_model::{QuantizeOptions, load_pretrained, load_pretrained_quantized};
use quant::{BnbMethod, QuantType};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = burn_flex::Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../quant/tests/fixtures/models")
        .join(name)
}

/// Copies a fixture directory, letting `edit` replace tensors of its model.safetensors.
fn tampered(
    name: &str,
    tag: &str,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) -> PathBuf {
    let src = fixture(name);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quant-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, v) in st.tensors() {
        let (dt, shape, data) = edit(&k, v.dtype(), v.shape().to_vec(), v.data().to_vec())
            .unwrap_or((v.dtype(), v.shape().to_vec(), v.data().to_vec()));
        owned.push((k, dt, shape, data));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(k, dt, s, d)| (k.clone(), TensorView::new(*dt, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    let e = load_pretrained::<B>(dir, &Default::default())
        .expect_err("must fail")
        .to_string();
    std::fs::remove_dir_all(dir).unwrap();
    e
}

const STATE: &str = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4";

/// A tensor as the tampering callback returns it: dtype, shape, bytes.
type Raw = (Dtype, Vec<usize>, Vec<u8>);

fn with_state(json: &str) -> impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<Raw> + '_ {
    move |k, _, _, _| (k == STATE).then(|| (Dtype::U8, vec![json.len()], json.as_bytes().to_vec()))
}

#[test]
fn quant_state_blocksize_disagreeing_with_absmax() {
    let state = r#"{"quant_type": "nf4", "blocksize": 128, "dtype": "float32", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05}"#;
    let e = load_err(&tampered("mha_untied_nf4_dq", "bs", with_state(state)));
    assert!(
        e.contains("q_proj.weight.absmax") && e.contains("expected 32"),
        "{e}"
    );
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn quant_state_shape_disagreeing_with_config() {
    let state = r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [32, 128], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05}"#;
    let e = load_err(&tampered("mha_untied_nf4_dq", "shape", with_state(state)));
    assert!(
        e.contains(STATE) && e.contains("[32, 128]") && e.contains("[64, 64]"),
        "{e}"
    );
}

#[test]
fn unknown_quant_type() {
    let state = r#"{"quant_type": "nf3", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}"#;
    let e = load_err(&tampered("mha_untied_nf4_dq", "qt", with_state(state)));
    assert!(
        e.contains(STATE) && e.contains("unknown 4-bit quant type \"nf3\""),
        "{e}"
    );
}

#[test]
fn invalid_blocksize_in_quant_state() {
    let state = r#"{"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [64, 64]}"#;
    let e = load_err(&tampered("mha_untied_nf4_dq", "bs48", with_state(state)));
    assert!(e.contains(STATE) && e.contains("blocksize 48"), "{e}");
}

#[test]
fn truncated_packed_codes() {
    let e = load_err(&tampered("mha_untied_nf4_dq", "packed", |k, dt, _, d| {
        (k == "model.layers.0.self_attn.q_proj.weight")
            .then(|| (dt, vec![2047, 1], d[..2047].to_vec()))
    }));
    assert!(
        e.contains("`model.layers.0.self_attn.q_proj.weight`")
            && e.contains("[2047, 1]")
            && e.contains("[2048, 1]"),
        "{e}"
    );
}

#[test]
fn missing_nested_absmax() {
    let key = "model.layers.0.self_attn.q_proj.weight.nested_absmax";
    let e = load_err(&tampered("mha_untied_nf4_dq", "nested", |k, _, _, _| {
        (k == key).then(|| (Dtype::U8, vec![0], Vec::new()))
    }));
    assert!(
        e.contains(key) && e.contains("stored as U8, expected F32"),
        "{e}"
    );
    let dir = tampered("mha_untied_nf4_dq", "nested-drop", |_, _, _, _| None);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let keep: Vec<(String, TensorView)> =
        st.tensors().into_iter().filter(|(k, _)| k != key).collect();
    safetensors::serialize_to_file(keep, None, &dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains(key) && e.contains("missing"), "{e}");
}

#[test]
fn int8_scales_of_the_wrong_length() {
    let e = load_err(&tampered("mha_untied_int8", "scb", |k, dt, _, d| {
        (k == "model.layers.1.mlp.down_proj.SCB").then(|| (dt, vec![63], d[..63 * 4].to_vec()))
    }));
    assert!(
        e.contains("model.layers.1.mlp.down_proj.SCB") && e.contains("[63]") && e.contains("[64]"),
        "{e}"
    );
}

#[test]
fn unsupported_quant_method_in_config() {
    let dir = tampered("mha_untied_nf4_dq", "gptq", |_, _, _, _| None);
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"bitsandbytes\"", "\"gptq\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("config.json") && e.contains("quant_method \"gptq\""),
        "{e}"
    );
}

#[test]
fn non_finite_weights_are_not_quantized() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/mha_untied");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quant-bad-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let mut d = v.data().to_vec();
            if k == "model.layers.1.mlp.up_proj.weight" {
                d[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            (k, v.dtype(), v.shape().to_vec(), d)
        })
        .collect();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(k, dt, s, d)| (k.clone(), TensorView::new(*dt, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    for method in [BnbMethod::FourBit(QuantType::Nf4), BnbMethod::Int8] {
        let mut o = QuantizeOptions::nf4();
        o.method = method;
        let e = load_pretrained_quantized::<B>(&dir, &o, &Default::default())
            .expect_err("NaN must fail")
            .to_string();
        assert!(
            e.contains("`model.layers.1.mlp.up_proj.weight`")
                && e.contains("index 10")
                && e.contains("NaN"),
            "{e}"
        );
    }
    let mut o = QuantizeOptions::nf4();
    o.blocksize = 100;
    let e = load_pretrained_quantized::<B>(&dir, &o, &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("blocksize 100") && e.contains("power of two"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
