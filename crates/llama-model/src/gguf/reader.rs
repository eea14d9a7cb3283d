//! The GGUF container (versions 2 and 3, little-endian): header, metadata and tensor directory
//! parsed and validated from a memory map; tensor bytes are borrowed from the map.
//!
//! Layout: magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count, the metadata
//! key/value pairs, the tensor infos (name, dims in ggml order, type, offset), padding up to
//! `general.alignment` (32 by default), then the tensor data.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant::{GgmlType, dequantize};
pub use super::meta::MetaValue;
use crate::error::{Error, Result};

/// Where one tensor lives and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous one (a row's length).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Size of the data in bytes.
    pub size: usize,
}

impl TensorInfo {
    /// The shape in PyTorch order (`dims` reversed): `[rows, columns]` for a matrix.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// A validated, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    alignment: usize,
    metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

/// How deep metadata arrays may nest (an array of arrays of ...): llama.cpp's files use one
/// level; each level is a recursion, so a crafted file must not choose the depth.
pub const MAX_ARRAY_NESTING: usize = 16;

/// Bounds-checked little-endian reads that report the offset and what was being read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Arrays of arrays entered so far ([`MAX_ARRAY_NESTING`] at most).
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: String) -> Error {
        Error::Gguf {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            _ => Err(self.err(format!(
                "truncated file: {n} bytes of {what} expected at offset {}, but the file is {} bytes",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must be satisfiable by the bytes left, `min_size` bytes per element.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format!(
                "{what} at offset {at} is {n}, more than the {left} bytes left in the file can hold (truncated or corrupt file)"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(&format!("length of {what}"), 1)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(format!("{what} at offset {at} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str) -> Result<MetaValue> {
        let what = |t: &str| format!("{t} value of `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(&what("u8"))?[0]),
            1 => MetaValue::I8(self.array::<1>(&what("i8"))?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what("u16"))?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what("i16"))?)),
            4 => MetaValue::U32(self.u32(&what("u32"))?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what("i32"))?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what("f32"))?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(&what("bool"))?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => {
                        return Err(self.err(format!(
                            "bool value of `{key}` at offset {at} is {b}; expected 0 or 1"
                        )));
                    }
                }
            }
            8 => MetaValue::String(self.string(&what("string"))?),
            9 => {
                let at = self.pos;
                let elem = self.u32(&what("array element type"))?;
                if elem == 9 {
                    // Nested arrays carry their own element type per element.
                    if self.depth >= MAX_ARRAY_NESTING {
                        return Err(self.err(format!(
                            "array `{key}` at offset {at} nests arrays more than {MAX_ARRAY_NESTING} deep"
                        )));
                    }
                    let n = self.count(&what("array length"), 12)?;
                    let mut items = Vec::with_capacity(n);
                    self.depth += 1;
                    for _ in 0..n {
                        items.push(self.value(9, key)?);
                    }
                    self.depth -= 1;
                    return Ok(MetaValue::Array(items));
                }
                if elem > 12 {
                    return Err(self.err(format!(
                        "array `{key}` at offset {at} has element type {elem}; expected 0..=12"
                    )));
                }
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(&what("array length"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(&what("u64"))?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what("i64"))?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what("f64"))?)),
            other => {
                return Err(self.err(format!(
                    "metadata `{key}` at offset {} has value type {other}; expected 0..=12",
                    self.pos - 4
                )));
            }
        })
    }
}

impl GgufFile {
    /// Maps and validates `path`: magic, version (2 or 3), every metadata value, every tensor's
    /// type, shape, alignment and extent.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; the file is not expected to change while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let mut c = Cursor {
            bytes: &mmap,
            pos: 0,
            path: &path,
            depth: 0,
        };
        let magic = c.array::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(c.err(format!(
                "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\" (47 47 55 46)"
            )));
        }
        let version = c.u32("version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(c.err("big-endian GGUF files are not supported".into()));
        }
        if version != 2 && version != 3 {
            return Err(c.err(format!(
                "GGUF version {version} is not supported; expected 2 or 3"
            )));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 12)?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&format!("value type of `{key}`"))?;
            let value = c.value(ty, &key)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => 32,
            Some(MetaValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(c.err(format!(
                    "`general.alignment` is {v:?}; expected a u32 power of two"
                )));
            }
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let at = c.pos;
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&format!("dimension count of `{name}`"))?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.err(format!(
                    "tensor `{name}` (info at offset {at}) has {n_dims} dimensions; expected 1 to 4"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dimensions of `{name}`"))?);
            }
            let type_id = c.u32(&format!("type of `{name}`"))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                c.err(format!(
                    "tensor `{name}` has ggml type id {type_id}, which this reader does not know (known: {})",
                    GgmlType::known_names()
                ))
            })?;
            let offset = c.u64(&format!("data offset of `{name}`"))?;
            infos.push((name, dims, ggml_type, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let file_len = mmap.len();
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::new();
        for (name, dims, ggml_type, offset) in infos {
            let err = |message: String| Error::Gguf {
                path: path.clone(),
                message: format!("tensor `{name}`: {message}"),
            };
            let (block, type_size) = ggml_type.block();
            if dims.contains(&0) || dims[0] % block as u64 != 0 {
                return Err(err(format!(
                    "dimensions {dims:?} must be positive with the first a multiple of {block} ({ggml_type:?} blocks)"
                )));
            }
            // Found by fuzzing: `dims[0] / block * type_size` itself overflowed (a panic with
            // overflow checks, a wrapped, too small size without).
            let size = dims[1..]
                .iter()
                .try_fold(
                    (dims[0] / block as u64).checked_mul(type_size as u64),
                    |acc, &d| acc.and_then(|a| a.checked_mul(d)).map(Some),
                )
                .flatten()
                .ok_or_else(|| err(format!("dimensions {dims:?} overflow")))?;
            if offset % alignment as u64 != 0 {
                return Err(err(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = (data_start as u64).saturating_add(offset);
            let end = start.saturating_add(size);
            if end > file_len as u64 {
                return Err(err(format!(
                    "data at bytes {start}..{end} lies outside the file ({file_len} bytes): offset out of range or file truncated"
                )));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(err("appears twice in the tensor directory".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset: start as usize,
                size: size as usize,
            });
        }
        Ok(Self {
            path,
            mmap,
            version,
            alignment,
            metadata,
            index,
            tensors,
            by_name,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Every metadata pair, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// An error about this file.
    pub fn error(&self, message: String) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            message,
        }
    }

    /// An unsigned integer under `key`, if present; an error if it has another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    self.error(format!("`{key}` is {v:?}; expected a non-negative integer"))
                })
            })
            .transpose()
    }

    /// A number under `key`, if present; an error if it has another type.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.error(format!("`{key}` is {v:?}; expected a number")))
            })
            .transpose()
    }

    /// A string under `key`, if present; an error if it has another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.error(format!("`{key}` is {v:?}; expected a string")))
            })
            .transpose()
    }

    /// A bool under `key`, if present; an error if it has another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.error(format!("`{key}` is {v:?}; expected a bool")))
            })
            .transpose()
    }

    /// A required unsigned integer under `key`.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)?
            .ok_or_else(|| self.error(format!("missing metadata key `{key}` (an integer)")))
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name` (llama.cpp naming).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The stored bytes of `info` (a borrow of the memory map).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.size]
    }

    /// The tensor named `name`, dequantized to f32 in ggml order (row after row).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .tensor(name)
            .ok_or_else(|| self.error(format!("no tensor `{name}`")))?;
        dequantize(info.ggml_type, self.tensor_bytes(info)).map_err(|message| {
            self.error(format!("tensor `{name}` ({:?}): {message}", info.ggml_type))
        })
    }

    /// Releases the resident pages of a tensor already read (they are re-read if touched).
    pub(crate) fn release(&self, info: &TensorInfo) {
        // SAFETY: the map is private and read-only; this only lowers the resident size.
        unsafe {
            let _ = self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                info.offset,
                info.size,
            );
        }
    }
}
