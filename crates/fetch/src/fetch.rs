//! `fetch`: bring the files of the selected artifacts into the cache, each from the first source that
//! yields the right bytes. Sources, in order: the cache itself, local mirror directories, system
//! copies, URL mirrors, then upstream URLs. Every source is checked against the same hash before the
//! file is moved into the cache; a bad source is skipped with its reason kept for the report.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "download")]
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cache::{io_err, Cache, CacheError};
#[cfg(feature = "download")]
use crate::download::{self, Checked, Failure};
use crate::extract::{self, Limits};
#[cfg(feature = "download")]
use crate::hash::digest_file;
use crate::hash::{copy_hashing, Digests};
use crate::lockfile::{LockFile, LockedFile};
use crate::manifest::{Artifact, FileSpec, Manifest, ManifestError};
use crate::report::{ArtifactReport, FetchReport, FileReport, Outcome, Trust};

/// Another place that may hold the files: a directory (an offline copy) or a base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    Dir(PathBuf),
    Url(String),
}

impl Mirror {
    /// `http://…` and `https://…` are URL mirrors; anything else is a directory.
    pub fn parse(s: &str) -> Mirror {
        if s.starts_with("http://") || s.starts_with("https://") {
            Mirror::Url(s.trim_end_matches('/').to_string())
        } else {
            Mirror::Dir(PathBuf::from(s))
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Tried in order before upstream; files are looked up as `<mirror>/<artifact>/<path>`, and for
    /// directories also as `<mirror>/<path>` and `<mirror>/<file name>`.
    pub mirrors: Vec<Mirror>,
    /// Never touch the network; report what is missing.
    pub offline: bool,
    /// Files fetched at once.
    pub jobs: usize,
    /// Extra attempts per URL after a transient failure (each resumes the partial file).
    pub retries: u32,
    /// First wait between attempts; doubled each time.
    pub backoff: Duration,
    /// Connect and read timeout.
    pub timeout: Duration,
    pub progress: bool,
    /// Use the manifest's `system_paths` (e.g. a distribution's dataset package) when hashes match.
    pub system_copies: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirrors: Vec::new(),
            offline: false,
            jobs: 4,
            retries: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
            progress: true,
            system_copies: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Lock(String),
}

/// A file's report and, for a first-use hash, the record for the lock file.
type FileResult = (FileReport, Option<LockedFile>);

struct Ctx<'a> {
    cache: &'a Cache,
    opts: &'a FetchOptions,
    #[cfg(feature = "download")]
    agent: ureq::Agent,
    #[cfg(feature = "download")]
    bars: MultiProgress,
    /// Hosts whose name did not resolve in this fetch: their other files are not tried.
    #[cfg(feature = "download")]
    unresolved: Mutex<std::collections::BTreeSet<String>>,
}

/// Fetches the artifacts `names` (and those of `profile`; all when both are empty) into `cache`.
/// Returns a report even when files are missing: check [`FetchReport::is_complete`].
pub fn fetch(
    manifest: &Manifest,
    cache: &Cache,
    names: &[String],
    profile: Option<&str>,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let selected = manifest.select(names, profile)?;
    let lock = match &manifest.lock_path {
        Some(p) => LockFile::load(p).map_err(FetchError::Lock)?,
        None => LockFile::default(),
    };
    let ctx = Ctx {
        cache,
        opts,
        #[cfg(feature = "download")]
        agent: download::agent(opts.timeout),
        #[cfg(feature = "download")]
        bars: MultiProgress::with_draw_target(if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }),
        #[cfg(feature = "download")]
        unresolved: Mutex::default(),
    };

    let jobs: Vec<(&Artifact, &FileSpec)> = selected
        .iter()
        .flat_map(|a| a.files.iter().map(move |f| (*a, f)))
        .collect();
    let results: Mutex<Vec<Option<FileResult>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((a, f)) = jobs.get(i) else { break };
                let r = fetch_file(&ctx, a, f, lock.get(&a.name, &f.path));
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    let results: Vec<FileResult> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect();

    let mut report = FetchReport::default();
    for (r, rec) in results {
        report.lock_updates.extend(rec);
        report.files.push(r);
    }
    for a in &selected {
        report
            .artifacts
            .push(finish_artifact(cache, a, &report.files)?);
    }
    if !report.lock_updates.is_empty() {
        if let Some(p) = &manifest.lock_path {
            let _g = cache.lock("manifest-lock")?;
            let mut lock = LockFile::load(p).map_err(FetchError::Lock)?;
            for rec in &report.lock_updates {
                lock.insert(rec.clone());
            }
            lock.save(p).map_err(FetchError::Lock)?;
            report.lock_path = Some(p.clone());
        }
    }
    Ok(report)
}

/// Checks what is known about a file against the bytes obtained.
fn check(spec: &FileSpec, expected: Option<&str>, d: &Digests) -> Result<(), String> {
    if let Some(e) = expected {
        if d.sha256 != e {
            return Err(format!("sha256 mismatch: expected {e}, got {}", d.sha256));
        }
    }
    if let Some(m) = &spec.md5 {
        if &d.md5 != m {
            return Err(format!(
                "md5 mismatch: upstream publishes {m}, got {} (sha256 {})",
                d.md5, d.sha256
            ));
        }
    }
    if let Some(p) = &spec.sha256_prefix {
        if !d.sha256.starts_with(p.as_str()) {
            return Err(format!(
                "sha256 {} does not start with the published prefix {p}",
                d.sha256
            ));
        }
    }
    if let Some(s) = spec.size {
        if d.size != s {
            return Err(format!("size mismatch: expected {s} bytes, got {}", d.size));
        }
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn local_candidates(ctx: &Ctx, a: &Artifact, f: &FileSpec) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for m in &ctx.opts.mirrors {
        if let Mirror::Dir(d) = m {
            v.extend([
                d.join(&a.name).join(&f.path),
                d.join(&f.path),
                d.join(file_name(&f.path)),
            ]);
        }
    }
    if ctx.opts.system_copies {
        for sp in &a.system_paths {
            v.extend([sp.join(&f.path), sp.join(file_name(&f.path))]);
        }
    }
    let mut seen = std::collections::HashSet::new();
    v.retain(|p| seen.insert(p.clone()));
    v
}

/// The URLs that may serve a file: URL mirrors first, then upstream.
pub(crate) fn url_candidates(mirrors: &[Mirror], a: &Artifact, f: &FileSpec) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for m in mirrors {
        if let Mirror::Url(u) = m {
            v.push(format!("{u}/{}/{}", a.name, f.path));
        }
    }
    v.extend(f.urls.iter().cloned());
    v
}

/// The host of a URL (`scheme://host[:port]/...`), as the resolver sees it.
pub(crate) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn sha_hex(s: &str) -> String {
    crate::hash::sha256_hex(s.as_bytes())
}

fn fetch_file(
    ctx: &Ctx,
    a: &Artifact,
    f: &FileSpec,
    locked: Option<&LockedFile>,
) -> (FileReport, Option<LockedFile>) {
    let expected: Option<String> = f
        .sha256
        .clone()
        .or_else(|| locked.map(|l| l.sha256.clone()));
    let trust = if f.sha256.is_some() {
        Trust::Pinned
    } else if let Some(l) = locked {
        if l.upstream_checked {
            Trust::UpstreamChecked
        } else {
            Trust::FirstUse
        }
    } else if f.md5.is_some() || f.sha256_prefix.is_some() {
        Trust::UpstreamChecked
    } else {
        Trust::FirstUse
    };
    let mut rep = FileReport {
        artifact: a.name.clone(),
        path: f.path.clone(),
        optional: f.optional,
        outcome: Outcome::Missing { tried: Vec::new() },
        trust,
        sha256: expected.clone(),
        newly_locked: false,
    };
    match fetch_file_inner(ctx, a, f, expected.as_deref()) {
        Ok((outcome, sha, final_url)) => {
            let rec = (expected.is_none()).then(|| LockedFile {
                artifact: a.name.clone(),
                path: f.path.clone(),
                sha256: sha.clone(),
                size: std::fs::metadata(ctx.cache.object_path(&sha))
                    .map(|m| m.len())
                    .unwrap_or(0),
                source: match &outcome {
                    Outcome::Fetched { source } => source.clone(),
                    _ => String::new(),
                },
                final_url,
                upstream_checked: f.md5.is_some() || f.sha256_prefix.is_some(),
            });
            rep.newly_locked = rec.is_some();
            rep.sha256 = Some(sha);
            rep.outcome = outcome;
            (rep, rec)
        }
        Err(outcome) => {
            rep.outcome = outcome;
            (rep, None)
        }
    }
}

/// Returns the outcome, the sha256 of the cached object and, for a download, the URL that served
/// it (after redirects); or the failure outcome.
fn fetch_file_inner(
    ctx: &Ctx,
    a: &Artifact,
    f: &FileSpec,
    expected: Option<&str>,
) -> Result<(Outcome, String, Option<String>), Outcome> {
    let cache = ctx.cache;
    if let Some(e) = expected {
        if cache.has_object(e) {
            return Ok((Outcome::Cached, e.to_string(), None));
        }
    }
    let key = match expected {
        Some(e) => e.to_string(),
        None => format!("tofu-{}", &sha_hex(&format!("{}/{}", a.name, f.path))[..16]),
    };
    let failed = |errors: Vec<String>| Outcome::Failed { errors };
    let _guard = cache
        .lock(&format!("file-{key}"))
        .map_err(|e| failed(vec![e.to_string()]))?;
    if let Some(e) = expected {
        if cache.has_object(e) {
            return Ok((Outcome::Cached, e.to_string(), None)); // another process finished it meanwhile
        }
    }
    let mut errors: Vec<String> = Vec::new();
    let mut tried: Vec<String> = Vec::new();
    let partial = cache.partial_dir();

    for src in local_candidates(ctx, a, f) {
        if !src.is_file() {
            tried.push(src.display().to_string());
            continue;
        }
        let tmp = partial.join(format!("{key}.local{}", std::process::id()));
        match copy_hashing(&src, &tmp) {
            Ok(d) => match check(f, expected, &d) {
                Ok(()) => match cache.adopt(&tmp, &d.sha256) {
                    Ok(_) => {
                        return Ok((
                            Outcome::Fetched {
                                source: src.display().to_string(),
                            },
                            d.sha256,
                            None,
                        ))
                    }
                    Err(e) => errors.push(e.to_string()),
                },
                Err(m) => errors.push(format!("{}: {m}; not used", src.display())),
            },
            Err(e) => errors.push(format!("{}: {e}", src.display())),
        }
        let _ = std::fs::remove_file(&tmp);
    }

    let urls = url_candidates(&ctx.opts.mirrors, a, f);
    if ctx.opts.offline {
        tried.extend(urls.iter().map(|u| format!("{u} (skipped: offline)")));
    } else if cfg!(not(feature = "download")) {
        // `cargo xtask`'s build: the cache and local copies only; `baddiff-fetch` downloads.
        tried.extend(
            urls.iter()
                .map(|u| format!("{u} (skipped: no HTTP client in this build)")),
        );
    } else {
        #[cfg(feature = "download")]
        if let Some(found) = download_any(ctx, a, f, urls, expected, &key, &mut errors) {
            return Ok(found);
        }
    }
    Err(if errors.is_empty() {
        Outcome::Missing { tried }
    } else {
        failed(errors)
    })
}

/// Tries `urls` in order with the HTTP client; the first good download, or `None` with the reasons
/// in `errors`.
#[cfg(feature = "download")]
#[allow(clippy::too_many_arguments)]
fn download_any(
    ctx: &Ctx,
    a: &Artifact,
    f: &FileSpec,
    urls: Vec<String>,
    expected: Option<&str>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<(Outcome, String, Option<String>)> {
    let cache = ctx.cache;
    let partial = cache.partial_dir();
    // Whether anything checks the bytes after the transfer; a download nothing checks is held to
    // stricter rules (see `download`).
    let checked =
        if expected.is_some() || f.md5.is_some() || f.sha256_prefix.is_some() || f.size.is_some() {
            Checked::Yes
        } else {
            Checked::No
        };
    for url in urls {
        // Pinned files resume across mirrors (same bytes); first-use files resume per URL.
        let part_key = if expected.is_some() {
            key.to_string()
        } else {
            format!("{key}-{}", &sha_hex(&url)[..16])
        };
        let part = partial.join(format!("{part_key}.part"));
        let bar = ctx.bars.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap(),
        );
        bar.set_message(format!("{}/{}", a.name, f.path));
        let mut served = None;
        let host = host_of(&url);
        if ctx.unresolved.lock().unwrap().contains(host) {
            errors.push(format!("{url}: skipped ({host} did not resolve, above)"));
            bar.finish_and_clear();
            continue;
        }
        for attempt in 0..=ctx.opts.retries {
            match download::download(&ctx.agent, &url, &part, &bar, checked) {
                Ok(u) => {
                    served = Some(u);
                    break;
                }
                Err(Failure::Permanent(m)) => {
                    errors.push(m);
                    break;
                }
                Err(Failure::Unresolved(m)) => {
                    ctx.unresolved.lock().unwrap().insert(host.to_string());
                    errors.push(m);
                    break;
                }
                Err(e @ Failure::Transient(_)) => {
                    errors.push(format!(
                        "{} (attempt {} of {})",
                        e.message(),
                        attempt + 1,
                        ctx.opts.retries + 1
                    ));
                    if attempt < ctx.opts.retries {
                        std::thread::sleep(ctx.opts.backoff * 2u32.saturating_pow(attempt));
                    }
                }
            }
        }
        bar.finish_and_clear();
        let Some(served) = served else {
            continue;
        };
        let d = match digest_file(&part) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{}: {e}", part.display()));
                continue;
            }
        };
        match check(f, expected, &d) {
            Ok(()) => match cache.adopt(&part, &d.sha256) {
                Ok(_) => return Some((Outcome::Fetched { source: url }, d.sha256, Some(served))),
                Err(e) => errors.push(e.to_string()),
            },
            Err(m) => {
                let _ = std::fs::remove_file(&part);
                errors.push(format!("{url}: {m}; download discarded"));
            }
        }
    }
    None
}

/// Links an artifact's files into `by-name/`, unpacks its archive, and marks it complete when every
/// required file is there.
fn finish_artifact(
    cache: &Cache,
    a: &Artifact,
    files: &[FileReport],
) -> Result<ArtifactReport, FetchError> {
    let _g = cache.lock(&format!("artifact-{}", a.name))?;
    let mine: Vec<&FileReport> = files.iter().filter(|r| r.artifact == a.name).collect();
    let mut rep = ArtifactReport {
        name: a.name.clone(),
        complete: false,
        manual: a.manual.clone(),
        error: None,
    };
    if a.files.is_empty() {
        cache.mark_complete(&a.name, false).ok();
        return Ok(rep);
    }
    for r in &mine {
        if let (true, Some(sha)) = (r.outcome.is_present(), &r.sha256) {
            cache.link(&a.name, &r.path, &cache.object_path(sha))?;
        }
    }
    let complete = mine.iter().all(|r| r.optional || r.outcome.is_present());
    if complete {
        if let Some(x) = &a.extract {
            let sha = mine
                .iter()
                .find(|r| r.path == x.file)
                .and_then(|r| r.sha256.clone())
                .expect("archive present");
            if let Err(e) = ensure_extracted(cache, &sha, x) {
                rep.error = Some(e);
                cache.mark_complete(&a.name, false)?;
                return Ok(rep);
            }
            cache.link(&a.name, &x.into, &cache.extracted_dir(&sha))?;
        }
    }
    cache.mark_complete(&a.name, complete)?;
    rep.complete = complete;
    Ok(rep)
}

fn ensure_extracted(cache: &Cache, sha: &str, x: &crate::manifest::Extract) -> Result<(), String> {
    let _g = cache
        .lock(&format!("extract-{sha}"))
        .map_err(|e| e.to_string())?;
    let dest = cache.extracted_dir(sha);
    let list = dest.with_extension("files");
    if dest.is_dir() && list.is_file() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dest);
    let limits = Limits {
        max_member_bytes: x.max_member_bytes,
        max_total_bytes: x.max_total_bytes,
    };
    let files = extract::extract(&cache.object_path(sha), x.format, &dest, limits)
        .map_err(|e| e.to_string())?;
    let body: String = files.iter().map(|(h, p)| format!("{h}\t{p}\n")).collect();
    write_atomic(&list, body.as_bytes()).map_err(|e| e.to_string())
}

fn write_atomic(p: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, p).map_err(io_err(p))
}
