//! Whole runs on the tiny fixture model: an interrupted and resumed run reproduces the
//! uninterrupted one's losses bit for bit; a non-finite loss stops the run (or is skipped) and the
//! last checkpoint stays loadable; the run directory holds what a user expects.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use trainer::report::read_metrics;
use trainer::{Method, Observer, OnNonFinite, RunPaths, StepStats, TrainConfig, run};

use common::{Ad, root};

/// Runs draw adapter initialisation and dropout masks from the backend's process-wide generator
/// (seeded per step); tests in this binary run in parallel threads, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn model() -> PathBuf {
    root().join("crates/llama-model/tests/fixtures/models/mha_untied")
}

/// A small Alpaca-style file of 24 records.
fn dataset(dir: &Path) -> PathBuf {
    common::counting_data(dir, 24, 7)
}

fn config(dir: &Path, method: Method) -> TrainConfig {
    let mut c = TrainConfig {
        data: vec![dataset(dir)],
        method,
        max_steps: 6,
        batch_size: 2,
        grad_accum: 2,
        max_seq_len: 128,
        warmup_steps: 1,
        valid_ratio: 0.2,
        save_every: 3,
        seed: 5,
        ..TrainConfig::default()
    };
    c.optimizer.lr = 1e-2;
    c.lora.r = 4;
    c.lora.dropout = 0.1;
    c
}

/// Stops the run after `at` steps (as Ctrl-C would).
struct StopAt {
    at: u64,
    flag: &'static AtomicBool,
}

impl Observer for StopAt {
    fn step(&mut self, step: u64, _: u64, _: &StepStats, _: f64) {
        if step == self.at {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
    fn info(&mut self, _: &str) {}
}

fn train_losses(run_dir: &Path) -> Vec<(u64, u64)> {
    read_metrics(&run_dir.join("metrics.jsonl"), None)
        .unwrap()
        .iter()
        .filter(|m| m.kind == "train")
        .map(|m| (m.step, m.loss.to_bits()))
        .collect()
}

fn check_resume(method: Method, tag: &str) {
    check_resume_with(method, tag, false);
}

fn check_resume_with(method: Method, tag: &str, gradient_checkpointing: bool) {
    let _turn = serial();
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trainer-resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cfg = config(&tmp, method);
    cfg.gradient_checkpointing = gradient_checkpointing;
    let whole = RunPaths {
        model: llama_model::ModelSource::from_path(model()).unwrap(),
        run_dir: tmp.join("whole"),
        resume: false,
    };
    let never = AtomicBool::new(false);
    let summary = run::<Ad>(
        &cfg,
        &whole,
        &Default::default(),
        &mut trainer::Quiet,
        &never,
    )
    .unwrap();
    assert_eq!(summary.steps, 6);
    let full = train_losses(&whole.run_dir);
    assert_eq!(full.len(), 6);

    // Interrupted after step 4: the checkpoint is taken there, then resumed.
    // One flag per test (the tests run in parallel).
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let parts = RunPaths {
        run_dir: tmp.join("parts"),
        ..whole.clone()
    };
    let mut obs = StopAt { at: 4, flag: stop };
    let first = run::<Ad>(&cfg, &parts, &Default::default(), &mut obs, stop).unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps, 4);
    assert!(
        parts
            .run_dir
            .join("checkpoint-4/trainer_state.json")
            .is_file()
    );
    let resumed = RunPaths {
        resume: true,
        ..parts.clone()
    };
    let never = AtomicBool::new(false);
    let second = run::<Ad>(
        &cfg,
        &resumed,
        &Default::default(),
        &mut trainer::Quiet,
        &never,
    )
    .unwrap();
    assert_eq!(second.steps, 6);
    assert_eq!(
        train_losses(&parts.run_dir),
        full,
        "{tag}: resumed losses equal the uninterrupted run's bit for bit"
    );
    assert_eq!(
        second.eval_loss_after.map(f64::to_bits),
        summary.eval_loss_after.map(f64::to_bits)
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn lora_resume_is_bit_identical() {
    check_resume(Method::Lora, "lora");
}

#[test]
fn qlora_resume_is_bit_identical() {
    check_resume(Method::Qlora, "qlora");
}

#[test]
fn full_resume_is_bit_identical() {
    check_resume(Method::Full, "full");
}

/// With activation checkpointing (layers run twice, dropout reseeded per layer) too.
#[test]
fn checkpointed_qlora_resume_is_bit_identical() {
    check_resume_with(Method::Qlora, "qlora-ckpt", true);
}

#[test]
fn a_run_leaves_a_peft_adapter_metrics_and_a_summary() {
    let _turn = serial();
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trainer-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = TrainConfig {
        save_every: 2,
        keep_checkpoints: 2,
        report_to: vec![trainer::ReportTo::Tensorboard],
        ..config(&tmp, Method::Qlora)
    };
    let paths = RunPaths {
        model: llama_model::ModelSource::from_path(model()).unwrap(),
        run_dir: tmp.join("run"),
        resume: false,
    };
    let never = AtomicBool::new(false);
    let s = run::<Ad>(
        &cfg,
        &paths,
        &Default::default(),
        &mut trainer::Quiet,
        &never,
    )
    .unwrap();
    let d = &paths.run_dir;
    for f in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/README.md",
        "loss.png",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    // Only the last two checkpoints are kept (2, 4 then 6: 4 and 6 remain).
    let kept: Vec<u64> = trainer::checkpoint::checkpoints(d)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, vec![4, 6]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    for k in [
        "steps",
        "tokens",
        "wall_s",
        "peak_rss_bytes",
        "eval_loss_before",
        "eval_loss_after",
    ] {
        assert!(!summary[k].is_null(), "summary.json lacks {k}");
    }
    assert_eq!(s.steps, 6);
    assert!(s.tokens > 0 && s.peak_rss_bytes > 0);
    // TensorBoard: one event file, every record's CRCs valid, a loss per step.
    let tb: Vec<PathBuf> = std::fs::read_dir(d.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tb.len(), 1, "{tb:?}");
    let name = tb[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let bytes = std::fs::read(&tb[0]).unwrap();
    let (mut at, mut records) = (0, Vec::new());
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let data = &bytes[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        let masked = trainer::tensorboard::crc32c(data)
            .rotate_right(15)
            .wrapping_add(0xa282_ead8);
        assert_eq!(crc, masked, "record {}", records.len());
        records.push(data.to_vec());
        at += 16 + len;
    }
    let with_tag = |tag: &str| {
        records
            .iter()
            .filter(|r| r.windows(tag.len()).any(|w| w == tag.as_bytes()))
            .count()
    };
    assert_eq!(with_tag("train/loss"), 6);
    assert_eq!(with_tag("train/learning_rate"), 6);
    assert_eq!(with_tag("eval/loss"), 2, "before and after");
    // The saved config reads back to the same configuration.
    let back = TrainConfig::from_file(&d.join("config.toml")).unwrap();
    assert_eq!(back, cfg);
    // The adapter loads onto the 4-bit base.
    let mut m =
        llama_model::load_pretrained::<burn_flex::Flex>(model(), &Default::default()).unwrap();
    llama_model::load_adapter(&mut m, d.join("adapter")).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let _turn = serial();
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trainer-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // An absurd learning rate: the first update is finite, after it the loss overflows.
    let mut cfg = TrainConfig {
        save_every: 1,
        warmup_steps: 0,
        schedule: trainer::ScheduleKind::Constant,
        ..config(&tmp, Method::Lora)
    };
    cfg.optimizer.lr = 1e30;
    cfg.lora.dropout = 0.0;
    let paths = RunPaths {
        model: llama_model::ModelSource::from_path(model()).unwrap(),
        run_dir: tmp.join("run"),
        resume: false,
    };
    let never = AtomicBool::new(false);
    let e = run::<Ad>(
        &cfg,
        &paths,
        &Default::default(),
        &mut trainer::Quiet,
        &never,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not finite") && e.contains("checkpoint-1"),
        "{e}"
    );
    // The good checkpoint is whole and loads.
    let mut m =
        llama_model::load_pretrained::<burn_flex::Flex>(model(), &Default::default()).unwrap();
    llama_model::load_adapter(&mut m, paths.run_dir.join("checkpoint-1")).unwrap();

    // With on_non_finite = skip the run goes on and counts the skipped steps.
    cfg.on_non_finite = OnNonFinite::Skip;
    let paths = RunPaths {
        run_dir: tmp.join("skip"),
        ..paths
    };
    let s = run::<Ad>(
        &cfg,
        &paths,
        &Default::default(),
        &mut trainer::Quiet,
        &never,
    )
    .unwrap();
    assert!(s.skipped_steps >= 1 && s.steps == 6, "{s:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
