//! [`RawRecord`]: one record as a reader yields it, shared by [`crate::reader`] and
//! [`crate::parquet_reader`] (kept apart so neither reader module depends on the other's
//! dispatcher).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Loc, Result};

/// One record as read from a file, before its format is interpreted.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// The file it came from.
    pub path: Arc<PathBuf>,
    /// Its line / record / row in that file.
    pub loc: Loc,
    /// Its fields.
    pub fields: Map<String, Value>,
}

impl RawRecord {
    /// A record-level error at this record's location.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::record(&self.path, self.loc, message)
    }
}

/// A boxed stream of records.
pub type RecordIter = Box<dyn Iterator<Item = Result<RawRecord>> + Send>;
