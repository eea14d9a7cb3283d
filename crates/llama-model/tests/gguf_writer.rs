//! The GGUF writer: encoders byte-identical to gguf-py 0.19.0's `gguf.quants.quantize`, a model
//! written and read back unchanged (names, Q/K order, tokenizer metadata), and tokenizers carried
//! through Hugging Face's `tokenizer.json` back into GGUF metadata still passing llama.cpp's
//! test vectors.

use std::path::{Path, PathBuf};

use llama_model::gguf::{
    FileType, GgmlType, GgufFile, GgufWriter, export_gguf, quantize, tokenizer_files,
    tokenizer_from_gguf, tokenizer_metadata_from_gguf, tokenizer_metadata_from_hf,
};
use llama_model::load_pretrained;

type B = burn_flex::Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gguf-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn encoders_match_gguf_py_bytes() {
    let file = GgufFile::open(fixture("dequant.gguf")).unwrap();
    for (name, ty) in [
        ("F32", GgmlType::F32),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
    ] {
        let source = file.dequantize(&format!("{name}.source")).unwrap();
        let want = file.tensor_bytes(file.tensor(&format!("{name}.weight")).unwrap());
        let got = quantize(ty, &source).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{name}: {differ} bytes differ from gguf-py");
    }
    let err = quantize(GgmlType::Q2_K, &[0.0; 256]).unwrap_err();
    assert!(err.contains("Q2_K"), "{err}");
    let err = quantize(GgmlType::Q8_0, &[0.0; 33]).unwrap_err();
    assert!(err.contains("33"), "{err}");
}

#[test]
fn model_round_trips_through_the_writer() {
    let src = GgufFile::open(fixture("tiny.gguf")).unwrap();
    let model = load_pretrained::<B>(fixture("tiny.gguf"), &Default::default()).unwrap();
    let out = temp("tiny-f16.gguf");
    export_gguf(
        &model,
        tokenizer_metadata_from_gguf(&src),
        "tiny",
        FileType::F16,
        &out,
    )
    .unwrap();
    let back = GgufFile::open(&out).unwrap();
    // The fixture stores matrices as F16 and norms as F32, as the writer does: every tensor
    // comes back byte for byte (names and llama.cpp's Q/K row order included).
    assert_eq!(back.tensors().len(), src.tensors().len());
    for t in src.tensors() {
        let b = back
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((b.ggml_type, &b.dims), (t.ggml_type, &t.dims), "{}", t.name);
        assert!(
            back.tensor_bytes(b) == src.tensor_bytes(t),
            "{} differs",
            t.name
        );
    }
    for (k, v) in src.metadata() {
        if k.starts_with("tokenizer.") || k.starts_with("llama.") {
            assert_eq!(back.get(k), Some(v), "{k}");
        }
    }
    // A quantized export loads and stays close to the float model.
    let q = temp("tiny-q8.gguf");
    export_gguf(
        &model,
        tokenizer_metadata_from_gguf(&src),
        "tiny",
        FileType::Q8_0,
        &q,
    )
    .unwrap();
    let back = GgufFile::open(&q).unwrap();
    assert_eq!(
        back.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert_eq!(
        back.tensor("blk.0.attn_norm.weight").unwrap().ggml_type,
        GgmlType::F32
    );
    load_pretrained::<B>(&q, &Default::default()).unwrap();
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(q);
}

/// Writes the Hugging Face tokenizer files of `gguf` to a directory, reads them back as GGUF
/// metadata and writes a metadata-only GGUF from them.
fn through_hf(gguf: &Path, tag: &str) -> PathBuf {
    let files = tokenizer_files(&GgufFile::open(gguf).unwrap()).unwrap();
    let dir = temp(tag);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), files.tokenizer_json.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        files.tokenizer_config.to_string(),
    )
    .unwrap();
    let meta = tokenizer_metadata_from_hf(&dir).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k, v).unwrap();
    }
    let out = dir.join("tokenizer.gguf");
    w.write(&out, |_| unreachable!("no tensors")).unwrap();
    out
}

#[test]
fn tokenizers_survive_tokenizer_json_and_back() {
    let tiny = through_hf(&fixture("tiny.gguf"), "tiny-tok");
    let (a, b) = (
        GgufFile::open(fixture("tiny.gguf")).unwrap(),
        GgufFile::open(&tiny).unwrap(),
    );
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ] {
        assert_eq!(b.get(key), a.get(key), "{key}");
    }
    // The SentencePiece vocabulary keeps passing llama.cpp's vectors after the trip through
    // tokenizer.json (scores rebuilt from the merge order).
    let spm = through_hf(&fixture("vocab/ggml-vocab-llama-spm.gguf"), "spm-tok");
    let tok = tokenizer_from_gguf(&GgufFile::open(&spm).unwrap()).unwrap();
    let inp = std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-spm.gguf.out")).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let mut matched = 0;
    for (text, line) in texts.iter().zip(out.lines()) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
        matched += 1;
    }
    assert_eq!(matched, 46);
}

fn models(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

#[test]
fn hf_checkpoint_with_adapter_exports_and_reloads() {
    use burn::prelude::*;
    use llama_model::{ModelInput, load_adapter, load_tokenizer, merge_adapters};
    use llama_tokenizer::LlamaTokenizer;
    let dir = models("mha_untied");
    let mut model = load_pretrained::<B>(&dir, &Default::default()).unwrap();
    let adapter = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft/tests/fixtures/lora_qv");
    load_adapter(&mut model, &adapter).unwrap();
    assert_eq!(merge_adapters(&mut model, true), 4);
    let out = temp("lora-f32.gguf");
    let meta = tokenizer_metadata_from_hf(&dir).unwrap();
    export_gguf(&model, meta, "mha", FileType::F32, &out).unwrap();
    let back = load_pretrained::<B>(&out, &Default::default()).unwrap();
    let ids: Vec<i64> = (0..12).map(|i| (i * 37 % 500) as i64).collect();
    let x = || {
        ModelInput::new(Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids.clone(), [1, 12]),
            &Default::default(),
        ))
    };
    let a: Vec<f32> = model.forward(x(), None).into_data().iter::<f32>().collect();
    let b: Vec<f32> = back.forward(x(), None).into_data().iter::<f32>().collect();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "merged model vs its GGUF export: {diff}");
    // The Llama-3-style tokenizer.json became `gpt2`/`llama-bpe` metadata that tokenizes alike.
    let hf = LlamaTokenizer::from_dir(&dir).unwrap();
    let gg = load_tokenizer(&out).unwrap();
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(
        file.get_str("tokenizer.ggml.pre").unwrap(),
        Some("llama-bpe")
    );
    for text in ["Hello world", "  it's 12345 ok\n\nyes", "ünïcode 🦙"] {
        assert_eq!(
            gg.encode(text, false).unwrap(),
            hf.encode(text, false).unwrap(),
            "{text:?}"
        );
    }
    let _ = std::fs::remove_file(out);
}

#[test]
fn llama3_rope_scaling_goes_through_rope_freqs() {
    use burn::prelude::*;
    use llama_model::ModelInput;
    // The Llama 3 fixture (RoPE factor 8, low 1, high 4, original context 16) written as GGUF
    // carries `rope_freqs.weight`; read back, the scaling is recovered and the logits stay
    // transformers' (expected.safetensors of the fixture).
    let dir = models("gqa_llama3_tied");
    let model = load_pretrained::<B>(&dir, &Default::default()).unwrap();
    let out = temp("llama3.gguf");
    let meta = tokenizer_metadata_from_hf(&dir).unwrap();
    export_gguf(&model, meta, "llama3", FileType::F32, &out).unwrap();
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.tensor("rope_freqs.weight").unwrap().dims, vec![16]);
    let back = load_pretrained::<B>(&out, &Default::default()).unwrap();
    assert_eq!(back.config().rope_scaling, model.config().rope_scaling);
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let ids: Vec<i64> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let rows = 2;
    let n = ids.len() / rows;
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, n]), &Default::default());
    let got: Vec<f32> = back
        .forward(ModelInput::new(x), None)
        .into_data()
        .iter::<f32>()
        .collect();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "logits vs transformers: {diff}");
    let _ = std::fs::remove_file(out);
}
