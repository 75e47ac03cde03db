//! Layer sinks: a pull hands each blob's bytes, as they stream into the
//! store, to a second consumer (an unpacker into snapshots), so a layer is
//! downloaded, verified, stored and unpacked in one pass.
//!
//! This crate knows nothing of snapshots: a sink is whatever the caller
//! composes in (image-overlay's `StreamUnpacker`, wrapped in a few lines;
//! imagectl's `pull --unpack` does so). The contract:
//!
//! - [`LayerSink::begin`] is called for a blob the pull downloads from its
//!   first byte (not for a blob the store has, nor for one resumed from an
//!   earlier pull's ingest: the sink sees none of those bytes, and reads
//!   that blob from the store afterwards if it wants it).
//! - [`LayerFeed::write`] gets every byte in order, on a blocking thread
//!   (never on the async executor), exactly the bytes written into the
//!   ingest. A download cut and resumed with a Range request continues the
//!   same feed; a download that has to start again drops it.
//! - [`LayerFeed::verified`] is called once the blob is committed to the
//!   store against its digest and size, with the store's proof of it
//!   ([`VerifiedBlob`], which only that commit makes). A feed dropped without it (a bad
//!   digest, a cancelled or failed download, a failed write) must leave
//!   nothing behind; the drop happens before the pull returns.
//! - A feed whose `write` fails is dropped and the pull goes on: the blob
//!   is still stored; the sink learns of the failure again when it reads
//!   the blob from the store.

use image_core::Descriptor;
use image_store::VerifiedBlob;

/// Receives the blobs of a pull while they stream; see the
/// [module documentation](self).
pub trait LayerSink: Send + Sync + std::fmt::Debug {
    /// A feed for `blob`, whose download starts at its first byte, or
    /// `None` when the sink does not want it (a config, a layer it cannot
    /// stream).
    fn begin(&self, blob: &Descriptor) -> Option<Box<dyn LayerFeed>>;
}

/// One blob's bytes on their way into a sink.
pub trait LayerFeed: Send {
    /// The next bytes of the blob, in order. May block (it runs on a
    /// blocking thread); blocking holds the download back, so a sink
    /// bounds its memory by blocking.
    ///
    /// # Errors
    /// The sink cannot go on with this blob; the feed is dropped.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;

    /// Every byte was written and the blob is committed to the store,
    /// verified against its digest and size: `blob` is the store's proof
    /// (only its commit makes one), for a sink whose own API asks for it.
    fn verified(self: Box<Self>, blob: &VerifiedBlob);
}
