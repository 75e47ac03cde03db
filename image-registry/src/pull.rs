//! Pull: an image from a registry into a store.
//!
//! [`pull`] fetches the manifest (or index, then the platform's manifest,
//! or every manifest with [`PullOptions::all_platforms`], each once, at
//! most [`MAX_IMAGE_DOCUMENTS`] bytes of them in all), then the configs
//! and layers, at most [`PullOptions::parallel`] at once. Each blob streams
//! into an ingest of the store named `pull-<digest>` and is committed
//! against its descriptor's digest and size, so nothing unverified is ever
//! visible; a blob the store has is skipped. An ingest left by an earlier,
//! interrupted pull (or by a connection cut during this one) is resumed
//! with a Range request from its offset. Documents are written after what
//! they reference, and the whole pull holds a lease until the image is
//! tagged with the reference it was pulled by (a reference by digest alone
//! is not tagged: a tag cannot hold a digest).
//!
//! Store I/O (writes, commits) happens on a blocking thread per blob, not
//! on the async executor. With [`PullOptions::layer_sink`], each blob
//! downloaded from its first byte is also handed, byte for byte, to the
//! sink while it streams (see [`crate::sink`]): a pull that unpacks in one
//! pass.
//!
//! Progress: each blob is an item named by its digest (started with its
//! size, bytes as they arrive, finished when committed or found present).
//! The tracker's interrupt stops the pull between chunks with `Cancelled`;
//! the partial ingest stays for the next pull to resume.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use image_core::error::unless_named;
use image_core::{
    platform::{select_manifest, PlatformError},
    Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, Platform, Reference, Tracker,
};
use image_store::{ContentError, Ingester, LeaseError, Leases, Provider, TagError, TagStore};

use crate::blob_writer::{BlobWriter, Orphans, WriteError};
use crate::client::{check_interrupt, Client, MAX_DOCUMENT_SIZE, MAX_IMAGE_DOCUMENTS};
use crate::error::RegistryError;
use crate::sink::LayerSink;

/// The deepest nesting of indexes followed.
const MAX_DEPTH: usize = 4;
/// The most manifests one pull takes from indexes.
const MAX_MANIFESTS: usize = 1024;

/// How to pull.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PullOptions {
    /// The platform to take from an index (the host's when `None`).
    pub platform: Option<Platform>,
    /// Take every manifest of an index, and tag the index.
    pub all_platforms: bool,
    /// Blobs fetched at once (at least 1; default 4).
    pub parallel: usize,
    /// Progress and cancellation.
    pub tracker: Tracker,
    /// The tag to set instead of the reference pulled (a copy into a
    /// store names the image as its destination says).
    pub tag: Option<String>,
    /// Where each blob's bytes also go while they stream (an unpacker
    /// into snapshots); see [`crate::sink`].
    pub layer_sink: Option<Arc<dyn LayerSink>>,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            platform: None,
            all_platforms: false,
            parallel: 4,
            tracker: Tracker::default(),
            tag: None,
            layer_sink: None,
        }
    }
}

impl PullOptions {
    /// The platform to take from an index.
    pub fn with_platform(mut self, platform: Platform) -> PullOptions {
        self.platform = Some(platform);
        self
    }

    /// Takes every platform of an index.
    pub fn with_all_platforms(mut self, all: bool) -> PullOptions {
        self.all_platforms = all;
        self
    }

    /// Blobs fetched at once.
    pub fn with_parallel(mut self, parallel: usize) -> PullOptions {
        self.parallel = parallel;
        self
    }

    /// Progress and cancellation.
    pub fn with_tracker(mut self, tracker: Tracker) -> PullOptions {
        self.tracker = tracker;
        self
    }

    /// Tags the image as `tag` instead of the reference pulled.
    pub fn with_tag(mut self, tag: impl Into<String>) -> PullOptions {
        self.tag = Some(tag.into());
        self
    }

    /// Hands each blob's bytes to `sink` too, while they stream.
    pub fn with_layer_sink(mut self, sink: Arc<dyn LayerSink>) -> PullOptions {
        self.layer_sink = Some(sink);
        self
    }
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullReport {
    /// The descriptor tagged: the index with `all_platforms`, else the
    /// chosen manifest.
    pub descriptor: Option<Descriptor>,
    /// The tag set (the reference pulled, or [`PullOptions::tag`]), `None`
    /// for a pull by digest.
    pub tag: Option<String>,
    /// Blobs written (configs and layers).
    pub fetched: Vec<Digest>,
    /// Blobs the store already had.
    pub skipped: Vec<Digest>,
    /// Blobs resumed from an earlier ingest, with the offset resumed from.
    pub resumed: Vec<(Digest, u64)>,
    /// Bytes received over the network for blobs and documents.
    pub bytes_received: u64,
}

/// Why a pull failed. Blobs committed before the failure stay (verified,
/// collected by gc once the lease is gone); no tag was set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// A registry request failed.
    #[error("pulling {reference}")]
    Registry {
        /// The reference pulled.
        reference: String,
        /// Why.
        source: Box<RegistryError>,
    },
    /// A blob could not be fetched.
    #[error("fetching blob{}", unless_named(.digest, &**.source))]
    Blob {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<RegistryError>,
    },
    /// The store refused a blob (a digest or size mismatch among them).
    #[error("storing blob{}", unless_named(.digest, &**.source))]
    Store {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<ContentError>,
    },
    /// Bytes could not be written into an ingest.
    #[error("writing blob{} into the store", unless_named(.digest, .source))]
    Write {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A blob's ingest was longer than its descriptor says.
    #[error("blob {digest} is larger than its descriptor's {size} bytes")]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        size: u64,
    },
    /// A descriptor in a document is unusable (a bad digest, a document
    /// larger than [`MAX_DOCUMENT_SIZE`]).
    #[error("descriptor {digest} in {parent} is unusable")]
    Descriptor {
        /// The descriptor's digest as written.
        digest: String,
        /// The document holding it.
        parent: Digest,
    },
    /// No manifest of the index fits the platform.
    #[error("no manifest of {reference} for the platform")]
    Platform {
        /// The reference pulled.
        reference: String,
        /// The platforms offered.
        source: PlatformError,
    },
    /// Indexes nest deeper than this puller follows, or list too many
    /// manifests, or more than
    /// [`MAX_IMAGE_DOCUMENTS`] bytes of
    /// them.
    #[error("index {digest} nests too deep or lists too many manifests (or bytes of them)")]
    TooDeep {
        /// The index.
        digest: Digest,
    },
    /// The lease could not be taken or kept.
    #[error("leasing the pull's blobs")]
    Lease(#[source] LeaseError),
    /// The image could not be tagged.
    #[error("tagging{}", unless_named(.tag, &**.source))]
    Tag {
        /// The tag.
        tag: String,
        /// Why.
        source: Box<TagError>,
    },
}

impl Classify for PullError {
    fn kind(&self) -> ErrorKind {
        match self {
            PullError::Registry { source, .. } | PullError::Blob { source, .. } => source.kind(),
            PullError::Store { source, .. } => source.kind(),
            PullError::Write { source, .. } if image_core::progress::is_cancelled(source) => {
                ErrorKind::Cancelled
            }
            PullError::Write { source, .. } => ErrorKind::from_io(source),
            PullError::BlobTooLarge { .. } => ErrorKind::SizeMismatch,
            PullError::Descriptor { .. } => ErrorKind::InvalidInput,
            PullError::Platform { source, .. } => source.kind(),
            PullError::TooDeep { .. } => ErrorKind::Unsafe,
            PullError::Lease(source) => source.kind(),
            PullError::Tag { source, .. } => source.kind(),
        }
    }
}

/// A store a pull writes into.
pub trait PullStore: Provider + Ingester + TagStore + Leases + Sync {}
impl<T: Provider + Ingester + TagStore + Leases + Sync + ?Sized> PullStore for T {}

/// Pulls `reference` from its registry into `store`; see the
/// [module documentation](self).
///
/// # Errors
/// [`PullError`]; its class tells a retryable failure (`Unavailable`)
/// from a refusal (`Unauthenticated`, `NotFound`, `DigestMismatch`...).
pub async fn pull<S: PullStore + ?Sized>(
    client: &Client,
    reference: &Reference,
    store: &S,
    options: &PullOptions,
) -> Result<PullReport, PullError> {
    let orphans = Orphans::default();
    let result = pull_with(client, reference, store, options, &orphans).await;
    // Writers of blobs stopped by another blob's error end before this
    // returns: their ingests closed, their feeds dropped.
    orphans.wait().await;
    result
}

async fn pull_with<S: PullStore + ?Sized>(
    client: &Client,
    reference: &Reference,
    store: &S,
    options: &PullOptions,
    orphans: &Orphans,
) -> Result<PullReport, PullError> {
    let lease = store.begin_lease().map_err(PullError::Lease)?;
    let leased = lease.protect(store);
    let registry = |source| PullError::Registry {
        reference: reference.to_string(),
        source: Box::new(source),
    };
    let mut report = PullReport::default();
    let top = client.get_manifest(reference).await.map_err(registry)?;
    report.bytes_received += top.raw().len() as u64;

    // Documents in the order they are written: children before parents.
    let mut documents: Vec<(usize, Document)> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let tagged = match &top {
        Document::Manifest(m) => {
            collect_blobs(m, &mut blobs, &mut seen)?;
            m.descriptor()
        }
        Document::Index(index) if options.all_platforms => {
            let mut pending = vec![(index.as_ref().clone(), 0usize)];
            let mut count = 0usize;
            // The documents' bytes held (each child's size is checked
            // against its descriptor's as it is fetched).
            let mut held = top.raw().len() as u64;
            while let Some((index, depth)) = pending.pop() {
                for d in index.manifests() {
                    let digest = checked(d, index.digest())?;
                    if !seen.insert(digest.clone()) {
                        continue;
                    }
                    count += 1;
                    held = held.saturating_add(d.size());
                    if depth >= MAX_DEPTH || count > MAX_MANIFESTS || held > MAX_IMAGE_DOCUMENTS {
                        return Err(PullError::TooDeep {
                            digest: index.digest().clone(),
                        });
                    }
                    let child = fetch_child(client, reference, d, index.digest()).await?;
                    report.bytes_received += child.raw().len() as u64;
                    match &child {
                        Document::Manifest(m) => collect_blobs(m, &mut blobs, &mut seen)?,
                        Document::Index(i) => pending.push((i.as_ref().clone(), depth + 1)),
                    }
                    if let Document::Manifest(_) = &child {
                        documents.push((usize::MAX, child));
                    }
                }
                documents.push((depth, Document::Index(Box::new(index))));
            }
            index.descriptor()
        }
        Document::Index(index) => {
            let wanted = options.platform.clone().unwrap_or_else(Platform::host);
            let chosen = select_manifest(index, &wanted).map_err(|source| PullError::Platform {
                reference: reference.to_string(),
                source,
            })?;
            let child = fetch_child(client, reference, chosen, index.digest()).await?;
            report.bytes_received += child.raw().len() as u64;
            let Document::Manifest(m) = &child else {
                return Err(PullError::TooDeep {
                    digest: index.digest().clone(),
                });
            };
            collect_blobs(m, &mut blobs, &mut seen)?;
            let descriptor = m.descriptor();
            documents.push((usize::MAX, child));
            descriptor
        }
    };
    if let Document::Manifest(_) = &top {
        documents.push((usize::MAX, top.clone()));
    }
    // Manifests first, then indexes from the deepest up: a document is
    // written after everything it references.
    documents.sort_by_key(|d| std::cmp::Reverse(d.0));

    let parallel = options.parallel.max(1);
    let outcomes: Vec<BlobOutcome> = futures_util::stream::iter(blobs.iter())
        .map(|d| fetch_blob(client, reference, &leased, d, options, orphans))
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
    for o in outcomes {
        report.bytes_received += o.received;
        if let Some(offset) = o.resumed_from {
            report.resumed.push((o.digest.clone(), offset));
        }
        if o.skipped {
            report.skipped.push(o.digest);
        } else {
            report.fetched.push(o.digest);
        }
    }

    for (_, doc) in &documents {
        if !leased
            .exists(doc.digest())
            .map_err(|source| PullError::Store {
                digest: doc.digest().clone(),
                source: Box::new(source),
            })?
        {
            write_document(&leased, doc)?;
        }
    }

    let tag = options
        .tag
        .clone()
        .or_else(|| reference.digest().is_none().then(|| reference.to_string()));
    if let Some(tag) = &tag {
        leased
            .set_tag(tag, &tagged)
            .map_err(|source| PullError::Tag {
                tag: tag.clone(),
                source: Box::new(source),
            })?;
    }
    lease.release().map_err(PullError::Lease)?;
    report.descriptor = Some(tagged);
    report.tag = tag;
    Ok(report)
}

fn checked(d: &Descriptor, parent: &Digest) -> Result<Digest, PullError> {
    d.checked_digest().map_err(|_| PullError::Descriptor {
        digest: d.digest().to_string(),
        parent: parent.clone(),
    })
}

fn collect_blobs(
    m: &image_core::Manifest,
    blobs: &mut Vec<Descriptor>,
    seen: &mut HashSet<Digest>,
) -> Result<(), PullError> {
    for d in std::iter::once(m.config()).chain(m.layers()) {
        let digest = checked(d, m.digest())?;
        if seen.insert(digest) {
            blobs.push(d.clone());
        }
    }
    Ok(())
}

/// Fetches a document an index lists, by its digest, checking its size.
async fn fetch_child(
    client: &Client,
    reference: &Reference,
    d: &Descriptor,
    parent: &Digest,
) -> Result<Document, PullError> {
    let digest = checked(d, parent)?;
    if d.size() > MAX_DOCUMENT_SIZE {
        return Err(PullError::Descriptor {
            digest: digest.to_string(),
            parent: parent.clone(),
        });
    }
    let by_digest = reference
        .without_tag()
        .without_digest()
        .with_digest(digest.clone());
    let doc = client
        .get_document(&by_digest, Some(&d.media_type().into()))
        .await
        .map_err(|source| PullError::Blob {
            digest: digest.clone(),
            source: Box::new(source),
        })?;
    if doc.raw().len() as u64 != d.size() {
        return Err(PullError::Store {
            digest: digest.clone(),
            source: Box::new(ContentError::Verify {
                reference: digest.to_string(),
                source: image_core::digest::VerifyError::Size {
                    digest,
                    expected: d.size(),
                    found: doc.raw().len() as u64,
                    truncated: false,
                },
            }),
        });
    }
    Ok(doc)
}

fn write_document<S: Provider + Ingester + ?Sized>(
    store: &S,
    doc: &Document,
) -> Result<(), PullError> {
    let store_err = |source| PullError::Store {
        digest: doc.digest().clone(),
        source: Box::new(source),
    };
    let mut w = store
        .writer_with(&format!("pull-{}", doc.digest()), doc.digest().algorithm())
        .map_err(store_err)?;
    if w.offset() != 0 {
        w.truncate(0).map_err(store_err)?;
    }
    std::io::Write::write_all(&mut w, doc.raw()).map_err(|source| PullError::Write {
        digest: doc.digest().clone(),
        source,
    })?;
    w.commit(Some(doc.raw().len() as u64), Some(doc.digest()))
        .map_err(store_err)?;
    Ok(())
}

struct BlobOutcome {
    digest: Digest,
    skipped: bool,
    resumed_from: Option<u64>,
    received: u64,
}

/// Fetches one blob into the store, resuming its ingest and retrying a cut
/// download from where it stopped; the ingest is written on a blocking
/// thread, and a blob downloaded from its first byte goes to the layer
/// sink too.
async fn fetch_blob<S: Provider + Ingester + Sync + ?Sized>(
    client: &Client,
    reference: &Reference,
    store: &S,
    d: &Descriptor,
    options: &PullOptions,
    orphans: &Orphans,
) -> Result<BlobOutcome, PullError> {
    let tracker = &options.tracker;
    let digest = checked(d, &Digest::sha256(b""))?;
    let size = d.size();
    let item = digest.to_string();
    let progress = tracker.progress();
    let store_err = |source| PullError::Store {
        digest: digest.clone(),
        source: Box::new(source),
    };
    let blob_err = |source| PullError::Blob {
        digest: digest.clone(),
        source: Box::new(source),
    };
    progress.item_started(&item, Some(size));
    if store.exists(&digest).map_err(store_err)? {
        progress.item_progress(&item, size);
        progress.item_finished(&item);
        return Ok(BlobOutcome {
            digest,
            skipped: true,
            resumed_from: None,
            received: 0,
        });
    }
    let mut w = store
        .writer_with(&format!("pull-{digest}"), digest.algorithm())
        .map_err(store_err)?;
    if w.offset() > size {
        w.truncate(0).map_err(store_err)?;
    }
    let resumed_from = (w.offset() > 0).then(|| w.offset());
    // A sink sees a blob from its first byte only.
    let feed = match (&options.layer_sink, resumed_from) {
        (Some(sink), None) => sink.begin(d),
        _ => None,
    };
    let ingest = w.reference().to_owned();
    let mut w = BlobWriter::new(w, feed, orphans);
    let mut received = 0u64;
    let policy = client.retry_policy();
    let mut retries = 0u32;
    let stop = |e: Stop| match e {
        Stop::Content(e) => store_err(e),
        Stop::Write(source) => PullError::Write {
            digest: digest.clone(),
            source,
        },
        Stop::Net(e) => blob_err(e),
    };
    while w.offset() < size {
        if let Err(e) = check_interrupt(tracker.interrupt()) {
            w.close().await;
            return Err(blob_err(e));
        }
        let attempt: Result<(), Stop> = async {
            let mut stream = client.get_blob(reference, d, w.offset()).await?;
            if stream.offset() != w.offset() {
                // The registry sent the whole blob: start again.
                w.truncate(stream.offset()).await?;
            }
            progress.item_progress(&item, w.offset());
            while let Some(chunk) = stream.chunk().await? {
                check_interrupt(tracker.interrupt())?;
                received += chunk.len() as u64;
                w.write(chunk).await?;
                progress.item_progress(&item, w.offset());
            }
            Ok(())
        }
        .await;
        match attempt {
            Ok(()) => break,
            Err(Stop::Net(e))
                if e.kind().is_retryable() && retries + 1 < policy.attempts.max(1) =>
            {
                tokio::time::sleep(policy.delay(retries, None)).await;
                retries += 1;
            }
            Err(e) => {
                w.close().await;
                return Err(stop(e));
            }
        }
    }
    if w.offset() > size {
        w.close().await;
        let _ = store.abort(&ingest);
        return Err(PullError::BlobTooLarge { digest, size });
    }
    w.commit(size, digest.clone())
        .await
        .map_err(|e| stop(e.into()))?;
    progress.item_finished(&item);
    Ok(BlobOutcome {
        digest,
        skipped: false,
        resumed_from,
        received,
    })
}

/// Why one download attempt stopped: the registry (maybe retried) or
/// the store (not retried).
enum Stop {
    Net(RegistryError),
    Content(ContentError),
    Write(std::io::Error),
}

impl From<RegistryError> for Stop {
    fn from(e: RegistryError) -> Stop {
        Stop::Net(e)
    }
}

impl From<WriteError> for Stop {
    fn from(e: WriteError) -> Stop {
        match e {
            WriteError::Content(e) => Stop::Content(e),
            WriteError::Write(e) => Stop::Write(e),
        }
    }
}
