//! Files written whole or not at all: a temporary name in the same directory, its data flushed
//! to disk (`fsync`), a rename, then the directory flushed so the rename itself survives a power
//! loss; JSON files (trainer state, summary) written and read that way. And the cleanup of what a
//! crash in the middle of a save leaves behind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Writes `path` through `write(tmp)`, flushes `tmp` to disk and renames it onto `path`, then
/// flushes the directory: a crash (or `kill -9`, or a power loss) leaves the old file or the new
/// one, never a half-written one. On an error the temporary file is removed and the old `path`
/// is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let written = write(&tmp).and_then(|()| sync_file(&tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(parent(path))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a file's data and metadata to disk.
fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Flushes every file under `dir` and every directory in it, `dir` included: what a directory
/// written by other code (a checkpoint) needs before it is renamed into place.
pub fn sync_tree(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            sync_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

/// Replaces the directory `dest` with the complete directory `src` (same parent): `src` is
/// flushed, a `dest` already there is moved aside to `.{name}.old`, `src` renamed to `dest`,
/// the parent flushed, the old one removed. Whenever a crash interrupts it, either `dest` or
/// `.{name}.old` holds a complete copy, and [`clean_stale`] puts the old one back.
pub fn replace_dir(src: &Path, dest: &Path) -> Result<()> {
    sync_tree(src)?;
    let old = aside(dest, "old");
    if dest.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
    }
    std::fs::rename(src, dest).map_err(|e| Error::io(dest, e))?;
    let dir = parent(dest);
    sync_dir(dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// `.{name}.{suffix}` beside `path`: the temporary (`tmp`) and moved-aside (`old`) names.
pub fn aside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Removes the directory `path` so that no crash leaves it half-deleted under its own name: it
/// is renamed to `.{name}.del` first (one atomic step, flushed), then deleted; [`clean_stale`]
/// finishes a deletion that a crash interrupted. (A checkpoint pruned with a plain
/// `remove_dir_all` and killed midway kept `trainer_state.json` but not its adapter: a directory
/// that looks like a checkpoint and does not load.)
pub fn remove_dir(path: &Path) -> Result<()> {
    let doomed = aside(path, "del");
    std::fs::rename(path, &doomed).map_err(|e| Error::io(path, e))?;
    sync_dir(parent(path))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
}

/// What [`clean_stale`] did to one leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A temporary file or directory of an interrupted save (`.checkpoint-7.tmp`,
    /// `.metrics.jsonl.tmp`), removed.
    Removed(PathBuf),
    /// A directory whose deletion ([`remove_dir`]) was interrupted, removed.
    Deleted(PathBuf),
    /// A complete directory moved aside by an interrupted [`replace_dir`] whose replacement never
    /// arrived, renamed back to this path.
    Restored(PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Removed(p) => write!(
                f,
                "removed {} (left by a save that was interrupted)",
                p.display()
            ),
            Leftover::Deleted(p) => {
                write!(f, "removed {} (its deletion was interrupted)", p.display())
            }
            Leftover::Restored(p) => write!(
                f,
                "restored {} (moved aside by a save that was interrupted)",
                p.display()
            ),
        }
    }
}

/// Cleans what a crash during a save leaves in `dir`: every `.NAME.tmp` file or directory and
/// every `.NAME.del` directory is removed; a `.NAME.old` directory is renamed back to `NAME` when `NAME` is missing (its
/// replacement never arrived) and removed otherwise. Returns what it did, for the log.
pub fn clean_stale(dir: &Path) -> Result<Vec<Leftover>> {
    let mut done = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let Some(stem) = name.strip_prefix('.') else {
            continue;
        };
        let path = dir.join(&name);
        if stem.strip_suffix(".tmp").is_some_and(|s| !s.is_empty()) {
            remove_any(&path)?;
            done.push(Leftover::Removed(path));
        } else if stem.strip_suffix(".del").is_some_and(|s| !s.is_empty()) {
            remove_any(&path)?;
            done.push(Leftover::Deleted(path));
        } else if let Some(orig) = stem.strip_suffix(".old").filter(|s| !s.is_empty()) {
            let orig = dir.join(orig);
            if orig.exists() {
                remove_any(&path)?;
                done.push(Leftover::Removed(path));
            } else {
                std::fs::rename(&path, &orig).map_err(|e| Error::io(&orig, e))?;
                done.push(Leftover::Restored(orig));
            }
        }
    }
    if !done.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

fn remove_any(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    write_atomic(path, |tmp| std::fs::write(tmp, text))
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trainer-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = scratch("fail");
        let path = dir.join("state.json");
        std::fs::write(&path, "old").unwrap();
        let err = write_atomic(&path, |tmp| {
            std::fs::write(tmp, "half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains(".state.json.tmp"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(!dir.join(".state.json.tmp").exists());
        write_atomic(&path, |tmp| std::fs::write(tmp, "new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clean_stale_removes_temporaries_and_restores_what_was_moved_aside() {
        let dir = scratch("clean");
        for d in [
            ".checkpoint-7.tmp",
            "checkpoint-5",
            ".checkpoint-5.old",
            ".adapter.old",
            ".checkpoint-2.del",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            std::fs::write(dir.join(d).join("f"), d).unwrap();
        }
        std::fs::write(dir.join(".metrics.jsonl.tmp"), "x").unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "kept").unwrap();
        std::fs::write(dir.join(".tmp"), "not ours").unwrap();
        let done = clean_stale(&dir).unwrap();
        assert_eq!(
            done,
            vec![
                Leftover::Restored(dir.join("adapter")),
                Leftover::Deleted(dir.join(".checkpoint-2.del")),
                Leftover::Removed(dir.join(".checkpoint-5.old")),
                Leftover::Removed(dir.join(".checkpoint-7.tmp")),
                Leftover::Removed(dir.join(".metrics.jsonl.tmp")),
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp", "adapter", "checkpoint-5", "metrics.jsonl"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("adapter/f")).unwrap(),
            ".adapter.old"
        );
        assert_eq!(clean_stale(&dir).unwrap(), vec![]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replace_dir_swaps_a_directory_for_a_complete_one() {
        let dir = scratch("replace");
        let (src, dest) = (dir.join(".out.tmp"), dir.join("out"));
        for (d, text) in [(&src, "new"), (&dest, "old")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("f"), text).unwrap();
        }
        replace_dir(&src, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "new");
        assert!(!src.exists() && !dir.join(".out.old").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
