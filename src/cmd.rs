//! One file per `baddiff` subcommand: argument parsing and printing only; the library computes.
pub mod bench;
pub mod cell;
pub mod defend;
pub mod env;
pub mod fid;
pub mod gallery;
pub mod gpu_check;
pub mod measure;
pub mod plan;
pub mod sample;
pub mod shrink;
pub mod train;
