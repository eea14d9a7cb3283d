//! `cargo xtask publish`: a trained run as a folder ready for the Hugging Face hub: the adapter
//! (or the merged model), tokenizer files, `generation_config.json`, a model card with the
//! hub's metadata, the loss plot, and optionally a GGUF file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use llama_model::gguf::{FileType, export_gguf};
use llama_model::{ModelSource, SaveDtype, load_adapter, merge_adapters, save_checkpoint};
use serde_json::{Value, json};
use trainer::card::{HubCard, hub_card};
use trainer::report::{Summary, read_metrics};
use trainer::{Method, TrainConfig};

use crate::backend::spinner;
use crate::out_dir::OutDir;

/// Arguments of `publish`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run directory (`runs/<name>`, as `cargo xtask train` left it).
    #[arg(long)]
    run: PathBuf,
    /// The folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Write the adapter merged into its base (dense safetensors, loads with transformers alone)
    /// instead of the adapter.
    #[arg(long)]
    merged: bool,
    /// Also write the merged model as GGUF of this type (f32, f16, q8_0, q4_0, q4_1).
    #[arg(long, value_name = "TYPE")]
    gguf: Option<String>,
    /// `base_model` of the card and of adapter_config.json: a hub id (default: the hub id of
    /// the run's model when it is known, else its path).
    #[arg(long)]
    base_model: Option<String>,
    /// Hub licence id for the card (default: apache-2.0 for the default model, else `other`).
    #[arg(long)]
    license: Option<String>,
    /// Hub dataset ids for the card; repeatable (default: tatsu-lab/alpaca_eval for the shipped data).
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// Saved dtype of a merged model: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Replace `--out` if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Upload the folder to this hub model repository (USER/NAME), creating it when missing;
    /// needs HF_TOKEN (HF_ENDPOINT replaces https://huggingface.co).
    #[arg(long, value_name = "USER/NAME")]
    push: Option<String>,
    /// Create the pushed repository as private.
    #[arg(long, requires = "push")]
    private: bool,
}

/// The hub id of the default model.
const DEFAULT_BASE: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// `ORG/NAME` when `path` is a snapshot in the Hugging Face cache (`models--ORG--NAME/snapshots/REV`).
fn hub_id_of(path: &Path) -> Option<String> {
    path.ancestors().find_map(|p| {
        let name = p.file_name()?.to_str()?;
        let rest = name.strip_prefix("models--")?;
        let (org, repo) = rest.split_once("--")?;
        Some(format!("{org}/{repo}"))
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

pub fn run(args: Args) -> Result<()> {
    type B = burn_flex::Flex;
    let run = &args.run;
    let config_path = run.join("config.toml");
    if !config_path.is_file() {
        bail!(
            "--run {}: no config.toml; expected a run directory written by `cargo xtask train`",
            run.display()
        );
    }
    let config = TrainConfig::from_file(&config_path)?;
    let summary: Summary = serde_json::from_value(read_json(&run.join("summary.json"))?)
        .with_context(|| format!("{}: unexpected fields", run.join("summary.json").display()))?;
    if summary.interrupted {
        bail!(
            "--run {}: the run was interrupted before its end; resume it (`cargo xtask train --resume {}`) or publish a finished run",
            run.display(),
            run.display()
        );
    }
    let full = config.method == Method::Full;
    let trained = run.join(if full { "model" } else { "adapter" });
    if !trained.is_dir() {
        bail!(
            "--run {}: no {}/ directory; expected the finished run's output",
            run.display(),
            trained.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    let ty = args
        .gguf
        .as_deref()
        .map(|t| {
            t.parse::<FileType>()
                .map_err(|e| anyhow::anyhow!("--gguf {t}: {e}"))
        })
        .transpose()?;
    let dtype = SaveDtype::parse(&args.dtype)?;
    // Checked before anything is written.
    let hub = args
        .push
        .as_ref()
        .map(|_| crate::hub::Hub::from_env())
        .transpose()?;
    let source = if config.model.is_empty() {
        crate::backend::default_model()?
    } else {
        ModelSource::resolve(&config.model)?
    };
    // `train` records the default model by its cached path.
    let is_default = config.model.is_empty()
        || crate::default_model::cached_default_model()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| std::fs::canonicalize(source.path()).ok() == Some(p));
    let base_model = match &args.base_model {
        Some(b) => b.clone(),
        None if is_default => DEFAULT_BASE.to_string(),
        None => hub_id_of(source.path()).unwrap_or_else(|| config.model.clone()),
    };
    let license = args
        .license
        .clone()
        .unwrap_or_else(|| if is_default { "apache-2.0" } else { "other" }.to_string());
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alpaca-eval");
    let datasets = if !args.datasets.is_empty() {
        args.datasets.clone()
    } else if config.data.iter().any(|d| {
        std::fs::canonicalize(d)
            .ok()
            .zip(std::fs::canonicalize(&shipped).ok())
            .is_some_and(|(d, s)| d.starts_with(s))
    }) {
        vec!["tatsu-lab/alpaca_eval".to_string()]
    } else {
        Vec::new()
    };

    let out = OutDir::begin(&args.out, args.overwrite)?;
    let dir = out.path().to_path_buf();
    let merged = args.merged || full;
    let pb = spinner(&format!("writing {}", args.out.display()));
    let needs_model = merged || ty.is_some();
    let model = if needs_model {
        let mut model = if full {
            ModelSource::from_path(&trained)?.load::<B>(&Default::default())?
        } else {
            let mut m = source.load::<B>(&Default::default())?;
            load_adapter(&mut m, &trained)?;
            merge_adapters(&mut m, true);
            m
        };
        model.clear_quantization();
        Some(model)
    } else {
        None
    };
    if merged {
        let model = model.as_ref().expect("loaded above");
        save_checkpoint(model, &dir, dtype, None)?;
    } else {
        let mut cfg = read_json(&trained.join("adapter_config.json"))?;
        cfg["base_model_name_or_path"] = Value::String(base_model.clone());
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&cfg)? + "\n",
        )
        .with_context(|| dir.display().to_string())?;
        copy(
            &trained.join("adapter_model.safetensors"),
            &dir.join("adapter_model.safetensors"),
        )?;
    }
    source.write_tokenizer_files(&dir)?;
    // generation_config.json as transformers writes it: the end and padding tokens and the
    // sampling defaults the model came with.
    let defaults = source.generation_defaults()?;
    let mut generation = json!({"_from_model_config": false});
    if let Some(b) = defaults.bos_token_id {
        generation["bos_token_id"] = json!(b);
    }
    match defaults.eos_token_ids.as_slice() {
        [] => {}
        [one] => generation["eos_token_id"] = json!(one),
        many => generation["eos_token_id"] = json!(many),
    }
    if let Some(p) = defaults.pad_token_id {
        generation["pad_token_id"] = json!(p);
    }
    for (key, value) in [
        ("do_sample", defaults.do_sample.map(Value::from)),
        ("temperature", defaults.temperature.map(Value::from)),
        ("top_k", defaults.top_k.map(Value::from)),
        ("top_p", defaults.top_p.map(Value::from)),
        ("max_new_tokens", defaults.max_new_tokens.map(Value::from)),
    ] {
        if let Some(v) = value {
            generation[key] = v;
        }
    }
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)? + "\n",
    )
    .with_context(|| dir.display().to_string())?;
    let loss_plot = run.join("loss.png").is_file();
    if loss_plot {
        copy(&run.join("loss.png"), &dir.join("loss.png"))?;
    }
    let gguf_name = ty.map(|t| format!("{}-{}.gguf", source.name(), t.to_string().to_lowercase()));
    if let (Some(ty), Some(name)) = (ty, &gguf_name) {
        let model = model.as_ref().expect("loaded above");
        export_gguf(
            model,
            source.tokenizer_metadata()?,
            &source.name(),
            ty,
            &dir.join(name),
        )?;
    }
    let metrics = read_metrics(&run.join("metrics.jsonl"), None)?;
    let mut evals: Vec<(u64, f64)> = Vec::new();
    if let Some(l) = summary.eval_loss_before {
        evals.push((0, l));
    }
    evals.extend(
        metrics
            .iter()
            .filter(|m| m.kind == "eval" && m.loss.is_finite())
            .map(|m| (m.step, m.loss)),
    );
    evals.dedup_by_key(|e| e.0);
    let card = hub_card(
        &config,
        &summary,
        &HubCard {
            base_model: &base_model,
            license: &license,
            datasets: &datasets,
            merged,
            gguf: gguf_name.as_deref(),
            evals: &evals,
            loss_plot,
        },
    );
    std::fs::write(dir.join("README.md"), card).with_context(|| dir.display().to_string())?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let final_dir = out.commit()?;
    pb.finish_and_clear();
    eprintln!(
        "{} for the hub ({}; base_model {base_model}): {}",
        if merged { "merged model" } else { "adapter" },
        final_dir.display(),
        files.join(", ")
    );
    println!("{}", final_dir.display());
    if let (Some(hub), Some(repo)) = (hub, &args.push) {
        let pb = spinner(&format!("uploading to {}/{repo}", hub.endpoint));
        let name = run
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        let url = hub
            .push(
                &final_dir,
                repo,
                args.private,
                &format!("Upload {name} (cargo xtask publish)"),
            )
            .with_context(|| format!("--push {repo}"))?;
        pb.finish_and_clear();
        eprintln!("pushed to {url}");
        println!("{url}");
    }
    Ok(())
}
