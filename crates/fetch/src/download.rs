//! One HTTP(S) download into a partial file, resumed with `Range` when bytes are already there.
//! Hash checking happens after, in `fetch`; this layer only moves bytes and classifies failures so
//! the caller knows whether to retry the same source or move on to the next one.
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying the same source (connection dropped, timeout, 5xx, 429).
    Transient(String),
    /// This source will not serve the file (404, 403, other 4xx, bad URL).
    Permanent(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout_read(timeout)
        .timeout_write(timeout)
        .user_agent(concat!("baddiffusion-fetch/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Downloads `url` into `part`, continuing after the bytes `part` already holds when the server
/// honours `Range` (206), starting over when it answers 200.
pub(crate) fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    bar: &ProgressBar,
) -> Result<(), Failure> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // Nothing left to send: the partial file is already whole (the hash will tell).
            return Ok(());
        }
        Err(ureq::Error::Status(code, r)) => {
            let msg = format!("{url}: HTTP {code} {}", r.status_text());
            return Err(if code >= 500 || code == 429 || code == 408 {
                Failure::Transient(msg)
            } else {
                Failure::Permanent(msg)
            });
        }
        Err(ureq::Error::Transport(t)) => {
            let kind = t.kind();
            // ureq names the URL itself when it knows it.
            let t = t.to_string();
            let msg = if t.starts_with(url) {
                t
            } else {
                format!("{url}: {t}")
            };
            return Err(match kind {
                ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                    Failure::Permanent(msg)
                }
                _ => Failure::Transient(msg),
            });
        }
    };
    let io = |e: std::io::Error| Failure::Permanent(format!("{}: {e}", part.display()));
    let mut f = OpenOptions::new()
        .create(true)
        .append(false)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(io)?;
    let start = if resp.status() == 206 && have > 0 {
        let range = resp.header("Content-Range").unwrap_or("");
        if !range.starts_with(&format!("bytes {have}-")) {
            return Err(Failure::Transient(format!(
                "{url}: server sent range `{range}`, asked from byte {have}"
            )));
        }
        have
    } else {
        f.set_len(0).map_err(io)?;
        0
    };
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let expected: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    if let Some(n) = expected {
        bar.set_length(start + n);
    }
    bar.set_position(start);
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                f.flush().ok();
                return Err(Failure::Transient(format!(
                    "{url}: transfer interrupted after {} bytes: {e}",
                    start + got
                )));
            }
        };
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n]).map_err(io)?;
        got += n as u64;
        bar.inc(n as u64);
    }
    f.sync_all().map_err(io)?;
    if let Some(n) = expected {
        if got < n {
            return Err(Failure::Transient(format!(
                "{url}: connection closed after {} of {} bytes",
                start + got,
                start + n
            )));
        }
    }
    Ok(())
}
