//! A layer blob already in a store, as a build step or the builder API
//! makes it: its descriptor (what a manifest lists) and its diff ID (what
//! the config's `rootfs.diff_ids` lists).

use image_core::{Descriptor, Digest};

/// A layer blob in a store: the descriptor of its (compressed) blob and the
/// digest of its uncompressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob's descriptor (media type, digest, size).
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar stream.
    pub diff_id: Digest,
}
