//! Push: an image from a store to a registry.
//!
//! [`push`] reads the document a descriptor names from the store (a
//! manifest, or an index and every manifest under it, walked once with a
//! visited set, at most [`MAX_DEPTH`] deep, [`MAX_MANIFESTS`] wide and
//! [`MAX_IMAGE_DOCUMENTS`] bytes in all),
//! then uploads the blobs (configs and layers), at most
//! [`PushOptions::parallel`] at once, then the manifests by digest, then
//! the indexes from the deepest up, and the tag last: a registry never
//! holds a document whose references are missing, and the tag appears
//! only once the whole image is there. Documents are pushed as the store
//! holds them, byte for byte, so the pushed digest is the stored one.
//!
//! Each blob:
//! - is skipped when the registry has it (`HEAD`);
//! - is mounted from [`PushOptions::mount_from`] when asked
//!   (`POST ...?mount=<digest>&from=<repository>`, with a token for both
//!   repositories); a registry that cannot mount starts an upload instead;
//! - is uploaded in one `PUT` when not larger than
//!   [`PushOptions::monolithic_limit`], else in `PATCH`es of at most
//!   [`PushOptions::chunk_size`] with `Content-Range` (by default the
//!   whole blob in one, as skopeo and crane send it: each `PATCH` costs
//!   the registry a flush of the upload), then a closing `PUT ?digest=`.
//!   A `PATCH` body streams from the store while it is read (on a
//!   blocking thread, [`PIECE`] bytes at a time), never held whole.
//!
//! A failed upload asks the registry where it stands (`GET` on the upload
//! URL, its `Range`) and goes on from there; a registry that no longer
//! knows the upload (distribution answers 404 `BLOB_UPLOAD_INVALID` after
//! a cut `PATCH`) gets a new one from the start. Each request is retried
//! by the client (backoff, `Retry-After`); an upload is restarted at most
//! [`RetryPolicy::attempts`](crate::RetryPolicy) times, and not at all
//! after a refusal it would only meet again (401, 403, 405, 413).
//!
//! Progress: each blob is an item named by its digest (started with its
//! size, bytes as they are sent, finished when the registry has it). The
//! tracker's interrupt stops the push with `Cancelled`, in the middle of
//! a `PATCH` body too.
//!
//! # Security
//! Documents are read from the store up to [`MAX_DOCUMENT_SIZE`]; a blob
//! is held in memory [`PIECES`] pieces at a time (or whole up to the
//! monolithic limit). A stored blob is checked against its digest as it
//! is read: one changed in the store fails the push (a `Read` error)
//! before the upload is closed. Upload locations must stay on the registry's origin (the
//! credentials go with them).

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use futures_util::{StreamExt, TryStreamExt};
use image_core::error::unless_named;
use image_core::{
    Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, ParseError, Reference,
    Tracker,
};
use image_store::{ContentError, Provider};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    LOCATION, RANGE,
};
use reqwest::{Method, StatusCode, Url};

use crate::client::{
    check_interrupt, check_status, read_bounded, show_url, Client, Target, MANIFEST_ACCEPT,
    MAX_DOCUMENT_SIZE, MAX_IMAGE_DOCUMENTS,
};
use crate::config::Endpoint;
use crate::error::RegistryError;
use crate::referrers;

/// The deepest nesting of indexes pushed.
pub const MAX_DEPTH: usize = 4;
/// The most manifests one push takes from indexes.
pub const MAX_MANIFESTS: usize = 1024;

/// How to push.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushOptions {
    /// Blobs uploaded at once (at least 1; default 4).
    pub parallel: usize,
    /// Blobs up to this size go in one `PUT` (default 16 MiB).
    pub monolithic_limit: u64,
    /// The most bytes one `PATCH` of a chunked upload carries (at least 1
    /// byte; default `u64::MAX`: the whole blob in one `PATCH`, streamed).
    pub chunk_size: u64,
    /// A repository of the same registry to mount blobs from.
    pub mount_from: Option<String>,
    /// Progress and cancellation.
    pub tracker: Tracker,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            parallel: 4,
            monolithic_limit: 16 * 1024 * 1024,
            chunk_size: u64::MAX,
            mount_from: None,
            tracker: Tracker::default(),
        }
    }
}

impl PushOptions {
    /// Blobs uploaded at once.
    pub fn with_parallel(mut self, parallel: usize) -> PushOptions {
        self.parallel = parallel;
        self
    }

    /// The largest blob uploaded in one `PUT`; larger ones go in chunks of
    /// `chunk_size`.
    pub fn with_chunking(mut self, monolithic_limit: u64, chunk_size: u64) -> PushOptions {
        self.monolithic_limit = monolithic_limit;
        self.chunk_size = chunk_size;
        self
    }

    /// Mounts blobs from `repository` (on the same registry) when it has
    /// them.
    pub fn with_mount_from(mut self, repository: impl Into<String>) -> PushOptions {
        self.mount_from = Some(repository.into());
        self
    }

    /// Progress and cancellation.
    pub fn with_tracker(mut self, tracker: Tracker) -> PushOptions {
        self.tracker = tracker;
        self
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushReport {
    /// The descriptor pushed (and tagged).
    pub descriptor: Option<Descriptor>,
    /// The tag set, `None` for a reference without a tag.
    pub tag: Option<String>,
    /// Blobs uploaded.
    pub uploaded: Vec<Digest>,
    /// Blobs the registry already had.
    pub skipped: Vec<Digest>,
    /// Blobs mounted from [`PushOptions::mount_from`].
    pub mounted: Vec<Digest>,
    /// Blobs whose upload went on after a failure, with the offset it
    /// went on from (0 for a new upload).
    pub resumed: Vec<(Digest, u64)>,
    /// Manifests and indexes put (those the registry lacked).
    pub documents: Vec<Digest>,
    /// Blob bytes sent (chunks sent again included).
    pub bytes_sent: u64,
}

/// Why a push failed. Blobs uploaded before the failure stay on the
/// registry (a push again skips them); the tag was not set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A registry request for the image failed (a document, the tag).
    #[error("pushing to {reference}")]
    Registry {
        /// The reference pushed to.
        reference: String,
        /// Why.
        source: Box<RegistryError>,
    },
    /// A blob could not be uploaded.
    #[error("uploading blob{}", unless_named(.digest, &**.source))]
    Blob {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<RegistryError>,
    },
    /// The store could not give a blob or document.
    #[error("reading{} from the store", unless_named(.digest, &**.source))]
    Store {
        /// The blob.
        digest: Digest,
        /// Why.
        source: Box<ContentError>,
    },
    /// A blob's bytes could not be read from the store, or were fewer
    /// than its descriptor says.
    #[error("reading blob{} from the store", unless_named(.digest, .source))]
    Read {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored document is unusable.
    #[error("stored document {digest} is unusable")]
    Document {
        /// The document.
        digest: Digest,
        /// Why.
        source: ParseError,
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
    /// Indexes nest deeper than this pusher follows, or list too many
    /// manifests, or more than [`MAX_IMAGE_DOCUMENTS`] bytes of them.
    #[error("index {digest} nests too deep or lists too many manifests (or bytes of them)")]
    TooDeep {
        /// The index.
        digest: Digest,
    },
    /// The destination names a digest other than the source's.
    #[error("the destination names {dest} but the image pushed is {source_digest}")]
    DestinationDigest {
        /// The digest in the destination reference.
        dest: Digest,
        /// The digest of the image pushed.
        source_digest: Digest,
    },
    /// A document or blob could not be read from the source registry (a
    /// copy between registries).
    #[error("reading{} from the source registry", unless_named(.digest, &**.source))]
    Source {
        /// The document or blob.
        digest: Digest,
        /// Why.
        source: Box<RegistryError>,
    },
    /// A blob read from the source registry hashed to another digest;
    /// the upload was not finished.
    #[error("blob {digest} from the source registry hashes to {found}")]
    SourceDigest {
        /// The blob's digest.
        digest: Digest,
        /// The digest of the bytes read.
        found: Digest,
    },
}

impl Classify for PushError {
    fn kind(&self) -> ErrorKind {
        match self {
            PushError::Registry { source, .. } | PushError::Blob { source, .. } => source.kind(),
            PushError::Store { source, .. } => source.kind(),
            PushError::Read { source, .. } if image_core::progress::is_cancelled(source) => {
                ErrorKind::Cancelled
            }
            PushError::Read { source, .. } => ErrorKind::from_io(source),
            PushError::Document { source, .. } => source.kind(),
            PushError::Descriptor { .. } => ErrorKind::InvalidInput,
            PushError::TooDeep { .. } => ErrorKind::Unsafe,
            PushError::DestinationDigest { .. } => ErrorKind::InvalidInput,
            PushError::Source { source, .. } => source.kind(),
            PushError::SourceDigest { .. } => ErrorKind::DigestMismatch,
        }
    }
}

/// Pushes the image `source` names in `store` to `dest` (its registry and
/// repository; tagged with its tag when it has one); see the
/// [module documentation](self).
///
/// # Errors
/// [`PushError`]; its class tells a retryable failure (`Unavailable`)
/// from a refusal (`Unauthenticated`, `NotFound`...).
pub async fn push<S: Provider + Sync + ?Sized>(
    client: &Client,
    store: &S,
    source: &Descriptor,
    dest: &Reference,
    options: &PushOptions,
) -> Result<PushReport, PushError> {
    check_destination(dest, source)?;
    push_from(client, &Source::Store(store), source, dest, options)
        .await
        .map(|(report, _)| report)
}

/// Refuses a destination naming a digest other than `top`'s.
pub(crate) fn check_destination(dest: &Reference, top: &Descriptor) -> Result<(), PushError> {
    let top_digest = checked(top, &Digest::sha256(b""))?;
    match dest.digest() {
        Some(named) if named != &top_digest => Err(PushError::DestinationDigest {
            dest: named.clone(),
            source_digest: top_digest,
        }),
        _ => Ok(()),
    }
}

/// Where a push (or a copy) reads the image from.
pub(crate) enum Source<'a, S: ?Sized> {
    /// A store: documents and blobs by digest, verified as they are read.
    Store(&'a S),
    /// A repository of a registry: documents by digest (checked by the
    /// client), blobs streamed and hashed, the hash checked before the
    /// upload is closed when the blob was read from its start (the
    /// destination registry checks the digest of what it was sent too).
    Registry {
        /// The client reaching the source registry.
        client: &'a Client,
        /// The source repository (its tag and digest are ignored).
        reference: &'a Reference,
    },
}

impl<S: Provider + Sync + ?Sized> Source<'_, S> {
    /// The document `d` names, up to [`MAX_DOCUMENT_SIZE`].
    pub(crate) async fn document(&self, d: &Descriptor) -> Result<Document, PushError> {
        let digest = checked(d, &Digest::sha256(b""))?;
        match self {
            Source::Store(store) => read_document(*store, d),
            Source::Registry { .. } if d.size() > MAX_DOCUMENT_SIZE => Err(PushError::Descriptor {
                digest: digest.to_string(),
                parent: digest,
            }),
            Source::Registry { client, reference } => {
                let by_digest = reference
                    .without_tag()
                    .without_digest()
                    .with_digest(digest.clone());
                client
                    .get_document(&by_digest, Some(&d.media_type().into()))
                    .await
                    .map_err(|source| PushError::Source {
                        digest,
                        source: Box::new(source),
                    })
            }
        }
    }

    /// A reader of blob `d` from `offset`.
    async fn open(&self, d: &Descriptor, offset: u64) -> Result<BlobReader, Stop> {
        let digest = checked(d, &Digest::sha256(b"")).map_err(Stop::Push)?;
        match self {
            Source::Store(store) => {
                let mut reader = store.reader(&digest).map_err(|source| {
                    Stop::Push(PushError::Store {
                        digest: digest.clone(),
                        source: Box::new(source),
                    })
                })?;
                std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink())
                    .map_err(|source| Stop::Push(PushError::Read { digest, source }))?;
                Ok(BlobReader::Store(reader))
            }
            Source::Registry { client, reference } => {
                let stream = client.get_blob(reference, d, offset).await?;
                let from_start = stream.offset() == 0;
                let mut reader = BlobReader::Registry(Box::new(FromRegistry {
                    hasher: from_start.then(|| digest.algorithm().hasher()),
                    read: stream.offset(),
                    stream,
                    pending: bytes::Bytes::new(),
                    digest,
                    size: d.size(),
                }));
                // A registry that ignored the Range sent the whole blob.
                if offset > 0 && from_start {
                    let (tx, mut rx) = mpsc::channel(PIECES);
                    let skipped = reader.send(offset, false, tx);
                    let drained = async { while rx.recv().await.is_some() {} };
                    tokio::join!(skipped, drained).0?;
                }
                Ok(reader)
            }
        }
    }
}

/// A blob being read for an upload.
enum BlobReader {
    Store(Box<dyn Read + Send>),
    Registry(Box<FromRegistry>),
}

/// A blob streamed from a source registry.
struct FromRegistry {
    stream: crate::client::BlobStream,
    pending: bytes::Bytes,
    /// Hashing every byte read, when reading started at 0.
    hasher: Option<image_core::digest::Hasher>,
    /// The offset of the next byte.
    read: u64,
    digest: Digest,
    size: u64,
}

impl BlobReader {
    /// The next `n` bytes in memory (fewer is an error); `last` when they
    /// end the blob (a store's blob is then checked against its digest).
    async fn chunk(&mut self, n: u64, last: bool) -> Result<Vec<u8>, Stop> {
        let mut chunk = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        match self {
            BlobReader::Store(reader) => {
                chunk.resize(chunk.capacity(), 0);
                read_store(reader, &mut chunk, last).map_err(read_error)?;
            }
            BlobReader::Registry(from) => {
                while (chunk.len() as u64) < n {
                    let piece = from.piece(n - chunk.len() as u64).await?;
                    chunk.extend_from_slice(&piece);
                }
            }
        }
        Ok(chunk)
    }

    /// Sends the next `n` bytes into `tx` in pieces of at most [`PIECE`]
    /// bytes (fewer is an error, sent into `tx` too so that the request
    /// carrying them fails); `last` as for [`chunk`](BlobReader::chunk).
    /// A closed `tx` (the request ended early) ends the sending: the
    /// request's answer says why.
    async fn send(
        &mut self,
        n: u64,
        last: bool,
        tx: mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<(), Stop> {
        match self {
            BlobReader::Store(reader) => {
                // Reading (and hashing) on a blocking thread, while the
                // executor sends what was read.
                let mut r = std::mem::replace(reader, Box::new(io::empty()));
                let (r, result) = tokio::task::spawn_blocking(move || {
                    let result = pump(&mut r, n, last, &tx);
                    if let Err(e) = &result {
                        let _ = tx.blocking_send(Err(io::Error::new(
                            e.kind(),
                            "the blob could not be read",
                        )));
                    }
                    (r, result)
                })
                .await
                .map_err(|_| read_error(io::Error::other("the blob's reader thread stopped")))?;
                *reader = r;
                result.map_err(read_error)
            }
            BlobReader::Registry(from) => {
                let mut left = n;
                while left > 0 {
                    let piece = match from.piece(left.min(PIECE as u64)).await {
                        Ok(piece) => piece,
                        Err(e) => {
                            let _ = tx
                                .send(Err(io::Error::other("the source blob stopped")))
                                .await;
                            return Err(e);
                        }
                    };
                    left -= piece.len() as u64;
                    if tx.send(Ok(piece)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Bytes of a blob held per piece of an upload's streamed body.
pub const PIECE: usize = 256 * 1024;
/// Pieces in flight between a blob's reader and its request.
pub const PIECES: usize = 8;

/// The blocking half of [`BlobReader::send`] for a store.
fn pump(
    reader: &mut dyn Read,
    n: u64,
    last: bool,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let mut piece = vec![0u8; usize::try_from(left.min(PIECE as u64)).unwrap_or(PIECE)];
        left -= piece.len() as u64;
        read_store(reader, &mut piece, last && left == 0)?;
        if tx.blocking_send(Ok(piece.into())).is_err() {
            break;
        }
    }
    Ok(())
}

/// Fills `buf` from a store's reader; `last` when it ends the blob: the
/// reader is then read to its end, where it checks the digest (a blob
/// longer than its descriptor is refused too).
fn read_store(reader: &mut dyn Read, buf: &mut [u8], last: bool) -> io::Result<()> {
    reader.read_exact(buf)?;
    if last && reader.read(&mut [0u8; 1])? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the stored blob is longer than its descriptor",
        ));
    }
    Ok(())
}

/// A store's read error, the blob named by the caller (the reader does
/// not know it).
fn read_error(source: io::Error) -> Stop {
    Stop::Push(PushError::Read {
        digest: Digest::sha256(b""),
        source,
    })
}

impl FromRegistry {
    /// The next bytes, at most `max` (at least one: an early end is an
    /// error); the digest is checked with the blob's last byte.
    async fn piece(&mut self, max: u64) -> Result<Bytes, Stop> {
        if self.pending.is_empty() {
            match self.stream.chunk().await? {
                Some(next) => self.pending = next,
                None => return Err(read_error(io::ErrorKind::UnexpectedEof.into())),
            }
        }
        let take = self
            .pending
            .len()
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        let part = self.pending.split_to(take);
        if let Some(h) = &mut self.hasher {
            h.update(&part);
        }
        self.read += part.len() as u64;
        if self.read == self.size {
            if let Some(h) = self.hasher.take() {
                let found = h.finish();
                if found != self.digest {
                    return Err(Stop::Push(PushError::SourceDigest {
                        digest: self.digest.clone(),
                        found,
                    }));
                }
            }
        }
        Ok(part)
    }
}

/// What [`push_from`] pushed besides its report: the documents, children
/// first, the top one last.
pub(crate) type Pushed = Vec<Document>;

/// [`push`] from any [`Source`]: the one walk, blob transfer and document
/// order shared by push and copy.
pub(crate) async fn push_from<S: Provider + Sync + ?Sized>(
    client: &Client,
    source: &Source<'_, S>,
    top: &Descriptor,
    dest: &Reference,
    options: &PushOptions,
) -> Result<(PushReport, Pushed), PushError> {
    let registry = |source| PushError::Registry {
        reference: dest.to_string(),
        source: Box::new(source),
    };
    let walk = walk(source, top).await?;
    let repo = Repo::new(client, dest, options.mount_from.as_deref());

    let parallel = options.parallel.max(1);
    let outcomes: Vec<Outcome> = futures_util::stream::iter(walk.blobs.iter())
        .map(|d| push_blob(&repo, source, d, options))
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
    let mut report = PushReport::default();
    for o in outcomes {
        report.bytes_sent += o.sent;
        report
            .resumed
            .extend(o.resumed.into_iter().map(|at| (o.digest.clone(), at)));
        match o.how {
            How::Skipped => report.skipped.push(o.digest),
            How::Mounted => report.mounted.push(o.digest),
            How::Uploaded => report.uploaded.push(o.digest),
        }
    }

    for doc in &walk.documents {
        let path = format!("manifests/{}", doc.digest());
        if !repo.exists(&path).await.map_err(registry)? {
            let subject_seen = repo
                .put_document(doc, &doc.digest().to_string())
                .await
                .map_err(registry)?;
            if !subject_seen {
                if let Some(subject) = subject(doc) {
                    repo.add_referrer(&subject, doc).await.map_err(registry)?;
                }
            }
            report.documents.push(doc.digest().clone());
        }
    }
    let top_doc = walk
        .documents
        .last()
        .expect("the walk yields the top document");
    report.tag = put_tag(client, dest, top_doc).await?;
    report.descriptor = Some(top.clone());
    Ok((report, walk.documents))
}

/// Tags `doc` (already pushed) as `dest` says; the tag set, if any.
pub(crate) async fn put_tag(
    client: &Client,
    dest: &Reference,
    doc: &Document,
) -> Result<Option<String>, PushError> {
    let Some(tag) = dest.tag() else {
        return Ok(None);
    };
    Repo::new(client, dest, None)
        .put_document(doc, tag)
        .await
        .map_err(|source| PushError::Registry {
            reference: dest.to_string(),
            source: Box::new(source),
        })?;
    Ok(Some(dest.to_string()))
}

/// The `subject` a document refers to, when it has one.
fn subject(doc: &Document) -> Option<Descriptor> {
    match doc {
        Document::Manifest(m) => m.subject().cloned(),
        Document::Index(i) => i.inner().subject().clone(),
    }
}

/// What a push takes from the store: blobs, and documents in the order
/// they go (children before parents, the top one last).
struct Walk {
    blobs: Vec<Descriptor>,
    documents: Vec<Document>,
}

/// Reads the documents under `top`, each once.
async fn walk<S: Provider + Sync + ?Sized>(
    source: &Source<'_, S>,
    top: &Descriptor,
) -> Result<Walk, PushError> {
    let mut blobs = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    // (document, depth), in the order read; sorted deepest first below.
    let mut documents: Vec<(usize, Document)> = Vec::new();
    let top_digest = checked(top, &Digest::sha256(b""))?;
    let mut pending = vec![(top.clone(), 0usize)];
    seen.insert(top_digest);
    let mut held = 0u64;
    while let Some((d, depth)) = pending.pop() {
        let doc = source.document(&d).await?;
        held += doc.raw().len() as u64;
        if held > MAX_IMAGE_DOCUMENTS {
            return Err(PushError::TooDeep {
                digest: checked(top, &Digest::sha256(b""))?,
            });
        }
        match &doc {
            Document::Manifest(m) => {
                for b in std::iter::once(m.config()).chain(m.layers()) {
                    if seen.insert(checked(b, m.digest())?) {
                        blobs.push(b.clone());
                    }
                }
            }
            Document::Index(index) => {
                for child in index.manifests() {
                    if !seen.insert(checked(child, index.digest())?) {
                        continue;
                    }
                    if depth + 1 > MAX_DEPTH || documents.len() + pending.len() >= MAX_MANIFESTS {
                        return Err(PushError::TooDeep {
                            digest: index.digest().clone(),
                        });
                    }
                    pending.push((child.clone(), depth + 1));
                }
            }
        }
        documents.push((depth, doc));
    }
    // Deepest first; the sort is stable, so the top (depth 0, read first)
    // ends last.
    documents.sort_by_key(|d| std::cmp::Reverse(d.0));
    Ok(Walk {
        blobs,
        documents: documents.into_iter().map(|(_, d)| d).collect(),
    })
}

fn checked(d: &Descriptor, parent: &Digest) -> Result<Digest, PushError> {
    d.checked_digest().map_err(|_| PushError::Descriptor {
        digest: d.digest().to_string(),
        parent: parent.clone(),
    })
}

fn read_document<S: Provider + ?Sized>(store: &S, d: &Descriptor) -> Result<Document, PushError> {
    let digest = checked(d, &Digest::sha256(b""))?;
    let raw = store
        .read_blob_to_vec(&digest, MAX_DOCUMENT_SIZE)
        .map_err(|source| PushError::Store {
            digest: digest.clone(),
            source: Box::new(source),
        })?;
    match Document::from_bytes(raw, Some(&d.media_type().into())) {
        Ok(doc) => Ok(doc.with_algorithm(digest.algorithm())),
        Err(source) => Err(PushError::Document { digest, source }),
    }
}

/// The repository pushed to, on the registry itself (never a mirror).
struct Repo<'a> {
    client: &'a Client,
    endpoint: Endpoint,
    domain: &'a str,
    /// The repository as the client names it (for credentials).
    name: &'a str,
    /// The repository's path on the endpoint.
    path: String,
    scope: String,
    /// The repository to mount from and the scope for both.
    mount: Option<(String, String)>,
}

impl<'a> Repo<'a> {
    fn new(client: &'a Client, dest: &'a Reference, mount_from: Option<&str>) -> Repo<'a> {
        let endpoint = client.config().origin(dest.domain());
        let path = endpoint.repository_path(dest.repository());
        let scope = format!("repository:{path}:pull,push");
        let mount = mount_from.map(|from| {
            let from = endpoint.repository_path(from);
            let scope = format!("{scope} repository:{from}:pull");
            (from, scope)
        });
        Repo {
            client,
            endpoint,
            domain: dest.domain(),
            name: dest.repository(),
            path,
            scope,
            mount,
        }
    }

    /// A target: `suffix` under the repository, or (starting with `/v2/`)
    /// a path the registry gave.
    fn target(&self, suffix: &str, scope: &str) -> Target<'_> {
        let path = match suffix.strip_prefix("/v2/") {
            Some(p) => p.to_owned(),
            None => format!("{}/{suffix}", self.path),
        };
        Target {
            endpoint: &self.endpoint,
            domain: self.domain,
            repository: self.name,
            path,
            scope: Some(scope.to_owned()),
        }
    }

    async fn request(
        &self,
        method: Method,
        suffix: &str,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.request_scoped(method, suffix, headers, body, &self.scope)
            .await
    }

    async fn request_scoped(
        &self,
        method: Method,
        suffix: &str,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let target = self.target(suffix, scope);
        let resp = self
            .client
            .send_body(&target, method.clone(), headers, body)
            .await?;
        check_status(method, resp).await
    }

    /// A request with a body streamed once (see [`Client::send_stream`]).
    async fn request_stream(
        &self,
        method: Method,
        suffix: &str,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, RegistryError> {
        let target = self.target(suffix, &self.scope);
        let resp = self
            .client
            .send_stream(&target, method.clone(), headers, body)
            .await?;
        check_status(method, resp).await
    }

    /// Whether `suffix` (a blob or a manifest) is there (`HEAD`; every
    /// manifest type accepted: distribution answers 404 for an OCI
    /// manifest a client does not accept).
    async fn exists(&self, suffix: &str) -> Result<bool, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        match self.request(Method::HEAD, suffix, headers, None).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts a document under `name` (its digest or a tag), checking the
    /// digest the registry computed when it says; whether the registry
    /// acknowledged the document's `subject` (`OCI-Subject`: it keeps
    /// the referrers list itself).
    async fn put_document(&self, doc: &Document, name: &str) -> Result<bool, RegistryError> {
        self.put_document_with(doc, name, HeaderMap::new()).await
    }

    /// [`put_document`](Repo::put_document) with `headers` besides.
    async fn put_document_with(
        &self,
        doc: &Document,
        name: &str,
        mut headers: HeaderMap,
    ) -> Result<bool, RegistryError> {
        let media_type = doc.media_type().to_string();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&media_type).map_err(|_| RegistryError::InvalidAnswer {
                url: name.to_owned(),
                what: "media type for a header",
            })?,
        );
        let body = bytes::Bytes::copy_from_slice(doc.raw());
        let resp = self
            .request(
                Method::PUT,
                &format!("manifests/{name}"),
                headers,
                Some(body),
            )
            .await?;
        answered_digest(&resp, doc.digest())?;
        Ok(resp.headers().contains_key("oci-subject"))
    }

    /// Adds `doc` to the referrers of `subject` kept under the tag schema
    /// (`<alg>-<hex>`), for a registry without the referrers API: the
    /// index under that tag is read (or started), the document's entry
    /// added unless there, and the index put back, as the distribution
    /// spec asks; then read again and merged again while another pusher's
    /// write lost the entry (see [`crate::referrers`]).
    async fn add_referrer(
        &self,
        subject: &Descriptor,
        doc: &Document,
    ) -> Result<(), RegistryError> {
        let subject = subject
            .checked_digest()
            .map_err(|_| RegistryError::InvalidAnswer {
                url: format!("{}/manifests/{}", self.path, subject.digest()),
                what: "subject digest",
            })?;
        let tag = referrers::tag_schema_tag(&subject);
        let suffix = format!("manifests/{tag}");
        let entry = image_store::referrers::entry(doc);
        // The index last written or read once the entry was in: done when
        // a re-read a moment later finds it unchanged (no writer between).
        let mut settled: Option<Digest> = None;
        for round in 0..referrers::TAG_INDEX_ROUNDS {
            let (index, etag) = self.tag_index(&suffix).await?;
            if let Some(index) = index.as_ref().filter(|i| referrers::lists(i, doc.digest())) {
                // Listed before this pusher wrote, or unchanged since.
                if round == 0 || settled.as_ref() == Some(index.digest()) {
                    return Ok(());
                }
                settled = Some(index.digest().clone());
            } else {
                let body =
                    referrers::merged(index.as_ref().map(|i| i.raw()), &entry).map_err(|what| {
                        RegistryError::InvalidAnswer {
                            url: suffix.clone(),
                            what,
                        }
                    })?;
                let updated = image_core::Index::from_bytes(body).map_err(|source| {
                    RegistryError::Document {
                        url: suffix.clone(),
                        source,
                    }
                })?;
                let mut headers = HeaderMap::new();
                if let Some(etag) = etag {
                    headers.insert(IF_MATCH, etag);
                }
                settled = Some(updated.digest().clone());
                match self
                    .put_document_with(&Document::Index(Box::new(updated)), &tag, headers)
                    .await
                {
                    Ok(_) => {}
                    // Another pusher wrote first: merge into theirs.
                    Err(RegistryError::Status { status: 412, .. }) => settled = None,
                    Err(e) => return Err(e),
                }
            }
            tokio::time::sleep(referrers::settle(round)).await;
        }
        Err(RegistryError::IndexContended {
            url: suffix,
            attempts: referrers::TAG_INDEX_ROUNDS,
        })
    }

    /// The tag-schema index at `suffix` (`None` when there is none) and
    /// its `ETag`, if the registry gave one.
    async fn tag_index(
        &self,
        suffix: &str,
    ) -> Result<(Option<image_core::Index>, Option<HeaderValue>), RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        match self.request(Method::GET, suffix, headers, None).await {
            Ok(resp) => {
                let url = show_url(resp.url());
                let etag = resp.headers().get(ETAG).cloned();
                let body = read_bounded(resp, MAX_DOCUMENT_SIZE, "referrers index", &url).await?;
                let index = image_core::Index::from_bytes(body)
                    .map_err(|source| RegistryError::Document { url, source })?;
                Ok((Some(index), etag))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload (with a mount when asked): `None` when the blob
    /// was mounted, else the upload's location.
    async fn start_upload(
        &self,
        digest: &Digest,
        mount: bool,
    ) -> Result<Option<String>, RegistryError> {
        let (suffix, scope) = match (&self.mount, mount) {
            (Some((from, scope)), true) => (
                format!("blobs/uploads/?mount={digest}&from={from}"),
                scope.as_str(),
            ),
            _ => ("blobs/uploads/".to_owned(), self.scope.as_str()),
        };
        let resp = self
            .request_scoped(Method::POST, &suffix, HeaderMap::new(), None, scope)
            .await?;
        if resp.status() == StatusCode::CREATED && mount {
            answered_digest(&resp, digest)?;
            return Ok(None);
        }
        location(&resp).map(Some)
    }

    /// Where an upload stands: `Some(next offset)`, or `None` when the
    /// registry no longer knows it.
    async fn upload_offset(&self, location: &str) -> Result<Option<u64>, RegistryError> {
        match self
            .request(Method::GET, location, HeaderMap::new(), None)
            .await
        {
            Ok(resp) => Ok(Some(range_end(&resp)?)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => Ok(None),
            Err(RegistryError::Status { status: 416, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Refuses the answer to a write (a blob's closing `PUT`, a mount, a
/// document's `PUT`) whose `Docker-Content-Digest` names another digest
/// than the one written: the registry holds something else than we sent
/// (containerd refuses it too). A header that does not parse is ignored,
/// as containerd ignores it, and so is one of another algorithm than the
/// digest written: the distribution server answers a sha512 blob's upload
/// (which it verified against our sha512 digest) with its sha256, which
/// cannot be compared without hashing the blob twice.
fn answered_digest(resp: &reqwest::Response, expected: &Digest) -> Result<(), RegistryError> {
    let found = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok())
        .filter(|found| found.algorithm() == expected.algorithm());
    match found {
        Some(found) if &found != expected => Err(RegistryError::DigestMismatch {
            url: show_url(resp.url()),
            expected: expected.clone(),
            found,
        }),
        _ => Ok(()),
    }
}

/// The upload location of an answer, as a path under `/v2/` with its
/// query, required to stay on the answer's origin.
fn location(resp: &reqwest::Response) -> Result<String, RegistryError> {
    let url = resp.url();
    let invalid = |what| RegistryError::InvalidAnswer {
        url: show_url(url),
        what,
    };
    let next = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| url.join(l).ok())
        .ok_or_else(|| invalid("upload Location"))?;
    if next.origin() != url.origin() || !next.path().starts_with("/v2/") {
        return Err(invalid("upload Location on another origin or outside /v2/"));
    }
    Ok(path_and_query(&next))
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The offset after an answer's `Range: 0-<last>` (0 without one).
fn range_end(resp: &reqwest::Response) -> Result<u64, RegistryError> {
    let Some(range) = resp.headers().get(RANGE) else {
        return Ok(0);
    };
    range
        .to_str()
        .ok()
        .and_then(|r| r.trim().strip_prefix("bytes=").or(Some(r.trim())))
        .and_then(|r| r.split_once('-'))
        .and_then(|(_, last)| last.parse::<u64>().ok())
        .and_then(|last| last.checked_add(1))
        .ok_or_else(|| RegistryError::InvalidAnswer {
            url: show_url(resp.url()),
            what: "upload Range",
        })
}

/// `location` with `key=value` added to its query.
fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={value}")
}

enum How {
    Skipped,
    Mounted,
    Uploaded,
}

struct Outcome {
    digest: Digest,
    how: How,
    resumed: Vec<u64>,
    sent: u64,
}

/// Why one upload attempt stopped: the registry (the upload goes on from
/// where the registry stands) or the store (not retried).
enum Stop {
    Net(RegistryError),
    Push(PushError),
}

impl From<RegistryError> for Stop {
    fn from(e: RegistryError) -> Stop {
        Stop::Net(e)
    }
}

/// Uploads one blob unless the registry has it or can mount it.
async fn push_blob<S: Provider + Sync + ?Sized>(
    repo: &Repo<'_>,
    source: &Source<'_, S>,
    d: &Descriptor,
    options: &PushOptions,
) -> Result<Outcome, PushError> {
    let digest = checked(d, &Digest::sha256(b""))?;
    let size = d.size();
    let item = digest.to_string();
    let tracker = &options.tracker;
    let progress = tracker.progress();
    let blob_err = |source| PushError::Blob {
        digest: digest.clone(),
        source: Box::new(source),
    };
    progress.item_started(&item, Some(size));
    let done = |how, resumed, sent| {
        progress.item_progress(&item, size);
        progress.item_finished(&item);
        Ok(Outcome {
            digest: digest.clone(),
            how,
            resumed,
            sent,
        })
    };
    check_interrupt(tracker.interrupt()).map_err(blob_err)?;
    if repo
        .exists(&format!("blobs/{digest}"))
        .await
        .map_err(blob_err)?
    {
        return done(How::Skipped, Vec::new(), 0);
    }
    let Some(location) = repo
        .start_upload(&digest, repo.mount.is_some())
        .await
        .map_err(blob_err)?
    else {
        return done(How::Mounted, Vec::new(), 0);
    };
    let policy = repo.client.retry_policy();
    let mut state = Upload {
        location,
        offset: 0,
        sent: 0,
        shown: Arc::new(AtomicU64::new(0)),
    };
    let mut resumed = Vec::new();
    let mut restarts = 0u32;
    loop {
        let attempt = upload(repo, source, d, &mut state, options).await;
        match attempt {
            Ok(()) => return done(How::Uploaded, resumed, state.sent),
            Err(Stop::Push(e)) => return Err(e),
            Err(Stop::Net(e)) if e.kind() == ErrorKind::Cancelled => return Err(blob_err(e)),
            Err(Stop::Net(e)) if !restartable(&e) => return Err(blob_err(e)),
            Err(Stop::Net(e)) if restarts + 1 >= policy.attempts.max(1) => return Err(blob_err(e)),
            Err(Stop::Net(_)) => {
                restarts += 1;
                tokio::time::sleep(policy.delay(restarts - 1, None)).await;
                // Where the registry stands, or a new upload.
                state.offset = match repo
                    .upload_offset(&state.location)
                    .await
                    .map_err(blob_err)?
                {
                    // "0-0" says 0 or 1 byte: only a longer range is sure.
                    Some(at) if at > 1 && at <= size => at,
                    _ => {
                        state.location = repo
                            .start_upload(&digest, false)
                            .await
                            .map_err(blob_err)?
                            .expect("an upload without a mount gives a location");
                        0
                    }
                };
                resumed.push(state.offset);
            }
        }
    }
}

/// Whether an upload that failed with `e` is worth another: not when the
/// registry refused it in a way the same upload would only meet again:
/// credentials or permission (401, 403, after the client's own round of
/// authentication, or a token server's refusal), a method it does not
/// allow (405), a blob too large for it (413). Docker's pusher gives up on the same refusals
/// (unauthorized, denied, unsupported). Anything else (the network, a
/// registry unavailable, an upload it no longer knows, an offset out of
/// step, an answer it could not have meant) goes on from where the
/// registry stands, at most [`RetryPolicy::attempts`](crate::RetryPolicy)
/// times.
fn restartable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Status { status, .. } => !matches!(status, 401 | 403 | 405 | 413),
        e => e.kind() != ErrorKind::Unauthenticated,
    }
}

/// Where one blob's upload stands.
struct Upload {
    /// The upload URL (path and query) the registry gave last.
    location: String,
    /// The bytes the registry acknowledged.
    offset: u64,
    /// The bytes sent in all (some again after a failure).
    sent: u64,
    /// The progress shown (never going back after a new upload; moved
    /// on by the body of a `PATCH` as it is sent).
    shown: Arc<AtomicU64>,
}

/// Sends blob `digest` from `state.offset` to the upload at
/// `state.location`, in one `PUT` when small, else in `PATCH`es of at
/// most the chunk size, each body streamed from the source while it is
/// read; keeps the state up to date with what the registry acknowledged.
async fn upload<S: Provider + Sync + ?Sized>(
    repo: &Repo<'_>,
    source: &Source<'_, S>,
    d: &Descriptor,
    state: &mut Upload,
    options: &PushOptions,
) -> Result<(), Stop> {
    let (digest, size) = (
        &checked(d, &Digest::sha256(b"")).map_err(Stop::Push)?,
        d.size(),
    );
    let Upload {
        location,
        offset,
        sent,
        shown,
    } = state;
    // The blob's digest, which a store's reader does not know.
    let named = |stop| match stop {
        Stop::Push(PushError::Read { source, .. }) => Stop::Push(PushError::Read {
            digest: digest.clone(),
            source,
        }),
        other => other,
    };
    let mut reader = source.open(d, *offset).await.map_err(named)?;
    let octets = HeaderValue::from_static("application/octet-stream");
    if size <= options.monolithic_limit && *offset < size {
        // The rest of the blob in the closing PUT.
        check_interrupt(options.tracker.interrupt())?;
        let n = size - *offset;
        let chunk = reader.chunk(n, true).await.map_err(named)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, octets);
        let put = with_query(location, "digest", &digest.to_string());
        let resp = repo
            .request(Method::PUT, &put, headers, Some(chunk.into()))
            .await?;
        *sent += n;
        *offset = size;
        return closed(&resp, digest);
    }
    let chunk_size = options.chunk_size.max(1);
    let policy = repo.client.retry_policy();
    while *offset < size {
        check_interrupt(options.tracker.interrupt())?;
        let n = chunk_size.min(size - *offset);
        let range = format!("{}-{}", *offset, *offset + n - 1);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, octets.clone());
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        headers.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("digits and a dash"),
        );
        let mut tries = 0u32;
        let mut reauthenticated = false;
        let resp = loop {
            tries += 1;
            let (tx, rx) = mpsc::channel(PIECES);
            let body = Sending {
                tracker: options.tracker.clone(),
                item: digest.to_string(),
                at: *offset,
                shown: shown.clone(),
            }
            .body(rx);
            let (fed, resp) = tokio::join!(
                reader.send(n, *offset + n == size, tx),
                repo.request_stream(Method::PATCH, location, headers.clone(), body)
            );
            // Why the body stopped, before what the request made of it.
            check_interrupt(options.tracker.interrupt())?;
            fed.map_err(named)?;
            match resp {
                Ok(resp) => break resp,
                // The client does not send a streamed body again: the
                // same bytes go again from a reader opened anew, tried as
                // often as the client tries a request held in memory.
                Err(e) if e.kind() == ErrorKind::Unauthenticated && !reauthenticated => {
                    reauthenticated = true;
                    tries -= 1;
                }
                Err(e) if e.kind().is_retryable() && tries < policy.attempts.max(1) => {
                    tokio::time::sleep(policy.delay(tries - 1, None)).await;
                }
                Err(e) => return Err(Stop::Net(e)),
            }
            reader = source.open(d, *offset).await.map_err(named)?;
        };
        *sent += n;
        let acknowledged = range_end(&resp)?;
        *location = self::location(&resp)?;
        if acknowledged != *offset + n {
            // The registry holds other bytes than sent: ask again.
            return Err(Stop::Net(RegistryError::InvalidAnswer {
                url: show_url(resp.url()),
                what: "upload Range after a chunk",
            }));
        }
        *offset = acknowledged;
    }
    let put = with_query(location, "digest", &digest.to_string());
    let resp = repo
        .request(Method::PUT, &put, HeaderMap::new(), None)
        .await?;
    closed(&resp, digest)
}

/// The answer to an upload's closing `PUT` checked: another digest than
/// the blob's is not retried (the registry holds what it holds), it ends
/// the push.
fn closed(resp: &reqwest::Response, digest: &Digest) -> Result<(), Stop> {
    answered_digest(resp, digest).map_err(|source| {
        Stop::Push(PushError::Blob {
            digest: digest.clone(),
            source: Box::new(source),
        })
    })
}

/// The progress of one `PATCH` body, moved on as the request takes its
/// pieces, never back (a new upload starts again below what was shown),
/// and its interrupt, which stops the body (the request fails; the caller
/// tells it apart as `Cancelled`).
struct Sending {
    tracker: Tracker,
    item: String,
    /// The blob's offset after what the body gave so far.
    at: u64,
    shown: Arc<AtomicU64>,
}

impl Sending {
    /// The request body streaming what `rx` receives.
    fn body(self, rx: mpsc::Receiver<io::Result<Bytes>>) -> reqwest::Body {
        let pieces = futures_util::stream::unfold((rx, self), |(mut rx, mut s)| async move {
            let mut next = rx.recv().await?;
            if s.tracker.interrupt().check().is_err() {
                next = Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the push was interrupted",
                ));
            }
            if let Ok(piece) = &next {
                s.at += piece.len() as u64;
                if s.shown.fetch_max(s.at, Ordering::Relaxed) < s.at {
                    s.tracker.progress().item_progress(&s.item, s.at);
                }
            }
            Some((next, (rx, s)))
        });
        reqwest::Body::wrap_stream(pieces)
    }
}
