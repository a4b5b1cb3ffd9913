//! BadDiffusion reproduction harness: the library that computes.
//!
//! Data flows fetch → train → sample → measure → frames → report; each module is one concept of
//! the paper, named as the paper (or the diffusers code we port) names it.
pub mod python;
pub mod rng;

/// The libtorch release this build links against (read from the torch install at build time).
pub const LIBTORCH_VERSION: &str = env!("BADDIFF_LIBTORCH_VERSION");
