//! The checkpoint layout transformers + bitsandbytes write and read.
//!
//! 4-bit, under a linear's prefix `P` (e.g. `model.layers.0.self_attn.q_proj`):
//! `P.weight` (u8 `[ceil(n/2), 1]`), `P.weight.absmax` (f32 `[blocks]`, or u8 codes with double
//! quantization), `P.weight.quant_map` (f32 `[16]`), `P.weight.nested_absmax` (f32),
//! `P.weight.nested_quant_map` (f32 `[256]`) and `P.weight.quant_state.bitsandbytes__{nf4|fp4}`
//! (u8 bytes of a JSON object: quant_type, blocksize, dtype, shape, nested_*).
//! LLM.int8: `P.weight` (i8 `[out, in]`), `P.SCB` (f32 `[out]`), `P.weight_format` (u8 scalar 0).
//! `config.json` carries a `quantization_config` object ([`BnbConfig`]).

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::blockwise4::{
    Absmax, NESTED_BLOCKSIZE, NestedAbsmax, QuantType, Quantized4, check_blocksize,
};
use crate::codebook::dynamic_map_signed;
use crate::error::{Error, Result};
use crate::int8::Int8Rows;

/// A tensor as stored in a safetensors file: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Stored dtype.
    pub dtype: Dtype,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Little-endian data.
    pub bytes: Vec<u8>,
}

fn bad(key: &str, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        key: key.to_string(),
        message: message.into(),
    }
}

impl RawTensor {
    /// f32 values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// u8 values.
    pub fn from_u8(shape: Vec<usize>, values: Vec<u8>) -> Self {
        Self {
            dtype: Dtype::U8,
            shape,
            bytes: values,
        }
    }

    /// i8 values.
    pub fn from_i8(shape: Vec<usize>, values: &[i8]) -> Self {
        Self {
            dtype: Dtype::I8,
            shape,
            bytes: values.iter().map(|&v| v as u8).collect(),
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn expect_dtype(&self, key: &str, dtype: Dtype) -> Result<()> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(bad(
                key,
                format!("stored as {:?}, expected {dtype:?}", self.dtype),
            ))
        }
    }

    /// The values of an F32 tensor (`key` names it in errors).
    pub fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        self.expect_dtype(key, Dtype::F32)?;
        Ok(self
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The bytes of a U8 tensor.
    pub fn u8s(&self, key: &str) -> Result<Vec<u8>> {
        self.expect_dtype(key, Dtype::U8)?;
        Ok(self.bytes.clone())
    }

    /// The values of an I8 tensor.
    pub fn i8s(&self, key: &str) -> Result<Vec<i8>> {
        self.expect_dtype(key, Dtype::I8)?;
        Ok(self.bytes.iter().map(|&b| b as i8).collect())
    }
}

/// The JSON object stored (as u8 bytes) under `weight.quant_state.bitsandbytes__{nf4|fp4}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantState4 {
    /// `"nf4"` or `"fp4"`.
    pub quant_type: String,
    /// Elements per absmax block.
    pub blocksize: usize,
    /// Dtype of the original weight (`"float32"`, `"bfloat16"`, `"float16"`).
    pub dtype: String,
    /// Original `[out, in]` shape.
    pub shape: Vec<usize>,
    /// 256 with double quantization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_blocksize: Option<usize>,
    /// `"float32"` with double quantization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_dtype: Option<String>,
    /// The mean subtracted from the absmax before quantizing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_offset: Option<f64>,
}

/// Python's `repr` of a float (shortest round trip; exponent form below 1e-4 or from 1e16 up),
/// which is what `json.dumps` writes.
fn python_float(v: f64) -> String {
    if v == 0.0 || (1e-4..1e16).contains(&v.abs()) {
        let s = format!("{v}");
        if s.contains('.') || s.contains("inf") || s.contains("NaN") {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
        format!("{mantissa}e{sign}{digits:0>2}")
    }
}

impl QuantState4 {
    /// The bytes bitsandbytes writes: `json.dumps` with its default separators, keys in its order.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]",
            self.quant_type,
            self.blocksize,
            self.dtype,
            self.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let (Some(nb), Some(nd), Some(off)) = (
            self.nested_blocksize,
            &self.nested_dtype,
            self.nested_offset,
        ) {
            s.push_str(&format!(
                ", \"nested_blocksize\": {nb}, \"nested_dtype\": \"{nd}\", \"nested_offset\": {}",
                python_float(off)
            ));
        }
        s.push('}');
        s.into_bytes()
    }
}

fn quant_type_of(name: &str, key: &str) -> Result<QuantType> {
    name.parse().map_err(|e: String| bad(key, e))
}

/// The quant-state key of a 4-bit weight under `prefix`, for each type.
pub fn quant_state_keys(prefix: &str) -> [(QuantType, String); 2] {
    [
        (
            QuantType::Nf4,
            format!("{prefix}.weight.quant_state.bitsandbytes__nf4"),
        ),
        (
            QuantType::Fp4,
            format!("{prefix}.weight.quant_state.bitsandbytes__fp4"),
        ),
    ]
}

/// Reads the 4-bit weight stored under `prefix` whose original shape must be `[out, in]`.
/// `take(key)` returns the stored tensor or `None` when absent. Every disagreement between the
/// quant state, the packed codes and the scales is an error naming the key.
pub fn read_4bit(
    prefix: &str,
    state_key: &str,
    expected: [usize; 2],
    take: &mut dyn FnMut(&str) -> Result<Option<RawTensor>>,
) -> Result<Quantized4> {
    let mut need = |suffix: &str| -> Result<(String, RawTensor)> {
        let key = format!("{prefix}.{suffix}");
        match take(&key)? {
            Some(t) => Ok((key, t)),
            None => Err(bad(
                &key,
                "missing (the 4-bit weight under this prefix needs it)",
            )),
        }
    };
    let (skey, state) = need(
        state_key
            .strip_prefix(&format!("{prefix}."))
            .unwrap_or(state_key),
    )?;
    let text = state.u8s(&skey)?;
    let state: QuantState4 = serde_json::from_slice(&text)
        .map_err(|e| bad(&skey, format!("invalid quant state JSON: {e}")))?;
    let quant_type = quant_type_of(&state.quant_type, &skey)?;
    if !skey.ends_with(quant_type.name()) {
        return Err(bad(
            &skey,
            format!(
                "quant state says \"{}\" but the key names another type",
                state.quant_type
            ),
        ));
    }
    check_blocksize(state.blocksize).map_err(|e| bad(&skey, e.to_string()))?;
    if state.shape != expected {
        return Err(bad(
            &skey,
            format!(
                "weight shape {:?}, expected {expected:?} from config.json",
                state.shape
            ),
        ));
    }
    let numel = expected[0] * expected[1];
    let blocks = numel.div_ceil(state.blocksize);

    let (wkey, w) = need("weight")?;
    let packed = w.u8s(&wkey)?;
    if packed.len() != numel.div_ceil(2)
        || !(w.shape == [numel.div_ceil(2), 1] || w.shape == [numel.div_ceil(2)])
    {
        return Err(bad(
            &wkey,
            format!(
                "packed shape {:?}, expected [{}, 1] for a {expected:?} weight",
                w.shape,
                numel.div_ceil(2)
            ),
        ));
    }
    let (qkey, qmap) = need("weight.quant_map")?;
    let qmap = qmap.f32s(&qkey)?;
    if qmap.as_slice() != quant_type.code().as_slice() {
        return Err(bad(
            &qkey,
            format!("quant_map is not bitsandbytes' {} table", quant_type.name()),
        ));
    }
    let (akey, absmax) = need("weight.absmax")?;
    if absmax.numel() != blocks {
        return Err(bad(
            &akey,
            format!(
                "{} absmax values, expected {blocks} for {numel} elements in blocks of {}",
                absmax.numel(),
                state.blocksize
            ),
        ));
    }
    let absmax = match (
        state.nested_blocksize,
        &state.nested_dtype,
        state.nested_offset,
    ) {
        (None, None, None) => Absmax::F32(absmax.f32s(&akey)?),
        (Some(NESTED_BLOCKSIZE), Some(dt), Some(offset)) if dt == "float32" => {
            let codes = absmax.u8s(&akey)?;
            let (nkey, nested) = need("weight.nested_absmax")?;
            let scales = nested.f32s(&nkey)?;
            if scales.len() != blocks.div_ceil(NESTED_BLOCKSIZE) {
                return Err(bad(
                    &nkey,
                    format!(
                        "{} nested scales, expected {}",
                        scales.len(),
                        blocks.div_ceil(NESTED_BLOCKSIZE)
                    ),
                ));
            }
            let (mkey, map) = need("weight.nested_quant_map")?;
            if map.f32s(&mkey)?.as_slice() != dynamic_map_signed().as_slice() {
                return Err(bad(
                    &mkey,
                    "nested_quant_map is not bitsandbytes' signed dynamic map",
                ));
            }
            Absmax::Nested(NestedAbsmax {
                codes,
                offset: offset as f32,
                scales,
            })
        }
        _ => {
            return Err(bad(
                &skey,
                "double quantization needs nested_blocksize 256, nested_dtype \"float32\" and nested_offset together",
            ));
        }
    };
    Ok(Quantized4 {
        quant_type,
        blocksize: state.blocksize,
        numel,
        packed,
        absmax,
    })
}

/// The tensors of a 4-bit weight under their bitsandbytes suffixes (`weight`, `weight.absmax`, ...).
/// `dtype` is the original weight's dtype name for the quant state (`"float32"`, `"bfloat16"`).
pub fn write_4bit(q: &Quantized4, shape: [usize; 2], dtype: &str) -> Vec<(String, RawTensor)> {
    let blocks = q.numel.div_ceil(q.blocksize);
    let mut out = vec![(
        "weight".to_string(),
        RawTensor::from_u8(vec![q.packed.len(), 1], q.packed.clone()),
    )];
    let mut state = QuantState4 {
        quant_type: q.quant_type.name().into(),
        blocksize: q.blocksize,
        dtype: dtype.into(),
        shape: shape.to_vec(),
        nested_blocksize: None,
        nested_dtype: None,
        nested_offset: None,
    };
    match &q.absmax {
        Absmax::F32(a) => out.push(("weight.absmax".into(), RawTensor::from_f32(vec![blocks], a))),
        Absmax::Nested(n) => {
            out.push((
                "weight.absmax".into(),
                RawTensor::from_u8(vec![blocks], n.codes.clone()),
            ));
            out.push((
                "weight.nested_absmax".into(),
                RawTensor::from_f32(vec![n.scales.len()], &n.scales),
            ));
            out.push((
                "weight.nested_quant_map".into(),
                RawTensor::from_f32(vec![256], &dynamic_map_signed()),
            ));
            state.nested_blocksize = Some(NESTED_BLOCKSIZE);
            state.nested_dtype = Some("float32".into());
            state.nested_offset = Some(f64::from(n.offset));
        }
    }
    out.push((
        "weight.quant_map".into(),
        RawTensor::from_f32(
            vec![16],
            &q.quant_type.code().map(|v| if v == 0.0 { 0.0 } else { v }),
        ),
    ));
    let bytes = state.to_json_bytes();
    out.push((
        format!("weight.quant_state.bitsandbytes__{}", q.quant_type.name()),
        RawTensor::from_u8(vec![bytes.len()], bytes),
    ));
    out
}

/// Reads the LLM.int8 weight under `prefix` (`weight` i8, `SCB`, optional `weight_format`).
pub fn read_int8(
    prefix: &str,
    expected: [usize; 2],
    take: &mut dyn FnMut(&str) -> Result<Option<RawTensor>>,
) -> Result<Int8Rows> {
    let wkey = format!("{prefix}.weight");
    let w = take(&wkey)?.ok_or_else(|| bad(&wkey, "missing"))?;
    if w.shape != expected {
        return Err(bad(
            &wkey,
            format!("int8 weight shape {:?}, expected {expected:?}", w.shape),
        ));
    }
    let cb = w.i8s(&wkey)?;
    let skey = format!("{prefix}.SCB");
    let scb = take(&skey)?.ok_or_else(|| bad(&skey, "missing (row scales of the int8 weight)"))?;
    if scb.shape != [expected[0]] {
        return Err(bad(
            &skey,
            format!("shape {:?}, expected [{}]", scb.shape, expected[0]),
        ));
    }
    let scb = scb.f32s(&skey)?;
    let fkey = format!("{prefix}.weight_format");
    if let Some(f) = take(&fkey)? {
        let v = f.u8s(&fkey)?;
        if v.as_slice() != [0] {
            return Err(bad(
                &fkey,
                format!("weight_format {v:?}; only 0 (\"row\") is supported"),
            ));
        }
    }
    Ok(Int8Rows {
        cb,
        scb,
        outlier_cols: None,
        rows: expected[0],
        cols: expected[1],
    })
}

/// The tensors of an LLM.int8 weight under their suffixes (`weight`, `SCB`, `weight_format`).
pub fn write_int8(q: &Int8Rows) -> Vec<(String, RawTensor)> {
    vec![
        (
            "weight".into(),
            RawTensor::from_i8(vec![q.rows, q.cols], &q.cb),
        ),
        ("SCB".into(), RawTensor::from_f32(vec![q.rows], &q.scb)),
        ("weight_format".into(), RawTensor::from_u8(vec![], vec![0])),
    ]
}

/// The quantization method of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnbMethod {
    /// NF4 or FP4 blocks.
    FourBit(QuantType),
    /// LLM.int8.
    Int8,
}

impl std::str::FromStr for BnbMethod {
    type Err = String;
    /// `nf4`, `fp4` or `int8` (LLM.int8); anything else is an error naming the value and the
    /// choices.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "int8" => Ok(Self::Int8),
            _ => s.parse().map(Self::FourBit).map_err(|_| {
                format!(
                    "unknown quantization method \"{s}\"; expected \"nf4\", \"fp4\" or \"int8\""
                )
            }),
        }
    }
}

impl std::fmt::Display for BnbMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FourBit(t) => f.write_str(t.name()),
            Self::Int8 => f.write_str("int8"),
        }
    }
}

/// The `quantization_config` of `config.json` (transformers' `BitsAndBytesConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct BnbConfig {
    /// 4-bit type or int8.
    pub method: BnbMethod,
    /// `bnb_4bit_use_double_quant`.
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype` (`"float32"`, `"bfloat16"`, `"float16"`).
    pub compute_dtype: String,
    /// `llm_int8_threshold`.
    pub int8_threshold: f32,
    /// `llm_int8_skip_modules`: module names kept in float.
    pub skip_modules: Option<Vec<String>>,
}

impl BnbConfig {
    /// Parses a `quantization_config` object. Only `quant_method: "bitsandbytes"` is understood;
    /// anything else (GPTQ, AWQ, ...) is an error naming it.
    pub fn from_json(v: &Value) -> Result<Self> {
        let key = "quantization_config";
        let method = v
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("bitsandbytes");
        if method != "bitsandbytes" {
            return Err(bad(
                key,
                format!("quant_method \"{method}\" is not supported; expected \"bitsandbytes\""),
            ));
        }
        let flag = |name: &str| v.get(name).and_then(Value::as_bool).unwrap_or(false);
        let (four, eight) = (
            flag("load_in_4bit") || flag("_load_in_4bit"),
            flag("load_in_8bit") || flag("_load_in_8bit"),
        );
        let qt = v
            .get("bnb_4bit_quant_type")
            .and_then(Value::as_str)
            .unwrap_or("fp4");
        let method = match (four, eight) {
            (true, false) => BnbMethod::FourBit(quant_type_of(
                qt,
                "quantization_config.bnb_4bit_quant_type",
            )?),
            (false, true) => BnbMethod::Int8,
            _ => {
                return Err(bad(
                    key,
                    "exactly one of load_in_4bit and load_in_8bit must be true",
                ));
            }
        };
        let compute_dtype = v
            .get("bnb_4bit_compute_dtype")
            .and_then(Value::as_str)
            .unwrap_or("float32")
            .to_string();
        let skip_modules = match v.get("llm_int8_skip_modules") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|s| {
                        s.as_str().map(str::to_string).ok_or_else(|| {
                            bad(key, "llm_int8_skip_modules must be a list of strings")
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => {
                return Err(bad(
                    key,
                    "llm_int8_skip_modules must be a list of strings or null",
                ));
            }
        };
        Ok(Self {
            method,
            double_quant: flag("bnb_4bit_use_double_quant"),
            compute_dtype,
            int8_threshold: v
                .get("llm_int8_threshold")
                .and_then(Value::as_f64)
                .unwrap_or(6.0) as f32,
            skip_modules,
        })
    }

    /// The object transformers writes (same keys, same order).
    pub fn to_json(&self) -> Value {
        let (four, eight, qt) = match self.method {
            BnbMethod::FourBit(qt) => (true, false, qt.name()),
            BnbMethod::Int8 => (false, true, "fp4"),
        };
        json!({
            "_load_in_4bit": four,
            "_load_in_8bit": eight,
            "bnb_4bit_compute_dtype": self.compute_dtype,
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": qt,
            "bnb_4bit_use_double_quant": self.double_quant,
            "llm_int8_enable_fp32_cpu_offload": false,
            "llm_int8_has_fp16_weight": false,
            "llm_int8_skip_modules": self.skip_modules,
            "llm_int8_threshold": self.int8_threshold,
            "load_in_4bit": four,
            "load_in_8bit": eight,
            "quant_method": "bitsandbytes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::python_float;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(python_float(0.052468255162239075), "0.052468255162239075");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(2.5e-7), "2.5e-07");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(1e16), "1e+16");
    }
}
