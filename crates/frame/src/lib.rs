//! The metric frame and what is concluded from it, without libtorch or polars: the pipeline
//! (`baddiff`) writes [`Row`]s, the report reads them, and both judge the paper's claims with the
//! one engine in [`claims`]. Judging is arithmetic over rows, so the report can judge a frame
//! without the heavy binary.
pub mod calibrate;
pub mod claims;
pub mod detection;
pub mod regime;
pub mod row;

pub use row::{ColumnData, Kind, Row, COLUMNS};
