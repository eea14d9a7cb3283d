//! The pipeline from files to examples: read -> parse format -> template -> tokenize -> mask ->
//! truncate, streaming one record at a time, with counts of everything kept, cut, dropped or
//! skipped.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{FieldMap, Format, parse};
use crate::reader::{RawRecord, read_all};
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

/// Streams the examples of some files; [`ExampleStream::stats`] counts as it goes.
pub struct ExampleStream<'e, I> {
    records: I,
    encoder: &'e Encoder,
    options: ReadOptions,
    stats: Stats,
}

impl<'e, I: Iterator<Item = Result<RawRecord>>> ExampleStream<'e, I> {
    /// The counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
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

    fn one(&mut self, rec: &RawRecord) -> Result<Encoded> {
        let format = match self.stats.format {
            Some(f) => f,
            None => {
                let f = Format::detect(rec, &self.options.fields)?;
                self.stats.format = Some(f);
                f
            }
        };
        let parsed = parse(rec, format, &self.options.fields)?;
        let sample = self.encoder.to_sample(parsed).map_err(|e| locate(rec, e))?;
        self.encoder.encode(&sample).map_err(|e| locate(rec, e))
    }
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
            let rec = match self.records.next()? {
                Ok(r) => r,
                Err(e) => match self.skip_or_fail(e) {
                    Some(e) => return Some(Err(e)),
                    None => {
                        self.stats.records += 1;
                        continue;
                    }
                },
            };
            self.stats.records += 1;
            match self.one(&rec) {
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
    /// Reads, encodes and keeps every example of `paths`.
    pub fn load(paths: &[PathBuf], encoder: &Encoder, options: ReadOptions) -> Result<Self> {
        let mut s = stream(paths, encoder, options)?;
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
