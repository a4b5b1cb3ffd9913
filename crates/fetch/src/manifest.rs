//! The artifact manifest (`artifacts/manifest.toml`): every external input, declared once, with the
//! hashes that make a download trustworthy. Parsing validates each entry and names it in errors, so a
//! typo in a hand-edited manifest is caught before anything is fetched.
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The manifest schema version this crate reads.
pub const SCHEMA: u32 = 1;

/// Profiles an artifact may belong to (the reproduction profiles of the pipeline).
pub const PROFILES: &[&str] = &["smoke", "scale", "kick-the-tires", "paper", "released"];

/// What an artifact is; decides nothing in fetching, but tells readers and later stages what to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dataset,
    Checkpoint,
    Weights,
    SourceImage,
    Archive,
}

impl Kind {
    pub const ALL: &'static [(&'static str, Kind)] = &[
        ("dataset", Kind::Dataset),
        ("checkpoint", Kind::Checkpoint),
        ("weights", Kind::Weights),
        ("source-image", Kind::SourceImage),
        ("archive", Kind::Archive),
    ];

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    pub fn as_str(self) -> &'static str {
        Kind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap()
    }
}

/// Archive formats the safe extractor understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarGz,
}

/// One file of an artifact and everything known about its content.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Relative path inside the artifact's directory (may contain `/`, never `..`).
    pub path: String,
    /// Lower-case hex sha256, or `None` when no hash is published ("unpinned": trusted on first use).
    pub sha256: Option<String>,
    /// Where the sha256 comes from (a published checksum, a git blob, a distribution package...).
    pub sha256_source: Option<String>,
    /// Upstream md5 where upstream publishes only md5; checked on every download.
    pub md5: Option<String>,
    /// A published prefix of the sha256 (e.g. embedded in the file name); checked on every download.
    pub sha256_prefix: Option<String>,
    pub size: Option<u64>,
    /// Upstream URLs at a pinned revision, tried in order after any mirror.
    pub urls: Vec<String>,
    /// A file that may legitimately be absent upstream (e.g. a `.safetensors` next to a `.bin`).
    pub optional: bool,
}

/// How to unpack an archive member of an artifact.
#[derive(Debug, Clone)]
pub struct Extract {
    /// The `path` of the artifact file to unpack.
    pub file: String,
    pub format: ArchiveFormat,
    /// Directory name under the artifact's directory that receives the contents.
    pub into: String,
    pub max_member_bytes: u64,
    pub max_total_bytes: u64,
}

/// One external input.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub kind: Kind,
    pub description: String,
    pub licence: String,
    pub source_page: String,
    pub revision: Option<String>,
    pub profiles: Vec<String>,
    pub note: Option<String>,
    /// Directories holding system copies (e.g. a distribution package), or, relative, folders
    /// beside the manifest holding a copy this repository ships; used when the hash matches.
    pub system_paths: Vec<PathBuf>,
    pub files: Vec<FileSpec>,
    pub extract: Option<Extract>,
    /// For inputs nobody can download for you: what the user must do.
    pub manual: Option<String>,
}

/// The whole manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub artifacts: Vec<Artifact>,
    /// The lock file that records first-use hashes (`manifest.lock` beside the manifest), if any.
    pub lock_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest is not valid TOML: {0}")]
    Toml(String),
    #[error("manifest: {0}")]
    Top(String),
    #[error("manifest entry `{entry}`: {message}")]
    Entry { entry: String, message: String },
    #[error("unknown artifact `{name}`; the manifest lists: {known}")]
    Unknown { name: String, known: String },
}

fn entry_err(entry: &str, message: impl Into<String>) -> ManifestError {
    ManifestError::Entry {
        entry: entry.to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    name: String,
    kind: String,
    #[serde(default)]
    description: String,
    licence: String,
    source_page: String,
    revision: Option<String>,
    #[serde(default)]
    profiles: Vec<String>,
    note: Option<String>,
    #[serde(default)]
    system_paths: Vec<PathBuf>,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
    extract: Option<RawExtract>,
    manual: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    sha256: String,
    sha256_source: Option<String>,
    md5: Option<String>,
    sha256_prefix: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    optional: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtract {
    file: String,
    format: String,
    into: String,
    max_member_bytes: u64,
    max_total_bytes: u64,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A relative path that stays inside its directory: no root, no `..`, no empty parts.
pub(crate) fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
}

impl Manifest {
    /// Reads and validates a manifest file; its lock file is `<stem>.lock` beside it.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut m = Manifest::parse(&text)?;
        m.lock_path = Some(path.with_extension("lock"));
        // A relative system path names a folder beside the manifest (a small input this
        // repository ships, such as the smoke profile's clean base model).
        let dir = path.parent().unwrap_or(Path::new("."));
        for a in &mut m.artifacts {
            for sp in &mut a.system_paths {
                if sp.is_relative() {
                    *sp = dir.join(&*sp);
                }
            }
        }
        Ok(m)
    }

    /// Parses and validates manifest text (no lock file attached).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ManifestError::Toml(e.to_string()))?;
        let mut top_keys: Vec<&String> = value
            .keys()
            .filter(|k| *k != "schema" && *k != "artifact")
            .collect();
        if let Some(k) = top_keys.pop() {
            return Err(ManifestError::Top(format!(
                "unknown top-level key `{k}` (expected `schema` and `[[artifact]]`)"
            )));
        }
        match value.get("schema").and_then(|v| v.as_integer()) {
            Some(v) if v == SCHEMA as i64 => {}
            other => {
                return Err(ManifestError::Top(format!(
                    "`schema = {SCHEMA}` is required (found {other:?})"
                )));
            }
        }
        let raw = match value.get("artifact") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(ManifestError::Top(
                    "`artifact` must be an array of tables `[[artifact]]`".into(),
                ))
            }
        };
        let mut artifacts = Vec::new();
        let mut seen = HashSet::new();
        for (i, v) in raw.into_iter().enumerate() {
            let label = v
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{} (no name)", i + 1));
            let raw: RawArtifact = v
                .try_into()
                .map_err(|e: toml::de::Error| entry_err(&label, e.message()))?;
            let a = validate(raw)?;
            if !seen.insert(a.name.clone()) {
                return Err(entry_err(
                    &a.name,
                    "duplicate name: each artifact is declared once",
                ));
            }
            artifacts.push(a);
        }
        Ok(Manifest {
            artifacts,
            lock_path: None,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Artifact, ManifestError> {
        self.artifacts
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| ManifestError::Unknown {
                name: name.to_string(),
                known: self
                    .artifacts
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The artifacts named, plus those of `profile`; everything when both are empty.
    pub fn select(
        &self,
        names: &[String],
        profile: Option<&str>,
    ) -> Result<Vec<&Artifact>, ManifestError> {
        if let Some(p) = profile {
            if !PROFILES.contains(&p) {
                return Err(ManifestError::Top(format!(
                    "unknown profile `{p}`; known: {}",
                    PROFILES.join(", ")
                )));
            }
        }
        let mut out: Vec<&Artifact> = Vec::new();
        for n in names {
            let a = self.get(n)?;
            if !out.iter().any(|o| o.name == a.name) {
                out.push(a);
            }
        }
        if let Some(p) = profile {
            for a in self
                .artifacts
                .iter()
                .filter(|a| a.profiles.iter().any(|q| q == p))
            {
                if !out.iter().any(|o| o.name == a.name) {
                    out.push(a);
                }
            }
        }
        if names.is_empty() && profile.is_none() {
            out = self.artifacts.iter().collect();
        }
        Ok(out)
    }
}

fn validate(r: RawArtifact) -> Result<Artifact, ManifestError> {
    let name = r.name.clone();
    let ok_name = !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok_name {
        return Err(entry_err(
            &name,
            "name must be lower-case letters, digits, '.', '_' or '-'",
        ));
    }
    let kind = Kind::parse(&r.kind).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|(n, _)| *n).collect();
        entry_err(
            &name,
            format!(
                "unknown kind `{}`; known kinds: {}",
                r.kind,
                known.join(", ")
            ),
        )
    })?;
    for p in &r.profiles {
        if !PROFILES.contains(&p.as_str()) {
            return Err(entry_err(
                &name,
                format!("unknown profile `{p}`; known: {}", PROFILES.join(", ")),
            ));
        }
    }
    if r.files.is_empty() && r.manual.is_none() {
        return Err(entry_err(
            &name,
            "no `[[artifact.file]]` and no `manual` instructions",
        ));
    }
    let mut files = Vec::new();
    let mut paths = HashSet::new();
    for f in r.files {
        let fe = |m: String| entry_err(&name, format!("file `{}`: {m}", f.path));
        if !is_safe_relative(&f.path) {
            return Err(fe(
                "path must be relative, without `..` or empty parts".into()
            ));
        }
        if !paths.insert(f.path.clone()) {
            return Err(fe("listed twice".into()));
        }
        let sha256 = match f.sha256.as_str() {
            "unpinned" => None,
            s if is_hex(s, 64) => Some(s.to_string()),
            s => {
                return Err(fe(format!(
                    "malformed sha256 `{s}`: expected 64 lower-case hex digits, or \"unpinned\" when none is published"
                )))
            }
        };
        if let Some(m) = &f.md5 {
            if !is_hex(m, 32) {
                return Err(fe(format!(
                    "malformed md5 `{m}`: expected 32 lower-case hex digits"
                )));
            }
        }
        if let Some(p) = &f.sha256_prefix {
            if p.is_empty() || p.len() > 64 || !is_hex(p, p.len()) {
                return Err(fe(format!(
                    "malformed sha256_prefix `{p}`: expected 1 to 64 lower-case hex digits"
                )));
            }
            if sha256.as_ref().is_some_and(|s| !s.starts_with(p.as_str())) {
                return Err(fe(format!(
                    "sha256 does not start with its published prefix `{p}`"
                )));
            }
        }
        for u in &f.urls {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(fe(format!("URL `{u}` must start with https:// or http://")));
            }
        }
        files.push(FileSpec {
            path: f.path,
            sha256,
            sha256_source: f.sha256_source,
            md5: f.md5,
            sha256_prefix: f.sha256_prefix,
            size: f.size,
            urls: f.urls,
            optional: f.optional,
        });
    }
    let extract = match r.extract {
        None => None,
        Some(x) => {
            let format = match x.format.as_str() {
                "tar" => ArchiveFormat::Tar,
                "tar.gz" => ArchiveFormat::TarGz,
                other => {
                    return Err(entry_err(
                        &name,
                        format!("extract: unknown format `{other}` (tar, tar.gz)"),
                    ))
                }
            };
            if !files.iter().any(|f| f.path == x.file) {
                return Err(entry_err(
                    &name,
                    format!("extract: `{}` is not one of the entry's files", x.file),
                ));
            }
            if !is_safe_relative(&x.into) || files.iter().any(|f| f.path == x.into) {
                return Err(entry_err(
                    &name,
                    format!(
                        "extract: `into = \"{}\"` must be a new relative name",
                        x.into
                    ),
                ));
            }
            Some(Extract {
                file: x.file,
                format,
                into: x.into,
                max_member_bytes: x.max_member_bytes,
                max_total_bytes: x.max_total_bytes,
            })
        }
    };
    Ok(Artifact {
        name,
        kind,
        description: r.description,
        licence: r.licence,
        source_page: r.source_page,
        revision: r.revision,
        profiles: r.profiles,
        note: r.note,
        system_paths: r.system_paths,
        files,
        extract,
        manual: r.manual,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
