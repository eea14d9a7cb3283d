//! `data`: instruction / SFT datasets for fine-tuning, prepared the way TRL's `SFTTrainer`
//! prepares them.
//!
//! - [`reader`]: JSONL (streamed), JSON arrays, Parquet, CSV and plain text; files or
//!   directories ([`read_all`]).
//! - [`format`](mod@format): `alpaca`, `messages`, `sharegpt`, `prompt_completion`, `text`, detected from the
//!   fields ([`Format::detect`]) with field-name overrides ([`FieldMap`]).
//! - [`template`]: the model's Jinja chat template or the built-in `llama2` / `llama3` /
//!   `chatml` / `alpaca` ones. The tokenizer, its `tokenizer_config.json` and the template
//!   engine come from `llama-tokenizer` (no burn, no model code here).
//! - [`tokenize`]: [`Encoder`] makes [`Example`]s (`input_ids`, `labels` with `-100` on
//!   untrained tokens), truncates and drops examples with nothing to train.
//! - [`dataset`]: the streaming pipeline ([`stream`]) and in-memory splits ([`Dataset`]).
//! - [`batch`] and [`loader`]: padded or packed [`Batch`]es (plain vectors; the trainer makes
//!   tensors of them), and the resumable epoch iterator ([`Loader`], [`Position`]).

pub mod batch;
pub mod dataset;
pub mod error;
pub mod format;
pub mod loader;
pub mod parquet_reader;
pub mod reader;
pub mod record;
pub mod rng;
pub mod template;
pub mod tokenize;

pub use batch::{Batch, PaddingSide, pack_bins};
pub use dataset::{Dataset, ExampleStream, ReadOptions, Stats, stream};
pub use error::{Error, Loc, Result};
pub use format::{FieldMap, Format, Parsed, Sample};
pub use loader::{Batches, Loader, LoaderConfig, Position, packing_efficiency, padding_efficiency};
pub use reader::{FileKind, MAX_RECORD_BYTES, read_all, read_file};
pub use record::RawRecord;
pub use template::{ChatRenderer, TemplateChoice};
pub use tokenize::{EncodeOptions, Encoded, Encoder, Example, IGNORE_INDEX, Truncation};
