//! Single-file and sharded safetensors checkpoints, read tensor by tensor from a memory map.
//!
//! Each tensor is converted to f32 straight from the mapped file and its pages are released
//! afterwards, so loading holds the model plus one tensor, never two copies of the model.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::source::TensorSource;

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Tensors of a Hugging Face checkpoint directory (`model.safetensors`, or shards listed in
/// `model.safetensors.index.json`).
pub struct SafetensorsSource {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
    used: std::collections::HashSet<String>,
    /// Keys that may be left unused without error (e.g. a tied `lm_head.weight`).
    ignorable: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsSource {
    /// Opens the checkpoint in `dir` and validates every file header.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let index: Index = serde_json::from_str(&text).map_err(|source| Error::Json {
                path: index_path.clone(),
                source,
            })?;
            let mut names: Vec<&String> = index.weight_map.values().collect();
            names.sort();
            names.dedup();
            // Shards are files of this directory: an absolute path or `..` would read any file.
            if let Some(bad) = names.iter().find(|n| {
                let p = Path::new(n.as_str());
                n.is_empty() || p.file_name().is_none_or(|f| f != p.as_os_str())
            }) {
                return Err(Error::Safetensors {
                    path: index_path.clone(),
                    message: format!(
                        "weight_map names shard \"{bad}\"; expected a file name in this directory"
                    ),
                });
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else if !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        } else {
            return Err(Error::Safetensors {
                path: dir.clone(),
                message: "no model.safetensors or model.safetensors.index.json in this directory"
                    .into(),
            });
        };
        let mut shards = Vec::new();
        let mut entries = HashMap::new();
        for path in files {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is read-only; the file is not expected to change while loading.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let corrupt = |e: safetensors::SafeTensorError| Error::Safetensors {
                path: path.clone(),
                message: format!("truncated or corrupt safetensors file: {e}"),
            };
            // Validates the header, every offset and the file length.
            let st = SafeTensors::deserialize(&mmap).map_err(corrupt)?;
            let (header_len, _) = SafeTensors::read_metadata(&mmap).map_err(corrupt)?;
            let base = 8 + header_len;
            let data_start = mmap.as_ptr() as usize;
            for (name, view) in st.iter() {
                let start = view.data().as_ptr() as usize - data_start;
                debug_assert!(start >= base);
                let entry = Entry {
                    file: shards.len(),
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                };
                if entries.insert(name.to_string(), entry).is_some() {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        message: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
            }
            drop(st);
            shards.push(Shard { path, mmap });
        }
        Ok(Self {
            dir,
            shards,
            entries,
            used: Default::default(),
            ignorable: Vec::new(),
        })
    }

    /// Lets `key` stay unused (tied heads that a checkpoint stores anyway).
    pub fn allow_unused(&mut self, key: &str) {
        self.ignorable.push(key.to_string());
    }

    /// All keys with their shapes, sorted.
    pub fn keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut keys: Vec<_> = self
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.shape.clone()))
            .collect();
        keys.sort();
        keys
    }

    /// The dtype name of the first tensor (`"F32"`, `"BF16"`, ...), if any.
    pub fn dtype_of(&self, key: &str) -> Option<String> {
        self.entries.get(key).map(|e| format!("{:?}", e.dtype))
    }
}

/// Float safetensors data (F32, F16, BF16, F64) as f32; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

impl TensorSource for SafetensorsSource {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<TensorData> {
        let Some(entry) = self.entries.get(key) else {
            return Err(Error::MissingTensor {
                path: self.dir.clone(),
                key: key.into(),
                expected: shape.to_vec(),
            });
        };
        let shard = &self.shards[entry.file];
        if entry.shape != shape {
            return Err(Error::ShapeMismatch {
                path: shard.path.clone(),
                key: key.into(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let values = to_f32(entry.dtype, &shard.mmap[entry.start..entry.end]).ok_or_else(|| {
            Error::Safetensors {
                path: shard.path.clone(),
                message: format!(
                    "tensor `{key}` has dtype {:?}; expected F32, F16, BF16 or F64",
                    entry.dtype
                ),
            }
        })?;
        // SAFETY: the map is private and read-only; dropped pages are re-read from the file if
        // touched again, so this only lowers the resident size.
        unsafe {
            let _ = shard.mmap.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                entry.start,
                entry.end - entry.start,
            );
        }
        self.used.insert(key.to_string());
        Ok(TensorData::new(values, shape.to_vec()))
    }

    fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn take_raw(&mut self, key: &str) -> Result<Option<quant::RawTensor>> {
        let Some(entry) = self.entries.get(key) else {
            return Ok(None);
        };
        let shard = &self.shards[entry.file];
        let raw = quant::RawTensor {
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            bytes: shard.mmap[entry.start..entry.end].to_vec(),
        };
        // SAFETY: as in `take`: only lowers the resident size of a private read-only map.
        unsafe {
            let _ = shard.mmap.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                entry.start,
                entry.end - entry.start,
            );
        }
        self.used.insert(key.to_string());
        Ok(Some(raw))
    }

    fn location(&self, key: &str) -> PathBuf {
        match self.entries.get(key) {
            Some(e) => self.shards[e.file].path.clone(),
            None => self.dir.clone(),
        }
    }

    fn finish(&mut self) -> Result<()> {
        let mut unused: Vec<&String> = self
            .entries
            .keys()
            .filter(|k| {
                !self.used.contains(*k)
                    && !self.ignorable.contains(*k)
                    && !k.ends_with("rotary_emb.inv_freq")
            })
            .collect();
        unused.sort();
        if let Some(first) = unused.first() {
            let path = self.shards[self.entries[*first].file].path.clone();
            return Err(Error::UnexpectedTensor {
                path,
                key: (*first).clone(),
                count: unused.len(),
            });
        }
        Ok(())
    }
}
