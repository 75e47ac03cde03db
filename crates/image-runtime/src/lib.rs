//! # image-runtime
//!
//! Containers from images: a writable snapshot on the image's layers, a runtime spec
//! from the image config, and a backend that runs the process.
//!
//! Not yet filled in: the foundation issues build it after image-overlay.
#![forbid(unsafe_code)]
