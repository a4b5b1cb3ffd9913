//! Safe archive extraction. A tarball is data from the outside world: members with absolute paths or
//! `..`, links that leave the target directory, writes through an earlier link, special files and
//! oversized members are refused, and nothing is left behind when one is.
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::hash::Hasher;
use crate::manifest::ArchiveFormat;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive {archive}: member `{member}` refused: {why}")]
    Refused {
        archive: PathBuf,
        member: String,
        why: String,
    },
    #[error("archive {archive}: {source}")]
    Io { archive: PathBuf, source: io::Error },
}

/// Size limits that stop decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_member_bytes: u64,
    pub max_total_bytes: u64,
}

/// Unpacks `archive` into `dest` (which must not exist yet) through a temporary directory renamed at
/// the end. Returns `(sha256, relative path)` of every regular file written.
pub fn extract(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: Limits,
) -> Result<Vec<(String, String)>, ExtractError> {
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = unpack_into(archive, format, &tmp, limits);
    match result {
        Ok(files) => {
            fs::rename(&tmp, dest).map_err(|source| ExtractError::Io {
                archive: archive.into(),
                source,
            })?;
            Ok(files)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn unpack_into(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: Limits,
) -> Result<Vec<(String, String)>, ExtractError> {
    let io_err = |source| ExtractError::Io {
        archive: archive.into(),
        source,
    };
    fs::create_dir_all(dest).map_err(io_err)?;
    let file = fs::File::open(archive).map_err(io_err)?;
    let reader: Box<dyn Read> = match format {
        ArchiveFormat::Tar => Box::new(io::BufReader::new(file)),
        ArchiveFormat::TarGz => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
    };
    let mut ar = tar::Archive::new(reader);
    let mut total = 0u64;
    let mut written = Vec::new();
    for entry in ar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let refuse = |why: &str| ExtractError::Refused {
            archive: archive.into(),
            member: raw.clone(),
            why: why.into(),
        };
        let rel = safe_member_path(&raw).map_err(|w| refuse(&w))?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        // Never write through a link an earlier member created.
        let mut prefix = dest.to_path_buf();
        for c in rel.parent().into_iter().flat_map(|p| p.components()) {
            prefix.push(c);
            if fs::symlink_metadata(&prefix)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
                return Err(refuse("its parent directory is a link inside the archive"));
            }
        }
        let out = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&out).map_err(io_err)?;
        } else if kind.is_file() {
            let size = entry.header().size().map_err(io_err)?;
            if size > limits.max_member_bytes {
                return Err(refuse(&format!(
                    "{size} bytes exceeds the limit of {} per member",
                    limits.max_member_bytes
                )));
            }
            if let Some(p) = out.parent() {
                fs::create_dir_all(p).map_err(io_err)?;
            }
            if fs::symlink_metadata(&out).is_ok() {
                return Err(refuse("duplicate member"));
            }
            let mut w = fs::File::create(&out).map_err(io_err)?;
            let mut h = Hasher::default();
            let mut buf = vec![0u8; 1 << 16];
            let mut n_member = 0u64;
            loop {
                let n = entry.read(&mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                n_member += n as u64;
                total += n as u64;
                if n_member > limits.max_member_bytes {
                    return Err(refuse(&format!(
                        "exceeds the limit of {} bytes per member",
                        limits.max_member_bytes
                    )));
                }
                if total > limits.max_total_bytes {
                    return Err(refuse(&format!(
                        "archive exceeds the limit of {} bytes in total",
                        limits.max_total_bytes
                    )));
                }
                h.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(io_err)?;
            }
            written.push((h.finish().sha256, rel.to_string_lossy().to_string()));
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io_err)?
                .ok_or_else(|| refuse("link without a target"))?;
            let base = if kind.is_symlink() {
                rel.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            let resolved = lexical_join(&base, &target)
                .ok_or_else(|| refuse("link points outside the target directory"))?;
            if let Some(p) = out.parent() {
                fs::create_dir_all(p).map_err(io_err)?;
            }
            if kind.is_symlink() {
                symlink(&target, &out).map_err(io_err)?;
            } else {
                fs::hard_link(dest.join(resolved), &out).map_err(io_err)?;
            }
        } else {
            return Err(refuse(&format!("unsupported member type {kind:?}")));
        }
    }
    Ok(written)
}

/// The member's path as a relative path without `..`; an error for anything else.
fn safe_member_path(raw: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

/// `base/target` resolved lexically; `None` when it is absolute or climbs above the root.
fn lexical_join(base: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in base.components().chain(target.components()) {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links in archives need a Unix system",
    ))
}

#[cfg(test)]
mod tests;
