//! Unpack an image from a content store into snapshots, one committed
//! snapshot per layer, named by the layer's chain ID.
//!
//! For each layer, bottom first: if a committed snapshot named by its chain
//! ID exists, it is reused (an image sharing layers with another shares
//! their snapshots); otherwise an active snapshot is prepared under a
//! temporary key, the layer blob is streamed from the store into its
//! directory (decompressed and verified against the diff ID in the config
//! in one pass; its digest, checked by a store when it took the blob in,
//! is not hashed again: see
//! [`Provider::verified_at_ingest`]), and it
//! is committed under the chain ID. A layer that fails is removed, so no partial snapshot is ever
//! committed; layers below it that were complete stay committed.
//!
//! Drivers with [`Capabilities::rebase`](crate::snapshot::Capabilities)
//! (overlay) keep each layer in a directory of its own: layers are then
//! unpacked in parallel (whiteouts in overlayfs form), each into an active
//! snapshot without parent, and committed in order onto their parent chain
//! ID. Other drivers (copy) unpack one layer after another onto a copy of
//! the parent, whiteouts applied.
//!
//! A hardlink in one layer to a file of a lower layer cannot be made
//! across overlay layers' directories. Such a layer's first, parallel
//! attempt stops with [`UnpackError::HardlinkTargetMissing`]; once the
//! layers below it are committed, it is unpacked again into a fresh
//! snapshot with their directories as [`UnpackOptions::lowers`] (taken from
//! a temporary view of its parent): the target is looked up in their merged
//! view, whiteouts of the layers in between honoured, copied up into the
//! layer's directory and linked there. Layers without such hardlinks are
//! read once.
//!
//! Temporary keys are `extract-<pid>-<nanos>-<chain id>`; leftovers of a
//! process that died are removed by the next unpack.

use image_core::error::unless_named;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use image_core::manifest::descriptor_media_type;
use image_core::{chain_ids, Classify, Digest, ErrorKind, MediaTypeError, ParseError};
use image_core::{Descriptor, DescriptorExt};
use image_store::{ContentError, Image, Provider};

use crate::mount::Mount;
use crate::snapshot::{CommitOptions, Kind, Labels, SnapshotError, Snapshotter};
use crate::unpack::{unpack_read_ahead, UnpackError, UnpackOptions, UnpackReport};

/// The label set on temporary snapshots, naming the chain ID they become.
pub const LABEL_CHAIN_ID: &str = "image-overlay.unpack/chain-id";

/// Knobs of an image unpack.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImageUnpackOptions {
    /// Most layers unpacked at once (drivers with rebase only); 0 means the
    /// number of cores.
    pub parallelism: usize,
    /// Limits and policies of each layer unpack (digests and whiteout mode
    /// are set per layer).
    pub unpack: UnpackOptions,
}

impl ImageUnpackOptions {
    /// Sets the parallelism (1 unpacks one layer at a time).
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Sets the per-layer unpack options.
    pub fn with_unpack(mut self, unpack: UnpackOptions) -> Self {
        self.unpack = unpack;
        self
    }

    /// Reports each layer (an item named by its digest, with its size as
    /// the total: compressed bytes read) and stops the unpack once the
    /// interrupt is set; the snapshot of a stopped layer is removed, the
    /// layers committed before stay (they are complete). Sets
    /// [`UnpackOptions::tracker`] of [`unpack`](ImageUnpackOptions::unpack).
    pub fn with_tracker(mut self, tracker: image_core::Tracker) -> Self {
        self.unpack.tracker = tracker;
        self
    }
}

/// What an image unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageUnpackReport {
    /// The chain IDs of the image's layers, bottom first; the last one
    /// names the snapshot to prepare a container on (none for an image
    /// without layers).
    pub chain_ids: Vec<Digest>,
    /// The chain IDs whose snapshots this call made.
    pub unpacked: Vec<Digest>,
    /// The chain IDs that were present already.
    pub reused: Vec<Digest>,
    /// The report of each layer unpacked, in the order of `unpacked`.
    pub layers: Vec<UnpackReport>,
}

impl ImageUnpackReport {
    /// The name of the top snapshot (the image's root), if the image has layers.
    pub fn top(&self) -> Option<String> {
        self.chain_ids.last().map(ToString::to_string)
    }
}

/// A failed image unpack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageUnpackError {
    /// The manifest and the config disagree on the number of layers.
    #[error("image has {layers} layers but its config lists {diff_ids} diff IDs")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A layer whose media type is not a layer this unpacker can read (an
    /// `+encrypted` layer, a foreign type): refused before anything is
    /// unpacked, with the error `save` gives ([`MediaTypeError::Unknown`]).
    #[error("layer {index} cannot be unpacked")]
    MediaType {
        /// The layer index, bottom first.
        index: usize,
        /// The media type error.
        #[source]
        source: MediaTypeError,
    },
    /// A layer descriptor with a bad digest.
    #[error("layer {index}")]
    Descriptor {
        /// The layer index, bottom first.
        index: usize,
        /// The parse error.
        #[source]
        source: ParseError,
    },
    /// A layer blob could not be opened.
    #[error("layer {index}{}", unless_named(.digest, .source.as_ref()))]
    Content {
        /// The layer index.
        index: usize,
        /// The blob.
        digest: Digest,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A layer failed to unpack (corrupt, hostile, or its digest or diff ID
    /// not the expected one).
    #[error("layer {index}{}", unless_named(.digest, .source))]
    Unpack {
        /// The layer index.
        index: usize,
        /// The blob.
        digest: Digest,
        /// The unpack error.
        #[source]
        source: UnpackError,
    },
    /// A snapshot operation failed.
    #[error("snapshot {key}")]
    Snapshot {
        /// The key or name involved.
        key: String,
        /// The snapshotter's error.
        #[source]
        source: SnapshotError,
    },
    /// A thread to unpack a streamed layer on could not be started
    /// ([`crate::stream_unpack`]).
    #[error("starting a thread to unpack layer {digest}")]
    Thread {
        /// The layer's blob.
        digest: Digest,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The caller's interrupt stopped the unpacks from the store that a
    /// [`StreamUnpacker`](crate::StreamUnpacker) started before `finish`.
    #[error("unpacking layers from the store")]
    Cancelled(#[source] image_core::Cancelled),
    /// A thread unpacking a layer from the store before `finish`
    /// ([`crate::stream_unpack`]) panicked (a bug); its snapshot was
    /// removed.
    #[error(
        "an unpack from the store panicked{}",
        .digest.as_ref().map(|d| format!(" (layer {d})")).unwrap_or_default()
    )]
    Panicked {
        /// The layer's blob, when the panic came while unpacking one.
        digest: Option<Digest>,
    },
    /// The driver returned mounts whose directory this unpacker cannot find.
    #[error("snapshot {key}: cannot write into mounts {mounts:?} without mounting")]
    UnsupportedMounts {
        /// The key.
        key: String,
        /// The mounts.
        mounts: Vec<Mount>,
    },
}

impl Classify for ImageUnpackError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageUnpackError::LayerCount { .. } => ErrorKind::InvalidInput,
            ImageUnpackError::MediaType { source, .. } => source.kind(),
            ImageUnpackError::Descriptor { source, .. } => source.kind(),
            ImageUnpackError::Content { source, .. } => source.kind(),
            ImageUnpackError::Unpack { source, .. } => source.kind(),
            ImageUnpackError::Snapshot { source, .. } => source.kind(),
            ImageUnpackError::Thread { source, .. } => ErrorKind::from_io(source),
            ImageUnpackError::UnsupportedMounts { .. } => ErrorKind::Unsupported,
            ImageUnpackError::Cancelled(c) => c.kind(),
            ImageUnpackError::Panicked { .. } => ErrorKind::Io,
        }
    }
}

fn snap_err(key: &str) -> impl FnOnce(SnapshotError) -> ImageUnpackError + '_ {
    move |source| ImageUnpackError::Snapshot {
        key: key.to_owned(),
        source,
    }
}

/// The directory an active snapshot's mounts write into, without mounting:
/// the upper directory of an overlay, or the source of a writable bind mount.
pub(crate) fn writable_dir(mounts: &[Mount]) -> Option<String> {
    match mounts {
        [m] if m.fs_type == "overlay" => m.option("upperdir").map(str::to_owned),
        [m] if m.fs_type == "bind" && !m.is_read_only() => Some(m.source.clone()),
        _ => None,
    }
}

/// One layer to unpack.
pub(crate) struct Job {
    pub(crate) index: usize,
    pub(crate) digest: Digest,
    pub(crate) chain: Digest,
    pub(crate) key: String,
    pub(crate) dir: String,
}

/// Unpacks every layer of `image` from `store` into `snapshotter` (see the
/// module docs): [`unpack_layers`] of the image's layers and diff IDs.
///
/// # Errors
/// An [`ImageUnpackError`]; no snapshot of a failed layer is left behind.
pub fn unpack_image<P, S>(
    store: &P,
    image: &Image,
    snapshotter: &S,
    options: &ImageUnpackOptions,
) -> Result<ImageUnpackReport, ImageUnpackError>
where
    P: Provider + Sync + ?Sized,
    S: Snapshotter + ?Sized,
{
    unpack_layers(store, &image_layers(image)?, snapshotter, options)
}

/// An image's layers, each with the diff ID the config gives it.
pub(crate) fn image_layers(image: &Image) -> Result<Vec<(Descriptor, Digest)>, ImageUnpackError> {
    let (layers, diff_ids) = (image.layers(), image.diff_ids());
    if layers.len() != diff_ids.len() {
        return Err(ImageUnpackError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(layers
        .iter()
        .cloned()
        .zip(diff_ids.iter().cloned())
        .collect())
}

/// Makes the committed snapshots of a stack of layers present in
/// `snapshotter`, one per layer, named by its chain ID: each layer is a
/// blob of `store` (its descriptor) with the diff ID it must have, bottom
/// first. What is present already is reused (everything below the highest
/// present chain ID), the rest unpacked (see the module docs). An image's
/// unpack ([`unpack_image`]) and a build's cache hits both come here.
///
/// # Errors
/// An [`ImageUnpackError`]; no snapshot of a failed layer is left behind.
pub fn unpack_layers<P, S>(
    store: &P,
    layers: &[(Descriptor, Digest)],
    snapshotter: &S,
    options: &ImageUnpackOptions,
) -> Result<ImageUnpackReport, ImageUnpackError>
where
    P: Provider + Sync + ?Sized,
    S: Snapshotter + ?Sized,
{
    // Decided by the media type, never by sniffing: an encrypted layer
    // (`...tar+gzip+encrypted`) must not be read as a plain tar.
    for (index, (desc, _)) in layers.iter().enumerate() {
        descriptor_media_type(desc)
            .require_layer_compression()
            .map_err(|source| ImageUnpackError::MediaType { index, source })?;
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let mut report = ImageUnpackReport {
        chain_ids: chains.clone(),
        unpacked: Vec::new(),
        reused: Vec::new(),
        layers: Vec::new(),
    };
    // Everything below the highest present chain ID is present too (a
    // committed snapshot's parents cannot be removed).
    let mut start = 0;
    for i in (0..chains.len()).rev() {
        let name = chains[i].to_string();
        if let Some(info) = snapshotter.try_stat(&name).map_err(snap_err(&name))? {
            if info.kind == Kind::Committed {
                start = i + 1;
                break;
            }
        }
    }
    report.reused = chains[..start].to_vec();
    if start == chains.len() {
        return Ok(report);
    }
    remove_stale(snapshotter);

    let caps = snapshotter.capabilities();
    let mut unpack_opts = options.unpack.clone();
    unpack_opts.whiteouts = caps.layer_whiteouts;
    if caps.rebase {
        unpack_independent(
            store,
            layers,
            snapshotter,
            options,
            &unpack_opts,
            &chains,
            start,
            &mut report,
        )?;
    } else {
        for i in start..chains.len() {
            let parent = (i > 0).then(|| chains[i - 1].to_string());
            let job = prepare_job(snapshotter, layers, &chains, i, parent.as_deref())?;
            let result = unpack_layer(store, layers, &job, &unpack_opts);
            let done = result.and_then(|r| commit_job(snapshotter, &job, None, false).map(|()| r));
            match done {
                Ok(r) => {
                    report.unpacked.push(job.chain);
                    report.layers.push(r);
                }
                Err(e) => {
                    let _ = snapshotter.remove(&job.key);
                    return Err(e);
                }
            }
        }
    }
    Ok(report)
}

pub(crate) fn temp_key(chain: &Digest) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "extract-{}-{nanos}{}-{chain}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes temporary snapshots of unpacks whose process is gone.
pub(crate) fn remove_stale<S: Snapshotter + ?Sized>(snapshotter: &S) {
    let Ok(all) = snapshotter.list() else {
        return;
    };
    let me = std::process::id();
    for info in all {
        let Some(rest) = info.name.strip_prefix("extract-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if info.kind != Kind::Committed
            && pid != me
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = snapshotter.remove(&info.name);
        }
    }
}

pub(crate) fn prepare_job<S: Snapshotter + ?Sized>(
    snapshotter: &S,
    layers: &[(Descriptor, Digest)],
    chains: &[Digest],
    index: usize,
    parent: Option<&str>,
) -> Result<Job, ImageUnpackError> {
    let desc = &layers[index].0;
    let digest = desc
        .checked_digest()
        .map_err(|source| ImageUnpackError::Descriptor { index, source })?;
    let chain = chains[index].clone();
    let key = temp_key(&chain);
    let mut labels = Labels::new();
    labels.insert(LABEL_CHAIN_ID.to_owned(), chain.to_string());
    let mounts = snapshotter
        .prepare_with(&key, parent, labels)
        .map_err(snap_err(&key))?;
    let Some(dir) = writable_dir(&mounts) else {
        let _ = snapshotter.remove(&key);
        return Err(ImageUnpackError::UnsupportedMounts { key, mounts });
    };
    Ok(Job {
        index,
        digest,
        chain,
        key,
        dir,
    })
}

pub(crate) fn unpack_layer<P: Provider + ?Sized>(
    store: &P,
    layers: &[(Descriptor, Digest)],
    job: &Job,
    base: &UnpackOptions,
) -> Result<UnpackReport, ImageUnpackError> {
    let (desc, diff_id) = &layers[job.index];
    let mut opts = base
        .clone()
        .with_digest(job.digest.clone())
        .with_diff_id(diff_id.clone());
    opts.size = Some(desc.size());
    // Taken as given only from a store that checked it at ingest.
    opts.digest_checked_by_store = store.verified_at_ingest();
    if let Some(c) = descriptor_media_type(desc).layer_compression() {
        opts = opts.with_compression(c);
    }
    let reader =
        store.reader_for_unverified(desc).map_err(
            |source| match crate::unpack::descriptor_mismatch(source) {
                Ok(unpack) => ImageUnpackError::Unpack {
                    index: job.index,
                    digest: job.digest.clone(),
                    source: unpack,
                },
                Err(source) => ImageUnpackError::Content {
                    index: job.index,
                    digest: job.digest.clone(),
                    source: Box::new(source),
                },
            },
        )?;
    // No early writeback: the snapshot's sync at its commit is the writeback
    // (started early, it made this slower on the bench).
    unpack_read_ahead(reader, std::path::Path::new(&job.dir), &opts, false).map_err(|e| {
        ImageUnpackError::Unpack {
            index: job.index,
            digest: job.digest.clone(),
            source: crate::unpack::blame_the_blob(store, &job.digest, e),
        }
    })
}

/// Commits `job` under its chain ID (onto `rebase` if given; `synced` when
/// its content is durable already). Someone else having committed the same
/// chain ID meanwhile is success.
pub(crate) fn commit_job<S: Snapshotter + ?Sized>(
    snapshotter: &S,
    job: &Job,
    rebase: Option<String>,
    synced: bool,
) -> Result<(), ImageUnpackError> {
    let name = job.chain.to_string();
    let opts = CommitOptions {
        rebase,
        synced,
        ..CommitOptions::default()
    };
    match snapshotter.commit_with(&name, &job.key, opts) {
        Ok(()) => Ok(()),
        Err(SnapshotError::AlreadyExists { .. }) => {
            let _ = snapshotter.remove(&job.key);
            Ok(())
        }
        Err(e) => Err(ImageUnpackError::Snapshot {
            key: name,
            source: e,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn unpack_independent<P, S>(
    store: &P,
    layers: &[(Descriptor, Digest)],
    snapshotter: &S,
    options: &ImageUnpackOptions,
    unpack_opts: &UnpackOptions,
    chains: &[Digest],
    start: usize,
    report: &mut ImageUnpackReport,
) -> Result<(), ImageUnpackError>
where
    P: Provider + Sync + ?Sized,
    S: Snapshotter + ?Sized,
{
    let mut jobs = Vec::new();
    for i in start..chains.len() {
        match prepare_job(snapshotter, layers, chains, i, None) {
            Ok(j) => jobs.push(j),
            Err(e) => {
                for j in &jobs {
                    let _ = snapshotter.remove(&j.key);
                }
                return Err(e);
            }
        }
    }
    let threads = parallelism(options.parallelism).min(jobs.len()).max(1);
    let results: Vec<Mutex<Option<Result<UnpackReport, ImageUnpackError>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let sync = snapshotter.capabilities().sync_on_commit;
    // Each finished layer wakes the flusher (see below); `tx` is the
    // worker's handle to it.
    let work = |tx: Option<SyncSender<()>>| loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= jobs.len() || failed.load(Ordering::Relaxed) {
            break;
        }
        let r = unpack_layer(store, layers, &jobs[n], unpack_opts);
        // A hardlink to a lower layer is retried in order below.
        if r.as_ref().is_err_and(|e| !needs_lowers(e)) {
            failed.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slot) = results[n].lock() {
            *slot = Some(r);
        }
        if let Some(tx) = &tx {
            // A full channel means a sync is pending already.
            let _ = tx.try_send(());
        }
    };
    std::thread::scope(|s| {
        // When commits must be durable, a flusher thread syncs the
        // filesystem each time a layer is finished, while later layers are
        // still being unpacked: the writeback of finished layers overlaps
        // the work on the others, and the sync before the commits below
        // finds little left to write. Its errors are ignored: that last
        // sync decides.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        if sync {
            if let Ok(dir) = std::fs::File::open(&jobs[0].dir) {
                s.spawn(move || {
                    while rx.recv().is_ok() {
                        let _ = rustix::fs::syncfs(&dir);
                    }
                });
            }
        }
        let work = &work;
        for _ in 1..threads {
            let tx = sync.then(|| tx.clone());
            s.spawn(move || work(tx));
        }
        work(sync.then_some(tx));
    });
    // One syncfs for every layer unpacked so far, before any commit records
    // one (instead of one per commit); a layer unpacked again below is
    // synced by its own commit. A driver that does not sync on commit is
    // not synced here either.
    let synced = sync && sync_dirs(jobs.iter().map(|j| j.dir.as_str()));
    // Commit in order up to the first failure; remove the rest.
    let mut error = None;
    for (mut job, slot) in jobs.into_iter().zip(results) {
        if error.is_some() {
            let _ = snapshotter.remove(&job.key);
            continue;
        }
        let mut result = slot.into_inner().ok().flatten();
        let mut durable = synced;
        if job.index > 0
            && result
                .as_ref()
                .is_some_and(|r| r.as_ref().is_err_and(needs_lowers))
        {
            // Everything below is committed now: again, with the lowers.
            let _ = snapshotter.remove(&job.key);
            durable = false;
            result = Some(
                prepare_job(snapshotter, layers, chains, job.index, None).and_then(|j| {
                    job = j;
                    unpack_with_lowers(store, layers, snapshotter, &job, unpack_opts, chains)
                }),
            );
        }
        let job = &job;
        let outcome = match result {
            Some(Ok(r)) => {
                let rebase = (job.index > 0).then(|| chains[job.index - 1].to_string());
                commit_job(snapshotter, job, rebase, durable).map(|()| r)
            }
            Some(Err(e)) => Err(e),
            None => Err(ImageUnpackError::Snapshot {
                key: job.key.clone(),
                source: SnapshotError::Unsupported {
                    driver: snapshotter.driver(),
                    what: "an unpack stopped after another layer failed",
                },
            }),
        };
        match outcome {
            Ok(r) => {
                report.unpacked.push(job.chain.clone());
                report.layers.push(r);
            }
            Err(e) => {
                let _ = snapshotter.remove(&job.key);
                error = Some(e);
            }
        }
    }
    error.map_or(Ok(()), Err)
}

/// Makes the content of directories (the jobs') durable: one `syncfs` per
/// filesystem they are on (normally one). Whether that worked.
pub(crate) fn sync_dirs<'a>(dirs: impl Iterator<Item = &'a str>) -> bool {
    let mut devices = std::collections::HashSet::new();
    for path in dirs {
        let Ok(dir) = std::fs::File::open(path) else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(&dir) else {
            return false;
        };
        if devices.insert(st.st_dev) && rustix::fs::syncfs(&dir).is_err() {
            return false;
        }
    }
    true
}

/// Whether a layer failed only for want of its lower layers.
fn needs_lowers(e: &ImageUnpackError) -> bool {
    matches!(
        e,
        ImageUnpackError::Unpack {
            source: UnpackError::HardlinkTargetMissing { .. },
            ..
        }
    )
}

/// Unpacks `job` with the directories of its (committed) parent chain as
/// lowers, found through a temporary view of the parent.
fn unpack_with_lowers<P, S>(
    store: &P,
    layers: &[(Descriptor, Digest)],
    snapshotter: &S,
    job: &Job,
    base: &UnpackOptions,
    chains: &[Digest],
) -> Result<UnpackReport, ImageUnpackError>
where
    P: Provider + ?Sized,
    S: Snapshotter + ?Sized,
{
    let parent = chains[job.index - 1].to_string();
    let view = temp_key(&chains[job.index]);
    let mounts = snapshotter
        .view(&view, Some(&parent))
        .map_err(snap_err(&view))?;
    let lowers = match mounts.as_slice() {
        [m] if m.fs_type == "overlay" => m.lowerdirs().into_iter().map(PathBuf::from).collect(),
        [m] if m.fs_type == "bind" => vec![PathBuf::from(&m.source)],
        _ => Vec::new(),
    };
    let result = if lowers.is_empty() {
        Err(ImageUnpackError::UnsupportedMounts {
            key: view.clone(),
            mounts,
        })
    } else {
        unpack_layer(store, layers, job, &base.clone().with_lowers(lowers))
    };
    let _ = snapshotter.remove(&view);
    result
}

/// The layers to unpack at once for [`ImageUnpackOptions::parallelism`]:
/// the number given, 0 meaning the number of cores.
pub(crate) fn parallelism(given: usize) -> usize {
    match given {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_dirs() {
        let upper = Mount {
            fs_type: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec!["lowerdir=/a".into(), "upperdir=/u".into()],
        };
        assert_eq!(writable_dir(&[upper]).as_deref(), Some("/u"));
        assert_eq!(
            writable_dir(&[Mount::bind("/b", false)]).as_deref(),
            Some("/b")
        );
        assert_eq!(writable_dir(&[Mount::bind("/b", true)]), None);
    }
}
