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
//! once the feeder says so ([`LayerFeed::finish`]); a feed dropped before
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
//! CPU is bounded apart from the downloads: at most
//! [`ImageUnpackOptions::parallelism`] layers (0: the number of cores) are
//! unpacked at once, as [`unpack_image`](crate::unpack_image) does, however
//! many downloads feed them. A layer begun beyond that waits, its feed
//! full and its download held back by it, until an earlier layer's unpack
//! ends (in the order the layers were begun). Each unpack keeps a
//! decompressor, a hasher and the writer busy, so more of them than cores
//! only interleave on the same cores (the bench image's one pass took
//! about 6% more user CPU time with its four layers unpacking at once than
//! with two, on two cores; see ARCHITECTURE's decisions).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use image_core::manifest::descriptor_media_type;
use image_core::{chain_ids, Descriptor, DescriptorExt, Digest, Tracker};
use image_store::{Image, Provider};

use crate::image_unpack::{
    commit_job, image_layers, remove_stale, sync_dirs, temp_key, unpack_layers, writable_dir,
    ImageUnpackError, ImageUnpackOptions, ImageUnpackReport, Job,
};
use crate::snapshot::{Kind, Labels, Snapshotter};
use crate::unpack::{unpack, UnpackError, UnpackOptions, UnpackReport};

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
    /// The layers unpacked at once.
    slots: Slots,
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

impl StreamUnpacker {
    /// An unpacker into `snapshotter`, each layer unpacked with
    /// `options.unpack` (its digests, compression and whiteout mode set
    /// per layer). Leftover temporary snapshots of dead processes are
    /// removed, as [`unpack_layers`] does.
    pub fn new(snapshotter: Arc<dyn Snapshotter>, options: &ImageUnpackOptions) -> StreamUnpacker {
        let caps = snapshotter.capabilities();
        let mut base = options.unpack.clone();
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
                slots: Slots::new(options.parallelism),
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
    /// config).
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
        let ticket = shared.slots.ticket();
        let thread = std::thread::Builder::new()
            .name("stream-unpack".into())
            .spawn(move || {
                let Some(_slot) = shared.slots.acquire(ticket, &reader.aborted) else {
                    return Err(UnpackError::Source {
                        source: download_stopped(),
                    });
                };
                let report = unpack(reader, Path::new(&target), &opts);
                if let (Ok(_), Some(flusher)) = (&report, flusher) {
                    // A full channel means a sync is pending already.
                    let _ = flusher.try_send(());
                }
                report
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                self.shared.slots.give_up(ticket);
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
        let result =
            image_layers(image).and_then(|layers| self.commit_all(store, &layers, options));
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
            self.shared
                .committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(job.chain.clone());
            report.unpacked.push(job.chain);
            report.layers.push(s.report);
        }
        Ok(report)
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

    /// Every byte of the layer was written and the blob verified against
    /// its digest and size (by the caller: this unpack does not hash the
    /// compressed bytes): waits for the unpack to end and keeps its
    /// snapshot for [`StreamUnpacker::finish`].
    ///
    /// # Errors
    /// The unpack failed (its snapshot is removed).
    pub fn finish(mut self) -> Result<UnpackReport, UnpackError> {
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
        // An unpack still waiting for its turn ends now.
        self.shared.slots.wake_all();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.key.is_empty() {
            let _ = self.shared.snapshotter.remove(&self.key);
        }
    }
}

/// The error of an unpack whose feed was dropped before its end.
fn download_stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the layer's download stopped",
    )
}

/// Turns to unpack: at most `limit` layers at once, handed out in the
/// order the layers were begun (tickets), so which layer waits does not
/// depend on how its thread was scheduled.
#[derive(Debug)]
struct Slots {
    limit: usize,
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The next ticket to give out.
    issued: u64,
    /// Tickets below this one have had their turn (or given it up).
    served: u64,
    /// Unpacks running now.
    running: usize,
    /// Tickets given up before their turn (an aborted feed), not yet
    /// reached by `served`.
    skipped: std::collections::BTreeSet<u64>,
    /// The most unpacks seen running at once, and the threads waiting for
    /// their turn now (the tests look at both).
    peak: usize,
    waiting: usize,
}

impl Slots {
    /// `parallelism` unpacks at once, 0 meaning the number of cores.
    fn new(parallelism: usize) -> Slots {
        let limit = match parallelism {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Slots {
            limit,
            state: Mutex::new(SlotState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place in the queue, taken when the layer is begun.
    fn ticket(&self) -> u64 {
        let mut s = self.lock();
        s.issued += 1;
        s.issued - 1
    }

    /// Waits until `ticket` is next in line and fewer than `limit` unpacks
    /// run; `None` (the ticket given up) once `aborted` is set.
    fn acquire<'s>(&'s self, ticket: u64, aborted: &AtomicBool) -> Option<Slot<'s>> {
        let mut s = self.lock();
        s.waiting += 1;
        while (s.served != ticket || s.running >= self.limit) && !aborted.load(Ordering::Acquire) {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.waiting -= 1;
        if s.served != ticket || s.running >= self.limit {
            drop(s);
            self.give_up(ticket);
            return None;
        }
        s.served += 1;
        s.advance();
        s.running += 1;
        s.peak = s.peak.max(s.running);
        drop(s);
        // The next ticket may run too.
        self.changed.notify_all();
        Some(Slot(self))
    }

    /// Gives `ticket` up without its turn (its unpack never started).
    fn give_up(&self, ticket: u64) {
        let mut s = self.lock();
        s.skipped.insert(ticket);
        s.advance();
        drop(s);
        self.changed.notify_all();
    }

    /// Wakes the waiting unpacks (to see an abort).
    fn wake_all(&self) {
        // Under the lock, so a waiter between its check and its wait
        // does not miss the wake-up.
        let _s = self.lock();
        self.changed.notify_all();
    }
}

impl SlotState {
    /// Moves `served` past tickets given up.
    fn advance(&mut self) {
        while self.skipped.remove(&self.served) {
            self.served += 1;
        }
    }
}

/// A turn to unpack, given back when dropped.
struct Slot<'s>(&'s Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_all();
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
                return Err(download_stopped());
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

    /// An uncompressed layer of one file `name` holding `data`.
    fn file_layer(name: &str, data: &[u8]) -> Vec<u8> {
        image_testsupport::tar::TarBuf::new().file(name, data).end()
    }

    fn layer_descriptor(bytes: &[u8]) -> Descriptor {
        image_core::manifest::descriptor(
            &image_core::MediaType::OciLayer,
            &Digest::sha256(bytes),
            bytes.len() as u64,
        )
    }

    /// A stream unpacker into a fresh overlay snapshotter that unpacks
    /// at most `parallelism` layers at once.
    fn unpacker(dir: &Path, parallelism: usize) -> StreamUnpacker {
        let sn = crate::snapshot::OverlaySnapshotter::open(dir).unwrap();
        let mut options = ImageUnpackOptions::default().with_parallelism(parallelism);
        options.unpack.preserve_ownership = false;
        let unpacker = StreamUnpacker::new(Arc::new(sn), &options);
        assert!(unpacker.streams());
        unpacker
    }

    /// Chunks written before a writer waits at the gate: more than a feed
    /// holds, so once they are written the layer's unpack is running.
    const FIRST_CHUNKS: usize = FEED_BUFFERS + 8;
    const CHUNK: usize = 512;

    #[test]
    fn no_more_layers_unpack_at_once_than_the_parallelism() {
        let (layers, limit) = (5usize, 2usize);
        let dir = tempfile::tempdir().unwrap();
        let unpacker = unpacker(dir.path(), limit);
        let datas: Vec<Vec<u8>> = (0..layers)
            .map(|i| vec![b'a' + i as u8; CHUNK * (FIRST_CHUNKS * 3)])
            .collect();
        let tars: Vec<Vec<u8>> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| file_layer(&format!("f{i}"), d))
            .collect();
        // Every layer begun before any byte arrives, as parallel
        // downloads begin theirs.
        let feeds: Vec<LayerFeed> = tars
            .iter()
            .map(|t| unpacker.begin(&layer_descriptor(t)).unwrap().unwrap())
            .collect();
        let dirs: Vec<String> = feeds.iter().map(|f| f.dir.clone()).collect();
        // (writers past their first chunks, gate open)
        let state = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
        let writers: Vec<_> = feeds
            .into_iter()
            .zip(tars)
            .map(|(mut feed, tar)| {
                let state = state.clone();
                std::thread::spawn(move || {
                    let mut chunks = tar.chunks(CHUNK);
                    for c in chunks.by_ref().take(FIRST_CHUNKS) {
                        feed.write(c).unwrap();
                    }
                    let (lock, cv) = &*state;
                    let mut s = lock.lock().unwrap();
                    s.0 += 1;
                    cv.notify_all();
                    while !s.1 {
                        s = cv.wait(s).unwrap();
                    }
                    drop(s);
                    for c in chunks {
                        feed.write(c).unwrap();
                    }
                    feed.finish().unwrap()
                })
            })
            .collect();
        // The gate opens once every writer is past its first chunks, or
        // once `limit` are and the others' unpacks wait for their turn
        // (their writers then wait on a full feed).
        let (lock, cv) = &*state;
        let mut s = lock.lock().unwrap();
        loop {
            let waiting = unpacker.shared.slots.lock().waiting;
            // (a writer that ended early failed: its join says why)
            if s.0 == layers
                || (s.0 == limit && waiting == layers - limit)
                || writers.iter().any(|w| w.is_finished())
            {
                break;
            }
            s = cv
                .wait_timeout(s, std::time::Duration::from_millis(10))
                .unwrap()
                .0;
        }
        s.1 = true;
        cv.notify_all();
        drop(s);
        for w in writers {
            w.join().unwrap();
        }
        let peak = unpacker.shared.slots.lock().peak;
        assert!(
            peak <= limit,
            "{peak} layers unpacked at once, at most {limit} asked for"
        );
        for (i, (dir, data)) in dirs.iter().zip(&datas).enumerate() {
            let got = std::fs::read(Path::new(dir).join(format!("f{i}"))).unwrap();
            assert!(got == *data, "layer {i} unpacked whole");
        }
    }

    #[test]
    fn a_layer_dropped_while_waiting_for_its_turn_ends_and_passes_its_turn_on() {
        let dir = tempfile::tempdir().unwrap();
        let unpacker = unpacker(dir.path(), 1);
        let tars: Vec<Vec<u8>> = (0..3)
            .map(|i| file_layer(&format!("f{i}"), &[b'x'; 100]))
            .collect();
        let mut feeds: Vec<Option<LayerFeed>> = tars
            .iter()
            .map(|t| Some(unpacker.begin(&layer_descriptor(t)).unwrap().unwrap()))
            .collect();
        // The second waits behind the first; dropped, it ends (the drop
        // returns) and leaves nothing.
        let second = feeds[1].take().unwrap();
        let key = second.key.clone();
        drop(second);
        assert!(unpacker
            .shared
            .snapshotter
            .try_stat(&key)
            .unwrap()
            .is_none());
        // The first and then the third get their turn.
        for i in [0, 2] {
            let mut feed = feeds[i].take().unwrap();
            feed.write(&tars[i]).unwrap();
            let report = feed.finish().unwrap();
            assert_eq!(report.diff_id, Digest::sha256(&tars[i]));
        }
        assert_eq!(unpacker.shared.slots.lock().peak, 1);
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
