//! `cargo xtask sweep`: a grid with the median rule on the tiny fixture model, the results table,
//! the best configuration, and resuming an interrupted sweep.

use std::path::PathBuf;
use std::process::Output;

use trainer::TrainConfig;

mod common;

use common::{fixture_model, scratch, tiny_dataset, xtask};

fn sweep_file(dir: &std::path::Path, search: &str) -> PathBuf {
    let data = tiny_dataset(dir, 16);
    let model = fixture_model("mha_untied");
    let params = if search == "grid" {
        "\"optimizer.lr\" = [1e-2, 3e-3, 1.0]\n\"lora.r\" = [2, 4]\n"
    } else {
        "\"optimizer.lr\" = { log_uniform = [1e-4, 1e-2] }\n\"lora.dropout\" = { uniform = [0.0, 0.2] }\n\"schedule\" = [\"cosine\", \"linear\"]\n"
    };
    let text = format!(
        "name = \"s-{search}\"\noutput_dir = {out:?}\nsearch = \"{search}\"\ntrials = {trials}\nseed = 3\nparallel = {parallel}\nearly_stop = {{ rule = \"median\", min_trials = 2 }}\n\n[base]\nmodel = {model:?}\ndata = [{data:?}]\nmethod = \"lora\"\nmax_steps = 4\nbatch_size = 2\nmax_seq_len = 128\neval_every = 2\n\n[params]\n{params}",
        out = dir.join("sweeps").display().to_string(),
        trials = if search == "grid" { 6 } else { 3 },
        parallel = if search == "grid" { 1 } else { 2 },
        model = model.display().to_string(),
        data = data.display().to_string(),
    );
    let path = dir.join(format!("{search}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn ok(out: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn a_grid_sweep_prunes_reports_and_resumes() {
    let dir = scratch("sweep");
    let file = sweep_file(&dir, "grid");
    let result = ok(&xtask(&["sweep", "--config", file.to_str().unwrap()]));
    let sweep = dir.join("sweeps/s-grid");
    assert_eq!(result["trials"], 6);
    for f in [
        "results.csv",
        "results.json",
        "sweep.png",
        "best.toml",
        "sweep.json",
    ] {
        assert!(sweep.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(sweep.join("results.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 6, "{csv}");
    assert_eq!(
        csv.lines().next().unwrap(),
        "trial,status,objective,steps,wall_s,lora.r,optimizer.lr"
    );
    // The grid runs in order: r=2 with each lr, then r=4.
    assert_eq!((rows[0][5], rows[0][6]), ("2", "0.01"));
    assert_eq!((rows[5][5], rows[5][6]), ("4", "1.0"));
    // Every trial is an ordinary run directory.
    assert!(
        sweep
            .join("trial-001/adapter/adapter_model.safetensors")
            .is_file()
    );
    // The median rule stopped at least one trial early (fewer than 4 steps).
    let pruned: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "pruned").collect();
    assert!(
        !pruned.is_empty() && pruned.iter().all(|r| r[3] != "4"),
        "{csv}"
    );
    // best.toml is the finished trial with the lowest objective, ready for `train --config`.
    let done: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "done").collect();
    let best = done
        .iter()
        .min_by(|a, b| {
            a[2].parse::<f64>()
                .unwrap()
                .total_cmp(&b[2].parse::<f64>().unwrap())
        })
        .unwrap();
    assert_eq!(result["best_trial"], best[0]);
    let cfg = TrainConfig::from_file(&sweep.join("best.toml")).unwrap();
    assert_eq!(cfg.lora.r.to_string(), best[5]);
    assert_eq!(cfg.optimizer.lr, best[6].parse::<f64>().unwrap());
    assert!(cfg.run_name.is_empty());

    // Interrupted after four trials (the state of the last two dropped, one run directory
    // half there): the same command runs only those two.
    let state_path = sweep.join("sweep.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["trials"].as_array_mut().unwrap().truncate(4);
    std::fs::write(&state_path, state.to_string()).unwrap();
    std::fs::remove_dir_all(sweep.join("trial-006")).unwrap();
    let out = xtask(&["sweep", "--config", file.to_str().unwrap()]);
    let again = ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming"), "{err}");
    assert!(
        !err.contains("trial-001 (1/6)"),
        "finished trials are not run again: {err}"
    );
    assert!(
        err.contains("trial-005 (5/6)") && err.contains("trial-006 (6/6)"),
        "{err}"
    );
    assert_eq!(again["best_trial"], result["best_trial"]);
    assert_eq!(again["trials"], 6);

    // A changed sweep in the same directory is refused.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("max_steps = 4", "max_steps = 5");
    std::fs::write(&file, text).unwrap();
    let out = xtask(&["sweep", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a different sweep"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_random_sweep_draws_seeded_values_in_range_two_trials_side_by_side() {
    let dir = scratch("sweep-r");
    let file = sweep_file(&dir, "random");
    let out = xtask(&["sweep", "--config", file.to_str().unwrap()]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 side by side"), "{err}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("sweeps/s-random/results.json")).unwrap(),
    )
    .unwrap();
    let trials = json.as_array().unwrap();
    assert_eq!(trials.len(), 3);
    let mut lrs = Vec::new();
    for t in trials {
        for p in t["params"].as_array().unwrap() {
            let (k, v) = (p[0].as_str().unwrap(), &p[1]);
            match k {
                "optimizer.lr" => {
                    let lr = v.as_f64().unwrap();
                    assert!((1e-4..1e-2).contains(&lr), "{lr}");
                    lrs.push(lr);
                }
                "lora.dropout" => assert!((0.0..0.2).contains(&v.as_f64().unwrap())),
                "schedule" => assert!(["cosine", "linear"].contains(&v.as_str().unwrap())),
                other => panic!("{other}"),
            }
        }
    }
    lrs.dedup();
    assert_eq!(lrs.len(), 3, "three different draws");
    // The same seed draws the same trials (the plan is stored; a second run finds them done).
    let out = xtask(&["sweep", "--config", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 trials already ended"));
    let _ = std::fs::remove_dir_all(&dir);
}
