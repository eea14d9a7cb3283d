//! The example configurations in configs/ parse (no unknown keys) and pass validation, and each
//! header names the command that runs it.

use std::path::PathBuf;

#[test]
fn example_configs_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let c = trainer::TrainConfig::from_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        c.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines()
                .take(4)
                .any(|l| l.contains("cargo xtask train --config")),
            "{}: header lacks the command",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 4);
}

#[test]
fn unknown_keys_are_errors_with_the_file_and_key() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bad-config-{}.toml", std::process::id()));
    std::fs::write(&path, "max_steps = 10\nlearning_rate = 1e-4\n").unwrap();
    let e = trainer::TrainConfig::from_file(&path)
        .unwrap_err()
        .to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(
        e.contains("learning_rate") && e.contains("bad-config"),
        "{e}"
    );
}
