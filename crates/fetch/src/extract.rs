//! Safe archive extraction. A tarball is data from the outside world: members with absolute paths or
//! `..`, writes through a link, links whose target leaves the target directory or passes through
//! another link, hard links to anything but a regular file unpacked earlier, special files and
//! oversized members are refused, and nothing is left behind when one is.
//!
//! Links are checked where the kernel would follow them, not as text alone: a symbolic link's target
//! is walked component by component inside the unpacked tree, and every component on the way (all
//! but the last) must be a real directory, never a link. The check runs once every member is on disk,
//! so a link that a later member plants on the way is caught too. [`check_tree`] applies the same
//! rules to a tree already unpacked (for `verify`).
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::hash::Hasher;
use crate::manifest::ArchiveFormat;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "archive {archive}: member `{member}` refused: {why}; nothing was unpacked \
         (the archive is unsafe to unpack: get it from a source you trust)"
    )]
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
/// the end. Returns `(sha256, relative path)` of every regular file written, hard links included.
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

fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// The first component on the way to `rel` (exclusive) in `root` that is not a real directory (a
/// symbolic link, or a file), with what it is.
fn blocked_on_the_way(root: &Path, rel: &Path) -> Option<(PathBuf, &'static str)> {
    let mut prefix = PathBuf::new();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        prefix.push(c);
        match fs::symlink_metadata(root.join(&prefix)) {
            Ok(m) if m.file_type().is_symlink() => return Some((prefix, "a link")),
            Ok(m) if !m.is_dir() => return Some((prefix, "a file, not a directory")),
            _ => {}
        }
    }
    None
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
    // Regular files written so far (hard links included), with their sha256: the only valid
    // targets of a hard link.
    let mut regular: HashMap<PathBuf, String> = HashMap::new();
    // Symbolic links made, checked once every member is on disk: (member, path, target).
    let mut symlinks: Vec<(String, PathBuf, PathBuf)> = Vec::new();
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
        // Never write through a link an earlier member created (nor under a file).
        if let Some((p, what)) = blocked_on_the_way(dest, &rel) {
            return Err(refuse(&format!(
                "its path passes through `{}`, {what} made by an earlier member",
                p.display()
            )));
        }
        let out = dest.join(&rel);
        let existing = fs::symlink_metadata(&out).ok();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {} // a directory listed twice is harmless
                Some(_) => {
                    return Err(refuse(
                        "duplicate member: a file or link of that name came earlier",
                    ))
                }
                None => fs::create_dir_all(&out).map_err(io_err)?,
            }
            continue;
        }
        if existing.is_some() {
            return Err(refuse(
                "duplicate member: a member of that name came earlier",
            ));
        }
        if let Some(p) = out.parent() {
            fs::create_dir_all(p).map_err(io_err)?;
        }
        if kind.is_file() {
            let size = entry.header().size().map_err(io_err)?;
            if size > limits.max_member_bytes {
                return Err(refuse(&format!(
                    "{size} bytes exceeds the limit of {} per member",
                    limits.max_member_bytes
                )));
            }
            // `create_new` never follows a link at `out` (there is none: checked above).
            let mut w = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(io_err)?;
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
            let sha = h.finish().sha256;
            written.push((sha.clone(), rel.to_string_lossy().to_string()));
            regular.insert(rel, sha);
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(io_err)?
                .ok_or_else(|| refuse("link without a target"))?
                .into_owned();
            // Text first (cheap, and clear for the common case); the walk through the finished tree
            // comes after the last member.
            lexical_join(rel.parent().unwrap_or(Path::new("")), &target).ok_or_else(|| {
                refuse(&format!(
                    "link target `{}` points outside the target directory",
                    target.display()
                ))
            })?;
            symlink(&target, &out).map_err(io_err)?;
            symlinks.push((raw.clone(), rel, target));
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io_err)?
                .ok_or_else(|| refuse("link without a target"))?;
            let t = safe_member_path(&target.to_string_lossy()).map_err(|w| {
                refuse(&format!(
                    "hard link target `{}` points outside the target directory ({w})",
                    target.display()
                ))
            })?;
            // Only a regular file this archive wrote: its path holds no link (checked when it was
            // written, and nothing is ever replaced), so `dest/t` is that file and nothing else.
            let Some(sha) = regular.get(&t).cloned() else {
                return Err(refuse(&format!(
                    "hard link target `{}` is not a regular file unpacked earlier from this archive",
                    target.display()
                )));
            };
            fs::hard_link(dest.join(&t), &out).map_err(io_err)?;
            written.push((sha.clone(), rel.to_string_lossy().to_string()));
            regular.insert(rel, sha);
        } else {
            return Err(refuse(&format!("unsupported member type {kind:?}")));
        }
    }
    for (member, rel, target) in &symlinks {
        check_symlink(dest, rel, target).map_err(|why| ExtractError::Refused {
            archive: archive.into(),
            member: member.clone(),
            why,
        })?;
    }
    Ok(written)
}

/// The member's path as a relative path without `..`; an error for anything else.
pub(crate) fn safe_member_path(raw: &str) -> Result<PathBuf, String> {
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

/// Checks the symbolic link at `root/link` (whose parent directories are real directories) with
/// target `target` as the kernel will follow it: the walk starts at the link's directory, may not
/// climb above `root`, and passes through no other link on the way (only the last component may be
/// one, and it is checked in its own turn). With no link on the way, the kernel's path is the
/// lexical one, so the link stays inside `root` wherever `root` is moved.
pub(crate) fn check_symlink(root: &Path, link: &Path, target: &Path) -> Result<(), String> {
    let mut at: Vec<OsString> = link
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            _ => None,
        })
        .collect();
    let comps: Vec<Component> = target.components().collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Normal(p) => {
                at.push(p.to_os_string());
                let here: PathBuf = at.iter().collect();
                if i + 1 < comps.len() && is_link(&root.join(&here)) {
                    return Err(format!(
                        "link target `{}` passes through `{}`, itself a link: a link may only lead \
                         through real directories",
                        target.display(),
                        here.display()
                    ));
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return Err(format!(
                        "link target `{}` points outside the target directory",
                        target.display()
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "link target `{}` is an absolute path, outside the target directory",
                    target.display()
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `root/rel` is a regular file reached through real directories only (no link on the
/// way, and not itself a link).
pub(crate) fn check_member_file(root: &Path, rel: &Path) -> Result<(), String> {
    if let Some((p, what)) = blocked_on_the_way(root, rel) {
        return Err(format!(
            "`{}`: its path passes through `{}`, {what}",
            rel.display(),
            p.display()
        ));
    }
    match fs::symlink_metadata(root.join(rel)) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "`{}` was a regular file and is now a link",
            rel.display()
        )),
        Ok(_) => Err(format!("`{}` is no longer a regular file", rel.display())),
        Err(e) => Err(format!("`{}`: {e}", rel.display())),
    }
}

/// Walks an unpacked tree without following links and checks every link in it: each symbolic link
/// by [`check_symlink`], and (on Unix) each regular file with several hard links must have all of
/// them inside the tree. Returns the number of entries looked at.
pub(crate) fn check_tree(root: &Path) -> Result<usize, String> {
    let mut seen = 0usize;
    let mut inodes: HashMap<(u64, u64), (u64, u64, PathBuf)> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut visited_dirs: HashSet<PathBuf> = HashSet::new();
    while let Some(dir) = stack.pop() {
        if !visited_dirs.insert(dir.clone()) {
            continue;
        }
        let rd = fs::read_dir(root.join(&dir))
            .map_err(|e| format!("`{}`: {e}", root.join(&dir).display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("`{}`: {e}", root.join(&dir).display()))?;
            let rel = dir.join(e.file_name());
            let m = fs::symlink_metadata(e.path())
                .map_err(|err| format!("`{}`: {err}", rel.display()))?;
            seen += 1;
            if m.file_type().is_symlink() {
                let target =
                    fs::read_link(e.path()).map_err(|err| format!("`{}`: {err}", rel.display()))?;
                check_symlink(root, &rel, &target)
                    .map_err(|why| format!("link `{}`: {why}", rel.display()))?;
            } else if m.is_dir() {
                stack.push(rel);
            } else if m.is_file() {
                if let Some((key, nlink)) = inode(&m) {
                    if nlink > 1 {
                        inodes.entry(key).or_insert((nlink, 0, rel.clone())).1 += 1;
                    }
                }
            }
        }
    }
    for (nlink, inside, rel) in inodes.values() {
        if inside < nlink {
            return Err(format!(
                "`{}` has {nlink} hard links but only {inside} inside the tree: it shares its bytes \
                 with a file outside",
                rel.display()
            ));
        }
    }
    Ok(seen)
}

#[cfg(unix)]
fn inode(m: &fs::Metadata) -> Option<((u64, u64), u64)> {
    use std::os::unix::fs::MetadataExt;
    Some(((m.dev(), m.ino()), m.nlink()))
}

#[cfg(not(unix))]
fn inode(_m: &fs::Metadata) -> Option<((u64, u64), u64)> {
    None
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

#[cfg(test)]
mod props;
