//! `data`: instruction / SFT datasets for fine-tuning, prepared the way TRL's `SFTTrainer`
//! prepares them.
//!
//! - [`reader`]: JSONL (streamed), JSON arrays, Parquet, CSV and plain text; files or
//!   directories ([`read_all`]).
//! - [`format`]: `alpaca`, `messages`, `sharegpt`, `prompt_completion`, `text`, detected from the
//!   fields ([`Format::detect`]) with field-name overrides ([`FieldMap`]).
//! - [`template`]: the model's Jinja chat template or the built-in `llama2` / `llama3` /
//!   `chatml` / `alpaca` ones.
//! - [`tokenize`]: [`Encoder`] makes [`Example`]s (`input_ids`, `labels` with `-100` on
//!   untrained tokens), truncates and drops examples with nothing to train.
//! - [`dataset`]: the streaming pipeline ([`stream`]) and in-memory splits ([`Dataset`]).
//! - [`batch`] and [`loader`]: padded or packed [`Batch`]es, and the resumable epoch iterator
//!   ([`Loader`], [`Position`]).

pub mod batch;
pub mod dataset;
pub mod error;
pub mod format;
pub mod loader;
pub mod parquet_reader;
pub mod reader;
pub mod rng;
pub mod template;
pub mod tokenize;

pub use batch::{Batch, BatchTensors, PaddingSide, pack_bins};
pub use dataset::{Dataset, ExampleStream, ReadOptions, Stats, stream};
pub use error::{Error, Loc, Result};
pub use format::{FieldMap, Format, Parsed, Sample};
pub use loader::{Batches, Loader, LoaderConfig, Position, packing_efficiency, padding_efficiency};
pub use reader::{FileKind, RawRecord, read_all, read_file};
pub use template::{ChatRenderer, TemplateChoice, TokenizerConfig};
pub use tokenize::{EncodeOptions, Encoded, Encoder, Example, IGNORE_INDEX, Truncation};
