//! # image-store
//!
//! A content-addressable store for images (OCI image layout on disk, or in memory).
#![forbid(unsafe_code)]
