//! K-quant writing checked against llama.cpp itself (llama-cpp-python 0.3.36's llama.cpp):
//! - `kquant_vectors.gguf`: 14 inputs encoded by `quantize_row_{q4_K,q5_K,q6_K,q5_0,q5_1,q8_0}_ref`
//!   of its `libggml-base.so`; ours must give the same bytes.
//! - `kquant_mix.json`: what `llama-quantize` wrote for two tiny llama models (values from a
//!   splitmix64 generator regenerated here) as Q4_K_M, Q5_K_M, Q6_K, Q4_K_S and Q5_K_S: every
//!   tensor's type (ours from `llama_cpp_tensor_types`) and the SHA-256 of its bytes (ours from
//!   `quantize`).
//!
//! Both made by `scripts/fixtures/make_kquant_fixtures.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use llama_model::gguf::{FileType, GgmlType, GgufFile, MixModel, llama_cpp_tensor_types, quantize};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

#[test]
fn quantizers_match_llama_cpp_bytes() {
    let file = GgufFile::open(fixture("kquant_vectors.gguf")).unwrap();
    let types = [
        ("q4_K", GgmlType::Q4_K),
        ("q5_K", GgmlType::Q5_K),
        ("q6_K", GgmlType::Q6_K),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
        ("q8_0", GgmlType::Q8_0),
    ];
    let mut checked = 0;
    for t in file.tensors() {
        let Some(case) = t.name.strip_prefix("in.") else {
            continue;
        };
        let x = file.dequantize(&t.name).unwrap();
        for (prefix, ty) in types {
            let info = file.tensor(&format!("{prefix}.{case}")).unwrap();
            assert_eq!(info.ggml_type, ty);
            let want = file.tensor_bytes(info);
            let got = quantize(ty, &x).unwrap();
            assert_eq!(got.len(), want.len(), "{prefix}.{case}");
            let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
            assert!(
                differ.is_empty(),
                "{prefix}.{case}: {} of {} bytes differ from llama.cpp, first at {}",
                differ.len(),
                got.len(),
                differ[0]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 14 * types.len());
}

/// splitmix64, as the fixture script.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The script's values: (sum of four 24-bit uniforms - 2) * 0.05, in f64, rounded once to f32.
fn values(name: &str, n: usize) -> Vec<f32> {
    let mut state = fnv1a(name);
    (0..n)
        .map(|_| {
            let s: f64 = (0..4)
                .map(|_| (splitmix64(&mut state) >> 40) as f64 / 16_777_216.0)
                .sum();
            ((s - 2.0) * 0.05) as f32
        })
        .collect()
}

fn ggml_name(ty: GgmlType) -> String {
    format!("{ty:?}")
}

#[test]
fn type_mix_matches_llama_quantize() {
    let text = std::fs::read_to_string(fixture("kquant_mix.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut cache: HashMap<(String, String, String), String> = HashMap::new();
    let mut checked = 0;
    for m in fx["models"].as_array().unwrap() {
        let g = |k: &str| m[k].as_u64().unwrap() as usize;
        let (hidden, n_head, n_kv, head_dim, ff, n_layer, vocab) = (
            g("hidden"),
            g("n_head"),
            g("n_kv"),
            g("head_dim"),
            g("ff"),
            g("n_layer"),
            g("vocab"),
        );
        let mut tensors: Vec<(String, Vec<usize>)> =
            vec![("token_embd.weight".into(), vec![vocab, hidden])];
        for i in 0..n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            tensors.extend([
                (p("attn_norm"), vec![hidden]),
                (p("attn_q"), vec![n_head * head_dim, hidden]),
                (p("attn_k"), vec![n_kv * head_dim, hidden]),
                (p("attn_v"), vec![n_kv * head_dim, hidden]),
                (p("attn_output"), vec![hidden, n_head * head_dim]),
                (p("ffn_norm"), vec![hidden]),
                (p("ffn_gate"), vec![ff, hidden]),
                (p("ffn_up"), vec![ff, hidden]),
                (p("ffn_down"), vec![hidden, ff]),
            ]);
        }
        tensors.push(("output_norm.weight".into(), vec![hidden]));
        if !m["tied"].as_bool().unwrap() {
            tensors.push(("output.weight".into(), vec![vocab, hidden]));
        }
        let model = MixModel {
            n_layer,
            n_head,
            n_head_kv: n_kv,
        };
        for (ft, want) in m["ftypes"].as_object().unwrap() {
            let ftype: FileType = ft.parse().unwrap();
            assert_eq!(
                want["file_type"].as_u64().unwrap() as u32,
                ftype.id(),
                "{ft}"
            );
            let ours = llama_cpp_tensor_types(ftype, model, &tensors);
            let want: HashMap<&str, (&str, &str)> = want["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap(),
                        (t["type"].as_str().unwrap(), t["sha256"].as_str().unwrap()),
                    )
                })
                .collect();
            assert_eq!(want.len(), tensors.len(), "{ft}: tensor count");
            for ((name, shape), ty) in tensors.iter().zip(&ours) {
                let ty = ty.unwrap_or(GgmlType::F32);
                let (want_ty, want_sha) = want[name.as_str()];
                assert_eq!(ggml_name(ty), want_ty, "{} {ft}: {name} type", m["name"]);
                let key = (m["name"].to_string(), name.clone(), want_ty.to_string());
                let sha = cache.entry(key).or_insert_with(|| {
                    let x = values(name, shape.iter().product());
                    let bytes = quantize(ty, &x).unwrap();
                    format!("{:x}", Sha256::digest(&bytes))
                });
                assert_eq!(
                    sha, want_sha,
                    "{} {ft}: {name} ({want_ty}) bytes",
                    m["name"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked}");
}
