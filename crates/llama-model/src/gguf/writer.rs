//! Writing GGUF version 3 files: metadata, a tensor directory with aligned offsets, then the
//! tensor data produced one tensor at a time (temp file + rename).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::dequant::GgmlType;
use super::reader::MetaValue;
use crate::error::{Error, Result};

/// A GGUF file being assembled: metadata and the tensor directory; data comes at write time.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
}

const ALIGNMENT: usize = 32;

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &MetaValue) -> std::io::Result<()> {
    match v {
        MetaValue::U8(x) => w.write_all(&[*x]),
        MetaValue::I8(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::Bool(x) => w.write_all(&[*x as u8]),
        MetaValue::String(s) => write_str(w, s),
        MetaValue::Array(items) => {
            let elem = items.first().map_or(8, MetaValue::type_id);
            w.write_all(&elem.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for item in items {
                if elem == 9 {
                    w.write_all(&item.type_id().to_le_bytes())?;
                }
                write_value(w, item)?;
            }
            Ok(())
        }
        MetaValue::U64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

fn padding(pos: usize) -> usize {
    pos.div_ceil(ALIGNMENT) * ALIGNMENT - pos
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata pair (arrays must hold elements of one type).
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetaValue) -> Result<()> {
        let key = key.into();
        if let MetaValue::Array(items) = &value
            && let Some(first) = items.first()
            && items.iter().any(|i| i.type_id() != first.type_id())
        {
            return Err(Error::InvalidArgument(format!(
                "GGUF metadata `{key}`: array elements must share one type"
            )));
        }
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(Error::InvalidArgument(format!(
                "GGUF metadata `{key}` added twice"
            )));
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor of `shape` (PyTorch order, e.g. `[rows, columns]`) stored as `ty`.
    pub fn add_tensor(&mut self, name: impl Into<String>, shape: &[usize], ty: GgmlType) {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.into(), dims, ty));
    }

    fn byte_size(dims: &[u64], ty: GgmlType) -> usize {
        let (block, size) = ty.block();
        dims.iter().product::<u64>() as usize / block * size
    }

    /// Writes the file to `path` through a temp file; `data(i)` returns the encoded bytes of
    /// tensor `i` (in the order added), called once per tensor in order.
    pub fn write(&self, path: &Path, mut data: impl FnMut(usize) -> Result<Vec<u8>>) -> Result<()> {
        let tmp = path.with_extension("gguf.tmp");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::new(file);
        let io = |e: std::io::Error| Error::io(&tmp, e);
        w.write_all(b"GGUF").map_err(io)?;
        w.write_all(&3u32.to_le_bytes()).map_err(io)?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())
            .map_err(io)?;
        let mut pos = 24usize;
        let mut header = Vec::new();
        for (k, v) in &self.metadata {
            write_str(&mut header, k).map_err(io)?;
            header.write_all(&v.type_id().to_le_bytes()).map_err(io)?;
            write_value(&mut header, v).map_err(io)?;
        }
        let mut offset = 0usize;
        for (name, dims, ty) in &self.tensors {
            write_str(&mut header, name).map_err(io)?;
            header
                .write_all(&(dims.len() as u32).to_le_bytes())
                .map_err(io)?;
            for d in dims {
                header.write_all(&d.to_le_bytes()).map_err(io)?;
            }
            header.write_all(&ty.id().to_le_bytes()).map_err(io)?;
            header
                .write_all(&(offset as u64).to_le_bytes())
                .map_err(io)?;
            let size = Self::byte_size(dims, *ty);
            offset += size + padding(size);
        }
        pos += header.len();
        header.resize(header.len() + padding(pos), 0);
        w.write_all(&header).map_err(io)?;
        for (i, (name, dims, ty)) in self.tensors.iter().enumerate() {
            let bytes = data(i)?;
            let want = Self::byte_size(dims, *ty);
            if bytes.len() != want {
                return Err(Error::InvalidArgument(format!(
                    "GGUF tensor `{name}`: {} bytes of data, expected {want} ({ty:?}, dims {dims:?})",
                    bytes.len()
                )));
            }
            w.write_all(&bytes).map_err(io)?;
            w.write_all(&vec![0u8; padding(bytes.len())]).map_err(io)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}
