//! Batches: padded rows of single examples, or packed rows of several examples with restarting
//! positions and segment ids. Plain vectors: the trainer turns them into tensors.

use crate::error::{Error, Result};
use crate::tokenize::{Example, IGNORE_INDEX};

/// Where padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// After the tokens (training default).
    #[default]
    Right,
    /// Before the tokens.
    Left,
}

/// A batch of `rows` rows of `seq` tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of rows.
    pub rows: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Token ids, `[rows * seq]` (padding holds the pad id).
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
    /// Labels (`-100` on prompt tokens, padding and, in packed rows, each example's first token).
    pub labels: Vec<i64>,
    /// Rotary positions: count of real tokens before, restarting at 0 for each packed example.
    pub position_ids: Vec<u32>,
    /// Packed rows only: 1, 2, ... per example in the row, 0 for padding.
    pub segment_ids: Option<Vec<u32>>,
}

impl Batch {
    /// Pads `examples` to the longest one (rounded up to `pad_to_multiple_of`).
    pub fn padded(
        examples: &[&Example],
        pad_id: u32,
        side: PaddingSide,
        pad_to_multiple_of: usize,
    ) -> Self {
        let longest = examples.iter().map(|e| e.len()).max().unwrap_or(0);
        let m = pad_to_multiple_of.max(1);
        let seq = longest.div_ceil(m) * m;
        let rows = examples.len();
        let mut b = Batch::empty(rows, seq, pad_id, false);
        for (r, ex) in examples.iter().enumerate() {
            let start = r * seq
                + if side == PaddingSide::Left {
                    seq - ex.len()
                } else {
                    0
                };
            b.place(start, ex, 0, false);
        }
        b
    }

    /// One row per bin: the bin's examples back to back, then padding to `seq`.
    pub fn packed(
        examples: &[Example],
        bins: &[Vec<usize>],
        seq: usize,
        pad_id: u32,
    ) -> Result<Self> {
        let mut b = Batch::empty(bins.len(), seq, pad_id, true);
        for (r, bin) in bins.iter().enumerate() {
            let mut at = r * seq;
            for (k, &i) in bin.iter().enumerate() {
                let ex = examples.get(i).ok_or_else(|| {
                    Error::Config(format!("bin refers to example {i} of {}", examples.len()))
                })?;
                if at + ex.len() > (r + 1) * seq {
                    return Err(Error::Config(format!("row {r} overflows {seq} tokens")));
                }
                b.place(at, ex, k as u32 + 1, true);
                at += ex.len();
            }
        }
        Ok(b)
    }

    fn empty(rows: usize, seq: usize, pad_id: u32, packed: bool) -> Self {
        let n = rows * seq;
        Batch {
            rows,
            seq,
            input_ids: vec![pad_id; n],
            attention_mask: vec![0; n],
            labels: vec![IGNORE_INDEX; n],
            position_ids: vec![0; n],
            segment_ids: packed.then(|| vec![0; n]),
        }
    }

    fn place(&mut self, start: usize, ex: &Example, segment: u32, mask_first: bool) {
        for (j, (&id, &label)) in ex.input_ids.iter().zip(&ex.labels).enumerate() {
            let k = start + j;
            self.input_ids[k] = id;
            self.attention_mask[k] = 1;
            self.labels[k] = if mask_first && j == 0 {
                IGNORE_INDEX
            } else {
                label
            };
            self.position_ids[k] = j as u32;
            if let Some(s) = &mut self.segment_ids {
                s[k] = segment;
            }
        }
    }

    /// Real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }

    /// Share of the `rows * seq` slots that hold real tokens.
    pub fn efficiency(&self) -> f64 {
        let n = self.rows * self.seq;
        if n == 0 {
            0.0
        } else {
            self.real_tokens() as f64 / n as f64
        }
    }
}

/// Best-fit-decreasing packing (TRL's `bfd` strategy): indices of `lengths` grouped into bins
/// of at most `capacity` tokens, longest examples first, each placed in the fullest bin it
/// fits. Fails on an example longer than `capacity`.
pub fn pack_bins(lengths: &[usize], capacity: usize) -> Result<Vec<Vec<usize>>> {
    if let Some((i, &l)) = lengths.iter().enumerate().find(|(_, l)| **l > capacity) {
        return Err(Error::Config(format!(
            "example {i} has {l} tokens, more than the packing length {capacity}: truncate with max_seq_len first"
        )));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    // Remaining space -> bins with that much space left (a multiset keyed by free space).
    let mut by_space: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let mut bins: Vec<(Vec<usize>, usize)> = Vec::new();
    for i in order {
        let len = lengths[i];
        let slot = by_space.range(len..).next().map(|(&space, _)| space);
        let b = match slot {
            Some(space) => {
                let list = by_space.get_mut(&space).expect("key from range");
                let b = list.pop().expect("non-empty list");
                if list.is_empty() {
                    by_space.remove(&space);
                }
                b
            }
            None => {
                bins.push((Vec::new(), capacity));
                bins.len() - 1
            }
        };
        bins[b].0.push(i);
        bins[b].1 -= len;
        by_space.entry(bins[b].1).or_default().push(b);
    }
    Ok(bins.into_iter().map(|(items, _)| items).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], first_trained: usize) -> Example {
        Example {
            input_ids: ids.to_vec(),
            labels: ids
                .iter()
                .enumerate()
                .map(|(i, &t)| if i >= first_trained { t as i64 } else { -100 })
                .collect(),
        }
    }

    #[test]
    fn padding_left_and_right() {
        let (a, b) = (ex(&[5, 6, 7], 1), ex(&[8], 0));
        let r = Batch::padded(&[&a, &b], 0, PaddingSide::Right, 4);
        assert_eq!((r.rows, r.seq), (2, 4));
        assert_eq!(r.input_ids, [5, 6, 7, 0, 8, 0, 0, 0]);
        assert_eq!(r.labels, [-100, 6, 7, -100, 8, -100, -100, -100]);
        assert_eq!(r.attention_mask, [1, 1, 1, 0, 1, 0, 0, 0]);
        let l = Batch::padded(&[&a, &b], 0, PaddingSide::Left, 1);
        assert_eq!(l.input_ids, [5, 6, 7, 0, 0, 8]);
        assert_eq!(l.position_ids, [0, 1, 2, 0, 0, 0]);
        assert!((r.efficiency() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn packing_restarts_positions_and_masks_each_first_token() {
        let exs = [ex(&[1, 2, 3], 0), ex(&[4, 5], 0), ex(&[6, 7, 8, 9], 0)];
        let bins = pack_bins(&[3, 2, 4], 5).unwrap();
        assert_eq!(bins, vec![vec![2], vec![0, 1]]);
        let b = Batch::packed(&exs, &bins, 5, 0).unwrap();
        assert_eq!(b.input_ids, [6, 7, 8, 9, 0, 1, 2, 3, 4, 5]);
        assert_eq!(b.position_ids, [0, 1, 2, 3, 0, 0, 1, 2, 0, 1]);
        assert_eq!(
            b.segment_ids.as_deref().unwrap(),
            [1, 1, 1, 1, 0, 1, 1, 1, 2, 2]
        );
        assert_eq!(b.labels, [-100, 7, 8, 9, -100, -100, 2, 3, -100, 5]);
        assert!(pack_bins(&[6], 5).is_err());
    }
}
