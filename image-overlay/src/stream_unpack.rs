//! Unpack layers while their blobs arrive: the snapshot half of a pull that
//! unpacks in one pass.
//!
//! A [`StreamUnpacker`] is given each layer's compressed bytes as they are
//! downloaded (through a [`LayerFeed`], fed by whoever downloads: a
//! registry pull's layer sink), and unpacks them at once into an active
//! snapshot of their own, on a thread per layer, the diff ID hashed on the
//! way. The compressed bytes are not hashed here: the feeder stores the
//! same bytes and verifies them against the blob's digest and size (a
//! pull's store does so at its commit), and a layer's snapshot is kept only
//! once the feeder hands over the store's proof of that commit
//! ([`LayerFeed::finish`] takes a [`VerifiedBlob`], which only a store's
//! verified commit makes); a feed dropped before
//! that removes it. Nothing is committed while bytes arrive:
//! [`StreamUnpacker::finish`], called once the image's blobs are verified
//! and stored, commits each layer's snapshot under its chain ID, bottom
//! first, after checking the diff ID it computed against the config's.
//!
//! When commits must be durable, each layer unpacked whole wakes a
//! flusher thread that syncs the snapshots' filesystem while the other
//! layers still arrive, so that the sync `finish` makes before its commits
//! finds little left to write.
//!
//! Only drivers that keep each layer in a directory of its own
//! ([`Capabilities::rebase`](crate::snapshot::Capabilities), overlay) can
//! unpack a layer before its parent is committed, so only they stream;
//! with another driver (copy) [`StreamUnpacker::begin`] declines and
//! `finish` unpacks from the store. `finish` also unpacks from the store
//! every layer that was not streamed whole: a blob the store had already,
//! a download resumed from an earlier pull's ingest, a layer whose feed was
//! dropped, a layer with a hardlink to a file of a lower layer (which needs
//! the lower layers committed first, see [`crate::image_unpack`]).
//!
//! What is never left behind: a feed dropped before
//! [`LayerFeed::finish`] (a bad digest, a cancelled download) stops its
//! unpack and removes its active snapshot before the drop returns; the
//! snapshots of layers streamed but never committed are removed by
//! `finish`, or when the unpacker is dropped (with every feed and every
//! sink holding it). Memory is bounded: a feed holds at most
//! [`FEED_CHUNKS`] chunks in flight; a writer that outruns the unpack
//! blocks.
//!
//! An unpacker made [`bounded`](StreamUnpacker::bounded) bounds CPU
//! without holding a download back: at most
//! [`ImageUnpackOptions::parallelism`] layers (0: the number of cores)
//! stream into their snapshots at once (a layer under [`SLOTLESS_BELOW`]
//! bytes needs no slot). A layer whose download begins
//! while every slot is taken gets no feed ([`StreamUnpacker::begin`]
//! declines it): it is only stored, at the speed of the network, and
//! `finish` unpacks it from the store with the other layers not streamed,
//! that many at once, verified as [`unpack_image`](crate::unpack_image)
//! verifies. (Waiting for a slot instead held the download back, a full
//! feed blocking its writer: slower through a real link.)
//!
//! Made [`bounded_with_store`](StreamUnpacker::bounded_with_store), it
//! does not leave a declined layer to `finish`: once the feeder has
//! stored its blob verified and says so ([`StreamUnpacker::stored`],
//! with the store's proof), the layer is unpacked from that store, as
//! soon as a slot is free and within the same slots, into an active
//! snapshot of its own as a stream's, while the other layers still
//! download; where several wait, the one `begin` saw first (the bottom
//! one, as a pull begins them) goes first. A worker keeps its slot for
//! the next waiting layer. Its compressed bytes are not hashed again (the
//! store verified them at the commit whose proof `stored` took), its diff
//! ID is, and `finish` checks it against the config's before the commit,
//! as for a stream; a layer that fails there (a hardlink to a lower
//! layer's file, a bad blob) leaves nothing and is unpacked again by
//! `finish` in order, which reports the error. These unpacks report
//! their progress to the tracker of the options given at construction
//! (`options.unpack.tracker`), as an image unpack's do, and stop once its
//! interrupt is set. `finish` waits for them first, watching that
//! interrupt and the one of its own options: once either is set it stops
//! them (nothing queued starts, the running ones are interrupted and
//! awaited, their snapshots removed) and returns
//! [`ImageUnpackError::Cancelled`]; a panic in one removes its snapshot
//! and `finish` returns [`ImageUnpackError::Panicked`]. Dropping the
//! unpacker stops them too, and what they made goes with the last feed,
//! as a stream's does.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image_core::manifest::descriptor_media_type;
use image_core::{chain_ids, Descriptor, DescriptorExt, Digest, Interrupt, Tracker};
use image_store::{Image, Provider, VerifiedBlob};

use crate::image_unpack::{
    commit_job, image_layers, prepare_job, remove_stale, sync_dirs, temp_key, unpack_layer,
    unpack_layers, writable_dir, ImageUnpackError, ImageUnpackOptions, ImageUnpackReport, Job,
};
use crate::snapshot::{Kind, Labels, Snapshotter};
use crate::unpack::{unpack, unpack_read_ahead, UnpackError, UnpackOptions, UnpackReport};

/// Layers smaller than this (compressed bytes) stream without taking a
/// slot (see the [module documentation](self)): their unpack costs little
/// CPU, and one unpacked from the store after the pull would wait for the
/// others first.
pub const SLOTLESS_BELOW: u64 = 1 << 20;

/// Chunks a feed holds between its writer and its unpack thread.
pub const FEED_CHUNKS: usize = 32;

/// Unpacks layers into snapshots while they are downloaded; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct StreamUnpacker {
    shared: Arc<Shared>,
}

struct Shared {
    snapshotter: Arc<dyn Snapshotter>,
    /// Each layer's options start from these (whiteouts set by the driver).
    base: UnpackOptions,
    streams: bool,
    /// Layers unpacked whole, by blob digest, waiting for their commit.
    done: Mutex<HashMap<Digest, Streamed>>,
    /// The chain IDs committed from streams.
    committed: Mutex<Vec<Digest>>,
    /// Wakes the thread that syncs the filesystem of the snapshots each
    /// time a layer is unpacked whole (when commits must be durable);
    /// started with the first layer.
    flusher: Mutex<Option<SyncSender<()>>>,
    /// The layers streaming into their snapshots now, and those unpacked
    /// from the store before `finish`.
    slots: Arc<Slots>,
    /// Where a layer declined for want of a slot is unpacked from once
    /// its blob is stored ([`StreamUnpacker::bounded_with_store`]).
    store: Option<Arc<dyn Provider + Send + Sync>>,
    /// The declined layers and their unpacks from the store.
    queue: Mutex<Queue>,
    /// Stops the unpacks from the store when the unpacker is dropped or
    /// its `finish` is cancelled.
    interrupt: Interrupt,
    /// The caller's tracker (`options.unpack.tracker` at construction):
    /// the unpacks from the store report to it and stop once its
    /// interrupt is set, as an image unpack's do.
    tracker: Tracker,
    /// The layers whose unpack from the store panicked (their snapshots
    /// removed; `None`: a panic between two layers), for `finish` to
    /// report.
    panicked: Mutex<Vec<Option<Digest>>>,
}

/// The layers [`StreamUnpacker::begin`] declined for want of a slot, on
/// an unpacker with a store.
#[derive(Default)]
struct Queue {
    /// Declined, their blobs not stored yet: by digest, their order.
    declined: HashMap<Digest, (u64, Descriptor)>,
    /// Stored verified, waiting for a slot: by order (bottom first, as
    /// a pull begins its layers).
    waiting: BTreeMap<u64, Descriptor>,
    /// The order of the next layer declined.
    next: u64,
    /// The threads unpacking waiting layers from the store.
    workers: Vec<JoinHandle<()>>,
    /// The unpacker is gone: nothing more starts.
    closed: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamUnpacker")
            .field("driver", &self.snapshotter.driver())
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

/// A layer unpacked whole into the active snapshot `key`.
struct Streamed {
    key: String,
    dir: String,
    report: UnpackReport,
    /// From its download (not from the store).
    streamed: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let done = std::mem::take(self.done.get_mut().unwrap_or_else(|e| e.into_inner()));
        for s in done.into_values() {
            let _ = self.snapshotter.remove(&s.key);
        }
    }
}

impl Shared {
    /// The handle that wakes the flusher, which is started (syncing the
    /// filesystem of `dir`) on the first call; `None` when commits need
    /// not be durable or no flusher could be started.
    ///
    /// Each layer unpacked whole wakes it: the writeback of finished
    /// layers overlaps the download and unpack of the others, and the
    /// sync before the commits ([`StreamUnpacker::finish`]) finds little
    /// left to write, as the image unpack's flusher does. Its errors are
    /// ignored: that last sync decides.
    fn flusher(&self, dir: &str) -> Option<SyncSender<()>> {
        if !self.snapshotter.capabilities().sync_on_commit {
            return None;
        }
        let mut flusher = self.flusher.lock().unwrap_or_else(|e| e.into_inner());
        if flusher.is_none() {
            let fd = std::fs::File::open(dir).ok()?;
            let (tx, rx) = sync_channel::<()>(1);
            std::thread::Builder::new()
                .name("stream-unpack-sync".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        let _ = rustix::fs::syncfs(&fd);
                    }
                })
                .ok()?;
            *flusher = Some(tx);
        }
        flusher.clone()
    }
}

impl Shared {
    /// Records a worker's panic, for `finish` to report.
    fn panicked(&self, digest: Option<Digest>) {
        let mut panicked = self.panicked.lock().unwrap_or_else(|e| e.into_inner());
        panicked.push(digest);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes `layer`, declined for want of a slot, for its unpack from
    /// the store once it is stored (an unpacker without a store leaves it
    /// to `finish`). A digest declined already (a manifest that repeats a
    /// layer) keeps its first, lower place: one unpack serves both.
    fn decline(&self, layer: &Descriptor, digest: Digest) {
        if self.store.is_none() {
            return;
        }
        let mut queue = self.queue();
        if queue.declined.contains_key(&digest) {
            return;
        }
        let order = queue.next;
        queue.next += 1;
        queue.declined.insert(digest, (order, layer.clone()));
    }

    /// Starts the unpacks of the lowest waiting layers from the store
    /// while slots are free. Called whenever a layer starts waiting and
    /// whenever a stream gives its slot back; under the queue's lock, so a
    /// layer never waits while a slot is free (a worker gives its slot
    /// back under the lock too).
    fn dispatch(shared: &Arc<Shared>) {
        let mut queue = shared.queue();
        if queue.closed || shared.tracker.interrupt().is_set() {
            return;
        }
        let (ended, running) = std::mem::take(&mut queue.workers)
            .into_iter()
            .partition::<Vec<_>, _>(JoinHandle::is_finished);
        queue.workers = running;
        for w in ended {
            if w.join().is_err() {
                // A panic between two layers (one in a layer is recorded
                // with its digest).
                shared.panicked(None);
            }
        }
        while !queue.waiting.is_empty() {
            let Some(slot) = Slots::take(&shared.slots) else {
                return;
            };
            let Some((order, layer)) = queue.waiting.pop_first() else {
                return;
            };
            let this = shared.clone();
            let first = layer.clone();
            let worker = std::thread::Builder::new()
                .name("stream-unpack-stored".into())
                .spawn(move || this.work(slot, first));
            match worker {
                Ok(worker) => queue.workers.push(worker),
                Err(_) => {
                    // Left waiting (for `finish`, if no thread ever starts).
                    queue.waiting.insert(order, layer);
                    return;
                }
            }
        }
    }

    /// A worker's loop: unpacks `layer` from the store, then the lowest
    /// waiting layer while any waits, in `slot`.
    fn work(&self, slot: Slot, layer: Descriptor) {
        let mut layer = layer;
        loop {
            let mut temp = Temp {
                shared: self,
                digest: layer.checked_digest().ok(),
                key: None,
            };
            self.unpack_stored(&layer, &mut temp);
            drop(temp);
            let mut queue = self.queue();
            let next = if queue.closed || self.tracker.interrupt().is_set() {
                None
            } else {
                queue.waiting.pop_first()
            };
            let Some((_, next)) = next else {
                drop(slot);
                return;
            };
            drop(queue);
            layer = next;
        }
    }

    /// Unpacks `layer`, whose blob the store committed verified, from the
    /// store into an active snapshot of its own, as a stream would have:
    /// kept for `finish`, which checks its diff ID against the config's
    /// before the commit. A layer that fails here (a hardlink to a lower
    /// layer's file, a bad blob) leaves nothing, and is unpacked again by
    /// `finish` in order, which reports the error.
    ///
    /// The snapshot is `temp`'s until it is kept: removed on any early
    /// return and on a panic.
    fn unpack_stored(&self, layer: &Descriptor, temp: &mut Temp<'_>) {
        let (Some(store), Ok(digest)) = (&self.store, layer.checked_digest()) else {
            return;
        };
        let sn = &self.snapshotter;
        let key = temp_key(&digest);
        let Ok(mounts) = sn.prepare_with(&key, None, Labels::new()) else {
            return;
        };
        temp.key = Some(key.clone());
        let Some(dir) = writable_dir(&mounts) else {
            return;
        };
        let mut opts = self.base.clone().with_digest(digest.clone());
        opts.size = Some(layer.size());
        // The store verified these bytes at the commit whose proof
        // `stored` was given; the diff ID, checked before the commit,
        // covers every byte unpacked (as for a stream).
        opts.digest_checked_by_caller = true;
        // The caller's progress and interrupt, as an image unpack's; the
        // unpacker's own interrupt stops the reads.
        opts.tracker = self.tracker.clone();
        let stop = Tracker::default().with_interrupt(self.interrupt.clone());
        if let Some(c) = descriptor_media_type(layer).layer_compression() {
            opts = opts.with_compression(c);
        }
        let report = store.reader_for_unverified(layer).ok().and_then(|r| {
            unpack_read_ahead(Box::new(stop.checked(r)), Path::new(&dir), &opts, false).ok()
        });
        let Some(report) = report else {
            return;
        };
        if let Some(flusher) = self.flusher(&dir) {
            let _ = flusher.try_send(());
        }
        temp.key = None;
        let streamed = Streamed {
            key,
            dir,
            report,
            streamed: false,
        };
        let old = {
            // Not kept once the unpacker is gone.
            let queue = self.queue();
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if queue.closed || done.contains_key(&digest) {
                // Or unpacked already (a repeated layer, its stream
                // kept).
                Some(streamed)
            } else {
                done.insert(digest, streamed)
            }
        };
        if let Some(old) = old {
            let _ = sn.remove(&old.key);
        }
    }
}

/// A worker's layer: its active snapshot (once prepared, until kept) is
/// removed when this is dropped, and a panic on the way is recorded for
/// `finish` to report.
struct Temp<'a> {
    shared: &'a Shared,
    digest: Option<Digest>,
    key: Option<String>,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.shared.snapshotter.remove(&key);
        }
        if std::thread::panicking() {
            self.shared.panicked(self.digest.take());
        }
    }
}

impl StreamUnpacker {
    /// An unpacker into `snapshotter`, each layer unpacked with
    /// `options.unpack` (its digests, compression and whiteout mode set
    /// per layer). Leftover temporary snapshots of dead processes are
    /// removed, as [`unpack_layers`] does.
    pub fn new(snapshotter: Arc<dyn Snapshotter>, options: &ImageUnpackOptions) -> StreamUnpacker {
        StreamUnpacker::make(snapshotter, options, Slots::new(usize::MAX), None)
    }

    /// An unpacker as [`new`](StreamUnpacker::new) makes, which streams
    /// at most `options.parallelism` layers (0: the cores) at once (see
    /// the [module documentation](self)); the layers it declines wait for
    /// [`finish`](StreamUnpacker::finish) ([`bounded_with_store`]
    /// unpacks them as soon as they are stored instead).
    ///
    /// [`bounded_with_store`]: StreamUnpacker::bounded_with_store
    pub fn bounded(
        snapshotter: Arc<dyn Snapshotter>,
        options: &ImageUnpackOptions,
    ) -> StreamUnpacker {
        let slots = Slots::new(options.parallelism);
        StreamUnpacker::make(snapshotter, options, slots, None)
    }

    /// An unpacker as [`bounded`](StreamUnpacker::bounded) makes, which
    /// unpacks a layer it declined for want of a slot from `store` (where
    /// the feeder stores the blobs) as soon as its blob is stored verified
    /// ([`stored`](StreamUnpacker::stored)) and a slot is free, within the
    /// same `options.parallelism` slots, rather than at
    /// [`finish`](StreamUnpacker::finish) (see the
    /// [module documentation](self)). Not what `pull --unpack` uses: on a
    /// loaded machine it made the one pass faster over loopback but not
    /// through a 1 Gbit/s link (ARCHITECTURE's decisions).
    pub fn bounded_with_store(
        snapshotter: Arc<dyn Snapshotter>,
        store: Arc<dyn Provider + Send + Sync>,
        options: &ImageUnpackOptions,
    ) -> StreamUnpacker {
        let slots = Slots::new(options.parallelism);
        StreamUnpacker::make(snapshotter, options, slots, Some(store))
    }

    fn make(
        snapshotter: Arc<dyn Snapshotter>,
        options: &ImageUnpackOptions,
        slots: Slots,
        store: Option<Arc<dyn Provider + Send + Sync>>,
    ) -> StreamUnpacker {
        let caps = snapshotter.capabilities();
        let mut base = options.unpack.clone();
        let tracker = std::mem::take(&mut base.tracker);
        base.whiteouts = caps.layer_whiteouts;
        // The download reports progress and carries the interrupt; a
        // cancelled download drops its feed, which stops the unpack.
        base.tracker = Tracker::default();
        remove_stale(&*snapshotter);
        StreamUnpacker {
            shared: Arc::new(Shared {
                snapshotter,
                base,
                streams: caps.rebase,
                done: Mutex::new(HashMap::new()),
                committed: Mutex::new(Vec::new()),
                flusher: Mutex::new(None),
                slots: Arc::new(slots),
                store,
                queue: Mutex::new(Queue::default()),
                interrupt: Interrupt::new(),
                tracker,
                panicked: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The chain IDs that [`finish`](StreamUnpacker::finish) committed
    /// from what was streamed (the others were present or unpacked from
    /// the store).
    pub fn streamed(&self) -> Vec<Digest> {
        self.shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether layers are unpacked while they arrive (the driver keeps
    /// each layer apart); otherwise `finish` unpacks from the store.
    pub fn streams(&self) -> bool {
        self.shared.streams
    }

    /// Starts unpacking `layer` from its first byte: an active snapshot
    /// and a thread that applies what is written into the returned feed.
    /// `None` when this layer is not streamed (a driver without rebase, a
    /// descriptor that is not a layer this unpacker reads, such as a
    /// config, or every one of the `parallelism` slots taken by layers
    /// streaming now: this one is unpacked from the store by
    /// [`finish`](StreamUnpacker::finish)).
    ///
    /// # Errors
    /// The snapshot could not be prepared, or its mounts have no directory
    /// to write into.
    pub fn begin(&self, layer: &Descriptor) -> Result<Option<LayerFeed>, ImageUnpackError> {
        let media = descriptor_media_type(layer);
        let (true, Ok(_), Ok(digest)) = (
            self.shared.streams,
            media.require_layer_compression(),
            layer.checked_digest(),
        ) else {
            return Ok(None);
        };
        let slot = if layer.size() < SLOTLESS_BELOW {
            None
        } else {
            match Slots::take(&self.shared.slots) {
                Some(slot) => Some(slot),
                None => {
                    self.shared.decline(layer, digest);
                    return Ok(None);
                }
            }
        };
        let sn = &self.shared.snapshotter;
        let key = temp_key(&digest);
        let mounts = sn
            .prepare_with(&key, None, Labels::new())
            .map_err(|source| ImageUnpackError::Snapshot {
                key: key.clone(),
                source,
            })?;
        let Some(dir) = writable_dir(&mounts) else {
            let _ = sn.remove(&key);
            return Err(ImageUnpackError::UnsupportedMounts { key, mounts });
        };
        let mut opts = self.shared.base.clone().with_digest(digest.clone());
        opts.size = Some(layer.size());
        // The feeder verifies the blob (see the module documentation).
        opts.digest_checked_by_caller = true;
        if let Some(c) = media.layer_compression() {
            opts = opts.with_compression(c);
        }
        let (tx, reader) = pipe();
        let aborted = reader.aborted.clone();
        let target = dir.clone();
        let flusher = self.shared.flusher(&dir);
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("stream-unpack".into())
            .spawn(move || {
                let report = unpack(reader, Path::new(&target), &opts);
                // Free for a stored layer or the next layer to begin,
                // before the sync.
                let slotted = slot.is_some();
                drop(slot);
                if slotted {
                    Shared::dispatch(&shared);
                }
                if let (Ok(_), Some(flusher)) = (&report, flusher) {
                    // A full channel means a sync is pending already.
                    let _ = flusher.try_send(());
                }
                report
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = sn.remove(&key);
                return Err(ImageUnpackError::Thread { digest, source: e });
            }
        };
        Ok(Some(LayerFeed {
            shared: self.shared.clone(),
            digest,
            key,
            dir,
            tx: Some(tx),
            aborted,
            thread: Some(thread),
        }))
    }

    /// Whether [`begin`](StreamUnpacker::begin) declined `layer` for want
    /// of a slot and waits for [`stored`](StreamUnpacker::stored) to
    /// unpack it from the store (only on an unpacker made
    /// [`bounded_with_store`](StreamUnpacker::bounded_with_store)): a
    /// feeder that got no feed for it should call `stored` once the blob
    /// is stored.
    pub fn declined(&self, layer: &Descriptor) -> bool {
        layer
            .checked_digest()
            .is_ok_and(|d| self.shared.queue().declined.contains_key(&d))
    }

    /// `blob` is committed to the store verified (the store's proof): if
    /// it is a layer [`begin`](StreamUnpacker::begin) declined for want of
    /// a slot, on an unpacker made
    /// [`bounded_with_store`](StreamUnpacker::bounded_with_store), its
    /// unpack from that store starts as soon as a slot is free (the
    /// layers waiting start in the order `begin` saw them: bottom first,
    /// as a pull begins them), into an active snapshot of its own as a
    /// stream's, for [`finish`](StreamUnpacker::finish) to commit.
    /// Returns whether it was such a layer and its unpack is queued
    /// (otherwise nothing happens: `finish` unpacks from the store
    /// whatever was not streamed; a layer that a manifest repeats and
    /// whose other copy is unpacked already is not unpacked again). Does
    /// not wait for the unpack.
    pub fn stored(&self, blob: &VerifiedBlob) -> bool {
        let mut queue = self.shared.queue();
        let Some((order, layer)) = queue.declined.remove(blob.digest()) else {
            return false;
        };
        let unpacked = || self.lock().contains_key(blob.digest());
        if queue.closed || unpacked() {
            return false;
        }
        queue.waiting.insert(order, layer);
        drop(queue);
        Shared::dispatch(&self.shared);
        true
    }

    /// Waits for the unpacks from the store that [`stored`] started or
    /// queued, as far as the slots let them start; a layer still waiting
    /// then (a slot still held by a feed) is left to `finish`'s own
    /// unpack from the store.
    ///
    /// # Errors
    /// Once `tracker`'s interrupt (`finish`'s) or the one given at
    /// construction is set, or a worker panicked: the unpacks from the
    /// store are stopped and awaited (nothing more starts), then
    /// [`ImageUnpackError::Cancelled`] or [`ImageUnpackError::Panicked`].
    ///
    /// [`stored`]: StreamUnpacker::stored
    fn settle(&self, tracker: &Tracker) -> Result<(), ImageUnpackError> {
        let cancelled = || tracker.interrupt().is_set() || self.shared.tracker.interrupt().is_set();
        loop {
            Shared::dispatch(&self.shared);
            let mut workers = {
                let mut queue = self.shared.queue();
                let workers = std::mem::take(&mut queue.workers);
                if workers.is_empty() {
                    queue.waiting.clear();
                    queue.declined.clear();
                    return self.stop_if_panicked();
                }
                workers
            };
            // Joined once finished: the interrupt is watched meanwhile.
            while let Some(w) = workers.pop() {
                if cancelled() {
                    workers.push(w);
                    self.stop(workers);
                    self.stop_if_panicked()?;
                    return Err(ImageUnpackError::Cancelled(image_core::Cancelled));
                }
                if !w.is_finished() {
                    workers.push(w);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                if w.join().is_err() {
                    // Recorded with its layer's digest if in one.
                    self.shared.panicked(None);
                }
            }
            self.stop_if_panicked()?;
        }
    }

    /// `Err` if an unpack from the store panicked; the others are
    /// stopped first.
    fn stop_if_panicked(&self) -> Result<(), ImageUnpackError> {
        match self.panic_error() {
            Some(e) => {
                self.stop(Vec::new());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The first panic of an unpack from the store (the first naming its
    /// layer, if any does), as an error.
    fn panic_error(&self) -> Option<ImageUnpackError> {
        let panicked = self
            .shared
            .panicked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if panicked.is_empty() {
            return None;
        }
        let digest = panicked.iter().flatten().next().cloned();
        Some(ImageUnpackError::Panicked { digest })
    }

    /// Stops the unpacks from the store for good (nothing queued starts,
    /// the running ones are interrupted) and waits for them and for
    /// `workers` (taken from the queue already).
    fn stop(&self, mut workers: Vec<JoinHandle<()>>) {
        {
            let mut queue = self.shared.queue();
            queue.closed = true;
            queue.waiting.clear();
            queue.declined.clear();
            workers.append(&mut queue.workers);
        }
        self.shared.interrupt.set();
        for w in workers {
            let _ = w.join();
        }
    }

    /// Makes the committed snapshots of `image`'s layers present, named by
    /// their chain IDs, as [`unpack_image`](crate::unpack_image) does:
    /// present ones reused, streamed ones committed (their diff ID checked
    /// against the config's), the others unpacked from `store` (see the
    /// [module documentation](self)). Streamed snapshots not used are
    /// removed.
    ///
    /// # Errors
    /// An [`ImageUnpackError`]; no snapshot of a failed layer is left
    /// behind, the layers below it stay committed.
    pub fn finish<P>(
        &self,
        store: &P,
        image: &Image,
        options: &ImageUnpackOptions,
    ) -> Result<ImageUnpackReport, ImageUnpackError>
    where
        P: Provider + Sync + ?Sized,
    {
        let result = self
            .settle(&options.unpack.tracker)
            .and_then(|()| image_layers(image))
            .and_then(|layers| self.commit_all(store, &layers, options));
        self.discard();
        result
    }

    fn commit_all<P: Provider + Sync + ?Sized>(
        &self,
        store: &P,
        layers: &[(Descriptor, Digest)],
        options: &ImageUnpackOptions,
    ) -> Result<ImageUnpackReport, ImageUnpackError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let sn = &*self.shared.snapshotter;
        self.unpack_declined(store, layers, &chains, options);
        let mut report = ImageUnpackReport {
            chain_ids: chains.clone(),
            unpacked: Vec::new(),
            reused: Vec::new(),
            layers: Vec::new(),
        };
        // One syncfs for every streamed layer before the commits record
        // them, as the image unpack does.
        let synced = sn.capabilities().sync_on_commit && {
            let done = self.lock();
            sync_dirs(done.values().map(|s| s.dir.as_str()))
        };
        for (index, ((desc, diff_id), chain)) in layers.iter().zip(&chains).enumerate() {
            let name = chain.to_string();
            let present = sn
                .try_stat(&name)
                .map_err(|source| ImageUnpackError::Snapshot {
                    key: name.clone(),
                    source,
                })?
                .is_some_and(|i| i.kind == Kind::Committed);
            if present {
                report.reused.push(chain.clone());
                continue;
            }
            let streamed = desc
                .checked_digest()
                .ok()
                .and_then(|d| self.lock().remove(&d));
            let Some(s) = streamed else {
                // Not streamed whole: from the store, onto what is
                // committed below it.
                let r = unpack_layers(store, &layers[..=index], sn, options)?;
                report.unpacked.extend(r.unpacked);
                report.layers.extend(r.layers);
                continue;
            };
            let job = Job {
                index,
                digest: s.report.digest.clone(),
                chain: chain.clone(),
                key: s.key,
                dir: s.dir,
            };
            if &s.report.diff_id != diff_id {
                let _ = sn.remove(&job.key);
                return Err(ImageUnpackError::Unpack {
                    index,
                    digest: job.digest,
                    source: UnpackError::DiffIdMismatch {
                        expected: diff_id.clone(),
                        found: s.report.diff_id,
                    },
                });
            }
            let rebase = (index > 0).then(|| chains[index - 1].to_string());
            if let Err(e) = commit_job(sn, &job, rebase, synced) {
                let _ = sn.remove(&job.key);
                return Err(e);
            }
            if s.streamed {
                self.shared
                    .committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(job.chain.clone());
            }
            report.unpacked.push(job.chain);
            report.layers.push(s.report);
        }
        Ok(report)
    }

    /// Unpacks from `store`, each into an active snapshot of its own as
    /// a stream does and at most `parallelism` at once, the layers that
    /// are neither committed nor streamed whole (declined by
    /// [`begin`](StreamUnpacker::begin) for want of a slot, or never
    /// downloaded), for the commits of `commit_all`. A layer that fails
    /// here (a hardlink to a lower layer's file, a bad blob) is left to
    /// `commit_all`'s unpack in order, which reports the error.
    fn unpack_declined<P: Provider + Sync + ?Sized>(
        &self,
        store: &P,
        layers: &[(Descriptor, Digest)],
        chains: &[Digest],
        options: &ImageUnpackOptions,
    ) {
        if !self.shared.streams {
            return;
        }
        let sn = &*self.shared.snapshotter;
        let mut todo = Vec::new();
        for (index, ((desc, _), chain)) in layers.iter().zip(chains).enumerate() {
            let streamed = desc
                .checked_digest()
                .is_ok_and(|d| self.lock().contains_key(&d));
            let present = sn
                .try_stat(&chain.to_string())
                .map_or(true, |i| i.is_some_and(|i| i.kind == Kind::Committed));
            if !streamed && !present {
                todo.push(index);
            }
        }
        if todo.is_empty() {
            return;
        }
        let mut unpack_opts = options.unpack.clone();
        unpack_opts.whiteouts = sn.capabilities().layer_whiteouts;
        let next = AtomicUsize::new(0);
        let work = || {
            while let Some(&index) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                let Ok(job) = prepare_job(sn, layers, chains, index, None) else {
                    continue;
                };
                match unpack_layer(store, layers, &job, &unpack_opts) {
                    Ok(report) => {
                        let old = self.lock().insert(
                            job.digest,
                            Streamed {
                                key: job.key,
                                dir: job.dir,
                                report,
                                streamed: false,
                            },
                        );
                        if let Some(old) = old {
                            let _ = sn.remove(&old.key);
                        }
                    }
                    Err(_) => {
                        let _ = sn.remove(&job.key);
                    }
                }
            }
        };
        let threads = crate::image_unpack::parallelism(options.parallelism).min(todo.len());
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
    }

    /// Removes the snapshots of layers streamed but not committed.
    fn discard(&self) {
        let done = std::mem::take(&mut *self.lock());
        for s in done.into_values() {
            let _ = self.shared.snapshotter.remove(&s.key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Streamed>> {
        self.shared.done.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StreamUnpacker {
    /// Stops the unpacks from the store and waits for them; what they
    /// made goes with the last feed.
    fn drop(&mut self) {
        self.stop(Vec::new());
    }
}

/// One layer's bytes on their way into its active snapshot; see
/// [`StreamUnpacker::begin`]. Dropped before [`finish`](LayerFeed::finish),
/// it stops the unpack and removes the snapshot.
#[derive(Debug)]
pub struct LayerFeed {
    shared: Arc<Shared>,
    digest: Digest,
    key: String,
    dir: String,
    tx: Option<FeedWriter>,
    aborted: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<UnpackReport, UnpackError>>>,
}

impl LayerFeed {
    /// The next compressed bytes of the layer, in order. Blocks while
    /// [`FEED_CHUNKS`] chunks wait for the unpack.
    ///
    /// # Errors
    /// The unpack stopped (a corrupt or hostile layer): its error, as an
    /// `InvalidData` I/O error. The feed is of no further use then.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let sent = match &mut self.tx {
            Some(tx) => tx.send(bytes),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.tx = None;
        let why = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => io::Error::new(io::ErrorKind::InvalidData, e),
            _ => io::Error::other("the layer's unpack stopped"),
        };
        let _ = self.shared.snapshotter.remove(&self.key);
        Err(why)
    }

    /// Every byte of the layer was written and the store committed the
    /// blob verified against its digest and size (`blob`, which only the
    /// store's commit makes: this unpack does not hash the compressed
    /// bytes): waits for the unpack to end and keeps its snapshot for
    /// [`StreamUnpacker::finish`].
    ///
    /// # Errors
    /// The unpack failed, or `blob` is another blob's (the caller's
    /// mistake, [`UnpackError::WrongProof`]); its snapshot is removed.
    pub fn finish(mut self, blob: &VerifiedBlob) -> Result<UnpackReport, UnpackError> {
        if blob.digest() != &self.digest {
            return Err(UnpackError::WrongProof {
                layer: self.digest.clone(),
                given: blob.digest().clone(),
            });
        }
        self.tx = None;
        let result = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) | None => Err(UnpackError::Fs {
                path: self.dir.clone().into(),
                op: "unpacking (the thread stopped)",
                source: io::Error::other("the layer's unpack thread panicked"),
            }),
        };
        match result {
            Ok(report) => {
                let mut done = self.shared.done.lock().unwrap_or_else(|e| e.into_inner());
                let old = done.insert(
                    self.digest.clone(),
                    Streamed {
                        key: std::mem::take(&mut self.key),
                        dir: self.dir.clone(),
                        report: report.clone(),
                        streamed: true,
                    },
                );
                drop(done);
                if let Some(old) = old {
                    let _ = self.shared.snapshotter.remove(&old.key);
                }
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for LayerFeed {
    fn drop(&mut self) {
        self.aborted.store(true, Ordering::Release);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.key.is_empty() {
            let _ = self.shared.snapshotter.remove(&self.key);
        }
    }
}

/// Slots for the layers that stream at once: taken without waiting (a
/// layer finding none is not streamed), given back when its unpack ends.
#[derive(Debug)]
struct Slots {
    limit: usize,
    taken: AtomicUsize,
    /// The most slots taken at once (the tests look at it).
    peak: AtomicUsize,
}

impl Slots {
    /// `parallelism` slots, 0 meaning the number of cores.
    fn new(parallelism: usize) -> Slots {
        Slots {
            limit: crate::image_unpack::parallelism(parallelism),
            taken: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// A free slot, or `None` when all `limit` are taken.
    fn take(slots: &Arc<Slots>) -> Option<Slot> {
        let taken = slots
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < slots.limit).then_some(n + 1)
            })
            .ok()?;
        slots.peak.fetch_max(taken + 1, Ordering::Relaxed);
        Some(Slot(slots.clone()))
    }
}

/// A taken slot, given back when dropped.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Buffers a feed allocates at most: [`FEED_CHUNKS`] in flight, the one
/// being read and the one being filled.
const FEED_BUFFERS: usize = FEED_CHUNKS + 2;

/// A feed's channel: at most [`FEED_CHUNKS`] chunks in flight, their
/// buffers handed back by the reader and refilled by the writer, so a
/// layer's bytes are copied into at most [`FEED_BUFFERS`] buffers instead
/// of one fresh allocation per chunk.
fn pipe() -> (FeedWriter, FeedReader) {
    let (tx, rx) = sync_channel(FEED_CHUNKS);
    let (spare_tx, spare_rx) = sync_channel(FEED_BUFFERS);
    let writer = FeedWriter {
        tx,
        spare: spare_rx,
        allocated: 0,
    };
    let reader = FeedReader {
        rx,
        spare: spare_tx,
        chunk: Vec::new(),
        pos: 0,
        aborted: Arc::new(AtomicBool::new(false)),
    };
    (writer, reader)
}

/// The writer's end of a feed.
#[derive(Debug)]
struct FeedWriter {
    tx: SyncSender<Vec<u8>>,
    /// Buffers the reader is done with.
    spare: Receiver<Vec<u8>>,
    /// Buffers allocated (not taken from `spare`).
    allocated: usize,
}

impl FeedWriter {
    /// Sends a copy of `bytes`; blocks while [`FEED_CHUNKS`] wait. Whether
    /// the reader is still there.
    fn send(&mut self, bytes: &[u8]) -> bool {
        let mut buf = match self.spare.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.allocated < FEED_BUFFERS => {
                self.allocated += 1;
                Vec::new()
            }
            // Every buffer is in flight or being read: the reader hands
            // one back when it takes the next chunk.
            Err(_) => match self.spare.recv() {
                Ok(buf) => buf,
                Err(_) => return false,
            },
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        self.tx.send(buf).is_ok()
    }
}

/// The unpack thread's end of a feed: the chunks in order, then the end
/// of the layer when the writer closes it, or an error once aborted.
struct FeedReader {
    rx: Receiver<Vec<u8>>,
    /// Where a read chunk's buffer goes back to the writer.
    spare: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    aborted: Arc<AtomicBool>,
}

impl Read for FeedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.aborted.load(Ordering::Acquire) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the layer's download stopped",
                ));
            }
            match self.rx.recv() {
                Ok(c) => {
                    let done = std::mem::replace(&mut self.chunk, c);
                    // Room for every buffer; a writer gone drops it.
                    let _ = self.spare.try_send(done);
                    self.pos = 0;
                }
                Err(_) if self.aborted.load(Ordering::Acquire) => continue,
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_reuses_its_buffers() {
        let (mut writer, mut reader) = pipe();
        let chunks = 2000usize;
        let total = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        let mut expected = Vec::new();
        for i in 0..chunks {
            let chunk = vec![(i % 251) as u8; 1000 + i % 7];
            expected.extend_from_slice(&chunk);
            assert!(writer.send(&chunk));
        }
        let allocated = writer.allocated;
        drop(writer);
        let got = total.join().unwrap().unwrap();
        assert_eq!(got, expected, "the bytes arrive in order, whole");
        assert!(
            allocated <= FEED_BUFFERS,
            "{allocated} buffers for {chunks} chunks"
        );
    }

    /// A one-file uncompressed layer.
    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "a", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_digest_the_caller_checks_is_not_hashed_again() {
        let bytes = layer();
        let given = Digest::sha256(b"not the layer");
        let mut opts = UnpackOptions::default().with_digest(given.clone());
        opts.preserve_ownership = false;
        opts.size = Some(bytes.len() as u64);
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y", "z"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        // Hashed here, the wrong digest is found...
        let e = unpack(&bytes[..], &dir.path().join("x"), &opts);
        assert!(
            matches!(e, Err(UnpackError::DigestMismatch { .. })),
            "{e:?}"
        );
        // ...checked by the caller, the bytes are not hashed again: the
        // report carries the digest given, the diff ID is still computed,
        // and the size is still checked.
        opts.digest_checked_by_caller = true;
        let r = unpack(&bytes[..], &dir.path().join("y"), &opts).unwrap();
        assert_eq!(r.digest, given);
        assert_eq!(r.diff_id, Digest::sha256(&bytes));
        assert_eq!(std::fs::read(dir.path().join("y/a")).unwrap(), b"abc");
        opts.size = Some(1);
        let e = unpack(&bytes[..], &dir.path().join("z"), &opts);
        assert!(matches!(e, Err(UnpackError::SizeMismatch { .. })), "{e:?}");
    }
}
