//! `manifest.lock`: hashes recorded on first download of files whose manifest entry is unpinned
//! (trust on first use). Committed beside the manifest so every later fetch, anywhere, checks them.
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub artifact: String,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The URL asked for (a mirror's or the manifest's), or the local path the bytes came from.
    pub source: String,
    /// The URL that served the bytes, after redirects; absent in lock files written before it was
    /// recorded, and for files from a local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_url: Option<String>,
    /// Whether an upstream md5 (or published sha256 prefix) was checked when recording.
    pub upstream_checked: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default, rename = "file")]
    pub files: Vec<LockedFile>,
}

const HEADER: &str = "# Written by `cargo xtask fetch`: sha256 recorded on the first download of files that the\n\
# manifest lists as \"unpinned\" (no hash published upstream). Trusted on first use: review and commit it.\n\n";

impl LockFile {
    /// Reads a lock file; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile, String> {
        match std::fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t)
                .map_err(|e| format!("lock file {} is malformed: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(format!("cannot read lock file {}: {e}", path.display())),
        }
    }

    pub fn get(&self, artifact: &str, path: &str) -> Option<&LockedFile> {
        self.files
            .iter()
            .find(|f| f.artifact == artifact && f.path == path)
    }

    /// Adds or replaces a record.
    pub fn insert(&mut self, rec: LockedFile) {
        self.files
            .retain(|f| !(f.artifact == rec.artifact && f.path == rec.path));
        self.files.push(rec);
        self.files
            .sort_by(|a, b| (&a.artifact, &a.path).cmp(&(&b.artifact, &b.path)));
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let body = toml::to_string(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("lock.tmp{}", std::process::id()));
        std::fs::write(&tmp, format!("{HEADER}{body}"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write lock file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.lock");
        assert!(LockFile::load(&p).unwrap().files.is_empty());
        let mut l = LockFile::default();
        let rec = |sha: &str| LockedFile {
            artifact: "a".into(),
            path: "f".into(),
            sha256: sha.into(),
            size: 1,
            source: "s".into(),
            final_url: Some("https://cdn.example.org/f".into()),
            upstream_checked: false,
        };
        l.insert(rec("11"));
        l.insert(rec("22"));
        l.save(&p).unwrap();
        let back = LockFile::load(&p).unwrap();
        assert_eq!(back.files, vec![rec("22")]);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("final_url = \"https://cdn.example.org/f\""));
        std::fs::write(&p, "[[file]]\nartifact = 3\n").unwrap();
        assert!(LockFile::load(&p).unwrap_err().contains("malformed"));
    }

    #[test]
    fn lock_files_without_final_url_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.lock");
        std::fs::write(
            &p,
            "[[file]]\nartifact = \"a\"\npath = \"f\"\nsha256 = \"11\"\nsize = 1\n\
             source = \"https://example.org/f\"\nupstream_checked = true\n",
        )
        .unwrap();
        let l = LockFile::load(&p).unwrap();
        assert_eq!(l.files[0].final_url, None);
        assert_eq!(l.files[0].source, "https://example.org/f");
        // Saved again, it stays without the field rather than with an empty one.
        l.save(&p).unwrap();
        assert!(!std::fs::read_to_string(&p).unwrap().contains("final_url"));
    }
}
