//! # image-overlay
//!
//! Layers as streams: unpack, pack and diff of layer tarballs, whiteouts, and storage drivers.
#![forbid(unsafe_code)]
