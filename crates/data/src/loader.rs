//! The epoch iterator: seeded shuffling, optional length grouping or packing, and a
//! [`Position`] to resume from.

use crate::batch::{Batch, PaddingSide, pack_bins};
use crate::error::{Error, Result};
use crate::rng::shuffled;
use crate::tokenize::Example;

/// How batches are made.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Rows per batch.
    pub batch_size: usize,
    /// Seed of the shuffle (epoch `e` uses an order drawn from `seed` and `e`).
    pub seed: u64,
    /// Shuffle every epoch (otherwise file order).
    pub shuffle: bool,
    /// Put examples of similar length together (megabatches of 50 batches sorted by length,
    /// like transformers' `group_by_length`) to waste less padding.
    pub group_by_length: bool,
    /// Where padding goes.
    pub padding_side: PaddingSide,
    /// Round the padded length up to a multiple of this.
    pub pad_to_multiple_of: usize,
    /// The padding token id.
    pub pad_id: u32,
    /// Pack several examples into rows of this many tokens (best-fit decreasing).
    pub packing: Option<usize>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            seed: 0,
            shuffle: true,
            group_by_length: false,
            padding_side: PaddingSide::Right,
            pad_to_multiple_of: 1,
            pad_id: 0,
            packing: None,
        }
    }
}

/// Where an iteration stands: the next batch is batch `step` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub step: usize,
}

/// Makes the batches of every epoch over a list of examples.
#[derive(Debug)]
pub struct Loader<'d> {
    examples: &'d [Example],
    config: LoaderConfig,
    /// Packing bins (rows), fixed across epochs; `None` when not packing.
    bins: Option<Vec<Vec<usize>>>,
}

impl<'d> Loader<'d> {
    /// A loader over `examples`.
    pub fn new(examples: &'d [Example], config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if examples.is_empty() {
            return Err(Error::Config("no examples to load".into()));
        }
        let bins = match config.packing {
            Some(cap) => {
                let lengths: Vec<usize> = examples.iter().map(Example::len).collect();
                Some(pack_bins(&lengths, cap)?)
            }
            None => None,
        };
        Ok(Self {
            examples,
            config,
            bins,
        })
    }

    /// Number of rows in an epoch (examples, or packed rows).
    pub fn rows(&self) -> usize {
        self.bins.as_ref().map_or(self.examples.len(), Vec::len)
    }

    /// Batches in one epoch (the last may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.rows().div_ceil(self.config.batch_size)
    }

    /// The rows of epoch `epoch`, in order, grouped into batches.
    fn plan(&self, epoch: usize) -> Vec<Vec<usize>> {
        let grouped = self.config.group_by_length && self.bins.is_none();
        plan(
            self.rows(),
            |i| self.examples[i].len(),
            &self.config,
            grouped,
            epoch,
        )
    }

    fn batch(&self, rows: &[usize]) -> Batch {
        match (&self.bins, self.config.packing) {
            (Some(bins), Some(cap)) => {
                let chosen: Vec<Vec<usize>> = rows.iter().map(|&r| bins[r].clone()).collect();
                Batch::packed(self.examples, &chosen, cap, self.config.pad_id)
                    .expect("bins were built from these examples")
            }
            _ => {
                let exs: Vec<&Example> = rows.iter().map(|&i| &self.examples[i]).collect();
                Batch::padded(
                    &exs,
                    self.config.pad_id,
                    self.config.padding_side,
                    self.config.pad_to_multiple_of,
                )
            }
        }
    }

    /// Batches from the start, epoch after epoch (never ends; stop by steps or epochs).
    pub fn iter(&self) -> Batches<'_, 'd> {
        self.resume(Position::default())
    }

    /// Batches from `pos`: the same batches an iteration from the start yields from there on.
    pub fn resume(&self, pos: Position) -> Batches<'_, 'd> {
        Batches {
            loader: self,
            pos,
            plan: self.plan(pos.epoch),
        }
    }

    /// The batches of one epoch.
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Batch> + '_ {
        self.plan(epoch)
            .into_iter()
            .map(move |rows| self.batch(&rows))
    }
}

/// The rows of one epoch grouped into batches: a seeded shuffle (seed mixed with the epoch),
/// then, when `grouped`, megabatches of 50 batches sorted by length (longest first).
fn plan(
    n: usize,
    len: impl Fn(usize) -> usize,
    config: &LoaderConfig,
    grouped: bool,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let seed = config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut order: Vec<usize> = if config.shuffle {
        shuffled(n, seed)
    } else {
        (0..n).collect()
    };
    let bs = config.batch_size.max(1);
    if grouped {
        for mega in order.chunks_mut(bs * 50) {
            mega.sort_by_key(|&i| std::cmp::Reverse(len(i)));
        }
    }
    order.chunks(bs).map(<[usize]>::to_vec).collect()
}

/// Share of real tokens in the padded batches of epoch 0 for examples of `lengths` (what
/// [`Loader`] would make with `config`, without building the batches).
pub fn padding_efficiency(lengths: &[usize], config: &LoaderConfig) -> f64 {
    let m = config.pad_to_multiple_of.max(1);
    let (mut real, mut slots) = (0usize, 0usize);
    for batch in plan(
        lengths.len(),
        |i| lengths[i],
        config,
        config.group_by_length,
        0,
    ) {
        let longest = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        real += batch.iter().map(|&i| lengths[i]).sum::<usize>();
        slots += batch.len() * longest.div_ceil(m) * m;
    }
    if slots == 0 {
        0.0
    } else {
        real as f64 / slots as f64
    }
}

/// Share of real tokens when examples of `lengths` are packed into rows of `capacity`.
pub fn packing_efficiency(lengths: &[usize], capacity: usize) -> Result<f64> {
    let bins = pack_bins(lengths, capacity)?;
    let real: usize = lengths.iter().sum();
    Ok(if bins.is_empty() {
        0.0
    } else {
        real as f64 / (bins.len() * capacity) as f64
    })
}

/// Endless batch iterator with a resumable [`Position`].
#[derive(Debug)]
pub struct Batches<'l, 'd> {
    loader: &'l Loader<'d>,
    pos: Position,
    plan: Vec<Vec<usize>>,
}

impl Batches<'_, '_> {
    /// The position of the next batch (save it with a checkpoint, pass it to
    /// [`Loader::resume`]).
    pub fn position(&self) -> Position {
        self.pos
    }
}

impl Iterator for Batches<'_, '_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.pos.step >= self.plan.len() {
            self.pos = Position {
                epoch: self.pos.epoch + 1,
                step: 0,
            };
            self.plan = self.loader.plan(self.pos.epoch);
        }
        let batch = self.loader.batch(&self.plan[self.pos.step]);
        self.pos.step += 1;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| {
                let ids: Vec<u32> = (0..(i % 7 + 1) as u32).map(|t| t + 10 * i as u32).collect();
                Example {
                    labels: ids.iter().map(|&t| t as i64).collect(),
                    input_ids: ids,
                }
            })
            .collect()
    }

    #[test]
    fn resume_yields_the_same_batches_and_epochs_differ() {
        let exs = examples(23);
        let cfg = LoaderConfig {
            batch_size: 4,
            seed: 3,
            ..Default::default()
        };
        let loader = Loader::new(&exs, cfg).unwrap();
        assert_eq!(loader.batches_per_epoch(), 6);
        let mut it = loader.iter();
        let first: Vec<Batch> = it.by_ref().take(9).collect();
        let pos = it.position();
        assert_eq!(pos, Position { epoch: 1, step: 3 });
        let next: Vec<Batch> = it.take(5).collect();
        let resumed: Vec<Batch> = loader.resume(pos).take(5).collect();
        assert_eq!(next, resumed);
        let e0: Vec<Batch> = loader.epoch(0).collect();
        assert_eq!(&e0[..], &first[..6]);
        assert_ne!(e0, loader.epoch(1).collect::<Vec<_>>());
        // Every example once per epoch.
        let mut seen: Vec<u32> = e0
            .iter()
            .flat_map(|b| (0..b.rows).map(|r| b.input_ids[r * b.seq]))
            .collect();
        seen.sort();
        assert_eq!(seen, (0..23).map(|i| 10 * i).collect::<Vec<u32>>());
    }

    #[test]
    fn grouping_by_length_wastes_less_padding() {
        let exs = examples(200);
        let eff = |group| {
            let cfg = LoaderConfig {
                batch_size: 8,
                seed: 1,
                group_by_length: group,
                ..Default::default()
            };
            let l = Loader::new(&exs, cfg).unwrap();
            let (real, all) = l.epoch(0).fold((0, 0), |(r, a), b| {
                (r + b.real_tokens(), a + b.rows * b.seq)
            });
            real as f64 / all as f64
        };
        assert!(
            eff(true) > eff(false) + 0.1,
            "{} vs {}",
            eff(true),
            eff(false)
        );
    }
}
