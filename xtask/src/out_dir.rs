//! Output directories and files of the commands that write models (`merge`, `quantize`,
//! `convert`, `random-model`, `export-gguf`): a model that is already there is never replaced
//! without `--overwrite`, and the new one is written under a temporary name beside it and renamed
//! into place only when complete, so an error or a kill leaves the old model untouched and never
//! mixes old and new files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A directory being written; [`OutDir::commit`] moves it into place.
pub struct OutDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

/// Refuses `target` when it holds something and `overwrite` is off.
fn check_target(target: &Path, overwrite: bool, is_dir: bool) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(());
    };
    if is_dir && !meta.is_dir() {
        bail!(
            "--out {}: exists and is not a directory; choose another path",
            target.display()
        );
    }
    if !is_dir && meta.is_dir() {
        bail!(
            "--out {}: is a directory; expected a file path",
            target.display()
        );
    }
    if overwrite {
        return Ok(());
    }
    if is_dir {
        let mut names: Vec<String> = std::fs::read_dir(target)
            .with_context(|| format!("--out {}", target.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        let shown = names.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        let more = if names.len() > 4 { ", ..." } else { "" };
        bail!(
            "--out {}: the directory is not empty ({shown}{more}); pass --overwrite to replace it, or choose another directory",
            target.display()
        );
    }
    bail!(
        "--out {}: the file exists; pass --overwrite to replace it, or choose another path",
        target.display()
    )
}

impl OutDir {
    /// Starts writing the directory `target`: refuses a non-empty one unless `overwrite`, and
    /// creates the temporary sibling the caller writes into ([`OutDir::path`]).
    pub fn begin(target: &Path, overwrite: bool) -> Result<Self> {
        check_target(target, overwrite, true)?;
        if target.file_name().is_none() {
            bail!("--out {}: expected a directory name", target.display());
        }
        let tmp = trainer::files::aside(target, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            committed: false,
        })
    }

    /// Where to write now.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where `file` (under [`OutDir::path`]) will be after [`OutDir::commit`].
    pub fn final_path(&self, file: &Path) -> PathBuf {
        file.strip_prefix(&self.tmp)
            .map_or_else(|_| file.to_path_buf(), |rel| self.target.join(rel))
    }

    /// Replaces `target` with the finished directory (flushed, the old one moved aside, the new
    /// one renamed in, the old one removed: `trainer::files::replace_dir`, as checkpoints are).
    pub fn commit(mut self) -> Result<PathBuf> {
        trainer::files::replace_dir(&self.tmp, &self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Refuses an existing output file unless `overwrite` (the GGUF writer itself writes a
/// temporary file and renames it, so a failed export never leaves half a file).
pub fn check_file(target: &Path, overwrite: bool) -> Result<()> {
    check_target(target, overwrite, false)
}
