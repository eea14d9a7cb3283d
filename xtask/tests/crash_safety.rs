//! Crash safety of `cargo xtask train`, on the tiny fixture model with a checkpoint every step:
//!
//! - `kill -9` at seeded pseudo-random moments, 40 times: after each kill every `checkpoint-N`
//!   loads (trainer state, adapter and optimizer state), the next start removes the
//!   `.checkpoint-N.tmp` / `.checkpoint-N.del` a kill during a save or a prune left (and says so),
//!   and the killed-and-resumed run ends with the uninterrupted run's losses and adapter, bit for
//!   bit.
//! - A full disk while saving (a file-size limit, `ulimit -f`, with `SIGXFSZ` ignored so writes
//!   fail with `EFBIG`): one error naming the file being written, the previous checkpoint intact
//!   and loadable, no temporary left, and the run resumes from it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(tag: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 24 Alpaca-style records.
fn dataset(dir: &Path) -> PathBuf {
    let path = dir.join("train.jsonl");
    let lines: Vec<String> = (0..24)
        .map(|i| {
            serde_json::json!({
                "instruction": format!("Count to {i}."),
                "output": (0..=i % 7).map(|k| k.to_string()).collect::<Vec<_>>().join(" "),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// `train` arguments of a fresh LoRA run (dropout on, a checkpoint every step) named `name`.
fn fresh_args(dir: &Path, name: &str, max_steps: u64) -> Vec<String> {
    let model = root().join("crates/llama-model/tests/fixtures/models/mha_untied");
    [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        dataset(dir).to_str().unwrap(),
        "--method",
        "lora",
        "--device",
        "cpu",
        "--max-steps",
        &max_steps.to_string(),
        "--batch-size",
        "2",
        "--max-seq-len",
        "128",
        "--lr",
        "1e-2",
        "--lora-r",
        "4",
        "--seed",
        "5",
        "--save-every",
        "1",
        "--output-dir",
        dir.to_str().unwrap(),
        "--run-name",
        name,
        "--set",
        "lora.dropout=0.1",
        "--set",
        "warmup_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts `xtask args`, stderr into `log`.
fn spawn(args: &[String], log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `checkpoint-N` steps in `run`, and the names of its temporaries (`.NAME.tmp` / `.NAME.old` /
/// `.NAME.del`).
fn contents(run: &Path) -> (Vec<u64>, Vec<String>) {
    let (mut steps, mut junk) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("checkpoint-") {
            steps.push(n.parse().unwrap());
        } else if name.starts_with('.')
            && (name.ends_with(".tmp") || name.ends_with(".old") || name.ends_with(".del"))
        {
            junk.push(name);
        }
    }
    steps.sort();
    junk.sort();
    (steps, junk)
}

/// Every `checkpoint-N` directory of `run` is complete and loads the way a resume reads it
/// (trainer state, PEFT adapter, optimizer), not only the one `--resume` would pick (which skips
/// a directory without `trainer_state.json`): a save that wrote into `checkpoint-N` directly
/// would leave a partial one after a kill. Returns the newest step.
fn check_all_load(run: &Path) -> u64 {
    let (steps, _) = contents(run);
    for &step in &steps {
        let dir = run.join(format!("checkpoint-{step}"));
        let state: trainer::checkpoint::TrainerState =
            trainer::files::read_json(&dir.join("trainer_state.json"))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(state.step, step, "{}", dir.display());
        let (config, weights) =
            peft::read_adapter(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(config.r, 4);
        assert!(
            !weights.modules().is_empty(),
            "{}: empty adapter",
            dir.display()
        );
        let mut opt = trainer::AdamW::<burn_flex::Flex>::new(Default::default());
        opt.load(&dir.join("optimizer.safetensors"), &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    let (dir, state) = trainer::checkpoint::newest(run).unwrap();
    assert_eq!(
        dir.file_name().unwrap().to_string_lossy(),
        format!("checkpoint-{}", steps.last().unwrap())
    );
    state.step
}

/// `(step, loss as written)` of the training lines of `metrics.jsonl`.
fn losses(run: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["kind"] == "train")
        .map(|m| (m["step"].as_u64().unwrap(), m["loss"].to_string()))
        .collect()
}

/// SplitMix64: the kill moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_reproduces_the_run() {
    const STEPS: u64 = 150;
    const KILLS: usize = 40;
    let dir = scratch("kill");

    // The uninterrupted run, timed: the kills land anywhere in a run's life.
    let started = Instant::now();
    let whole = spawn(&fresh_args(&dir, "whole", STEPS), &dir.join("whole.log"))
        .wait_with_output()
        .unwrap();
    let full_time = started.elapsed();
    let log = std::fs::read_to_string(dir.join("whole.log")).unwrap();
    assert!(whole.status.success(), "{log}");
    let whole_run = dir.join("whole");
    assert_eq!(losses(&whole_run).len(), STEPS as usize);

    let run = dir.join("parts");
    let step_time = full_time / STEPS as u32;
    let mut rng = Rng(0x5eed_2026);
    let (mut during_save, mut before_first, mut kills) = (0, 0, 0);
    let mut resumed_from = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for attempt in 0..KILLS {
        let (steps, _) = contents(&run);
        let from = steps.last().copied().unwrap_or(0);
        let args = if steps.is_empty() {
            fresh_args(&dir, "parts", STEPS)
        } else {
            vec![
                "train".into(),
                "--resume".into(),
                run.to_str().unwrap().into(),
            ]
        };
        let log_path = dir.join(format!("parts-{attempt}.log"));
        let mut child = spawn(&args, &log_path);
        // A random moment: before the first step (loading), or after the line of one of the
        // next three steps plus a random part of a step: half of the time within its first
        // tenth, where the save that follows the step's line runs (a save of the tiny
        // model takes a few milliseconds of a ~20 ms step), else anywhere in it.
        let u = rng.next_f64();
        if u < 0.2 {
            std::thread::sleep(step_time.mul_f64(10.0 * u));
        } else {
            let target = from + 1 + (3.0 * rng.next_f64()) as u64;
            let line = format!("step {}/{STEPS} ", target.min(STEPS - 1));
            let deadline = Instant::now() + full_time * 4;
            while !std::fs::read_to_string(&log_path).unwrap().contains(&line)
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            let part = if rng.next_f64() < 0.5 { 0.1 } else { 1.0 };
            std::thread::sleep(step_time.mul_f64(part * rng.next_f64()));
        }
        let status = child.try_wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Some(status) = status {
            // Ran to the end before the moment came: nothing killed, the run is complete.
            assert!(status.success(), "{log}");
            break;
        }
        kills += 1;
        // What the previous kill left was cleaned up by this start, with a log line (once the
        // start got as far as reading the data, which comes after the cleanup).
        if log.contains("data: ") {
            for name in &pending {
                assert!(
                    log.lines()
                        .any(|l| l.contains(name.as_str()) && l.contains("interrupted")),
                    "attempt {attempt}: no line about {name}:\n{log}"
                );
            }
        }
        let (steps, junk) = contents(&run);
        if junk.iter().any(|j| j.starts_with(".checkpoint-")) {
            during_save += 1;
        }
        pending = junk;
        if steps.is_empty() {
            before_first += 1;
            continue;
        }
        resumed_from.push(check_all_load(&run));
    }

    // The last start runs to the end.
    let log_path = dir.join("parts-end.log");
    let args = vec![
        "train".to_string(),
        "--resume".into(),
        run.to_str().unwrap().into(),
    ];
    let status = spawn(&args, &log_path).wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{log}");
    for name in &pending {
        assert!(log.contains(name.as_str()), "no line about {name}:\n{log}");
    }
    assert!(
        contents(&run).1.is_empty(),
        "temporaries left: {:?}",
        contents(&run).1
    );
    assert_eq!(
        losses(&run),
        losses(&whole_run),
        "killed-and-resumed losses equal the uninterrupted run's bit for bit"
    );
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        assert!(
            std::fs::read(run.join("adapter").join(file)).unwrap()
                == std::fs::read(whole_run.join("adapter").join(file)).unwrap(),
            "adapter/{file} differs from the uninterrupted run's"
        );
    }
    assert_eq!(kills, KILLS, "every kill landed before the run's end");
    eprintln!(
        "{kills} kills (SIGKILL) of a {:.2} s run; newest checkpoint after each: {resumed_from:?}; {during_save} left a .checkpoint-N.tmp or .del (killed during a save or a prune), {before_first} came before the first checkpoint",
        full_time.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `xtask args` under a file-size limit of `blocks` (the shell's `ulimit -f` unit: 512 or 1024
/// bytes), `SIGXFSZ` ignored so an oversized write fails with `EFBIG`.
fn run_with_file_limit(args: &[String], blocks: u64) -> std::process::Output {
    let mut cmd = vec![format!(
        "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
    )];
    cmd.push(env!("CARGO_BIN_EXE_xtask").to_string());
    cmd.extend(args.iter().cloned());
    Command::new("sh").arg("-c").args(&cmd).output().unwrap()
}

#[test]
fn a_full_disk_while_saving_keeps_the_previous_checkpoint() {
    let dir = scratch("full");
    let run = dir.join("run");
    let first = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(fresh_args(&dir, "run", 2))
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(contents(&run), (vec![1, 2], vec![]));
    let adapter = run.join("checkpoint-2/adapter_model.safetensors");
    let before = std::fs::read(&adapter).unwrap();
    // A limit under a quarter of the adapter's size whatever the shell's block unit: the
    // metrics and config files still fit, the next checkpoint's adapter does not.
    let blocks = before.len() as u64 / 4096;
    assert!(blocks > 2, "adapter of {} bytes", before.len());
    let resume = |max: &str| -> Vec<String> {
        [
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--max-steps",
            max,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let out = run_with_file_limit(&resume("4"), blocks);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let line = errors[0];
    assert!(
        line.contains("could not save")
            && line.contains("checkpoint-3")
            && line.contains("adapter_model.safetensors")
            && line.contains("File too large"),
        "{line}"
    );
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("file-size limit of {blocks} blocks: {line}");
    // The previous checkpoint is intact and loads; no temporary was left.
    assert_eq!(contents(&run), (vec![1, 2], vec![]));
    assert_eq!(std::fs::read(&adapter).unwrap(), before);
    assert_eq!(check_all_load(&run), 2);
    // Without the limit the run resumes from it and finishes.
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(resume("4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("resumed from") && err.contains("checkpoint-2"),
        "{err}"
    );
    assert_eq!(contents(&run), (vec![3, 4], vec![]));
    std::fs::remove_dir_all(&dir).unwrap();
}
