//! Helpers shared by the integration tests: fixture paths and reading the reference tensors that
//! `scripts/fixtures/make_llama_fixtures.py` wrote with transformers.
#![allow(dead_code)]

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

pub type B = burn_ndarray::NdArray<f32>;
pub const DEVICE: burn_ndarray::NdArrayDevice = burn_ndarray::NdArrayDevice::Cpu;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub const MODELS: [&str; 4] = ["mha_untied", "gqa_llama3_tied", "sharded_bias", "bf16"];

/// Reference tensors of one model (`expected.safetensors`).
pub struct Expected {
    bytes: Vec<u8>,
    pub json: serde_json::Value,
}

impl Expected {
    pub fn load(name: &str) -> Self {
        let dir = model_dir(name);
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        Self { bytes, json }
    }

    pub fn shape(&self, key: &str) -> Vec<usize> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap()
            .tensor(key)
            .unwrap()
            .shape()
            .to_vec()
    }

    pub fn f32(&self, key: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(key).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "{key}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn i64(&self, key: &str) -> Vec<i64> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(key).unwrap();
        assert_eq!(t.dtype(), Dtype::I64, "{key}");
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn rows_u32(&self, key: &str) -> Vec<Vec<u32>> {
        let shape = self.shape(key);
        let cols = shape[1];
        self.i64(key)
            .chunks(cols)
            .map(|r| r.iter().map(|&t| t as u32).collect())
            .collect()
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
