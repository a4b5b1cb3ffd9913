//! Progress bars of the long loops (training, sampling, feature extraction).
//!
//! On a terminal a bar draws on stderr. A cell run by `cargo xtask reproduce` has no terminal (its
//! output goes to a log, possibly on another node), so when `BADDIFF_PROGRESS` names a file the
//! bar is also rendered into that file, one line, replaced atomically; the orchestrator polls it
//! and shows it as the cell's per-stage bar.
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// The environment variable naming the status file.
pub const STATUS_FILE_ENV: &str = "BADDIFF_PROGRESS";

/// A bar of `len` steps drawn with `template` (indicatif's syntax): on stderr when `show`, into
/// the status file when `BADDIFF_PROGRESS` is set, hidden otherwise.
pub fn bar(len: u64, template: &str, show: bool) -> ProgressBar {
    let target = match std::env::var_os(STATUS_FILE_ENV) {
        Some(path) if !path.is_empty() => {
            ProgressDrawTarget::term_like_with_hz(Box::new(StatusFile::new(path.into())), 1)
        }
        _ if show => ProgressDrawTarget::stderr(),
        _ => return ProgressBar::hidden(),
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The rendered bar as one line of text in a file (written to a temporary name, then renamed,
/// so a reader never sees half a line).
#[derive(Debug)]
struct StatusFile {
    path: PathBuf,
    line: Mutex<String>,
}

impl StatusFile {
    fn new(path: PathBuf) -> StatusFile {
        StatusFile {
            path,
            line: Mutex::new(String::new()),
        }
    }
}

impl TermLike for StatusFile {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        if !s.trim().is_empty() {
            *self.line.lock().unwrap_or_else(|e| e.into_inner()) = s.trim_end().to_string();
        }
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let line = self.line.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if line.is_empty() {
            return Ok(());
        }
        // A status file that cannot be written must not fail the computation it reports on.
        let _ = crate::files::write_atomic(&self.path, line.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_renders_into_the_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.progress");
        let term = StatusFile::new(path.clone());
        let bar =
            ProgressBar::with_draw_target(Some(10), ProgressDrawTarget::term_like(Box::new(term)));
        bar.set_style(ProgressStyle::with_template("train {pos}/{len} it").unwrap());
        bar.set_position(7);
        // abandon() draws the last state regardless of the refresh rate and keeps the position.
        bar.abandon();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "train 7/10 it");
    }
}
