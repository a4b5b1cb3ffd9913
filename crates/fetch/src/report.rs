//! What a fetch did, file by file, with the trust level of every hash: the text `cargo xtask fetch`
//! prints and what later stages check before they start.
use std::fmt;
use std::path::PathBuf;

use crate::lockfile::LockedFile;

/// How far a cached file's bytes are vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The manifest pins its sha256 (published upstream, or derived from a pinned git blob or package).
    Pinned,
    /// sha256 recorded on first use, and an upstream md5 (or published sha256 prefix) was checked.
    UpstreamChecked,
    /// sha256 recorded on first use; nothing published to check it against.
    FirstUse,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trust::Pinned => "pinned sha256",
            Trust::UpstreamChecked => "locked sha256, upstream checksum checked",
            Trust::FirstUse => "trusted on first use",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already in the cache; nothing was read or downloaded.
    Cached,
    /// Brought in from this source (a path or a URL) after its hash was checked.
    Fetched { source: String },
    /// No source had it (the places looked at are listed).
    Missing { tried: Vec<String> },
    /// Sources were found but none gave good bytes; one line per failure.
    Failed { errors: Vec<String> },
}

impl Outcome {
    pub fn is_present(&self) -> bool {
        matches!(self, Outcome::Cached | Outcome::Fetched { .. })
    }
}

#[derive(Debug, Clone)]
pub struct FileReport {
    pub artifact: String,
    pub path: String,
    pub optional: bool,
    pub outcome: Outcome,
    pub trust: Trust,
    /// The file's sha256 when known (pinned, locked or just computed).
    pub sha256: Option<String>,
    /// Its hash was recorded in the lock file by this fetch.
    pub newly_locked: bool,
}

#[derive(Debug, Clone)]
pub struct ArtifactReport {
    pub name: String,
    pub complete: bool,
    /// Instructions for inputs that cannot be downloaded for the user.
    pub manual: Option<String>,
    /// Extraction failure, if any.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    pub files: Vec<FileReport>,
    pub artifacts: Vec<ArtifactReport>,
    /// First-use hashes recorded by this fetch.
    pub lock_updates: Vec<LockedFile>,
    /// The lock file they were written to.
    pub lock_path: Option<PathBuf>,
}

impl FetchReport {
    /// Every selected artifact is usable (manual-only artifacts excepted: they are listed separately).
    pub fn is_complete(&self) -> bool {
        self.artifacts
            .iter()
            .all(|a| a.complete || (a.manual.is_some() && self.files_of(&a.name).next().is_none()))
    }

    fn files_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a FileReport> + 'a {
        self.files.iter().filter(move |f| f.artifact == name)
    }

    /// Required files not in the cache after this fetch, as `artifact/path`.
    pub fn missing(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| !f.optional && !f.outcome.is_present())
            .map(|f| format!("{}/{}", f.artifact, f.path))
            .collect()
    }

    /// Files that came from the network or a mirror in this run (not already cached).
    pub fn transferred(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Fetched { .. }))
            .count()
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.files {
            let what = format!("{}/{}", r.artifact, r.path);
            match &r.outcome {
                Outcome::Cached => writeln!(f, "  cached   {what}  [{}]", r.trust)?,
                Outcome::Fetched { source } => {
                    writeln!(f, "  fetched  {what}  from {source}  [{}]", r.trust)?
                }
                Outcome::Missing { tried } => {
                    let tag = if r.optional {
                        "absent (optional)"
                    } else {
                        "MISSING"
                    };
                    writeln!(f, "  {tag}  {what}")?;
                    for t in tried {
                        writeln!(f, "           looked at {t}")?;
                    }
                }
                Outcome::Failed { errors } => {
                    let tag = if r.optional {
                        "absent (optional)"
                    } else {
                        "FAILED "
                    };
                    writeln!(f, "  {tag}  {what}")?;
                    for e in errors {
                        writeln!(f, "           {e}")?;
                    }
                }
            }
        }
        for a in &self.artifacts {
            if let Some(e) = &a.error {
                writeln!(f, "  FAILED   {}: {e}", a.name)?;
            }
            if let (false, Some(m)) = (a.complete, &a.manual) {
                writeln!(f, "  manual   {}: {m}", a.name)?;
            }
        }
        if !self.lock_updates.is_empty() {
            let at = self
                .lock_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no lock file)".into());
            writeln!(
                f,
                "  {} hash(es) recorded in {at}: trusted on first use; review and commit it",
                self.lock_updates.len()
            )?;
        }
        let missing = self.missing();
        if missing.is_empty() {
            writeln!(
                f,
                "fetch: {} file(s) ready, {} transferred",
                self.files.len(),
                self.transferred()
            )
        } else {
            writeln!(
                f,
                "fetch: {} file(s) missing: {}",
                missing.len(),
                missing.join(", ")
            )
        }
    }
}
