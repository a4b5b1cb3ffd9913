//! The sampling loop.
