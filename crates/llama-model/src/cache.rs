//! Pre-allocated key/value cache for incremental decoding.

use burn::prelude::*;

use crate::config::LlamaConfig;

/// Keys and values of one layer, allocated once for the whole generation.
#[derive(Debug)]
pub struct LayerCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
}

impl<B: Backend> LayerCache<B> {
    /// Writes the new keys/values at `past..past + seq` and returns everything cached so far.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, seq, head_dim]` -> two `[batch, kv_heads, past + seq, head_dim]`
    pub(crate) fn update(
        &mut self,
        past: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, s, d] = k.dims();
        let end = past + s;
        let ranges = [0..b, 0..h, past..end, 0..d];
        // Taking the buffers out keeps them uniquely owned, so backends can write in place.
        let (Some(ck), Some(cv)) = (self.k.take(), self.v.take()) else {
            unreachable!("layer cache buffers are always restored after an update")
        };
        let ck = ck.slice_assign(ranges.clone(), k);
        let cv = cv.slice_assign(ranges, v);
        let out = (
            ck.clone().slice([0..b, 0..h, 0..end, 0..d]),
            cv.clone().slice([0..b, 0..h, 0..end, 0..d]),
        );
        self.k = Some(ck);
        self.v = Some(cv);
        out
    }
}

/// The cache of every layer plus the number of positions already filled.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
    batch: usize,
}

impl<B: Backend> KvCache<B> {
    /// Allocates room for `capacity` positions of `batch` sequences.
    pub fn new(config: &LlamaConfig, batch: usize, capacity: usize, device: &B::Device) -> Self {
        let shape = [batch, config.num_key_value_heads, capacity, config.head_dim];
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerCache {
                k: Some(Tensor::zeros(shape, device)),
                v: Some(Tensor::zeros(shape, device)),
            })
            .collect();
        Self {
            layers,
            len: 0,
            capacity,
            batch,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the cached positions (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Sequences (rows) held.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Rebuilds the buffers with room for `capacity` positions: the cached positions
    /// `drop..len` are kept and `pad` empty (zero) positions are put before them, so afterwards
    /// `len = pad + len - drop`. Keys are stored after the rotary embedding, so moving them does
    /// not change what they encode; the caller masks the empty positions. Used by continuous
    /// batching to align a new sequence with the running ones, to grow the buffers and to drop
    /// positions no row needs any more.
    ///
    /// # Panics
    /// When `drop > len` or the result does not fit `capacity`.
    pub fn relayout(&mut self, drop: usize, pad: usize, capacity: usize) {
        assert!(
            drop <= self.len,
            "relayout drops {drop} of {} positions",
            self.len
        );
        let keep = self.len - drop;
        assert!(
            pad + keep <= capacity,
            "relayout needs {} positions, capacity {capacity}",
            pad + keep
        );
        let len = self.len;
        let moved = |buf: Tensor<B, 4>| {
            let [b, h, _, d] = buf.dims();
            let fresh = Tensor::zeros([b, h, capacity, d], &buf.device());
            if keep == 0 {
                return fresh;
            }
            let kept = buf.slice([0..b, 0..h, drop..len, 0..d]);
            fresh.slice_assign([0..b, 0..h, pad..pad + keep, 0..d], kept)
        };
        for layer in &mut self.layers {
            layer.k = layer.k.take().map(moved);
            layer.v = layer.v.take().map(moved);
        }
        self.len = pad + keep;
        self.capacity = capacity;
    }

    /// Keeps the rows `rows`, in that order (a row may not repeat).
    ///
    /// # Panics
    /// When `rows` is empty or names a row that does not exist.
    pub fn select_rows(&mut self, rows: &[usize]) {
        assert!(!rows.is_empty(), "a cache keeps at least one row");
        assert!(
            rows.iter().all(|&r| r < self.batch),
            "rows {rows:?} of a cache of {} rows",
            self.batch
        );
        let pick = |buf: Tensor<B, 4>| {
            let idx = rows.iter().map(|&r| r as i64).collect::<Vec<_>>();
            let idx =
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &buf.device());
            buf.select(0, idx)
        };
        for layer in &mut self.layers {
            layer.k = layer.k.take().map(pick);
            layer.v = layer.v.take().map(pick);
        }
        self.batch = rows.len();
    }

    /// Appends the rows of `other` after this cache's rows.
    ///
    /// # Panics
    /// When the two caches differ in length, capacity or layer count.
    pub fn append_rows(&mut self, other: KvCache<B>) {
        assert!(
            self.len == other.len
                && self.capacity == other.capacity
                && self.layers.len() == other.layers.len(),
            "append_rows: caches of {}/{} and {}/{} positions (len/capacity)",
            self.len,
            self.capacity,
            other.len,
            other.capacity
        );
        for (layer, theirs) in self.layers.iter_mut().zip(other.layers) {
            let cat = |a: Option<Tensor<B, 4>>, b: Option<Tensor<B, 4>>| match (a, b) {
                (Some(a), Some(b)) => Some(Tensor::cat(vec![a, b], 0)),
                _ => unreachable!("layer cache buffers are always present between calls"),
            };
            layer.k = cat(layer.k.take(), theirs.k);
            layer.v = cat(layer.v.take(), theirs.v);
        }
        self.batch += other.batch;
    }

    pub(crate) fn layer(&mut self, i: usize) -> &mut LayerCache<B> {
        &mut self.layers[i]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
