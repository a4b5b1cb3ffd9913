//! One file per `baddiff` subcommand: argument parsing and printing only; the library computes.
pub mod defend;
pub mod env;
pub mod fid;
pub mod measure;
pub mod sample;
pub mod train;
