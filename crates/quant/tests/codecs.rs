//! Bit-exact parity with bitsandbytes 0.50.2 (CPU) on the fixtures of
//! `scripts/fixtures/make_quant_fixtures.py`: NF4/FP4 codes and absmax, double quantization
//! (offset, nested codes and scales), block-wise 8-bit, LLM.int8, and dequantized values.

use std::path::PathBuf;

use quant::{
    Absmax, Error, Lut8, QuantType, dequantize_4bit, dequantize_blockwise8, dynamic_map_signed,
    int8_vectorwise_dequant, int8_vectorwise_quant, quantize_4bit, quantize_blockwise8,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

struct Fixture {
    bytes: Vec<u8>,
    json: Value,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap();
        let json = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        Self { bytes, json }
    }
    fn raw(&self, key: &str) -> (Dtype, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("missing fixture tensor {key}"));
        (t.dtype(), t.data().to_vec())
    }
    fn f32(&self, key: &str) -> Vec<f32> {
        let (dt, b) = self.raw(key);
        assert_eq!(dt, Dtype::F32, "{key}");
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn u8(&self, key: &str) -> Vec<u8> {
        let (dt, b) = self.raw(key);
        assert_eq!(dt, Dtype::U8, "{key}");
        b
    }
    fn i8(&self, key: &str) -> Vec<i8> {
        let (dt, b) = self.raw(key);
        assert_eq!(dt, Dtype::I8, "{key}");
        b.into_iter().map(|v| v as i8).collect()
    }
    fn i64(&self, key: &str) -> Vec<i64> {
        let (dt, b) = self.raw(key);
        assert_eq!(dt, Dtype::I64, "{key}");
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Rounds f32 values to the fixture's storage dtype (bitsandbytes returns the input dtype).
fn to_dtype(v: &[f32], dtype: &str) -> Vec<f32> {
    match dtype {
        "bfloat16" => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
        "float16" => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

#[test]
fn code_tables_are_bitsandbytes_tables() {
    let fx = Fixture::load("blockwise4");
    for (qt, name) in [(QuantType::Nf4, "nf4"), (QuantType::Fp4, "fp4")] {
        let t = &fx.json["tables"][name];
        let want_code: Vec<String> = t["code_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        // FP4 nibble 8 is +0.0 in bitsandbytes' Python table.
        let got_code: Vec<String> = qt
            .code()
            .iter()
            .map(|v| format!("{:#010x}", if *v == 0.0 { 0 } else { v.to_bits() }))
            .collect();
        assert_eq!(got_code, want_code, "{name} code");
        let want_bounds: Vec<String> = t["bounds_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let got_bounds: Vec<String> = qt
            .bounds()
            .iter()
            .map(|v| format!("{:#010x}", v.to_bits()))
            .collect();
        assert_eq!(got_bounds, want_bounds, "{name} bounds");
    }
    let fx8 = Fixture::load("blockwise8");
    let want: Vec<u32> = fx8.json["dynamic_map_signed_f32_bits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    assert_eq!(bits(&dynamic_map_signed()), want);
    assert_eq!(bits(&fx8.f32("dynamic_map.signed")), want);
}

#[test]
fn blockwise4_matches_bitsandbytes_bit_for_bit() {
    let fx = Fixture::load("blockwise4");
    let cases = fx.json["cases"].as_array().unwrap();
    let mut checked = 0;
    for case in cases {
        let keys = &case["keys"];
        let name = case["prefix"].as_str().unwrap();
        let qt = match case["quant_type"].as_str().unwrap() {
            "nf4" => QuantType::Nf4,
            _ => QuantType::Fp4,
        };
        let dq = case["compress_statistics"].as_bool().unwrap();
        let blocksize = case["blocksize"].as_u64().unwrap() as usize;
        let input = fx.f32(keys["input"].as_str().unwrap());
        let q = quantize_4bit(&input, qt, blocksize, dq).unwrap();
        assert_eq!(
            q.packed,
            fx.u8(keys["packed"].as_str().unwrap()),
            "{name}: packed codes"
        );
        match &q.absmax {
            Absmax::F32(a) => assert_eq!(
                bits(a),
                bits(&fx.f32(keys["absmax"].as_str().unwrap())),
                "{name}: absmax"
            ),
            Absmax::Nested(n) => {
                assert_eq!(
                    n.offset.to_bits(),
                    fx.f32(keys["offset"].as_str().unwrap())[0].to_bits(),
                    "{name}: offset"
                );
                assert_eq!(
                    n.codes,
                    fx.u8(keys["absmax"].as_str().unwrap()),
                    "{name}: nested codes"
                );
                assert_eq!(
                    bits(&n.scales),
                    bits(&fx.f32(keys["nested_absmax"].as_str().unwrap())),
                    "{name}: nested absmax"
                );
                assert_eq!(
                    bits(&n.unpack().unwrap()),
                    bits(&fx.f32(keys["absmax_dequant"].as_str().unwrap())),
                    "{name}: dequantized absmax"
                );
            }
        }
        let deq = to_dtype(
            &dequantize_4bit(&q).unwrap(),
            case["dtype"].as_str().unwrap(),
        );
        let want = fx.f32(keys["dequant"].as_str().unwrap());
        // Compared as numbers: bitsandbytes' C kernel returns -0.0 for FP4's sign-bit zero
        // where its Python fallback returns +0.0; every other value must match exactly.
        assert_eq!(deq.len(), want.len(), "{name}: dequantized length");
        assert!(
            deq.iter().zip(&want).all(|(a, b)| a == b),
            "{name}: dequantized values"
        );
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} cases");
}

#[test]
fn blockwise8_matches_bitsandbytes_bit_for_bit() {
    let fx = Fixture::load("blockwise8");
    let map = dynamic_map_signed();
    let lut = Lut8::new(&map);
    for case in fx.json["cases"].as_array().unwrap() {
        let keys = &case["keys"];
        let name = case["case"].as_str().unwrap();
        let bs = case["blocksize"].as_u64().unwrap() as usize;
        let input = fx.f32(keys["input"].as_str().unwrap());
        let (codes, absmax) = quantize_blockwise8(&input, bs, &lut).unwrap();
        assert_eq!(
            codes,
            fx.u8(keys["codes"].as_str().unwrap()),
            "{name}: codes"
        );
        assert_eq!(
            bits(&absmax),
            bits(&fx.f32(keys["absmax"].as_str().unwrap())),
            "{name}: absmax"
        );
        let deq = to_dtype(
            &dequantize_blockwise8(&codes, &absmax, bs, &map).unwrap(),
            case["dtype"].as_str().unwrap(),
        );
        let want = fx.f32(keys["dequant"].as_str().unwrap());
        assert_eq!(deq.len(), want.len(), "{name}: dequantized length");
        assert!(
            deq.iter().zip(&want).all(|(a, b)| a == b),
            "{name}: dequantized values"
        );
    }
}

#[test]
fn int8_matches_bitsandbytes_bit_for_bit() {
    let fx = Fixture::load("int8");
    let mut checked = 0;
    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let mut names: Vec<String> = st
        .names()
        .iter()
        .filter(|n| n.ends_with(".CB"))
        .map(|n| n.to_string())
        .collect();
    names.sort();
    for cb_key in names {
        if cb_key.starts_with("linear8bitlt") {
            continue;
        }
        let prefix = cb_key.trim_end_matches(".CB");
        let (input_name, t) = prefix.rsplit_once(".t").unwrap();
        let threshold: f32 = t.parse().unwrap();
        let input = fx.f32(&format!("{input_name}.input"));
        let cols = st.tensor(&cb_key).unwrap().shape()[1];
        let rows = input.len() / cols;
        let q = int8_vectorwise_quant(&input, rows, cols, threshold).unwrap();
        assert_eq!(q.cb, fx.i8(&cb_key), "{prefix}: CB");
        assert_eq!(
            bits(&q.scb),
            bits(&fx.f32(&format!("{prefix}.SCB"))),
            "{prefix}: SCB"
        );
        if threshold > 0.0 {
            let want: Vec<usize> = fx
                .i64(&format!("{prefix}.outlier_cols"))
                .into_iter()
                .map(|c| c as usize)
                .collect();
            assert_eq!(
                q.outlier_cols.as_deref(),
                Some(&want[..]),
                "{prefix}: outlier columns"
            );
        }
        assert_eq!(
            bits(&int8_vectorwise_dequant(&q)),
            bits(&fx.f32(&format!("{prefix}.dequant"))),
            "{prefix}: dequant"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} int8 cases");
}

#[test]
fn bad_input_is_a_clear_error() {
    for bs in [0usize, 16, 48, 100, 8192] {
        assert_eq!(
            quantize_4bit(&[0.5; 64], QuantType::Nf4, bs, false).unwrap_err(),
            Error::Blocksize(bs)
        );
    }
    let err = quantize_4bit(&[0.0, 1.0, f32::NAN], QuantType::Nf4, 64, false).unwrap_err();
    assert!(matches!(err, Error::NonFinite { index: 2, .. }), "{err}");
    assert!(err.to_string().contains("index 2"));
    let err = int8_vectorwise_quant(&[1.0, f32::INFINITY], 1, 2, 6.0).unwrap_err();
    assert!(matches!(err, Error::NonFinite { index: 1, .. }));
    let mut q = quantize_4bit(&[0.1; 128], QuantType::Fp4, 64, false).unwrap();
    q.packed.pop();
    assert!(matches!(dequantize_4bit(&q), Err(Error::Shape(_))));
}

#[test]
fn nf4_with_double_quant_costs_about_4_127_bits_per_parameter() {
    let n = 4096 * 4096;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let q = quantize_4bit(&x, QuantType::Nf4, 64, true).unwrap();
    let Absmax::Nested(nested) = &q.absmax else {
        panic!("double quant")
    };
    let bytes = q.packed.len() + nested.codes.len() + 4 * nested.scales.len() + 4;
    let bits_per_param = 8.0 * bytes as f64 / n as f64;
    assert!((bits_per_param - 4.127).abs() < 0.001, "{bits_per_param}");
}
