//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (nightly) and
//! by the corpus replay test of the main workspace (stable), which includes
//! `targets.rs` by path.
#![forbid(unsafe_code)]

#[path = "targets.rs"]
pub mod targets;
