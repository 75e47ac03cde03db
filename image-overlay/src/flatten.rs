//! Flatten an image from a store onto one directory: every layer in order,
//! OCI whiteouts applied, each layer's digest and diff ID verified (as
//! `umoci unpack` or `crane export` do).
//!
//! Layers are applied one after the other (a later layer may remove or
//! replace what an earlier one made); each is a single streaming pass of
//! [`unpack()`](crate::unpack::unpack), with the same checks, errors and
//! limits. Their blobs are read and decoded (decompressed, the diff ID
//! hashed) on threads of their own, ahead of the thread that applies them
//! and across layer boundaries: the next layer is decoding while the end
//! of the current one is applied, at most 32 MiB of decoded tar ahead in
//! all (`unpack::LayersAhead`). A layer's failure found ahead is reported
//! only in that layer's turn, after the layers below it are applied; a
//! flatten that fails stops the decoding and waits for its thread before
//! it returns, unless that thread is blocked in a source's read (which
//! may never return): it then ends on its own once the read does, reading
//! nothing more. Progress of a layer's bytes is reported as they are read,
//! so a layer's progress may end before the layer below it is all
//! applied. A store's blob is not hashed
//! again: the store checked its digest when it took it in, and the diff ID,
//! checked here, covers all that is unpacked; a provider that is not
//! [`verified_at_ingest`](image_store::Provider::verified_at_ingest) (a
//! registry, an archive) has its blobs hashed as they are read. Nothing syncs the target
//! after a flatten, so the writeback of what it writes is started early,
//! to go to the disk while the layers are still being unpacked: once a
//! layer is applied (all but the last), a `syncfs` of the target's
//! filesystem on a helper thread writes it back in bulk while the next
//! layers are applied (at most one at a time; the flatten waits for the
//! last before it returns, so on a filesystem that others fill with dirty
//! data it may wait for theirs too); and a large file (1 MiB or more) has
//! its writeback started as it is written. Small files are not started
//! one by one: a disk request per file cost more CPU than the whole bulk
//! writeback (see `unpack::WRITEBACK_MIN`). For one
//! directory per layer, unpacked in parallel, use the snapshotters and
//! [`unpack_image`](crate::unpack_image).

use image_core::error::unless_named;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use image_core::manifest::descriptor_media_type;
use image_core::DescriptorExt;
use image_core::{Classify, Compression, Digest, ErrorKind, MediaTypeError, ParseError};
use image_store::image::Image;
use image_store::{ContentError, Provider};

use crate::unpack::{unpack_read_ahead, LayersAhead, UnpackError, UnpackOptions, UnpackReport};
use crate::whiteout::WhiteoutMode;

/// A failure to flatten an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlattenError {
    /// The config lists another number of diff IDs than the manifest has layers.
    #[error(
        "image {image}: the manifest has {layers} layers but the config lists {diff_ids} diff IDs"
    )]
    LayerCount {
        /// The image name.
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A layer whose media type is not a layer this crate can read (an
    /// `+encrypted` layer, a foreign type): refused before anything is
    /// unpacked, with the error `run` (snapshot unpack) and `save` give
    /// ([`MediaTypeError::Unknown`], class `Unsupported`).
    #[error("image {image}: layer {index} cannot be unpacked")]
    MediaType {
        /// The image name.
        image: String,
        /// The layer's position, base first.
        index: usize,
        /// The media type error.
        #[source]
        source: MediaTypeError,
    },
    /// A layer descriptor is unusable (bad digest).
    #[error("image {image}: layer {index} ({media_type}) cannot be unpacked")]
    BadLayer {
        /// The image name.
        image: String,
        /// The layer's position, base first.
        index: usize,
        /// Its media type.
        media_type: String,
        /// Why: the descriptor's digest is invalid.
        #[source]
        source: Box<ParseError>,
    },
    /// A layer blob could not be read from the store.
    #[error("image {image}: layer {index}{}", unless_named(.digest, &**.source))]
    Content {
        /// The image name.
        image: String,
        /// The layer's position.
        index: usize,
        /// The layer digest.
        digest: Digest,
        /// The store's error.
        source: Box<ContentError>,
    },
    /// Unpacking a layer failed.
    #[error("image {image}: layer {index}{}", unless_named(.digest, &**.source))]
    Unpack {
        /// The image name.
        image: String,
        /// The layer's position.
        index: usize,
        /// The layer digest.
        digest: Digest,
        /// The unpack error.
        source: Box<UnpackError>,
    },
    /// The target directory could not be created.
    #[error("creating {path}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Classify for FlattenError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlattenError::LayerCount { .. } | FlattenError::BadLayer { .. } => {
                ErrorKind::InvalidInput
            }
            FlattenError::MediaType { source, .. } => source.kind(),
            FlattenError::Content { source, .. } => source.kind(),
            FlattenError::Unpack { source, .. } => source.kind(),
            FlattenError::Target { source, .. } => Classify::kind(source),
        }
    }
}

/// Flattens `image` onto `target` (created when missing), applying
/// `options` (limits, device and xattr policy) to every layer; the digests,
/// compression and whiteout mode of each layer come from the image.
///
/// # Errors
/// [`FlattenError`]: a layer missing or corrupt in the store, a digest or
/// diff ID mismatch, hostile content. Layers before the failing one stay
/// applied: flatten into a fresh directory and remove it on error.
pub fn flatten_image<P: Provider + ?Sized>(
    store: &P,
    image: &Image,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Vec<UnpackReport>, FlattenError> {
    flatten_with(store, image, target, options, |dir| {
        LayerSync::start(dir, |fd: &OwnedFd| {
            // Best effort: a failure changes nothing of the result.
            let _ = rustix::fs::syncfs(fd);
        })
    })
}

/// [`flatten_image`], the writeback of each applied layer but the last
/// started by the [`LayerSync`] `sync` makes of the target directory.
fn flatten_with<P, F, S>(
    store: &P,
    image: &Image,
    target: &Path,
    options: &UnpackOptions,
    sync: S,
) -> Result<Vec<UnpackReport>, FlattenError>
where
    P: Provider + ?Sized,
    F: Fn(&OwnedFd) + Send + Sync + 'static,
    S: FnOnce(OwnedFd) -> LayerSync<F>,
{
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    let compressions = layer_compressions(image)?;
    std::fs::create_dir_all(target).map_err(|source| FlattenError::Target {
        path: target.to_path_buf(),
        source,
    })?;
    // Any descriptor of the target's filesystem serves for its syncfs; none
    // (it cannot be opened) means no early writeback of the layers.
    let mut synced = (layers.len() > 1)
        .then(|| {
            rustix::fs::open(
                target,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
        })
        .flatten()
        .map(sync);
    // The layers are decoded ahead of the applier, on a thread of their
    // own, the next one queued before the current one is applied
    // (`LayersAhead`); on one CPU each is unpacked in turn.
    let mut ahead = LayersAhead::start();
    let open = |index: usize, ahead: &mut Option<LayersAhead>| {
        let layer = &layers[index];
        let (digest, reader) = open_layer(store, image, index, layer)?;
        let mut layer_options = options.clone();
        layer_options.compression = Some(compressions[index]);
        layer_options.digest = Some(digest.clone());
        layer_options.size = Some(layer.size());
        layer_options.diff_id = Some(diff_ids[index].clone());
        // Taken as given only from a store that checked it at ingest.
        layer_options.digest_checked_by_store = store.verified_at_ingest();
        layer_options.whiteouts = WhiteoutMode::Apply;
        let reader = match ahead {
            Some(ahead) => {
                ahead.queue(reader, &layer_options);
                None
            }
            None => Some(reader),
        };
        Ok::<_, FlattenError>((digest, layer_options, reader))
    };
    let mut reports = Vec::with_capacity(layers.len());
    let mut next = (!layers.is_empty()).then(|| open(0, &mut ahead));
    for index in 0..layers.len() {
        let Some(current) = next.take() else { break };
        // A layer that could not be opened fails in its turn.
        let (digest, layer_options, reader) = current?;
        if index + 1 < layers.len() {
            next = Some(open(index + 1, &mut ahead));
        }
        // Nothing syncs the target after a flatten: its large files'
        // writeback is started as they are written, and each layer's once
        // it is applied (`synced`), to overlap the unpack.
        let unpacked = match (reader, &mut ahead) {
            (None, Some(ahead)) => ahead.unpack_next(target, &layer_options, true),
            (Some(reader), _) => unpack_read_ahead(reader, target, &layer_options, true),
            (None, None) => unreachable!("a layer is queued only with a thread ahead"),
        };
        let e = match unpacked {
            Ok(report) => {
                reports.push(report);
                if index + 1 < layers.len() {
                    if let Some(sync) = &mut synced {
                        sync.layer_applied();
                    }
                }
                continue;
            }
            Err(e) => e,
        };
        // The layers ahead are stopped (and their thread joined, unless it
        // is blocked in a source read) before the blob is read again.
        drop(ahead);
        return Err(FlattenError::Unpack {
            image: image.name.clone(),
            index,
            source: Box::new(crate::unpack::blame_the_blob(store, &digest, e)),
            digest,
        });
    }
    // Waits for a writeback still running (no thread outlives the call).
    drop(synced);
    Ok(reports)
}

/// The bulk writeback of a flatten's layers: once a layer is applied, a
/// thread runs the sync (a `syncfs` of the target's filesystem) while the
/// next layers are applied, so most of the data is on its way to the disk
/// by the time the flatten ends, rather than all of it left to a `sync`
/// after it. The kernel writes many files back in one pass and merges
/// their pages into large requests, where a `sync_file_range` per file
/// made a request of each. At most one sync runs at a time: a layer
/// applied while one runs starts none (the next sync takes its files
/// too). On one CPU none is started (the sync would take the CPU the
/// unpack needs). Dropped, it waits for the sync running.
struct LayerSync<F> {
    /// The target's directory, shared with the thread.
    dir: std::sync::Arc<OwnedFd>,
    sync: std::sync::Arc<F>,
    running: Option<JoinHandle<()>>,
    /// Syncs started.
    started: usize,
    /// Off (one CPU): [`layer_applied`](LayerSync::layer_applied) does
    /// nothing.
    on: bool,
}

impl<F: Fn(&OwnedFd) + Send + Sync + 'static> LayerSync<F> {
    /// A layer sync of the filesystem of `dir`, running `sync` on it.
    fn start(dir: OwnedFd, sync: F) -> Self {
        LayerSync {
            dir: std::sync::Arc::new(dir),
            sync: std::sync::Arc::new(sync),
            running: None,
            started: 0,
            on: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
        }
    }

    /// A layer is applied: starts the sync on a thread, unless one still
    /// runs (or no thread can be had: the writeback is then the kernel's).
    fn layer_applied(&mut self) {
        if !self.on || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(done) = self.running.take() {
            let _ = done.join();
        }
        let (dir, sync) = (
            std::sync::Arc::clone(&self.dir),
            std::sync::Arc::clone(&self.sync),
        );
        let spawned = std::thread::Builder::new()
            .name("layer-sync".into())
            .spawn(move || sync(&dir));
        if let Ok(thread) = spawned {
            self.running = Some(thread);
            self.started += 1;
        }
    }
}

impl<F> Drop for LayerSync<F> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.join();
        }
    }
}

/// The compression of each of `image`'s layers, decided by its media type
/// (never by sniffing) and for every layer before the first is read: an
/// encrypted layer (`...tar+gzip+encrypted`) must not be read as a plain
/// tar, nor leave the layers below it behind. Checks first that the config
/// has a diff ID per layer.
pub(crate) fn layer_compressions(image: &Image) -> Result<Vec<Compression>, FlattenError> {
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    if layers.len() != diff_ids.len() {
        return Err(FlattenError::LayerCount {
            image: image.name.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .enumerate()
        .map(|(index, layer)| {
            descriptor_media_type(layer)
                .require_layer_compression()
                .map_err(|source| FlattenError::MediaType {
                    image: image.name.clone(),
                    index,
                    source,
                })
        })
        .collect()
}

/// Why [`open_layer_with`] could not open a layer blob, for the caller to
/// wrap in its own error with its own context (image name, position).
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// The descriptor's digest is invalid.
    BadDigest(ParseError),
    /// The store holds the blob with another size than the descriptor's:
    /// the stream error an unpack of it would give.
    Stream(Digest, UnpackError),
    /// The store could not open the blob.
    Content(Digest, ContentError),
}

/// Opens the blob of the layer descriptor `layer`: its digest checked, its
/// blob opened unverified (a size that is not the descriptor's refused
/// before any byte is read), for a caller that hashes what it reads and
/// compares digest, size and diff ID itself. A failure is handed to `map`,
/// which makes the caller's own error of it.
pub(crate) fn open_layer_with<P: Provider + ?Sized, E>(
    store: &P,
    layer: &image_core::Descriptor,
    map: impl FnOnce(OpenFailure) -> E,
) -> Result<(Digest, Box<dyn std::io::Read + Send>), E> {
    let digest = match layer.checked_digest() {
        Ok(d) => d,
        Err(e) => return Err(map(OpenFailure::BadDigest(e))),
    };
    match store.reader_for_unverified(layer) {
        Ok(reader) => Ok((digest, reader)),
        Err(e) => Err(map(match crate::unpack::descriptor_mismatch(e) {
            Ok(unpack) => OpenFailure::Stream(digest, unpack),
            Err(e) => OpenFailure::Content(digest, e),
        })),
    }
}

/// Opens layer `index` of `image` (its descriptor `layer`) as
/// [`open_layer_with`] does, its failures as [`FlattenError`]s.
pub(crate) fn open_layer<P: Provider + ?Sized>(
    store: &P,
    image: &Image,
    index: usize,
    layer: &image_core::Descriptor,
) -> Result<(Digest, Box<dyn std::io::Read + Send>), FlattenError> {
    let name = || image.name.clone();
    open_layer_with(store, layer, |failure| match failure {
        OpenFailure::BadDigest(source) => FlattenError::BadLayer {
            image: name(),
            index,
            media_type: descriptor_media_type(layer).to_string(),
            source: Box::new(source),
        },
        OpenFailure::Stream(digest, source) => FlattenError::Unpack {
            image: name(),
            index,
            digest,
            source: Box::new(source),
        },
        OpenFailure::Content(digest, source) => FlattenError::Content {
            image: name(),
            index,
            digest,
            source: Box::new(source),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::{append_dir, ConfigChanges};
    use image_core::Platform;
    use image_store::image::resolve_image;
    use image_store::OciDir;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};

    fn dir_fd(path: &Path) -> OwnedFd {
        rustix::fs::open(
            path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .expect("open")
    }

    /// An image of `layers` layers of one small file each, tagged `t/img:1`.
    fn image_of(work: &Path, layers: usize) -> (OciDir, Image) {
        let store = OciDir::open_or_create(work.join("layout")).expect("layout");
        let platform: Platform = "linux/amd64".parse().expect("platform");
        let mut base: Option<String> = None;
        for i in 0..layers {
            let src = work.join(format!("src{i}"));
            std::fs::create_dir_all(&src).expect("mkdir");
            std::fs::write(src.join(format!("f{i}")), vec![i as u8; 5000]).expect("write");
            let tag = format!("t/img:{i}");
            append_dir(
                &store,
                base.as_deref(),
                &src,
                &platform,
                &ConfigChanges::default(),
                &tag,
            )
            .expect("append");
            base = Some(tag);
        }
        let image =
            resolve_image(&store, base.as_deref().expect("a layer"), None).expect("resolve");
        (store, image)
    }

    /// A flatten starts the bulk writeback after each layer but the last
    /// (never more than one at a time, so once or twice for three layers;
    /// none for one layer), on the target's filesystem, and has waited for
    /// it when it returns.
    #[test]
    fn a_flatten_writes_back_each_layer_but_the_last_and_waits_for_it() {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            eprintln!(
                "SKIP a_flatten_writes_back_each_layer_but_the_last_and_waits_for_it: one CPU"
            );
            return;
        }
        for (layers, least, most) in [(1, 0, 0), (3, 1, 2)] {
            let work = tempfile::tempdir().expect("tempdir");
            let (store, image) = image_of(work.path(), layers);
            let target = work.path().join("out");
            let done = Arc::new(AtomicUsize::new(0));
            let device = Arc::new(Mutex::new(Vec::new()));
            let (d, dev) = (Arc::clone(&done), Arc::clone(&device));
            let reports = flatten_with(&store, &image, &target, &UnpackOptions::default(), |dir| {
                LayerSync::start(dir, move |fd: &OwnedFd| {
                    dev.lock()
                        .expect("lock")
                        .push(rustix::fs::fstat(fd).expect("stat").st_dev);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    d.fetch_add(1, Ordering::SeqCst);
                })
            })
            .expect("flatten");
            assert_eq!(reports.len(), layers);
            let n = done.load(Ordering::SeqCst);
            assert!((least..=most).contains(&n), "{n} syncs for {layers} layers");
            let dev = rustix::fs::stat(&target).expect("stat").st_dev;
            assert!(device.lock().expect("lock").iter().all(|d| *d == dev));
            for i in 0..layers {
                assert_eq!(
                    std::fs::read(target.join(format!("f{i}")))
                        .expect("read")
                        .len(),
                    5000
                );
            }
        }
    }

    /// A layer applied while a sync runs starts none; dropping the layer
    /// sync waits for the one running.
    #[test]
    fn one_sync_at_a_time_and_a_drop_waits_for_it() {
        let work = tempfile::tempdir().expect("tempdir");
        let (go, wait) = mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let mut sync = LayerSync::start(dir_fd(work.path()), move |_: &OwnedFd| {
            let _ = wait.lock().expect("lock").recv();
            r.fetch_add(1, Ordering::SeqCst);
        });
        sync.on = true;
        sync.layer_applied();
        sync.layer_applied();
        sync.layer_applied();
        assert_eq!(sync.started, 1);
        let dropped = std::thread::spawn(move || drop(sync));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!dropped.is_finished(), "the drop did not wait for the sync");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        go.send(()).expect("send");
        dropped.join().expect("join");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
