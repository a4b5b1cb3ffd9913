//! The content-addressed cache. Files live once, named by their sha256, and enter only after their
//! hash was checked; a name index (`by-name/<artifact>/`) of symbolic links gives later stages a
//! directory per artifact. Layout under the root:
//!
//! ```text
//! objects/sha256/ab/abcdef…      verified files, read-only
//! extracted/<archive sha256>/    unpacked archives, with <sha256>.files listing member hashes
//! by-name/<artifact>/…           links into objects/ and extracted/, plus a `.complete` marker
//! partial/                       downloads in progress (resumed with HTTP Range)
//! locks/                         lock files that serialise concurrent fetches
//! quarantine/                    entries that failed `verify`; never used again
//! ```
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::extract::{check_member_file, check_tree};
use crate::hash::digest_file;

/// Marker written in `by-name/<artifact>/` once every required file is in place.
pub(crate) const COMPLETE: &str = ".complete";

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("`{name}` is not in the cache ({root}); fetch it with `cargo xtask fetch {name}`")]
    NotCached { name: String, root: PathBuf },
    #[error("cache {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive lock held until dropped (advisory, across processes).
pub struct LockGuard(#[allow(dead_code)] File);

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    /// (what, where it went) for every corrupt entry moved to quarantine.
    pub quarantined: Vec<(String, PathBuf)>,
}

impl Cache {
    /// The default location: `BADDIFF_CACHE`, else `$XDG_CACHE_HOME/baddiffusion`, else `~/.cache/baddiffusion`.
    pub fn default_root() -> PathBuf {
        if let Some(d) = std::env::var_os("BADDIFF_CACHE").filter(|d| !d.is_empty()) {
            return d.into();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache")
            });
        base.join("baddiffusion")
    }

    pub fn open_default() -> Result<Cache, CacheError> {
        Cache::open(&Cache::default_root())
    }

    /// Opens (creating if needed) a cache rooted at `root`.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for d in [
            "objects/sha256",
            "extracted",
            "by-name",
            "partial",
            "locks",
            "quarantine",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified object with this sha256 lives (whether or not it is present).
    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("objects/sha256")
            .join(&sha256[..2])
            .join(sha256)
    }

    pub fn has_object(&self, sha256: &str) -> bool {
        self.object_path(sha256).is_file()
    }

    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    pub(crate) fn extracted_dir(&self, archive_sha256: &str) -> PathBuf {
        self.root.join("extracted").join(archive_sha256)
    }

    pub(crate) fn by_name(&self, artifact: &str) -> PathBuf {
        self.root.join("by-name").join(artifact)
    }

    /// The directory of a fetched artifact; its files sit at their manifest paths.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, CacheError> {
        let dir = self.by_name(name);
        if dir.join(COMPLETE).is_file() {
            Ok(dir)
        } else {
            Err(CacheError::NotCached {
                name: name.to_string(),
                root: self.root.clone(),
            })
        }
    }

    /// Takes an exclusive lock named `key`, waiting for another process that holds it.
    pub fn lock(&self, key: &str) -> Result<LockGuard, CacheError> {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let p = self.root.join("locks").join(format!("{safe}.lock"));
        let f = File::create(&p).map_err(io_err(&p))?;
        f.lock_exclusive().map_err(io_err(&p))?;
        Ok(LockGuard(f))
    }

    /// Moves an already verified file into the object store (atomic rename within the cache).
    pub(crate) fn adopt(&self, verified: &Path, sha256: &str) -> Result<PathBuf, CacheError> {
        let dst = self.object_path(sha256);
        let parent = dst.parent().unwrap();
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let mut perm = fs::metadata(verified)
            .map_err(io_err(verified))?
            .permissions();
        perm.set_readonly(true);
        fs::set_permissions(verified, perm).map_err(io_err(verified))?;
        fs::rename(verified, &dst).map_err(io_err(&dst))?;
        Ok(dst)
    }

    /// Points `by-name/<artifact>/<rel>` at `target`, replacing any older link.
    pub(crate) fn link(&self, artifact: &str, rel: &str, target: &Path) -> Result<(), CacheError> {
        let l = self.by_name(artifact).join(rel);
        let parent = l.parent().unwrap();
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        if fs::symlink_metadata(&l).is_ok() {
            fs::remove_file(&l).map_err(io_err(&l))?;
        }
        symlink(target, &l).map_err(io_err(&l))
    }

    pub(crate) fn mark_complete(&self, artifact: &str, complete: bool) -> Result<(), CacheError> {
        let m = self.by_name(artifact).join(COMPLETE);
        if complete {
            fs::write(&m, b"").map_err(io_err(&m))
        } else {
            match fs::remove_file(&m) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&m)(e)),
                _ => Ok(()),
            }
        }
    }

    /// Re-hashes every object and extracted tree and checks their links: an object must be a regular
    /// file; every listed member of a tree a regular file reached through real directories; every
    /// link in a tree must stay inside it (a symbolic link by the rules extraction applies, a hard
    /// link with all its names inside the tree); and every `by-name/` entry must point into the
    /// object store or an extracted tree. Corrupt entries go to `quarantine/` and artifacts that
    /// used them lose their `.complete` marker, so nothing reads them again.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let _g = self.lock("cache-verify")?;
        let mut rep = VerifyReport::default();
        let objects = self.root.join("objects/sha256");
        for shard in read_dir(&objects)? {
            for obj in read_dir(&shard)? {
                let name = obj.file_name().unwrap().to_string_lossy().to_string();
                rep.checked += 1;
                let why = match fs::symlink_metadata(&obj) {
                    Ok(m) if m.is_file() => match digest_file(&obj) {
                        Ok(d) if d.sha256 == name => None,
                        Ok(d) => Some(format!("its bytes hash to {}", d.sha256)),
                        Err(e) => Some(e.to_string()),
                    },
                    Ok(_) => Some("not a regular file (a link or a directory)".to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = why {
                    let q = self.quarantine(&obj, &name)?;
                    rep.quarantined.push((format!("object {name}: {why}"), q));
                }
            }
        }
        let extracted = self.root.join("extracted");
        for list in read_dir(&extracted)? {
            let Some(sha) = list
                .file_name()
                .unwrap()
                .to_str()
                .and_then(|n| n.strip_suffix(".files"))
            else {
                continue;
            };
            let tree = self.extracted_dir(sha);
            let text = fs::read_to_string(&list).map_err(io_err(&list))?;
            let why = check_extracted(&tree, &text, &mut rep.checked).err();
            if let Some(why) = why {
                let exists = fs::symlink_metadata(&tree).is_ok();
                let q = if exists {
                    self.quarantine(&tree, &format!("extracted-{sha}"))?
                } else {
                    tree.clone()
                };
                fs::remove_file(&list).map_err(io_err(&list))?;
                rep.quarantined
                    .push((format!("extracted tree of {sha}: {why}"), q));
            }
        }
        // Index entries must point into the object store or an extracted tree; any other is moved
        // away, and its artifact unmarked below.
        let inside = [
            self.root.join("objects/sha256"),
            self.root.join("extracted"),
        ];
        for dir in read_dir(&self.root.join("by-name"))? {
            let mut foreign = Vec::new();
            index_links_outside(&dir, &inside, &mut foreign);
            if !foreign.is_empty() {
                let name = dir.file_name().unwrap().to_string_lossy().to_string();
                self.mark_complete(&name, false)?;
            }
            for (l, target) in foreign {
                let label = format!("by-name-{}", sha_of_path(&l));
                let q = self.quarantine(&l, &label)?;
                rep.quarantined.push((
                    format!(
                        "index entry {}: points at {}, outside the cache's objects and trees",
                        l.display(),
                        target.display()
                    ),
                    q,
                ));
            }
        }
        // Unmark artifacts whose links now dangle.
        for dir in read_dir(&self.root.join("by-name"))? {
            if dir.join(COMPLETE).is_file() && has_dangling_link(&dir) {
                let name = dir.file_name().unwrap().to_string_lossy().to_string();
                self.mark_complete(&name, false)?;
            }
        }
        Ok(rep)
    }

    fn quarantine(&self, path: &Path, label: &str) -> Result<PathBuf, CacheError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let q = self
            .root
            .join("quarantine")
            .join(format!("{label}.{stamp}"));
        fs::rename(path, &q).map_err(io_err(path))?;
        Ok(q)
    }
}

fn read_dir(p: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let mut v = Vec::new();
    match fs::read_dir(p) {
        Ok(rd) => {
            for e in rd {
                v.push(e.map_err(io_err(p))?.path());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(p)(e)),
    }
    v.sort();
    Ok(v)
}

/// Checks an extracted tree against its member list (`sha256<TAB>path` lines) and its links.
fn check_extracted(tree: &Path, list: &str, checked: &mut usize) -> Result<(), String> {
    match fs::symlink_metadata(tree) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err("the tree is not a directory (a link or a file)".into()),
        Err(e) => return Err(e.to_string()),
    }
    for line in list.lines() {
        *checked += 1;
        let Some((h, rel)) = line.split_once('\t') else {
            continue;
        };
        check_member_file(tree, Path::new(rel))?;
        match digest_file(&tree.join(rel)) {
            Ok(d) if d.sha256 == h => {}
            Ok(d) => return Err(format!("`{rel}` hashes to {}, listed as {h}", d.sha256)),
            Err(e) => return Err(format!("`{rel}`: {e}")),
        }
    }
    check_tree(tree).map(|_| ())
}

/// Links under `by-name/<artifact>/` whose target is not under one of `inside` (or climbs with `..`).
fn index_links_outside(dir: &Path, inside: &[PathBuf], out: &mut Vec<(PathBuf, PathBuf)>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            let target = fs::read_link(&p).unwrap_or_default();
            let ok = inside.iter().any(|i| target.starts_with(i))
                && !target
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if !ok {
                out.push((p, target));
            }
        } else if m.is_dir() {
            index_links_outside(&p, inside, out);
        }
    }
}

fn sha_of_path(p: &Path) -> String {
    let d = crate::hash::digest_reader(p.to_string_lossy().as_bytes()).map(|d| d.sha256);
    d.map(|s| s[..16].to_string()).unwrap_or_default()
}

fn has_dangling_link(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        let is_link = fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            !p.exists()
        } else {
            p.is_dir() && has_dangling_link(&p)
        }
    })
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    // Without symbolic links the index holds copies of the verified files.
    fs::copy(target, link).map(|_| ())
}
