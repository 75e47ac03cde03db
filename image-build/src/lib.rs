//! # image-build
//!
//! Dockerfile parsing and image builds: one layer per filesystem-changing step, a layer
//! cache, multi-stage builds.
//!
//! Not yet filled in: it comes after the foundation issues (core, store, overlay, runtime).
#![forbid(unsafe_code)]
