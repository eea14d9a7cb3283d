//! Parquet files through the `parquet` crate's record reader (no arrow): each row becomes a JSON
//! object, lists and structs included, so `messages` columns read like JSONL.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Loc, Result};
use crate::record::{RawRecord, RecordIter};

/// The rows of a Parquet file with the decoder's panics turned into an error naming the row:
/// parquet 60 asserts on some corrupt pages instead of returning an error (found by fuzzing,
/// `crates/fuzz/regressions/records/parquet_*`). After such an error the file yields no more
/// rows.
struct Guarded<I> {
    rows: Option<I>,
    path: Arc<PathBuf>,
    next_row: usize,
}

impl<I: Iterator<Item = parquet::errors::Result<Row>>> Iterator for Guarded<I> {
    type Item = parquet::errors::Result<Row>;
    fn next(&mut self) -> Option<Self::Item> {
        let rows = self.rows.as_mut()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rows.next())) {
            Ok(row) => {
                self.next_row += 1;
                row
            }
            Err(_) => {
                self.rows = None;
                Some(Err(parquet::errors::ParquetError::General(format!(
                    "corrupt data in {} at row {}: the Parquet decoder failed on it",
                    self.path.display(),
                    self.next_row
                ))))
            }
        }
    }
}

/// Streams the rows of a Parquet file (one row group decoded at a time).
pub fn read_parquet(path: Arc<PathBuf>) -> Result<RecordIter> {
    let file = File::open(path.as_path()).map_err(|e| Error::io(&path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| Error::file(&path, format!("not a readable Parquet file: {e}")))?;
    let rows = reader.metadata().file_metadata().num_rows();
    if rows == 0 {
        return Err(Error::file(&path, "file is empty: expected records"));
    }
    let iter = Guarded {
        rows: Some(reader.into_iter()),
        path: path.clone(),
        next_row: 1,
    }
    .enumerate()
    .map(move |(i, row)| {
        let loc = Loc::Row(i + 1);
        let row = row.map_err(|e| Error::record(&path, loc, format!("cannot decode: {e}")))?;
        let fields = row_to_map(&row).map_err(|m| Error::record(&path, loc, m))?;
        Ok(RawRecord {
            path: path.clone(),
            loc,
            fields,
        })
    });
    Ok(Box::new(iter))
}

fn row_to_map(row: &Row) -> std::result::Result<Map<String, Value>, String> {
    row.get_column_iter()
        .map(|(name, field)| {
            field_to_json(field)
                .map(|v| (name.clone(), v))
                .map_err(|m| format!("column `{name}`: {m}"))
        })
        .collect()
}

fn number(n: impl Into<Number>) -> Value {
    Value::Number(n.into())
}

fn float(x: f64) -> std::result::Result<Value, String> {
    Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| format!("non-finite number {x}"))
}

fn field_to_json(field: &Field) -> std::result::Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => number(*n),
        Field::Short(n) => number(*n),
        Field::Int(n) => number(*n),
        Field::Long(n) => number(*n),
        Field::UByte(n) => number(*n),
        Field::UShort(n) => number(*n),
        Field::UInt(n) => number(*n),
        Field::ULong(n) => number(*n),
        Field::Float16(x) => float(f64::from(*x))?,
        Field::Float(x) => float(f64::from(*x))?,
        Field::Double(x) => float(*x)?,
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => return Err("binary value that is not UTF-8: expected text".into()),
        },
        Field::Group(row) => Value::Object(row_to_map(row)?),
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(field_to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut out = Map::new();
            for (k, v) in map.entries() {
                let key = match field_to_json(k)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, field_to_json(v)?);
            }
            Value::Object(out)
        }
        other => Value::String(other.to_string()),
    })
}
