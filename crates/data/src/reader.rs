//! Readers: every supported file kind yields [`RawRecord`]s (a JSON object per record) one at a
//! time. JSONL, CSV, text and Parquet stream; a JSON array is read whole (use JSONL for large
//! data).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Loc, Result};
use crate::parquet_reader;
pub use crate::record::{RawRecord, RecordIter};

/// The kinds of file the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// One JSON object per line (`.jsonl`, `.ndjson`, or `.json` that does not start with `[`).
    Jsonl,
    /// One JSON array of objects (`.json` starting with `[`).
    JsonArray,
    /// Parquet (`.parquet`).
    Parquet,
    /// CSV with a header row (`.csv`).
    Csv,
    /// Plain text, one record per non-blank line in field `text` (`.txt`, `.text`, `.md`).
    Text,
}

/// Picks the reader from the file name (and, for `.json`, the first non-blank byte).
pub fn file_kind(path: &Path) -> Result<FileKind> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "jsonl" | "ndjson" => FileKind::Jsonl,
        "parquet" => FileKind::Parquet,
        "csv" => FileKind::Csv,
        "txt" | "text" | "md" => FileKind::Text,
        "json" => {
            let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
            let mut buf = [0u8; 4096];
            let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
            match buf[..n].iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => FileKind::JsonArray,
                _ => FileKind::Jsonl,
            }
        }
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "unknown file kind `.{ext}`: expected .jsonl, .json, .parquet, .csv or .txt"
                ),
            ));
        }
    })
}

/// Opens one file and streams its records. A file with no record is an error.
pub fn read_file(path: &Path) -> Result<RecordIter> {
    let kind = file_kind(path)?;
    let shared = Arc::new(path.to_path_buf());
    let inner: RecordIter = match kind {
        FileKind::Jsonl => Box::new(LineReader::open(shared, LineKind::Json)?),
        FileKind::Text => Box::new(LineReader::open(shared, LineKind::Text)?),
        FileKind::JsonArray => Box::new(read_json_array(shared)?.into_iter()),
        FileKind::Csv => read_csv(shared)?,
        FileKind::Parquet => parquet_reader::read_parquet(shared)?,
    };
    Ok(Box::new(NonEmpty {
        inner,
        path: path.to_path_buf(),
        seen: false,
        done: false,
    }))
}

/// Turns "no record at all" into a clear error at the end of a file.
struct NonEmpty {
    inner: RecordIter,
    path: PathBuf,
    seen: bool,
    done: bool,
}

impl Iterator for NonEmpty {
    type Item = Result<RawRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Some(item) => {
                self.seen = true;
                Some(item)
            }
            None => {
                self.done = true;
                (!self.seen)
                    .then(|| Err(Error::file(&self.path, "file is empty: expected records")))
            }
        }
    }
}

/// The longest line of a JSONL or text file (one record), in bytes: 16 MiB, millions of tokens,
/// far beyond any `max_seq_len`. A longer line is one error naming the file and line, and the
/// reader never holds more than this much of it (reading 16 MiB at most, then skipping to the
/// next newline), so a file without newlines cannot exhaust memory.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

#[derive(Clone, Copy)]
enum LineKind {
    Json,
    Text,
}

/// Streams a file line by line (one line in memory at a time).
struct LineReader {
    reader: BufReader<File>,
    path: Arc<PathBuf>,
    kind: LineKind,
    line: usize,
    buf: Vec<u8>,
    failed: bool,
}

impl LineReader {
    fn open(path: Arc<PathBuf>, kind: LineKind) -> Result<Self> {
        let file = File::open(path.as_path()).map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            path,
            kind,
            line: 0,
            buf: Vec::new(),
            failed: false,
        })
    }

    fn parse(&self, text: &str) -> Result<RawRecord> {
        let loc = Loc::Line(self.line);
        let fields = match self.kind {
            LineKind::Text => {
                let mut m = Map::new();
                m.insert("text".into(), Value::String(text.to_string()));
                m
            }
            LineKind::Json => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(other) => {
                    return Err(Error::record(
                        &self.path,
                        loc,
                        format!("expected a JSON object, found {}", kind_name(&other)),
                    ));
                }
                Err(e) => {
                    return Err(Error::record(
                        &self.path,
                        loc,
                        format!("malformed JSON at column {}: {e}", e.column()),
                    ));
                }
            },
        };
        Ok(RawRecord {
            path: self.path.clone(),
            loc,
            fields,
        })
    }
}

impl Iterator for LineReader {
    type Item = Result<RawRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            let limit = MAX_RECORD_BYTES as u64 + 1;
            match self
                .reader
                .by_ref()
                .take(limit)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::io(&self.path, e)));
                }
            }
            self.line += 1;
            if self.buf.len() > MAX_RECORD_BYTES && self.buf.last() != Some(&b'\n') {
                self.buf = Vec::new();
                if let Err(e) = skip_line(&mut self.reader) {
                    self.failed = true;
                    return Some(Err(Error::io(&self.path, e)));
                }
                return Some(Err(Error::record(
                    &self.path,
                    Loc::Line(self.line),
                    format!(
                        "line longer than {} MiB (the maximum record size): expected one record per line",
                        MAX_RECORD_BYTES >> 20
                    ),
                )));
            }
            let mut bytes = self.buf.as_slice();
            while let [rest @ .., b'\n' | b'\r'] = bytes {
                bytes = rest;
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    return Some(Err(Error::record(
                        &self.path,
                        Loc::Line(self.line),
                        format!(
                            "invalid UTF-8 at byte {} of the line: expected UTF-8 text",
                            e.valid_up_to()
                        ),
                    )));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(self.parse(text));
        }
    }
}

/// Consumes the rest of a line (through its newline, or to the end of the file) without keeping it.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Name of a JSON value's type for messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_json_array(path: Arc<PathBuf>) -> Result<Vec<Result<RawRecord>>> {
    let bytes = std::fs::read(path.as_path()).map_err(|e| Error::io(&path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::record(
            &path,
            Loc::Line(e.line()),
            format!("malformed JSON at column {}: {e}", e.column()),
        )
    })?;
    let Value::Array(items) = value else {
        return Err(Error::file(&path, "expected a JSON array of objects"));
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let loc = Loc::Record(i + 1);
            match item {
                Value::Object(fields) => Ok(RawRecord {
                    path: path.clone(),
                    loc,
                    fields,
                }),
                other => Err(Error::record(
                    &path,
                    loc,
                    format!("expected a JSON object, found {}", kind_name(&other)),
                )),
            }
        })
        .collect())
}

fn read_csv(path: Arc<PathBuf>) -> Result<RecordIter> {
    check_csv_quoting(&path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path.as_path())
        .map_err(|e| Error::file(&path, e.to_string()))?;
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err(csv_error(&path, e)),
    };
    let iter = reader.into_records().map(move |row| {
        let row = row.map_err(|e| csv_error(&path, e))?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        let fields = headers
            .iter()
            .zip(row.iter())
            .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
            .collect();
        Ok(RawRecord {
            path: path.clone(),
            loc: Loc::Line(line),
            fields,
        })
    });
    Ok(Box::new(iter))
}

/// Refuses what Python's `csv` module refuses in strict mode and the `csv` crate reads without a
/// word: text after the closing quote of a field (`"a"b,c`) and a quoted field never closed (it
/// would swallow the rest of the file into one value). A quote inside an unquoted field
/// (`5" screen`) stays allowed, as everywhere. One streaming pass over the bytes.
fn check_csv_quoting(path: &Path) -> Result<()> {
    use std::io::Read;
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut buf = [0u8; 1 << 16];
    let (mut state, mut line, mut field, mut opened_at) =
        (State::FieldStart, 1usize, 1usize, 1usize);
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            state = match (state, b) {
                (State::Quoted, b'"') => State::QuoteInQuoted,
                (State::Quoted, b'\n') => {
                    line += 1;
                    State::Quoted
                }
                (State::Quoted, _) => State::Quoted,
                (State::QuoteInQuoted, b'"') => State::Quoted,
                (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b',') => {
                    field += 1;
                    State::FieldStart
                }
                (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\n') => {
                    line += 1;
                    field = 1;
                    State::FieldStart
                }
                (State::QuoteInQuoted, b'\r') => State::Unquoted,
                (State::QuoteInQuoted, other) => {
                    return Err(Error::record(
                        path,
                        Loc::Line(line),
                        format!(
                            "field {field}: `{}` after the closing quote; expected a comma or the end of the line (write a quote inside a quoted field as \"\")",
                            char::from(other).escape_default()
                        ),
                    ));
                }
                (State::FieldStart, b'"') => {
                    opened_at = line;
                    State::Quoted
                }
                (State::FieldStart | State::Unquoted, _) => State::Unquoted,
            };
        }
    }
    if state == State::Quoted {
        return Err(Error::record(
            path,
            Loc::Line(opened_at),
            format!(
                "field {field}: the quote opened here is never closed (the rest of the file would be read as one value)"
            ),
        ));
    }
    Ok(())
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line() as usize);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!(
                "invalid UTF-8 in field {}: expected UTF-8 text",
                err.field() + 1
            )
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields like the header, found {len}"),
        _ => e.to_string(),
    };
    match line {
        Some(l) => Error::record(path, Loc::Line(l), message),
        None => Error::file(path, message),
    }
}

/// Every data file of a split: a file, or every supported file directly inside a directory
/// (sorted by name).
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let p = entry.map_err(|e| Error::io(path, e))?.path();
            if p.is_file() && file_kind(&p).is_ok() {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::file(
                path,
                "directory has no data file: expected .jsonl, .json, .parquet, .csv or .txt",
            ));
        }
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ))
    }
}

/// Streams the records of several files (and directories) one after another.
pub fn read_all(
    paths: &[PathBuf],
) -> Result<impl Iterator<Item = Result<RawRecord>> + Send + use<>> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(list_files(p)?);
    }
    let mut opened = Vec::with_capacity(files.len());
    for f in &files {
        // Open lazily but check kinds up front so a bad name fails before any work.
        file_kind(f)?;
        opened.push(f.clone());
    }
    Ok(opened.into_iter().flat_map(|f| match read_file(&f) {
        Ok(iter) => iter,
        Err(e) => Box::new(std::iter::once(Err(e))) as RecordIter,
    }))
}
