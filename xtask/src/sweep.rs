//! `cargo xtask sweep --config sweep.toml`: grid or random search over training settings. Each
//! trial is an ordinary run directory under `<output_dir>/<name>/`; the objective is the final
//! validation loss; poor trials can be stopped early (the median rule); the sweep resumes where
//! it stopped; results go to `results.csv`, `results.json`, `sweep.png` and `best.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use quant::QuantBackend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use trainer::plot::{TrialCurve, sweep_plot};
use trainer::{Device, Observer, RunPaths, StepStats, Summary, TrainConfig};

/// Arguments of `sweep`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The sweep file (see docs/sweep.md).
    #[arg(long)]
    config: PathBuf,
}

/// `sweep.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// The sweep's directory name under `output_dir`.
    name: String,
    #[serde(default = "default_output")]
    output_dir: PathBuf,
    /// `grid` (every combination, in order) or `random` (`trials` draws).
    #[serde(default)]
    search: Search,
    /// Most trials (random search: how many to draw; grid: a cap).
    trials: Option<usize>,
    /// Stop starting trials once this many optimizer steps have run in all.
    max_total_steps: Option<u64>,
    /// Seed of the random search.
    #[serde(default)]
    seed: u64,
    /// Early stop of poor trials.
    early_stop: Option<EarlyStop>,
    /// Trials run side by side (at most; fewer when the memory planner says they do not fit).
    #[serde(default = "one")]
    parallel: usize,
    /// The training configuration every trial starts from (any `train.toml` field).
    #[serde(default)]
    base: toml::Table,
    /// Settings to search: `"key" = [values]` (a list of choices), or
    /// `{ uniform = [lo, hi] }`, `{ log_uniform = [lo, hi] }`, `{ int_uniform = [lo, hi] }`.
    params: BTreeMap<String, toml::Value>,
}

fn one() -> usize {
    1
}

fn default_output() -> PathBuf {
    PathBuf::from("runs")
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Search {
    #[default]
    Grid,
    Random,
}

/// The median rule (Optuna's `MedianPruner`): at an evaluation of step `s >= warmup_steps`, stop
/// the trial when its validation loss is above the median of the finished trials' losses at `s`,
/// once `min_trials` trials have finished.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct EarlyStop {
    rule: String,
    #[serde(default = "default_min_trials")]
    min_trials: usize,
    #[serde(default)]
    warmup_steps: u64,
}

fn default_min_trials() -> usize {
    3
}

/// One trial: its settings and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Trial {
    name: String,
    params: Vec<(String, toml::Value)>,
    /// `done`, `pruned` or `failed`.
    status: String,
    objective: Option<f64>,
    steps: u64,
    wall_s: f64,
    evals: Vec<(u64, f64)>,
    error: Option<String>,
}

/// `sweep.json`: the plan (to recognise the same sweep when resuming) and the trials so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    sweep: SweepFile,
    plan: Vec<Vec<(String, toml::Value)>>,
    trials: Vec<Trial>,
}

/// Set by Ctrl-C: no new trial starts, and every running trial stops at its next step.
static CTRL_C: AtomicBool = AtomicBool::new(false);
/// The stop flags of the running trials (Ctrl-C sets them all).
static RUNNING: Mutex<Vec<Arc<AtomicBool>>> = Mutex::new(Vec::new());

/// A parameter's search space.
enum Space {
    Choices(Vec<toml::Value>),
    Uniform(f64, f64),
    LogUniform(f64, f64),
    IntUniform(i64, i64),
}

fn space(key: &str, v: &toml::Value) -> Result<Space> {
    let bad = || {
        anyhow!(
            "params.\"{key}\": expected a list of values or one of {{ uniform = [lo, hi] }}, {{ log_uniform = [lo, hi] }}, {{ int_uniform = [lo, hi] }}"
        )
    };
    match v {
        toml::Value::Array(a) if !a.is_empty() => Ok(Space::Choices(a.clone())),
        toml::Value::Table(t) if t.len() == 1 => {
            let (kind, range) = t.iter().next().ok_or_else(bad)?;
            let pair = range.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
            let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
            let (lo, hi) = (
                num(&pair[0]).ok_or_else(bad)?,
                num(&pair[1]).ok_or_else(bad)?,
            );
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                bail!("params.\"{key}\": {kind} range [{lo}, {hi}]: expected lo < hi");
            }
            match kind.as_str() {
                "uniform" => Ok(Space::Uniform(lo, hi)),
                "log_uniform" if lo > 0.0 => Ok(Space::LogUniform(lo, hi)),
                "log_uniform" => bail!("params.\"{key}\": log_uniform needs lo > 0"),
                "int_uniform" => Ok(Space::IntUniform(lo as i64, hi as i64)),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// Every trial's settings, in order.
fn plan(sweep: &SweepFile) -> Result<Vec<Vec<(String, toml::Value)>>> {
    if sweep.params.is_empty() {
        bail!("params: no setting to search; add e.g. \"optimizer.lr\" = [1e-4, 2e-4]");
    }
    let spaces: Vec<(String, Space)> = sweep
        .params
        .iter()
        .map(|(k, v)| Ok((k.clone(), space(k, v)?)))
        .collect::<Result<_>>()?;
    let mut out: Vec<Vec<(String, toml::Value)>> = Vec::new();
    match sweep.search {
        Search::Grid => {
            out.push(Vec::new());
            for (k, s) in &spaces {
                let Space::Choices(values) = s else {
                    bail!(
                        "params.\"{k}\": a grid search takes a list of values; ranges need search = \"random\""
                    );
                };
                out = out
                    .into_iter()
                    .flat_map(|prefix| {
                        values.iter().map(move |v| {
                            let mut p = prefix.clone();
                            p.push((k.clone(), v.clone()));
                            p
                        })
                    })
                    .collect();
            }
            if let Some(n) = sweep.trials {
                out.truncate(n);
            }
        }
        Search::Random => {
            let n = sweep
                .trials
                .ok_or_else(|| anyhow!("trials: a random search needs the number of trials"))?;
            let mut rng = StdRng::seed_from_u64(sweep.seed);
            for _ in 0..n {
                let p = spaces
                    .iter()
                    .map(|(k, s)| {
                        let v = match s {
                            Space::Choices(c) => c[rng.random_range(0..c.len())].clone(),
                            Space::Uniform(lo, hi) => {
                                toml::Value::Float(rng.random_range(*lo..*hi))
                            }
                            Space::LogUniform(lo, hi) => {
                                toml::Value::Float(rng.random_range(lo.ln()..hi.ln()).exp())
                            }
                            Space::IntUniform(lo, hi) => {
                                toml::Value::Integer(rng.random_range(*lo..=*hi))
                            }
                        };
                        (k.clone(), v)
                    })
                    .collect();
                out.push(p);
            }
        }
    }
    Ok(out)
}

fn trial_config(base: &TrainConfig, params: &[(String, toml::Value)]) -> Result<TrainConfig> {
    let mut c = base.clone();
    for (k, v) in params {
        c.apply_override(&format!("{k}={v}"))
            .map_err(|e| anyhow!("params.\"{k}\" = {v}: {e}"))?;
    }
    c.validate()
        .map_err(|e| anyhow!("params {}: {e}", describe(params)))?;
    Ok(c)
}

fn describe(params: &[(String, toml::Value)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Records a trial's validation losses and applies the median rule against the trials that
/// have finished so far (also those that finish while this one runs).
struct Watch<'a> {
    rule: Option<&'a EarlyStop>,
    state: &'a Mutex<State>,
    evals: Vec<(u64, f64)>,
    pruned: bool,
    stop: Arc<AtomicBool>,
    name: String,
}

impl Observer for Watch<'_> {
    fn step(&mut self, _: u64, _: u64, _: &StepStats, _: f64) {}
    fn info(&mut self, _: &str) {}
    fn eval(&mut self, step: u64, loss: f64) {
        self.evals.push((step, loss));
        eprintln!("  {}: step {step}: validation loss {loss:.4}", self.name);
        let Some(rule) = self.rule else { return };
        if step == 0 || step < rule.warmup_steps || self.pruned {
            return;
        }
        let others: Vec<f64> = lock(self.state)
            .trials
            .iter()
            .filter(|t| t.status == "done")
            .filter_map(|t| t.evals.iter().find(|e| e.0 == step).map(|e| e.1))
            .collect();
        if others.len() >= rule.min_trials && loss > median(others.clone()) {
            eprintln!(
                "  {}: pruned at step {step} (loss {loss:.4} > median {:.4} of {} trials)",
                self.name,
                median(others.clone()),
                others.len()
            );
            self.pruned = true;
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct TrialJob<'a, 'b> {
    config: &'b TrainConfig,
    paths: &'b RunPaths,
    watch: &'b mut Watch<'a>,
}

impl crate::backend::TrainJob for TrialJob<'_, '_> {
    type Output = Summary;
    fn device(&self) -> Device {
        self.config.device
    }
    fn run<B>(self, device: B::Device) -> Result<Summary>
    where
        B: AutodiffBackend + QuantBackend,
        B::InnerBackend: QuantBackend,
    {
        let stop = self.watch.stop.clone();
        Ok(trainer::run::<B>(
            self.config,
            self.paths,
            &device,
            self.watch,
            &stop,
        )?)
    }
}

/// Peak memory of one trial by the memory planner.
fn planned_bytes(source: &llama_model::ModelSource, c: &TrainConfig) -> Result<u64> {
    let input = trainer::estimate::EstimateInput {
        model: source.config()?,
        method: c.method,
        seq_len: c.max_seq_len,
        batch: c.batch_size,
        rank: c.lora.r,
        weight_bytes: 4,
        dropout: c.lora.dropout > 0.0,
        gradient_checkpointing: c.gradient_checkpointing,
    };
    Ok(trainer::estimate::estimate(&input).total)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let text = serde_json::to_string_pretty(state)?;
    trainer::write_atomic(&dir.join("sweep.json"), |tmp| std::fs::write(tmp, &text))?;
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.config).with_context(|| args.config.display().to_string())?;
    let sweep: SweepFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", args.config.display(), e.message()))?;
    if let Some(rule) = &sweep.early_stop
        && rule.rule != "median"
    {
        bail!(
            "{}: early_stop.rule `{}`: expected \"median\"",
            args.config.display(),
            rule.rule
        );
    }
    let base_text = toml::to_string(&sweep.base)?;
    let mut base: TrainConfig = toml::from_str(&base_text)
        .map_err(|e| anyhow!("{}: [base]: {}", args.config.display(), e.message()))?;
    let source = if base.model.is_empty() {
        let s = crate::backend::default_model()?;
        base.model = s.to_string();
        s
    } else {
        llama_model::ModelSource::resolve(&base.model)?
    };
    if base.data.is_empty() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alpaca-eval");
        base.data = vec![dir.join("train.jsonl")];
        base.valid_data = vec![dir.join("valid.jsonl")];
    }
    let plan = plan(&sweep).with_context(|| args.config.display().to_string())?;
    // Every trial's configuration is checked before the first one starts.
    let configs: Vec<TrainConfig> = plan
        .iter()
        .map(|p| trial_config(&base, p))
        .collect::<Result<_>>()
        .with_context(|| args.config.display().to_string())?;
    let dir = sweep.output_dir.join(&sweep.name);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let state_path = dir.join("sweep.json");
    let state = if state_path.is_file() {
        let old: State = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| state_path.display().to_string())?,
        )
        .with_context(|| format!("{}: not a sweep state file", state_path.display()))?;
        if old.sweep != sweep || old.plan != plan {
            bail!(
                "{}: holds a different sweep; give this one another `name`, or delete the directory to start over",
                dir.display()
            );
        }
        let done = old.trials.iter().filter(|t| t.status != "running").count();
        if done > 0 {
            eprintln!("resuming {}: {done} trials already ended", dir.display());
        }
        old
    } else {
        State {
            sweep: sweep.clone(),
            plan: plan.clone(),
            trials: Vec::new(),
        }
    };
    write_state(&dir, &state)?;
    ctrlc::set_handler(|| {
        if CTRL_C.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        for flag in lock(&RUNNING).iter() {
            flag.store(true, Ordering::SeqCst);
        }
        eprintln!(
            "\nCtrl-C: stopping after the running trials' checkpoints; run the same command to resume"
        );
    })
    .context("installing the Ctrl-C handler")?;
    // Side by side only as many trials as the memory planner says fit in 90% of the free memory.
    let mut workers = sweep.parallel.max(1);
    if workers > 1 {
        let need = configs
            .iter()
            .map(|c| planned_bytes(&source, c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let available = available_bytes().unwrap_or(0);
        let fit = ((available as f64 * 0.9) / need.max(1) as f64).floor() as usize;
        if fit < workers {
            eprintln!(
                "memory planner: a trial needs up to {}, {} is available: {} side by side instead of {workers}",
                trainer::estimate::human(need),
                trainer::estimate::human(available),
                fit.max(1)
            );
            workers = fit.max(1);
        }
    }
    eprintln!(
        "sweep {}: {} trials ({:?} search) over {}{}",
        sweep.name,
        plan.len(),
        sweep.search,
        sweep.params.keys().cloned().collect::<Vec<_>>().join(", "),
        if workers > 1 {
            format!(", {workers} side by side")
        } else {
            String::new()
        }
    );
    let todo: Vec<usize> = (0..plan.len())
        .filter(|&i| {
            let name = trial_name(i);
            !state
                .trials
                .iter()
                .any(|t| t.name == name && t.status != "running")
        })
        .collect();
    let steps_used: u64 = state.trials.iter().map(|t| t.steps).sum();
    let shared = Mutex::new(state);
    // (next trial in `todo`, steps used or promised to running trials)
    let queue = Mutex::new((0usize, steps_used));
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut q = lock(&queue);
                        let Some(&i) = todo.get(q.0) else { return };
                        if CTRL_C.load(Ordering::SeqCst) || lock(&failure).is_some() {
                            return;
                        }
                        let planned = configs[i].max_steps;
                        if let Some(budget) = sweep.max_total_steps
                            && q.1 + planned > budget
                        {
                            eprintln!(
                                "step budget: {} of {budget} steps used or running; {} ({planned} steps) not started",
                                q.1,
                                trial_name(i)
                            );
                            q.0 = todo.len();
                            return;
                        }
                        q.0 += 1;
                        q.1 += planned;
                        i
                    };
                    let ctx = TrialCtx {
                        dir: &dir,
                        source: &source,
                        sweep: &sweep,
                        total: plan.len(),
                        state: &shared,
                    };
                    match run_trial(&ctx, i, &plan[i], &configs[i]) {
                        Ok(steps) => {
                            // Give back the steps promised but not run (a pruned trial).
                            let mut q = lock(&queue);
                            q.1 = q.1 - configs[i].max_steps + steps;
                        }
                        Err(e) => {
                            lock(&failure).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let state = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    report(&dir, &sweep, &state, &base, &configs)
}

fn trial_name(i: usize) -> String {
    format!("trial-{:03}", i + 1)
}

/// What every trial shares.
struct TrialCtx<'a> {
    dir: &'a Path,
    source: &'a llama_model::ModelSource,
    sweep: &'a SweepFile,
    total: usize,
    state: &'a Mutex<State>,
}

/// Runs trial `i` (resuming it from its last checkpoint when it has one) and records it in the
/// state. Returns the steps it ran. A failed training is a failed trial, not an error; an
/// error is something the sweep cannot go on after (the state file cannot be written).
fn run_trial(
    ctx: &TrialCtx,
    i: usize,
    params: &[(String, toml::Value)],
    config: &TrainConfig,
) -> Result<u64> {
    let name = trial_name(i);
    let run_dir = ctx.dir.join(&name);
    let resume = trainer::checkpoint::newest(&run_dir).is_ok();
    if !resume && run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| run_dir.display().to_string())?;
    }
    let mut config = config.clone();
    config.output_dir = ctx.dir.to_path_buf();
    config.run_name = name.clone();
    let paths = RunPaths {
        model: ctx.source.clone(),
        run_dir: run_dir.clone(),
        resume,
    };
    eprintln!(
        "{name} ({}/{}){}: {}",
        i + 1,
        ctx.total,
        if resume { " resumed" } else { "" },
        describe(params)
    );
    {
        let mut state = lock(ctx.state);
        state.trials.retain(|t| t.name != name);
        state.trials.push(Trial {
            name: name.clone(),
            params: params.to_vec(),
            status: "running".into(),
            objective: None,
            steps: 0,
            wall_s: 0.0,
            evals: Vec::new(),
            error: None,
        });
        write_state(ctx.dir, &state)?;
    }
    let stop = Arc::new(AtomicBool::new(CTRL_C.load(Ordering::SeqCst)));
    lock(&RUNNING).push(stop.clone());
    let mut watch = Watch {
        rule: ctx.sweep.early_stop.as_ref(),
        state: ctx.state,
        evals: Vec::new(),
        pruned: false,
        stop: stop.clone(),
        name: name.clone(),
    };
    // Earlier evaluations of a resumed trial come from its metrics.
    if resume {
        let metrics = trainer::report::read_metrics(&run_dir.join("metrics.jsonl"), None)?;
        watch.evals = metrics
            .iter()
            .filter(|m| m.kind == "eval")
            .map(|m| (m.step, m.loss))
            .collect();
    }
    let result = crate::backend::dispatch_train(TrialJob {
        config: &config,
        paths: &paths,
        watch: &mut watch,
    });
    lock(&RUNNING).retain(|f| !Arc::ptr_eq(f, &stop));
    let mut state = lock(ctx.state);
    let trial = state
        .trials
        .iter_mut()
        .find(|t| t.name == name)
        .expect("pushed above");
    trial.evals = watch.evals.clone();
    trial.evals.dedup_by_key(|e| e.0);
    let mut steps = 0;
    match result {
        Ok(summary) => {
            steps = summary.steps;
            trial.steps = summary.steps;
            trial.wall_s = summary.wall_s;
            trial.objective = summary.eval_loss_after;
            // A trial flagged at its last evaluation ran to its end: it is done.
            trial.status = match (summary.interrupted, watch.pruned) {
                (true, true) => "pruned",
                (true, false) => "running",
                (false, _) => "done",
            }
            .into();
            eprintln!(
                "{name}: {} after {} steps, validation loss {}",
                trial.status,
                summary.steps,
                summary
                    .eval_loss_after
                    .map_or("-".into(), |l| format!("{l:.4}"))
            );
        }
        Err(e) => {
            let line = crate::error_line(&e);
            eprintln!("{name}: failed: {line}");
            trial.status = "failed".into();
            trial.error = Some(line);
        }
    }
    write_state(ctx.dir, &state)?;
    Ok(steps)
}

/// `results.csv`, `results.json`, `sweep.png`, `best.toml`, and the one stdout line.
fn report(
    dir: &Path,
    sweep: &SweepFile,
    state: &State,
    base: &TrainConfig,
    configs: &[TrainConfig],
) -> Result<()> {
    let keys: Vec<String> = sweep.params.keys().cloned().collect();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "trial".to_string(),
        "status".into(),
        "objective".into(),
        "steps".into(),
        "wall_s".into(),
    ];
    header.extend(keys.iter().cloned());
    csv.write_record(&header)?;
    for t in &state.trials {
        let mut row = vec![
            t.name.clone(),
            t.status.clone(),
            t.objective.map_or(String::new(), |o| format!("{o}")),
            t.steps.to_string(),
            format!("{:.1}", t.wall_s),
        ];
        for k in &keys {
            row.push(t.params.iter().find(|(pk, _)| pk == k).map_or(
                String::new(),
                |(_, v)| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            ));
        }
        csv.write_record(&row)?;
    }
    let csv_bytes = csv.into_inner().map_err(|e| anyhow!("{e}"))?;
    trainer::write_atomic(&dir.join("results.csv"), |tmp| {
        std::fs::write(tmp, &csv_bytes)
    })?;
    let json = serde_json::to_string_pretty(&state.trials)?;
    trainer::write_atomic(&dir.join("results.json"), |tmp| std::fs::write(tmp, &json))?;

    // The plot: categorical settings by position, numeric ones by value.
    let settings: Vec<(String, Vec<String>)> = keys
        .iter()
        .map(|k| {
            let values: Vec<&toml::Value> = state
                .trials
                .iter()
                .filter_map(|t| t.params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v))
                .collect();
            let numeric = values.iter().all(|v| v.is_float() || v.is_integer());
            let mut ticks: Vec<String> = Vec::new();
            if !numeric {
                for v in values {
                    let s = v.to_string();
                    if !ticks.contains(&s) {
                        ticks.push(s);
                    }
                }
            }
            (k.clone(), ticks)
        })
        .collect();
    let curves: Vec<TrialCurve> = state
        .trials
        .iter()
        .map(|t| TrialCurve {
            label: t.name.clone(),
            evals: t.evals.iter().map(|&(s, l)| (s as f64, l)).collect(),
            objective: t.objective,
            pruned: t.status == "pruned",
            settings: keys
                .iter()
                .zip(&settings)
                .map(|(k, (_, ticks))| {
                    let v = t.params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v);
                    let x = match v {
                        Some(toml::Value::Float(f)) => *f,
                        Some(toml::Value::Integer(i)) => *i as f64,
                        Some(other) => ticks
                            .iter()
                            .position(|s| *s == other.to_string())
                            .unwrap_or(0) as f64,
                        None => f64::NAN,
                    };
                    (k.clone(), x)
                })
                .collect(),
        })
        .collect();
    sweep_plot(
        &curves,
        &settings,
        &format!("sweep {}: validation loss per trial", sweep.name),
        &dir.join("sweep.png"),
    )?;
    let best = state
        .trials
        .iter()
        .filter(|t| t.status == "done")
        .filter_map(|t| t.objective.map(|o| (t, o)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let ended = state
        .trials
        .iter()
        .filter(|t| t.status != "running")
        .count();
    let mut result = serde_json::json!({
        "sweep_dir": dir.display().to_string(),
        "trials": state.trials.len(),
        "ended": ended,
        "results": dir.join("results.csv").display().to_string(),
    });
    if let Some((t, objective)) = best {
        let index = state
            .plan
            .iter()
            .position(|p| *p == t.params)
            .ok_or_else(|| anyhow!("{}: not in the plan", t.name))?;
        let mut config = configs.get(index).cloned().unwrap_or_else(|| base.clone());
        config.run_name = String::new();
        let toml_text = format!(
            "# best trial of sweep {}: {} (validation loss {objective:.4}); `cargo xtask train --config best.toml`\n{}",
            sweep.name,
            t.name,
            config.to_toml()
        );
        trainer::write_atomic(&dir.join("best.toml"), |tmp| {
            std::fs::write(tmp, &toml_text)
        })?;
        eprintln!(
            "best: {} ({}) validation loss {objective:.4}; config {}",
            t.name,
            describe(&t.params),
            dir.join("best.toml").display()
        );
        result["best_trial"] = serde_json::json!(t.name);
        result["best_objective"] = serde_json::json!(objective);
        result["best_config"] = serde_json::json!(dir.join("best.toml").display().to_string());
    }
    println!("{result}");
    Ok(())
}
