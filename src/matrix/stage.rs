//! The content-addressed stage cache. A stage's key is the sha256 of everything that decides its
//! output: its kind, the key schema version, the code version of that kind of stage, its
//! settings and the hashes (or keys) of its inputs. Its output lives in
//! `<root>/<kind>/<key>/`; `stage.json` is written last, atomically, so a stage is done exactly
//! when that file exists. A killed stage leaves its folder behind and is resumed (training
//! resumes from its last checkpoint) or redone; two processes needing the same stage take turns
//! on a lock file, and the second finds the first one's result.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Bumped when the key layout itself changes; every cached stage is then recomputed.
pub const KEY_SCHEMA: u32 = 1;

/// The kinds of stage a cell runs, in data-flow order; each has its folder under the root.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// The clean base model: pretrained here or a fetched checkpoint.
    Base,
    Train,
    Sample,
    Measure,
    Defend,
}

impl StageKind {
    /// Its name in keys, records and folder names.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Base => "base",
            StageKind::Train => "train",
            StageKind::Sample => "sample",
            StageKind::Measure => "measure",
            StageKind::Defend => "defend",
        }
    }

    /// Bumped when the code that produces this kind's output changes its numbers. Keys do not
    /// include the git commit: editing docs must not retrain a matrix.
    pub fn code_version(self) -> u32 {
        match self {
            StageKind::Base | StageKind::Train | StageKind::Sample => 1,
            // 2: the proxy's protocol names its card relative to the cache.
            // 3: each set also records its per-image MSE CDF (`MSE_rate_below[τ]`) for calibration.
            StageKind::Measure => 3,
            // 2: ANP pruning no longer masks the output convolution (it zeroed the model).
            StageKind::Defend => 2,
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stage's identity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageKey {
    pub kind: StageKind,
    pub key: String,
    /// What the key was computed from (kept for `why did this rerun?`).
    pub inputs: Value,
}

impl StageKey {
    pub fn new(kind: StageKind, inputs: Value) -> StageKey {
        let keyed = json!({
            "kind": kind,
            "key_schema": KEY_SCHEMA,
            "code_version": kind.code_version(),
            "crate_version": env!("CARGO_PKG_VERSION"),
            "inputs": inputs,
        });
        // serde_json's maps are ordered, so the text is canonical.
        let key = crate::files::sha256_hex(keyed.to_string().as_bytes());
        StageKey { kind, key, inputs }
    }

    pub fn short(&self) -> &str {
        &self.key[..12]
    }
}

/// What `stage.json` holds: the key, the output and the cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    pub kind: StageKind,
    pub key: String,
    pub label: String,
    pub inputs: Value,
    pub output: Value,
    pub wall_s: f64,
    pub disk_bytes: u64,
    /// Peak resident memory of the process that ran it, when known.
    pub peak_rss_bytes: Option<u64>,
    pub finished_unix: u64,
    /// Whether this process computed it (false: read from the cache).
    #[serde(default)]
    pub ran: bool,
}

/// The stage cache under one root (shared by every run and every process that sees the path).
#[derive(Clone, Debug)]
pub struct StageStore {
    pub root: PathBuf,
    /// Serve finished stages only: a stage that would run is a [`NotCached`] error instead
    /// (how an orchestrator learns which cells still have work, by running them).
    pub cached_only: bool,
}

/// A stage that a [`StageStore::cached_only`] store was asked to run.
#[derive(Debug, thiserror::Error)]
#[error("stage {kind} [{label}] is not cached ({key})")]
pub struct NotCached {
    pub kind: StageKind,
    pub label: String,
    pub key: String,
}

impl StageStore {
    pub fn new(root: impl Into<PathBuf>) -> StageStore {
        StageStore {
            root: root.into(),
            cached_only: false,
        }
    }

    /// `$BADDIFF_CACHE/stages` (the artifact cache's root), so a cluster's shared cache serves both.
    pub fn default_root() -> PathBuf {
        fetch::Cache::default_root().join("stages")
    }

    pub fn dir(&self, key: &StageKey) -> PathBuf {
        self.root.join(key.kind.name()).join(&key.key)
    }

    /// The finished record of a stage, if any.
    pub fn finished(&self, key: &StageKey) -> Option<StageRecord> {
        let text = std::fs::read_to_string(self.dir(key).join("stage.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Returns the stage's output: from the cache, or by running `work` in the stage's folder.
    /// Logs one line saying which and why.
    pub fn run<T: Serialize + DeserializeOwned>(
        &self,
        key: &StageKey,
        label: &str,
        work: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<(T, StageRecord)> {
        if let Some(rec) = self.finished(key) {
            eprintln!("stage {} [{label}] cached ({})", key.kind, key.short());
            return Ok((Self::output(&rec)?, StageRecord { ran: false, ..rec }));
        }
        if self.cached_only {
            return Err(NotCached {
                kind: key.kind,
                label: label.to_string(),
                key: key.short().to_string(),
            }
            .into());
        }
        let dir = self.dir(key);
        std::fs::create_dir_all(dir.parent().unwrap_or(&self.root))
            .with_context(|| format!("creating the stage cache {}", self.root.display()))?;
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            eprintln!(
                "stage {} [{label}] is being computed by another process; waiting",
                key.kind
            );
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
        }
        if let Some(rec) = self.finished(key) {
            eprintln!("stage {} [{label}] cached ({})", key.kind, key.short());
            return Ok((Self::output(&rec)?, StageRecord { ran: false, ..rec }));
        }
        let why = if dir.exists() {
            "resuming an interrupted run"
        } else {
            "not cached"
        };
        eprintln!("stage {} [{label}] runs: {why} ({})", key.kind, key.short());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = Instant::now();
        let output = work(&dir).with_context(|| format!("stage {} [{label}]", key.kind))?;
        let rec = StageRecord {
            kind: key.kind,
            key: key.key.clone(),
            label: label.into(),
            inputs: key.inputs.clone(),
            output: serde_json::to_value(&output)?,
            wall_s: started.elapsed().as_secs_f64(),
            disk_bytes: disk_usage(&dir),
            peak_rss_bytes: peak_rss_bytes(),
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ran: true,
        };
        crate::files::write_atomic(
            &dir.join("stage.json"),
            serde_json::to_string_pretty(&rec)?.as_bytes(),
        )?;
        Ok((output, rec))
    }

    fn output<T: DeserializeOwned>(rec: &StageRecord) -> Result<T> {
        serde_json::from_value(rec.output.clone()).with_context(|| {
            format!(
                "cached stage {} {} has an output this version cannot read: delete that folder to recompute it",
                rec.kind, rec.key
            )
        })
    }
}

/// Bytes of all files under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// The process's peak resident set (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_runs_once_and_its_key_follows_its_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StageStore::new(tmp.path());
        let key = StageKey::new(StageKind::Sample, json!({"n": 4, "model": "abc"}));
        assert_eq!(
            key,
            StageKey::new(StageKind::Sample, json!({"model": "abc", "n": 4}))
        );
        assert_ne!(
            key.key,
            StageKey::new(StageKind::Sample, json!({"n": 5, "model": "abc"})).key
        );
        assert_ne!(
            key.key,
            StageKey::new(StageKind::Measure, json!({"n": 4, "model": "abc"})).key
        );

        let mut calls = 0;
        let (out, rec) = store
            .run(&key, "t", |dir| {
                calls += 1;
                std::fs::write(dir.join("x"), b"1234")?;
                Ok(7u32)
            })
            .unwrap();
        assert_eq!((out, rec.ran, rec.disk_bytes), (7, true, 4));
        let (out, rec) = store
            .run(&key, "t", |_| -> Result<u32> {
                panic!("cached stage ran again")
            })
            .unwrap();
        assert_eq!((out, rec.ran, calls), (7, false, 1));
    }

    #[test]
    fn a_failed_stage_is_not_recorded_and_reruns() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StageStore::new(tmp.path());
        let key = StageKey::new(StageKind::Train, json!({}));
        let err = store
            .run(&key, "t", |_| -> Result<u32> { anyhow::bail!("killed") })
            .unwrap_err();
        assert!(format!("{err:#}").contains("killed"));
        assert!(store.finished(&key).is_none());
        let (out, rec) = store.run(&key, "t", |_| Ok(1u32)).unwrap();
        assert_eq!((out, rec.ran), (1, true));
    }

    #[test]
    fn a_cached_only_store_serves_finished_stages_and_refuses_to_run_others() {
        let tmp = tempfile::tempdir().unwrap();
        let done = StageKey::new(StageKind::Sample, json!({"n": 1}));
        StageStore::new(tmp.path())
            .run(&done, "t", |_| Ok(3u32))
            .unwrap();
        let store = StageStore {
            cached_only: true,
            ..StageStore::new(tmp.path())
        };
        let (out, rec) = store
            .run(&done, "t", |_| -> Result<u32> {
                panic!("ran a cached stage")
            })
            .unwrap();
        assert_eq!((out, rec.ran), (3, false));
        let todo = StageKey::new(StageKind::Sample, json!({"n": 2}));
        let err = store
            .run(&todo, "new", |_| -> Result<u32> {
                panic!("ran in cached-only mode")
            })
            .unwrap_err();
        let not_cached = err.downcast_ref::<NotCached>().expect("a NotCached error");
        assert_eq!(
            (not_cached.kind, not_cached.label.as_str()),
            (StageKind::Sample, "new")
        );
        assert!(
            !store.dir(&todo).exists(),
            "nothing was created for the refused stage"
        );
    }
}
