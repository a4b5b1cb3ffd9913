//! The paper report of the BadDiffusion reproduction: every figure and table of the paper
//! rendered from a run's metric frame, the claims verdicts, the authors' released numbers, an
//! artifact-evaluation appendix, and regression diffs between runs.
//!
//! Entry points: [`report::render`] (a run directory → `report.md`, `report.html`, figures and
//! tables) and [`diff::diff`] (two runs → Markdown/JSON, regression flag). The frame contract is in
//! [`schema`].
pub mod appendix;
pub mod claims;
pub mod collect;
pub mod diff;
pub mod doc;
pub mod figures;
pub mod fixture;
pub mod grid;
pub mod plot;
pub mod released;
pub mod report;
pub mod run_manifest;
pub mod schema;
pub mod tables;

pub use diff::{diff, DiffReport, Tolerances};
pub use report::{render, RenderOptions, Rendered};
