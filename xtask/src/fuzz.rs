//! `cargo xtask fuzz TARGET --minutes N`: builds the AFL++ driver of `crates/fuzz` once
//! (instrumented release build with overflow checks and debug assertions, in `target/afl`), runs
//! `cargo afl fuzz` on `crates/fuzz/seeds/TARGET` for N minutes and prints the run's figures from
//! AFL++'s `fuzzer_stats`. Needs `cargo install cargo-afl` and `cargo afl config --build` once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Arguments of `fuzz`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target: a directory name under `crates/fuzz/seeds` (safetensors, safetensors_index, gguf,
    /// bnb_state, adapter_config, tokenizer_config, records).
    pub target: String,
    /// Wall-clock minutes to fuzz (AFL++ `-V`).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// AFL++ output directory (queue, crashes, hangs, fuzzer_stats); default
    /// `target/fuzz/TARGET`, emptied first unless `--resume`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the queue of an earlier run in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Per-execution timeout in milliseconds (AFL++ `-t`; an input slower than this is a hang).
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Only print the figures of the run already in the output directory.
    #[arg(long)]
    pub stats_only: bool,
}

/// The settings every fuzz build uses (changing them rebuilds everything in `target/afl`).
const PROFILE_ENV: [(&str, &str); 3] = [
    ("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true"),
    ("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true"),
    // Dependencies are instrumented too; opt-level 1 halves the build on small machines.
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Builds, runs and reports one target.
pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    let seeds = root.join("crates/fuzz/seeds").join(&args.target);
    if !seeds.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(root.join("crates/fuzz/seeds"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        bail!(
            "unknown fuzz target `{}`: expected one of {}",
            args.target,
            names.join(", ")
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/fuzz").join(&args.target));
    if args.stats_only {
        return report(&args.target, &out);
    }
    if !args.minutes.is_finite() || args.minutes <= 0.0 {
        bail!("--minutes {}: expected a positive number", args.minutes);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let afl = Command::new(&cargo).args(["afl", "--version"]).output();
    if !afl.is_ok_and(|o| o.status.success()) {
        bail!(
            "`cargo afl` is not installed: run `cargo install cargo-afl` and `cargo afl config --build`"
        );
    }
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "afl",
            "build",
            "--release",
            "-p",
            "fuzz",
            "--features",
            "afl",
        ])
        .args(["--target-dir", "target/afl"])
        .envs(PROFILE_ENV)
        .status()
        .context("running cargo afl build")?;
    if !status.success() {
        bail!("cargo afl build failed ({status})");
    }
    if !args.resume && out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seconds = (args.minutes * 60.0).round().max(1.0) as u64;
    let binary = root.join("target/afl/release/fuzz-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["afl", "fuzz", "-V", &seconds.to_string()])
        .args(["-t", &args.timeout_ms.to_string()])
        .arg("-i")
        .arg(if args.resume { Path::new("-") } else { &seeds })
        .arg("-o")
        .arg(&out)
        .arg("--")
        .arg(&binary)
        .arg(&args.target)
        // Plain status lines instead of the curses screen; no CPU pinning on shared machines;
        // crashes still land in out/default/crashes when core dumps are piped elsewhere.
        .env("AFL_NO_UI", "1")
        .env("AFL_SKIP_CPUFREQ", "1")
        .env("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1");
    if std::env::var_os("AFL_NO_AFFINITY").is_none() {
        cmd.env("AFL_NO_AFFINITY", "1");
    }
    let status = cmd.status().context("running cargo afl fuzz")?;
    if !status.success() {
        bail!("cargo afl fuzz failed ({status})");
    }
    report(&args.target, &out)
}

/// Prints executions, speed, corpus, crashes and hangs from `OUT/default/fuzzer_stats`.
fn report(target: &str, out: &Path) -> Result<()> {
    let path = out.join("default/fuzzer_stats");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stats: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |key: &str| {
        stats
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("?", |(_, v)| *v)
    };
    let secs: f64 = get("run_time").parse().unwrap_or(f64::NAN);
    let execs: f64 = get("execs_done").parse().unwrap_or(f64::NAN);
    println!("target         {target}");
    println!("minutes        {:.1}", secs / 60.0);
    println!("executions     {}", get("execs_done"));
    println!(
        "execs/s        {:.1} (AFL++ last: {})",
        execs / secs,
        get("execs_per_sec")
    );
    println!("corpus         {}", get("corpus_count"));
    println!(
        "edges found    {} ({})",
        get("edges_found"),
        get("bitmap_cvg")
    );
    println!("stability      {}", get("stability"));
    println!("crashes        {}", get("saved_crashes"));
    println!("hangs          {}", get("saved_hangs"));
    for kind in ["crashes", "hangs"] {
        let dir = out.join("default").join(kind);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name() != "README.txt" {
                    println!("  {kind}: {}", e.path().display());
                }
            }
        }
    }
    Ok(())
}
