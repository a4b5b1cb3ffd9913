//! Parity of the scheduler tables with diffusers.
