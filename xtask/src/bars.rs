//! The progress display of a run's cells, shared by the local and the Slurm executor.
use std::path::{Path, PathBuf};

/// The overall bar (cells done of all, ETA) above one line per running cell, where the cell's
/// own per-stage bar shows (each cell renders it into `logs/<cell>.progress`).
pub struct Bars {
    multi: indicatif::MultiProgress,
    pub overall: indicatif::ProgressBar,
    cells: Vec<(String, indicatif::ProgressBar)>,
    logs: PathBuf,
}

impl Bars {
    pub fn new(total: usize, logs: &Path) -> Bars {
        let multi = indicatif::MultiProgress::new();
        let overall = multi.add(indicatif::ProgressBar::new(total as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template(
                "cells {bar:30} {pos}/{len} [{elapsed} < {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bars {
            multi,
            overall,
            cells: Vec::new(),
            logs: logs.to_path_buf(),
        }
    }

    /// The status file a cell's process is told to render its bar into.
    pub fn status_file(&self, cell: &str) -> PathBuf {
        self.logs.join(format!("{cell}.progress"))
    }

    /// Shows exactly the `running` cells, each with its latest stage line.
    pub fn show(&mut self, running: &[&str]) {
        self.cells.retain(|(c, bar)| {
            let keep = running.contains(&c.as_str());
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for cell in running {
            if !self.cells.iter().any(|(c, _)| c == cell) {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template("  {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                self.cells.push((cell.to_string(), bar));
            }
        }
        for (cell, bar) in &self.cells {
            let line = std::fs::read_to_string(self.status_file(cell)).unwrap_or_default();
            bar.set_message(format!(
                "{cell}: {}",
                if line.is_empty() {
                    "starting"
                } else {
                    line.trim()
                }
            ));
        }
    }

    pub fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }

    pub fn finish(&mut self) {
        self.show(&[]);
        self.overall.finish_and_clear();
    }
}
