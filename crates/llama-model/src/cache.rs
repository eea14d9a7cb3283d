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

    pub(crate) fn layer(&mut self, i: usize) -> &mut LayerCache<B> {
        &mut self.layers[i]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
