//! `pull --unpack`: image-overlay's stream unpacker given to image-registry
//! as a pull's layer sink, so each layer is downloaded, stored and unpacked
//! into its snapshot in one pass (the two crates do not know each other;
//! this is the composition a library user writes too).

use std::sync::{Arc, Weak};

use image_core::Descriptor;
use image_overlay::StreamUnpacker;
use image_registry::LayerSink;

/// A pull's layer sink that unpacks into snapshots.
#[derive(Debug)]
pub struct SnapshotSink(pub Arc<StreamUnpacker>);

impl LayerSink for SnapshotSink {
    fn begin(&self, blob: &Descriptor) -> Option<Box<dyn image_registry::LayerFeed>> {
        // A snapshot that cannot be prepared now is tried again, from the
        // store, by `StreamUnpacker::finish`, which reports its error.
        match self.0.begin(blob) {
            Ok(Some(feed)) => Some(Box::new(Feed(feed))),
            // Declined for want of a slot: the bytes only go to the store,
            // and the layer is unpacked from there once it is stored.
            Ok(None) if self.0.declined(blob) => Some(Box::new(Stored(Arc::downgrade(&self.0)))),
            Ok(None) | Err(_) => None,
        }
    }
}

/// The feed of a layer the unpacker declined: discards the bytes (the
/// store has them) and tells the unpacker once the blob is stored.
///
/// It does not keep the unpacker: the last reference to an unpacker
/// joins its unpacks from the store when dropped, which must not happen
/// on the registry's download path (an async executor's thread, maybe).
/// The sink holds one for as long as the pull holds the sink (the
/// caller's options, borrowed by the pull, keep it), so the reference
/// `verified` takes for the call is never the last while the pull runs;
/// an unpacker gone already has nothing to unpack.
struct Stored(Weak<StreamUnpacker>);

impl image_registry::LayerFeed for Stored {
    fn write(&mut self, _bytes: &[u8]) -> std::io::Result<()> {
        Ok(())
    }

    fn verified(self: Box<Self>, blob: &image_store::VerifiedBlob) {
        if let Some(unpacker) = self.0.upgrade() {
            unpacker.stored(blob);
        }
    }
}

struct Feed(image_overlay::LayerFeed);

impl image_registry::LayerFeed for Feed {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write(bytes)
    }

    fn verified(self: Box<Self>, blob: &image_store::VerifiedBlob) {
        // A layer that failed to unpack is unpacked again from the store
        // by `finish`, which reports the error.
        let _ = self.0.finish(blob);
    }
}
