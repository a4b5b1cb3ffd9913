//! One writer per output: every command that writes an output (a folder or a file) holds an
//! exclusive lock on it for as long as it writes, so a second process aimed at the same `--out`
//! is refused at once instead of mixing its files with the first one's.
//!
//! The lock file sits beside the output (`runs/.s0.1.lock` for `runs/s0.1`), not inside it: an
//! output may not exist yet, may appear only by a final rename (samples), or may be a file.
//! The lock is `flock`-style (via `fs4`): the kernel drops it when its holder dies, so a killed
//! run never blocks the rerun that resumes it.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fs4::fs_std::FileExt;

/// Held while this process writes one output; released on drop (or when the process dies).
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `output` without waiting: if another process (or another writer in this
    /// one) holds it, fails with an error naming the output and the holder's pid.
    pub fn acquire(output: &Path) -> Result<OutputLock> {
        let output = match output.file_name() {
            Some(_) => output.to_path_buf(),
            // `.` or `..`: name the folder itself.
            None => output
                .canonicalize()
                .with_context(|| format!("resolving {}", output.display()))?,
        };
        let name = output
            .file_name()
            .with_context(|| format!("{} names no output", output.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::acquire_at(&output, &parent.join(format!(".{name}.lock")))
    }

    /// [`Self::acquire`] with the lock file at `lock_file`, for outputs whose folder must hold
    /// nothing but outputs (a run's `cells/`, which readers list).
    pub fn acquire_at(output: &Path, lock_file: &Path) -> Result<OutputLock> {
        let path = lock_file.to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let locked = FileExt::try_lock_exclusive(&file)
            .with_context(|| format!("locking {}", path.display()))?;
        if !locked {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
            bail!(
                "{} is being written by another process ({holder}); wait for it or choose another --out",
                output.display()
            );
        }
        // Who holds it, for the message above; the lock itself does not depend on it.
        file.set_len(0)
            .and_then(|_| write!(file, "{}", std::process::id()))
            .and_then(|_| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(OutputLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_of_one_output_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs/s0.1");
        let first = OutputLock::acquire(&out).unwrap();
        assert_eq!(first.path(), dir.path().join("runs/.s0.1.lock"));
        let e = OutputLock::acquire(&out).unwrap_err().to_string();
        assert!(
            e.contains(&out.display().to_string())
                && e.contains("another process")
                && e.contains(&format!("pid {}", std::process::id()))
                && e.contains("--out"),
            "{e}"
        );
        // A sibling output is another lock.
        let sibling = OutputLock::acquire(&dir.path().join("runs/s0.5")).unwrap();
        drop(first);
        OutputLock::acquire(&out).unwrap();
        drop(sibling);
    }

    #[test]
    fn an_output_named_with_a_trailing_dot_locks_beside_itself() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("out");
        std::fs::create_dir_all(&here).unwrap();
        let lock = OutputLock::acquire(&here.join(".")).unwrap();
        assert_eq!(lock.path(), dir.path().join(".out.lock"));
    }
}
