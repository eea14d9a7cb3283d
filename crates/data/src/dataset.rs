//! The pipeline from files to examples: read -> parse format -> template -> tokenize -> mask ->
//! truncate, streaming one record at a time, with counts of everything kept, cut, dropped or
//! skipped.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{FieldMap, Format, parse};
use crate::reader::read_all;
use crate::record::RawRecord;
use crate::rng::shuffled;
use crate::tokenize::{Encoded, Encoder, Example};

/// How records are read and interpreted.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The format; detected from the first record's fields when `None`.
    pub format: Option<Format>,
    /// Field-name overrides.
    pub fields: FieldMap,
    /// Skip (and count) malformed records instead of stopping at the first.
    pub skip_invalid: bool,
}

/// How many of the first skipped records are kept for the summary.
const SKIP_EXAMPLES: usize = 5;

/// Counts of one pass over a split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The format used.
    pub format: Option<Format>,
    /// Records read (valid or not).
    pub records: usize,
    /// Examples kept.
    pub kept: usize,
    /// Kept or dropped examples that truncation shortened.
    pub truncated: usize,
    /// Examples dropped because no trained token was left.
    pub dropped: usize,
    /// Malformed records skipped (`skip_invalid`).
    pub skipped: usize,
    /// The first few skipped records' errors (`file:line: reason`).
    pub skipped_errors: Vec<String>,
    /// Tokens in kept examples.
    pub tokens: usize,
    /// Trained (unmasked) tokens in kept examples.
    pub trained_tokens: usize,
}

impl Stats {
    /// Share of tokens whose label is masked (`-100`).
    pub fn masked_share(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            1.0 - self.trained_tokens as f64 / self.tokens as f64
        }
    }

    /// One line per skipped-record reason, for the end of a run.
    pub fn skipped_summary(&self) -> String {
        let mut s = format!("{} invalid record(s) skipped", self.skipped);
        for e in &self.skipped_errors {
            s.push_str("\n  ");
            s.push_str(e);
        }
        if self.skipped > self.skipped_errors.len() {
            s.push_str(&format!(
                "\n  ... and {} more",
                self.skipped - self.skipped_errors.len()
            ));
        }
        s
    }
}

/// Records encoded per parallel chunk.
const CHUNK: usize = 512;

/// Streams the examples of some files; [`ExampleStream::stats`] counts as it goes. Records are
/// read in chunks of 512 and encoded on up to `threads` threads; order and counts do not depend
/// on the thread count.
pub struct ExampleStream<'e, I> {
    records: I,
    encoder: &'e Encoder,
    options: ReadOptions,
    stats: Stats,
    threads: usize,
    pending: VecDeque<Result<Encoded>>,
}

impl<'e, I: Iterator<Item = Result<RawRecord>>> ExampleStream<'e, I> {
    /// The counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Encodes on `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    fn skip_or_fail(&mut self, e: Error) -> Option<Error> {
        if self.options.skip_invalid && (e.is_record_error() || matches!(e, Error::Template(_))) {
            self.stats.skipped += 1;
            if self.stats.skipped_errors.len() < SKIP_EXAMPLES {
                self.stats.skipped_errors.push(e.to_string());
            }
            None
        } else {
            Some(e)
        }
    }

    /// Reads the next chunk and encodes it; false at the end of the input.
    fn fill(&mut self) -> bool {
        let chunk: Vec<Result<RawRecord>> = self.records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            return false;
        }
        // The format comes from the first record that has a recognisable one.
        let mut detect_errors = vec![None; chunk.len()];
        if self.stats.format.is_none() {
            for (i, rec) in chunk.iter().enumerate() {
                if let Ok(rec) = rec {
                    match Format::detect(rec, &self.options.fields) {
                        Ok(f) => {
                            self.stats.format = Some(f);
                            break;
                        }
                        Err(e) => detect_errors[i] = Some(e.to_string()),
                    }
                }
            }
        }
        let (encoder, fields, format) = (self.encoder, &self.options.fields, self.stats.format);
        let work = |part: Vec<(Result<RawRecord>, Option<String>)>| -> Vec<Result<Encoded>> {
            part.into_iter()
                .map(|(rec, detect_error)| {
                    let rec = rec?;
                    match (format, detect_error) {
                        (Some(f), None) => encode_record(encoder, fields, f, &rec),
                        _ => Err(Format::detect(&rec, fields)
                            .err()
                            .unwrap_or_else(|| rec.error("format not detected"))),
                    }
                })
                .collect()
        };
        let per = chunk.len().div_ceil(self.threads);
        let mut items = chunk.into_iter().zip(detect_errors);
        let mut parts = Vec::new();
        loop {
            let part: Vec<_> = items.by_ref().take(per).collect();
            if part.is_empty() {
                break;
            }
            parts.push(part);
        }
        let results: Vec<Vec<Result<Encoded>>> = if parts.len() == 1 {
            parts.into_iter().map(work).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|part| scope.spawn(move || work(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("encoding thread panicked"))
                    .collect()
            })
        };
        self.pending.extend(results.into_iter().flatten());
        true
    }
}

/// Parses, templates and tokenizes one record.
fn encode_record(
    encoder: &Encoder,
    fields: &FieldMap,
    format: Format,
    rec: &RawRecord,
) -> Result<Encoded> {
    let parsed = parse(rec, format, fields)?;
    let sample = encoder.to_sample(parsed).map_err(|e| locate(rec, e))?;
    encoder.encode(&sample).map_err(|e| locate(rec, e))
}

/// Gives template and tokenizer errors the record's location.
fn locate(rec: &RawRecord, e: Error) -> Error {
    match e {
        Error::Template(m) | Error::Tokenizer(m) => rec.error(m),
        other => other,
    }
}

impl<I: Iterator<Item = Result<RawRecord>>> Iterator for ExampleStream<'_, I> {
    type Item = Result<Example>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match self.pending.pop_front() {
                Some(item) => item,
                None => {
                    if !self.fill() {
                        return None;
                    }
                    continue;
                }
            };
            self.stats.records += 1;
            match item {
                Ok(Encoded::Kept { example, truncated }) => {
                    self.stats.kept += 1;
                    self.stats.truncated += truncated as usize;
                    self.stats.tokens += example.len();
                    self.stats.trained_tokens += example.trained();
                    return Some(Ok(example));
                }
                Ok(Encoded::Dropped { truncated }) => {
                    self.stats.dropped += 1;
                    self.stats.truncated += truncated as usize;
                }
                Err(e) => {
                    if let Some(e) = self.skip_or_fail(e) {
                        // Stop at the first error that is not skipped.
                        self.pending.clear();
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// Streams the examples of `paths` (files or directories), one record in memory at a time.
pub fn stream<'e>(
    paths: &[PathBuf],
    encoder: &'e Encoder,
    options: ReadOptions,
) -> Result<ExampleStream<'e, impl Iterator<Item = Result<RawRecord>> + Send + use<>>> {
    Ok(ExampleStream {
        records: read_all(paths)?,
        stats: Stats {
            format: options.format,
            ..Stats::default()
        },
        encoder,
        options,
        threads: 1,
        pending: VecDeque::new(),
    })
}

/// A split held in memory: its examples and the counts of building it.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// Counts of reading it.
    pub stats: Stats,
}

impl Dataset {
    /// Reads, encodes (on every available core) and keeps every example of `paths`.
    pub fn load(paths: &[PathBuf], encoder: &Encoder, options: ReadOptions) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self::load_with_threads(paths, encoder, options, threads)
    }

    /// [`Dataset::load`] on `threads` threads (the result does not depend on it).
    pub fn load_with_threads(
        paths: &[PathBuf],
        encoder: &Encoder,
        options: ReadOptions,
        threads: usize,
    ) -> Result<Self> {
        let mut s = stream(paths, encoder, options)?.with_threads(threads);
        let examples = s.by_ref().collect::<Result<Vec<_>>>()?;
        Ok(Self {
            examples,
            stats: s.stats().clone(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// True when there is no example.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Splits off a validation set of `round(ratio * len)` examples chosen by a seeded shuffle
    /// (both parts keep file order). Returns `(train, valid)`.
    pub fn split(self, ratio: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(Error::Config(format!(
                "validation ratio {ratio}: expected a number in [0, 1)"
            )));
        }
        let n = self.examples.len();
        let n_valid = (ratio * n as f64).round() as usize;
        let mut is_valid = vec![false; n];
        for &i in shuffled(n, seed).iter().take(n_valid) {
            is_valid[i] = true;
        }
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for (ex, v) in self.examples.into_iter().zip(is_valid) {
            if v { valid.push(ex) } else { train.push(ex) }
        }
        let stats = self.stats;
        Ok((
            Dataset {
                examples: train,
                stats: stats.clone(),
            },
            Dataset {
                examples: valid,
                stats,
            },
        ))
    }
}
