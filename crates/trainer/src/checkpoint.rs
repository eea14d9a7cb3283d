//! Files written whole or not at all: a temporary name in the same directory, then a rename.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `path` through `write(tmp)` and renames `tmp` onto `path`, so a crash never leaves a
/// half-written file where a good one was.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write(&tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
