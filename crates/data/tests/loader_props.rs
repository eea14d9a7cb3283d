//! Property tests of the resumable loader: resuming a fresh loader from the position saved at
//! any step yields exactly the batches of an uninterrupted run, and every epoch sees every
//! example exactly once (padded or packed, shuffled or not, grouped by length or not).

use data::{Batch, Example, Loader, LoaderConfig, PaddingSide, Position};
use proptest::prelude::*;

/// Example `i` holds tokens `100 i + 1, 100 i + 2, ...` so every token names its example and no
/// token equals the pad id 0.
fn examples(lengths: &[usize]) -> Vec<Example> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let ids: Vec<u32> = (0..len as u32).map(|t| 100 * i as u32 + 1 + t).collect();
            Example {
                labels: ids.iter().map(|&t| t as i64).collect(),
                input_ids: ids,
            }
        })
        .collect()
}

fn config() -> impl Strategy<Value = LoaderConfig> {
    (
        1usize..6,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        1usize..4,
        prop::option::of(12usize..30),
    )
        .prop_map(
            |(batch_size, seed, shuffle, group_by_length, left, pad_to_multiple_of, packing)| {
                LoaderConfig {
                    batch_size,
                    seed,
                    shuffle,
                    group_by_length,
                    padding_side: if left {
                        PaddingSide::Left
                    } else {
                        PaddingSide::Right
                    },
                    pad_to_multiple_of,
                    pad_id: 0,
                    packing,
                }
            },
        )
}

/// Real tokens of a batch, by example: each example's tokens in order.
fn tokens_by_example(batch: &Batch, out: &mut [Vec<u32>]) {
    for (&t, &m) in batch.input_ids.iter().zip(&batch.attention_mask) {
        if m == 1 {
            out[((t - 1) / 100) as usize].push(t);
        } else {
            assert_eq!(t, 0, "padding holds the pad id");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn resume_matches_an_uninterrupted_run(
        lengths in prop::collection::vec(1usize..12, 1..40),
        cfg in config(),
        cut in any::<prop::sample::Index>(),
    ) {
        let exs = examples(&lengths);
        let loader = Loader::new(&exs, cfg.clone()).unwrap();
        let total = 2 * loader.batches_per_epoch() + 3;
        let mut it = loader.iter();
        let mut run: Vec<(Position, Batch)> = Vec::new();
        for _ in 0..total {
            let pos = it.position();
            run.push((pos, it.next().unwrap()));
        }
        // A restart: a new loader over the same data and settings, from the saved position.
        let k = cut.index(total);
        let restarted = Loader::new(&exs, cfg).unwrap();
        let resumed: Vec<Batch> = restarted.resume(run[k].0).take(total - k).collect();
        let expected: Vec<Batch> = run[k..].iter().map(|(_, b)| b.clone()).collect();
        prop_assert_eq!(resumed, expected);
    }

    #[test]
    fn every_epoch_sees_every_example_once(
        lengths in prop::collection::vec(1usize..12, 1..40),
        cfg in config(),
    ) {
        let exs = examples(&lengths);
        let loader = Loader::new(&exs, cfg).unwrap();
        let per_epoch = loader.batches_per_epoch();
        let mut it = loader.iter();
        for epoch in 0..3 {
            let mut seen = vec![Vec::new(); exs.len()];
            for step in 0..per_epoch {
                // The iterator moves to the next epoch lazily: after an epoch's last batch it
                // reports (epoch, batches_per_epoch), which resumes at the next epoch's start.
                let pos = it.position();
                let end_of_previous = step == 0
                    && epoch > 0
                    && pos == Position { epoch: epoch - 1, step: per_epoch };
                prop_assert!(pos == Position { epoch, step } || end_of_previous, "{:?}", pos);
                tokens_by_example(&it.next().unwrap(), &mut seen);
            }
            for (ex, tokens) in exs.iter().zip(&seen) {
                prop_assert_eq!(tokens, &ex.input_ids);
            }
        }
    }
}
