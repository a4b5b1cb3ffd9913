//! One HTTP(S) download into a partial file, resumed with `Range` when bytes are already there.
//! Hash checking happens after, in `fetch`; this layer moves bytes, makes sure the transfer was whole
//! (the length the server stated, when it stated one), and classifies failures so the caller knows
//! whether to retry the same source or move on to the next one.
//!
//! A file that nothing checks afterwards (trusted on first use, with no sha256, md5, sha256 prefix or
//! size in the manifest) is held to more: it is never resumed (two halves could come from two
//! versions of the file), a failed transfer leaves nothing behind, and the server must state its
//! length, because a body cut short without one (a connection closed before the chunked terminator,
//! or a close-delimited body) cannot be told from a whole one by the HTTP client.
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
    /// The host's name does not resolve (no network, most often): no URL on it is tried again.
    Unresolved(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) | Failure::Unresolved(m) => m,
        }
    }
}

/// Whether the downloaded bytes are checked after the transfer by something known in advance (a
/// sha256, an md5, a sha256 prefix or a size). Unchecked bytes get the stricter rules above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    Yes,
    No,
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
/// honours `Range` (206), starting over when it answers 200. Returns the URL that served the bytes
/// (after redirects). On failure, `part` keeps what arrived only when the bytes are checked later.
pub(crate) fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    bar: &ProgressBar,
    checked: Checked,
) -> Result<String, Failure> {
    if checked == Checked::No {
        let _ = std::fs::remove_file(part);
    }
    let r = transfer(agent, url, part, bar, checked);
    if r.is_err() && checked == Checked::No {
        let _ = std::fs::remove_file(part);
    }
    r
}

/// `bytes FIRST-LAST/TOTAL` of a `Content-Range` header.
fn content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    bar: &ProgressBar,
    checked: Checked,
) -> Result<String, Failure> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, r)) if have > 0 => {
            // Nothing left to send: the partial file is already whole (the hash will tell; only
            // checked files are ever resumed).
            return Ok(r.get_url().to_string());
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
                ureq::ErrorKind::Dns => Failure::Unresolved(format!(
                    "{msg} (the host does not resolve: no network here? a mirror serves machines \
                     without one; not retried)"
                )),
                _ => Failure::Transient(msg),
            });
        }
    };
    let final_url = resp.get_url().to_string();
    let served = if final_url == url {
        String::new()
    } else {
        format!(" (served by {final_url})")
    };
    let length: Option<u64> = match resp.header("Content-Length") {
        None => None,
        Some(v) => Some(v.trim().parse().map_err(|_| {
            Failure::Transient(format!(
                "{url}{served}: malformed Content-Length `{v}`; not used"
            ))
        })?),
    };
    if length.is_none() && checked == Checked::No {
        return Err(Failure::Permanent(format!(
            "{url}{served}: the server stated no Content-Length, so a transfer cut short cannot be \
             told from a whole one, and nothing else checks this file (trusted on first use); pin \
             its sha256 (or its size) in the manifest, or fetch it from a mirror that states the length"
        )));
    }
    let io = |e: std::io::Error| Failure::Permanent(format!("{}: {e}", part.display()));
    let mut f = OpenOptions::new()
        .create(true)
        .append(false)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(io)?;
    // Where the body starts in the file, and the whole file's length when the server states it.
    // A 206 must continue exactly where the partial file ends (byte 0 when nothing was asked for)
    // and state the whole file's length, so that what arrives can be measured against it.
    let (start, total) = if resp.status() == 206 {
        let range = resp.header("Content-Range").unwrap_or("");
        match content_range(range) {
            Some((first, last, Some(total)))
                if first == have
                    && length.is_none_or(|n| n == last - first + 1)
                    && total == last + 1 =>
            {
                (have, Some(total))
            }
            _ => {
                return Err(Failure::Transient(format!(
                    "{url}{served}: server sent range `{range}` with Content-Length {length:?}, \
                     asked from byte {have} to the end"
                )))
            }
        }
    } else {
        f.set_len(0).map_err(io)?;
        (0, length)
    };
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(start);
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let of_total = |n: u64| match total {
        Some(t) => format!("{n} of {t} bytes stated by the server"),
        None => format!("{n} bytes"),
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                f.flush().ok();
                return Err(Failure::Transient(format!(
                    "{url}{served}: transfer cut short after {}: {e}",
                    of_total(start + got)
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
    if let Some(t) = total {
        // The client never reads past Content-Length, so a body longer than stated is cut at the
        // stated length; a shorter one ends here.
        if start + got != t {
            return Err(Failure::Transient(format!(
                "{url}{served}: connection closed after {}",
                of_total(start + got)
            )));
        }
    }
    Ok(final_url)
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn content_range_is_parsed_strictly() {
        assert_eq!(content_range("bytes 5-9/10"), Some((5, 9, Some(10))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(content_range("bytes 9-5/10"), None);
        assert_eq!(content_range("bytes */10"), None);
        assert_eq!(content_range("5-9/10"), None);
    }
}
