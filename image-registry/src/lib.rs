//! # image-registry
//!
//! An OCI distribution client: pull, push, auth and tags, into and out of an image-store.
//!
//! Not yet filled in: it comes after the foundation issues.
#![forbid(unsafe_code)]
