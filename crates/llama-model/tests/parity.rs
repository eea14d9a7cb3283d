//! Parity with transformers on the tiny fixture checkpoints: logits, padding, greedy generation
//! with the KV cache, and eval loss. References come from `scripts/fixtures/make_llama_fixtures.py`.

mod common;

use burn::prelude::*;
use common::{Expected, MODELS, fixtures, max_abs_diff, model_dir};
use llama_model::{GenerationConfig, ModelInput, generate, load_pretrained, sequence_nll};
use llama_tokenizer::LlamaTokenizer;

const TOL: f32 = 1e-4;

fn ids_tensor<B: quant::QuantBackend>(ids: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids, shape), &Default::default())
}

fn to_vec<B: quant::QuantBackend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Every check runs on both CPU backends, burn-ndarray and burn-flex, with the `wgpu` feature on
/// the wgpu device (Vulkan; lavapipe in CI) and with the `cuda` feature on CUDA (`--ignored`),
/// with the same tolerances.
macro_rules! on_backends {
    ($($name:ident => $body:ident;)*) => {
        mod ndarray {
            $(#[test] fn $name() { super::$body::<burn_ndarray::NdArray<f32>>(); })*
        }
        mod flex {
            $(#[test] fn $name() { super::$body::<burn_flex::Flex>(); })*
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $(#[test] fn $name() {
                if quant::gpu::test_device().is_some() {
                    super::$body::<quant::gpu::Wgpu>();
                }
            })*
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $(#[test]
            #[ignore = "needs an NVIDIA GPU (libcuda); run with --ignored on a GPU machine"]
            fn $name() { super::$body::<quant::Cuda>(); })*
        }
    };
}

on_backends! {
    logits_match_transformers => logits;
    padded_batch_matches_transformers_and_unpadded_rows => padded_batch;
    greedy_generation_matches_transformers => greedy_generation;
    eval_loss_matches_transformers => eval_loss;
}

fn logits<B: quant::QuantBackend>() {
    for name in MODELS {
        let model = load_pretrained::<B>(model_dir(name), &Default::default()).unwrap();
        let exp = Expected::load(name);
        let shape = exp.shape("input_ids");
        let logits = model.forward(
            ModelInput::new(ids_tensor::<B>(exp.i64("input_ids"), [shape[0], shape[1]])),
            None,
        );
        let diff = max_abs_diff(&to_vec(logits), &exp.f32("logits"));
        eprintln!("{name}: max |logit diff| = {diff:e}");
        assert!(diff <= TOL, "{name}: max |logit diff| {diff} > {TOL}");
    }
}

fn padded_batch<B: quant::QuantBackend>() {
    for name in MODELS {
        let model = load_pretrained::<B>(model_dir(name), &Default::default()).unwrap();
        let exp = Expected::load(name);
        let [b, s] = [3, 12];
        let mask = exp.i64("padded_attention_mask");
        let input = ModelInput::new(ids_tensor::<B>(exp.i64("padded_input_ids"), [b, s]))
            .with_mask(ids_tensor::<B>(mask.clone(), [b, s]));
        // Positions are derived from the mask (not passed), as generate() would.
        let ours = to_vec(model.forward(input, None));
        let theirs = exp.f32("padded_logits");
        let vocab = ours.len() / (b * s);
        let mut worst = 0.0f32;
        for (pos, &m) in mask.iter().enumerate() {
            if m == 1 {
                let r = pos * vocab..(pos + 1) * vocab;
                let d = max_abs_diff(&ours[r.clone()], &theirs[r]);
                worst = worst.max(d);
            }
        }
        assert!(worst <= TOL, "{name}: padded max diff {worst}");
        // Row 0 is left-padded by 4: its real positions equal an unpadded run of the 8 tokens.
        let alone = exp.f32("unpadded_row0_logits");
        let row0 = &ours[4 * vocab..12 * vocab];
        let diff = max_abs_diff(row0, &alone);
        eprintln!("{name}: padded max diff {worst:e}, left-padded vs unpadded {diff:e}");
        assert!(
            diff <= TOL,
            "{name}: left-padded row differs from unpadded run by {diff}"
        );
    }
}

fn gen_config(exp: &Expected) -> GenerationConfig {
    let eos: Vec<u32> = exp.json["eos_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    GenerationConfig {
        max_new_tokens: 20,
        eos_token_ids: eos,
        pad_token_id: exp.json["pad_token_id"].as_u64().unwrap() as u32,
        ..Default::default()
    }
}

fn greedy_generation<B: quant::QuantBackend>() {
    for name in MODELS {
        let model = load_pretrained::<B>(model_dir(name), &Default::default()).unwrap();
        let exp = Expected::load(name);
        let cfg = gen_config(&exp);
        let prompt = exp.rows_u32("gen_prompt_ids");
        let mut streamed = Vec::new();
        let out = generate(&model, &prompt, &cfg, |row, tok| streamed.push((row, tok))).unwrap();
        let expected = exp.rows_u32("gen_output_ids");
        assert_eq!(out, expected, "{name}: greedy tokens");
        assert_eq!(
            streamed.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
            expected[0],
            "{name}: streamed tokens"
        );

        // Batched, left-padded prompts: rows that stop are padded like transformers pads them.
        let mask = exp.rows_u32("gen_batch_attention_mask");
        let prompts: Vec<Vec<u32>> = exp
            .rows_u32("gen_batch_prompt_ids")
            .into_iter()
            .zip(&mask)
            .map(|(ids, m)| {
                ids.into_iter()
                    .zip(m)
                    .filter(|&(_, &m)| m == 1)
                    .map(|(t, _)| t)
                    .collect()
            })
            .collect();
        let out = generate(&model, &prompts, &cfg, |_, _| {}).unwrap();
        let expected = exp.rows_u32("gen_batch_output_ids");
        for (row, (ours, theirs)) in out.iter().zip(&expected).enumerate() {
            let mut padded = ours.clone();
            padded.resize(theirs.len(), cfg.pad_token_id);
            assert_eq!(&padded, theirs, "{name}: batched row {row}");
        }
    }
}

fn eval_loss<B: quant::QuantBackend>() {
    let text = std::fs::read_to_string(fixtures().join("eval.txt")).unwrap();
    for name in MODELS {
        let dir = model_dir(name);
        let model = load_pretrained::<B>(&dir, &Default::default()).unwrap();
        let tok = LlamaTokenizer::from_dir(&dir).unwrap();
        let exp = Expected::load(name);
        let bos = model.config().bos_token_id.unwrap();
        let (mut total, mut tokens, mut docs) = (0.0, 0, 0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut ids = vec![bos];
            ids.extend(tok.encode(line, false).unwrap());
            let nll = sequence_nll(&model, &ids).unwrap();
            total += nll.total;
            tokens += nll.tokens;
            docs += 1;
        }
        let eval = &exp.json["eval"];
        assert_eq!(docs, eval["documents"].as_u64().unwrap() as usize);
        assert_eq!(tokens, eval["tokens"].as_u64().unwrap() as usize);
        let loss = total / tokens as f64;
        let want = eval["loss"].as_f64().unwrap();
        let rel = ((loss - want) / want).abs();
        eprintln!("{name}: eval loss {loss:.8} vs transformers {want:.8} (rel {rel:e})");
        assert!(rel <= 1e-5, "{name}: loss {loss} vs {want}");
    }
}
