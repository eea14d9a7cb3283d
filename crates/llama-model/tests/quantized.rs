//! bitsandbytes checkpoints: transformers-written NF4+DQ, FP4 and LLM.int8 fixtures load and match
//! transformers' logits; quantizing the float source while loading reproduces the files
//! transformers + bitsandbytes wrote, tensor for tensor, byte for byte; saved checkpoints reload.
//! Fixtures: `scripts/fixtures/make_quant_fixtures.py` (crates/quant/tests/fixtures/models).

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::max_abs_diff;
use llama_model::{
    Llama, ModelInput, Projection, QuantizeOptions, SaveDtype, load_pretrained,
    load_pretrained_quantized, save_checkpoint,
};
use quant::{BnbMethod, QuantType};
use safetensors::SafeTensors;

fn qdir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../quant/tests/fixtures/models")
        .join(name)
}

fn source_dir() -> PathBuf {
    common::model_dir("mha_untied")
}

struct Expected(Vec<u8>);

impl Expected {
    fn load(name: &str) -> Self {
        Self(std::fs::read(qdir(name).join("expected.safetensors")).unwrap())
    }
    fn f32(&self, key: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        st.tensor(key)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn ids(&self) -> (Vec<i64>, [usize; 2]) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor("input_ids").unwrap();
        let v = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, [t.shape()[0], t.shape()[1]])
    }
}

fn logits<B: quant::QuantBackend>(model: &Llama<B>, exp: &Expected) -> Vec<f32> {
    let (ids, shape) = exp.ids();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &Default::default());
    model
        .forward(ModelInput::new(input), None)
        .into_data()
        .iter::<f32>()
        .collect()
}

fn count_quantized<B: burn::prelude::Backend>(model: &Llama<B>) -> usize {
    model
        .projections()
        .iter()
        .filter(|(name, p)| name != "lm_head" && matches!(p, Projection::Quant(_)))
        .count()
}

/// (fixture, reference logits key): 4-bit logits are bitsandbytes' own CPU forward, which equals
/// dequantize + f32 matmul; for int8 the reference is the dequantized-weight model (the LLM.int8
/// kernel also quantizes activations).
const CASES: [(&str, &str); 3] = [
    ("mha_untied_nf4_dq", "logits"),
    ("mha_untied_fp4", "logits"),
    ("mha_untied_int8", "logits_dequant_ref"),
];

fn transformers_checkpoints_match<B: quant::QuantBackend>() {
    for (name, key) in CASES {
        let model = load_pretrained::<B>(qdir(name), &Default::default()).unwrap();
        assert_eq!(
            count_quantized(&model),
            7 * model.layers.len(),
            "{name}: every projection quantized"
        );
        assert!(
            matches!(model.lm_head, Some(Projection::Dense(_))),
            "{name}: lm_head stays float"
        );
        let exp = Expected::load(name);
        let diff = max_abs_diff(&logits(&model, &exp), &exp.f32(key));
        eprintln!("{name}: max |logit diff| vs transformers = {diff:e}");
        assert!(diff <= 1e-4, "{name}: {diff}");
    }
}

#[test]
fn transformers_checkpoints_match_flex() {
    transformers_checkpoints_match::<burn_flex::Flex>();
}

#[test]
fn transformers_checkpoints_match_ndarray() {
    transformers_checkpoints_match::<burn_ndarray::NdArray<f32>>();
}

fn options(name: &str) -> QuantizeOptions {
    let mut o = QuantizeOptions::nf4();
    match name {
        "mha_untied_nf4_dq" => {}
        "mha_untied_fp4" => {
            o.method = BnbMethod::FourBit(QuantType::Fp4);
            o.double_quant = false;
        }
        "mha_untied_int8" => o.method = BnbMethod::Int8,
        _ => unreachable!(),
    }
    o
}

/// Every tensor (name, dtype, shape, bytes) of a safetensors file.
fn tensors(path: &std::path::Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn quantizing_while_loading_writes_what_transformers_wrote() {
    type B = burn_flex::Flex;
    for (name, _) in CASES {
        let model =
            load_pretrained_quantized::<B>(source_dir(), &options(name), &Default::default())
                .unwrap();
        let out = tempdir(name);
        save_checkpoint(&model, &out, SaveDtype::F32, None).unwrap();
        let ours = tensors(&out.join("model.safetensors"));
        let theirs = tensors(&qdir(name).join("model.safetensors"));
        assert_eq!(ours.len(), theirs.len(), "{name}: tensor count");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(
                (&a.0, &a.1, &a.2),
                (&b.0, &b.1, &b.2),
                "{name}: key/dtype/shape"
            );
            if a.3 != b.3 {
                let d: Vec<_> =
                    a.3.iter()
                        .zip(&b.3)
                        .enumerate()
                        .filter(|(_, (x, y))| x != y)
                        .map(|(i, (x, y))| (i, *x as i8, *y as i8))
                        .take(8)
                        .collect();
                let n = a.3.iter().zip(&b.3).filter(|(x, y)| x != y).count();
                panic!("{name}: bytes of {} differ: {n} e.g. {d:?}", a.0);
            }
        }
        // The config carries transformers' quantization_config (our skip list names lm_head).
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let theirs: serde_json::Value =
            serde_json::from_slice(&std::fs::read(qdir(name).join("config.json")).unwrap())
                .unwrap();
        let mut q = cfg["quantization_config"].clone();
        assert_eq!(q["llm_int8_skip_modules"], serde_json::json!(["lm_head"]));
        q["llm_int8_skip_modules"] = serde_json::Value::Null;
        assert_eq!(q, theirs["quantization_config"], "{name}");
        // And it reloads to the same logits.
        let reloaded = load_pretrained::<B>(&out, &Default::default()).unwrap();
        let exp = Expected::load(name);
        assert_eq!(
            logits(&reloaded, &exp),
            logits(&model, &exp),
            "{name}: reload"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "llama-model-quantized-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn skip_list_and_lm_head_option() {
    type B = burn_flex::Flex;
    let mut o = QuantizeOptions::nf4();
    o.skip_modules = vec!["down_proj".into(), "layers.0.self_attn".into()];
    o.quantize_lm_head = true;
    let model = load_pretrained_quantized::<B>(source_dir(), &o, &Default::default()).unwrap();
    let l0 = &model.layers[0];
    assert!(matches!(l0.self_attn.q_proj, Projection::Dense(_)));
    assert!(matches!(l0.mlp.down_proj, Projection::Dense(_)));
    assert!(matches!(l0.mlp.up_proj, Projection::Quant(_)));
    assert!(matches!(
        model.layers[1].self_attn.q_proj,
        Projection::Quant(_)
    ));
    assert!(matches!(model.lm_head, Some(Projection::Quant(_))));
}

#[test]
fn bf16_compute_dtype_stays_close_to_f32() {
    type B = burn_flex::Flex;
    let name = "mha_untied_nf4_dq";
    let mut model = load_pretrained::<B>(qdir(name), &Default::default()).unwrap();
    let exp = Expected::load(name);
    let f32_logits = logits(&model, &exp);
    model.set_quant_compute_dtype(Some(burn::tensor::FloatDType::BF16));
    let bf16_logits = logits(&model, &exp);
    let diff = max_abs_diff(&bf16_logits, &f32_logits);
    eprintln!("bf16 gemm vs f32: max |logit diff| = {diff:e}");
    assert!(diff > 0.0 && diff < 0.05, "{diff}");
}
