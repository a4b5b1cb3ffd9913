//! Content hashes and atomic writes: every file the harness produces appears whole or not at
//! all, and every input or output is identified by its sha256.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
pub use fetch::hash::{hex, sha256_hex};
use sha2::{Digest, Sha256};

/// Hex sha256 of a file's bytes, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

mod failpoint;
mod lock;
#[cfg(test)]
pub use failpoint::arm as arm_failpoint;
pub(crate) use failpoint::hit as failpoint;
pub use lock::OutputLock;

/// A temporary name beside `path` (same folder, so a rename onto `path` is atomic), unique to
/// this process and to this call: two processes, or two threads of one, writing the same output
/// never share scratch space.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp{}-{n}", std::process::id()))
}

/// Removes what dead writers of `path` left beside it (names from [`temp_path`]). Call it only
/// while holding the lock that makes this process `path`'s one writer.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let ours = entry_name.strip_prefix(&prefix).is_some_and(|rest| {
            rest.split_once('-').is_some_and(|(pid, n)| {
                [pid, n]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            })
        });
        if ours {
            let p = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

/// Moves the finished folder `src` to `dst`, replacing a folder there (a rename cannot replace
/// a folder that is not empty, so the old one is moved aside first, then deleted). If the
/// process dies in between, `dst` is missing, never a mixture of old and new.
pub fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dst).is_ok() {
        let old = temp_path(dst);
        std::fs::rename(dst, &old).with_context(|| format!("moving {} aside", dst.display()))?;
        failpoint("replace_dir.moved_aside")?;
        std::fs::rename(src, dst)
            .with_context(|| format!("renaming {} to {}", src.display(), dst.display()))?;
        let _ = std::fs::remove_dir_all(&old);
        return Ok(());
    }
    std::fs::rename(src, dst)
        .with_context(|| format!("renaming {} to {}", src.display(), dst.display()))
}

/// Lets `write` fill a temporary file beside `path`, then renames it over `path`, so readers
/// never see a half-written file. The parent folder is created if needed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = temp_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// [`write_atomic_with`] for bytes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
    }

    #[test]
    fn temporary_names_are_unique_per_call_and_beside_the_target() {
        let p = Path::new("runs/s0.5");
        let (a, b) = (temp_path(p), temp_path(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), p.parent());
        assert_ne!(temp_path(Path::new("runs/s0.1")), a);
    }

    #[test]
    fn stale_temporaries_of_one_output_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("s0.1");
        for keep in ["s0.1", "s0.5", ".s0.5.tmp1-0", ".s0.1.lock", ".s0.1.tmpx-1"] {
            std::fs::create_dir_all(dir.path().join(keep)).unwrap();
        }
        std::fs::create_dir_all(temp_path(&out).join("unet")).unwrap();
        std::fs::write(temp_path(&out), b"x").unwrap();
        remove_stale_temps(&out);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".s0.1.lock", ".s0.1.tmpx-1", ".s0.5.tmp1-0", "s0.1", "s0.5"]
        );
    }

    #[test]
    fn a_folder_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (new, dst) = (dir.path().join("new"), dir.path().join("model"));
        std::fs::create_dir_all(dst.join("old-only")).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("w"), b"new").unwrap();
        replace_dir(&new, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("w")).unwrap(), b"new");
        assert!(!dst.join("old-only").exists() && !new.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/y");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("interrupted")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
