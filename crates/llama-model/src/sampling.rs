//! Next-token selection on the host: greedy, or temperature, top-k and top-p sampling applied in
//! the order transformers' logits warpers use.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1.0 = off).
    pub top_p: f64,
    /// Seed of the sampler's random generator.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
        }
    }
}

impl SamplingConfig {
    /// Checks the settings: `temperature` finite and >= 0, `top_p` in (0, 1] (1 = off). Named as
    /// transformers' `GenerationConfig` names them.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature {}: expected a finite number >= 0 (0 = greedy)",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!(
                "top_p {}: expected a number in (0, 1] (1 = off)",
                self.top_p
            ));
        }
        Ok(())
    }
}

/// A seeded sampler.
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

/// Index of the largest value; the first one wins a tie (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

impl Sampler {
    /// A sampler for `config`.
    pub fn new(config: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// Picks a token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = &self.config;
        if c.temperature <= 0.0 {
            return argmax(logits) as u32;
        }
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let keep = if c.top_k > 0 {
            c.top_k.min(idx.len())
        } else {
            idx.len()
        };
        idx.truncate(keep);
        let t = c.temperature as f32;
        let max = logits[idx[0]] / t;
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((logits[i] / t - max).exp()))
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if c.top_p < 1.0 {
            // Keep tokens until the cumulative probability reaches top_p (at least one).
            let mut cum = 0.0;
            let mut cut = probs.len();
            for (n, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= c.top_p {
                    cut = n + 1;
                    break;
                }
            }
            probs.truncate(cut);
            idx.truncate(cut);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r: f64 = self.rng.random();
        let mut cum = 0.0;
        for (n, p) in probs.iter().enumerate() {
            cum += p;
            if r < cum {
                return idx[n] as u32;
            }
        }
        idx[idx.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.sample(&[0.0, 1.0, 5.0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg);
        for _ in 0..10 {
            assert_eq!(s.sample(&logits) as usize, argmax(&logits));
        }
        let cfg = SamplingConfig {
            temperature: 0.8,
            top_k: 20,
            top_p: 0.9,
            seed: 7,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone());
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn top_p_excludes_unlikely_tokens() {
        // One token holds ~97% of the mass: top_p 0.9 must always pick it.
        let logits = [10.0f32, 6.0, 5.0, 4.0];
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
            seed: 1,
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&logits), 0);
        }
        // Without top_p the other tokens do show up.
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1,
        });
        assert!((0..500).any(|_| s.sample(&logits) != 0));
    }
}
