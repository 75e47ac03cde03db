//! The content store traits, in containerd's model.
//!
//! # Lifecycle of a blob
//!
//! 1. **Ingest.** [`Ingester::writer`] opens (or re-opens) an ingest keyed by
//!    a caller-chosen *reference* such as `"pull-sha256:ab12..."`. The
//!    returned [`ContentWriter`] hashes every byte as it is written to a
//!    temporary place inside the store. Nothing written there is readable
//!    through [`Provider`]. Only one writer may hold a reference at a time;
//!    a second one gets [`ContentError::Locked`].
//! 2. **Resume.** Dropping a writer without committing keeps the partial
//!    data. Opening the same reference again continues at
//!    [`ContentWriter::offset`]; the hash state is recomputed from the
//!    partial data, so the caller only sends the remaining bytes.
//!    [`ContentWriter::truncate`] and [`Ingester::abort`] discard it.
//! 3. **Commit.** [`ContentWriter::commit`] consumes the writer, checks the
//!    size and digest against what the caller expected (when given),
//!    makes the bytes durable and publishes them under their digest in one
//!    atomic step. A mismatch is an error naming both values and leaves the
//!    store unchanged (the ingest is discarded). A blob that is already
//!    present is success: each blob is stored once.
//! 4. **Read.** [`Provider::reader`] streams a committed blob and verifies
//!    it as it goes: the read reaching the end fails when the bytes are not
//!    the ones named by the digest. [`Provider::info`] and
//!    [`Provider::exists`] answer without reading.
//! 5. **Delete.** [`Manager::delete`] removes a blob; [`Manager::list`]
//!    enumerates them. Garbage collection builds on these.
//!
//! Every trait has forwarding impls for `&T`, `Box<T>` and `Arc<T>`, so any
//! pointer to a store is a store, and [`ContentStore`] is implemented for
//! everything that is all three.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use image_core::digest::VerifyError;
use image_core::error::unless_named;
use image_core::DescriptorExt;
use image_core::{Algorithm, Descriptor, Digest};

pub use crate::error::ContentError;

/// Facts about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// The digest of the blob's bytes.
    pub digest: Digest,
    /// The size in bytes.
    pub size: u64,
    /// When the blob was committed (file modification time on disk), when known.
    pub created: Option<SystemTime>,
    /// Labels set with [`Manager::set_labels`] (containerd's content
    /// labels: a build cache keeps its keys here). Filled in by
    /// [`Provider::info`]; [`Manager::list`] may leave them out.
    pub labels: Labels,
}

/// The labels of a blob: at most [`MAX_LABELS`] of them, each key not
/// empty, each key and value together at most [`MAX_LABEL_BYTES`] bytes.
pub type Labels = BTreeMap<String, String>;

/// The most labels a blob may carry.
pub const MAX_LABELS: usize = 256;

/// The most bytes of a label's key and value together (containerd's limit).
pub const MAX_LABEL_BYTES: usize = 4096;

impl Info {
    /// Builds an `Info` without labels.
    pub fn new(digest: Digest, size: u64, created: Option<SystemTime>) -> Info {
        Info {
            digest,
            size,
            created,
            labels: Labels::new(),
        }
    }

    /// This `Info` with `labels`.
    pub fn with_labels(mut self, labels: Labels) -> Info {
        self.labels = labels;
        self
    }
}

/// Checks labels against the limits of [`Labels`].
///
/// # Errors
/// [`ContentError::InvalidLabels`] naming the first problem.
pub fn check_labels(labels: &Labels) -> Result<()> {
    let invalid = |reason: String| Err(ContentError::InvalidLabels { reason });
    if labels.len() > MAX_LABELS {
        return invalid(format!("{} labels, more than {MAX_LABELS}", labels.len()));
    }
    for (k, v) in labels {
        if k.is_empty() {
            return invalid("an empty key".into());
        }
        if k.len() + v.len() > MAX_LABEL_BYTES {
            let key: String = k.chars().take(40).collect();
            return invalid(format!(
                "label {key:?} is more than {MAX_LABEL_BYTES} bytes with its value"
            ));
        }
    }
    Ok(())
}

/// The state of an ingest that has not been committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestStatus {
    /// The reference the ingest was opened with.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// When the ingest was last written to, when known.
    pub updated: Option<SystemTime>,
}

/// The result type of this module.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;

/// Validates an ingest reference: 1 to 1024 bytes, no NUL, no newline.
/// A commit's first check: a digest of another algorithm than the ingest
/// hashed with can never match.
pub(crate) fn check_commit_algorithm(
    reference: &str,
    ingest: Algorithm,
    expected: Option<&Digest>,
) -> Result<()> {
    match expected {
        Some(e) if e.algorithm() != ingest => Err(ContentError::AlgorithmMismatch {
            reference: reference.to_owned(),
            ingest,
            expected: e.algorithm(),
        }),
        _ => Ok(()),
    }
}

/// A commit's content check: `found` (the digest of `size` bytes written)
/// against the expected digest and size, or against the size alone when
/// no digest is expected.
pub(crate) fn verify_commit(
    reference: &str,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
    found: &Digest,
    size: u64,
) -> Result<()> {
    let check = match expected {
        Some(e) => image_core::digest::verify(e, expected_size, found, size),
        None => match expected_size {
            Some(s) if s != size => Err(VerifyError::Size {
                digest: found.clone(),
                expected: s,
                found: size,
                truncated: false,
            }),
            _ => Ok(()),
        },
    };
    check.map_err(|source| ContentError::Verify {
        reference: reference.to_owned(),
        source,
    })
}

pub(crate) fn check_reference(reference: &str) -> Result<()> {
    let reason = if reference.is_empty() {
        "empty"
    } else if reference.len() > 1024 {
        "longer than 1024 bytes"
    } else if reference.contains(['\0', '\n']) {
        "contains NUL or newline"
    } else {
        return Ok(());
    };
    Err(ContentError::InvalidReference {
        reference: reference.chars().take(80).collect(),
        reason,
    })
}

/// A blob being ingested: hashes while written, published by [`commit`](ContentWriter::commit).
///
/// See the [module documentation](self) for the lifecycle.
///
/// Sealed: only this crate's writers implement it, so
/// [`commit_verified`](ContentWriter::commit_verified) (and the
/// [`VerifiedBlob`] it returns) always follows one of their own verifying
/// commits. A writer from another crate does not compile:
///
/// ```compile_fail,E0277
/// struct Forged;
/// impl std::io::Write for Forged {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { Ok(b.len()) }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// impl image_store::ContentWriter for Forged {
///     fn reference(&self) -> &str { "" }
///     fn offset(&self) -> u64 { 0 }
///     fn digest(&self) -> image_core::Digest { image_core::Digest::sha256(b"") }
///     fn truncate(&mut self, _: u64) -> image_store::content::Result<()> { Ok(()) }
///     fn commit(
///         self: Box<Self>,
///         _: Option<u64>,
///         expected: Option<&image_core::Digest>,
///     ) -> image_store::content::Result<image_core::Digest> {
///         Ok(expected.cloned().unwrap_or_else(|| image_core::Digest::sha256(b"")))
///     }
/// }
/// ```
pub trait ContentWriter: Write + Send + sealed::Writer {
    /// The ingest reference this writer holds.
    fn reference(&self) -> &str;

    /// Bytes written so far, including those of an earlier, resumed attempt.
    /// A resuming caller continues its source from here.
    fn offset(&self) -> u64;

    /// The digest of the bytes written so far.
    fn digest(&self) -> Digest;

    /// Discards everything after the first `size` bytes (containerd's
    /// `Truncate`); `truncate(0)` restarts the ingest.
    ///
    /// # Errors
    /// I/O errors; `size` beyond the offset is an `InvalidInput` I/O error.
    fn truncate(&mut self, size: u64) -> Result<()>;

    /// Verifies and publishes the blob, consuming the writer.
    ///
    /// When `expected_size` or `expected` are given the content must match
    /// them; otherwise the digest is computed and returned. On success the
    /// blob is readable under the returned digest (and was made durable by
    /// the on-disk store); an identical blob already present is success.
    ///
    /// # Errors
    /// [`ContentError::Verify`] naming both values on a mismatch (the
    /// ingest is discarded and the store is unchanged);
    /// [`ContentError::AlgorithmMismatch`]; I/O errors (the ingest is kept
    /// for a retry).
    fn commit(
        self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Digest>;

    /// [`commit`](ContentWriter::commit) against the blob's `size` and
    /// `digest`, returning the proof that the store holds it verified:
    /// what a consumer of the same bytes that must act only on verified
    /// ones (a layer unpacked while it downloads) is given.
    ///
    /// # Errors
    /// As [`commit`](ContentWriter::commit).
    fn commit_verified(self: Box<Self>, size: u64, digest: &Digest) -> Result<VerifiedBlob> {
        let digest = self.commit(Some(size), Some(digest))?;
        Ok(VerifiedBlob { digest, size })
    }
}

/// This crate's writers, the only ones [`ContentWriter`] admits.
pub(crate) mod sealed {
    /// Implemented only inside image-store; not nameable outside it.
    pub trait Writer {}
}

/// Proof that a store committed a blob after verifying its bytes against
/// this digest and size. Only [`ContentWriter::commit_verified`] makes
/// one (the trait is sealed: its `commit` is always one of this crate's
/// verifying commits), so an operation that must wait for the verification (keeping a
/// layer unpacked from the same bytes while they streamed) takes one
/// instead of trusting its caller's word.
///
/// ```compile_fail,E0451
/// # let digest = image_core::Digest::sha256(b"x");
/// // Not made outside the store's commit:
/// let proof = image_store::VerifiedBlob { digest, size: 1 };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlob {
    digest: Digest,
    size: u64,
}

impl VerifiedBlob {
    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Reads committed blobs.
pub trait Provider {
    /// Opens a committed blob as a stream that verifies its digest and size
    /// as it is read: the read reaching the end fails with an
    /// `InvalidData` I/O error wrapping a [`VerifyError`] when the stored
    /// bytes are corrupt.
    ///
    /// # Errors
    /// [`ContentError::NotFound`], I/O errors.
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;

    /// Facts about a blob, or `None` when it is not in the store.
    ///
    /// # Errors
    /// I/O errors.
    fn try_info(&self, digest: &Digest) -> Result<Option<Info>>;

    /// Opens the blob a descriptor names (containerd's `Fetcher.Fetch(desc)`),
    /// verified as [`reader`](Provider::reader) verifies it. A provider
    /// that serves content by kind (a registry: the manifest or the blob
    /// endpoint, an `Accept` header from the media type) overrides this;
    /// the default, for local stores, refuses a stored blob whose size is
    /// not the descriptor's before reading any of it.
    ///
    /// # Errors
    /// [`ContentError::InvalidDescriptor`], [`ContentError::NotFound`],
    /// [`ContentError::DescriptorMismatch`] naming both sizes, I/O errors.
    fn reader_for(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| ContentError::InvalidDescriptor { source })?;
        let info = self.info(&digest)?;
        if info.size != descriptor.size() {
            return Err(ContentError::DescriptorMismatch {
                source: VerifyError::Size {
                    digest,
                    expected: descriptor.size(),
                    found: info.size,
                    truncated: false,
                },
            });
        }
        self.reader(&digest)
    }

    /// Opens the blob a descriptor names, with the checks of
    /// [`reader_for`](Provider::reader_for) before any byte is read, for a
    /// caller that hashes what it reads and compares the digest and size
    /// itself (an unpack does, on a helper thread): a store may then skip
    /// its own hashing, so the blob is hashed once, not twice. The default
    /// is `reader_for` (verified: slower, never wrong).
    ///
    /// # Security
    /// The bytes are not known to be the blob until the caller's check
    /// passes: a caller that does not check must use `reader_for`. At most
    /// the descriptor's size is read.
    ///
    /// # Errors
    /// As [`reader_for`](Provider::reader_for).
    fn reader_for_unverified(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        self.reader_for(descriptor)
    }

    /// Whether every blob this provider returns went through a verified
    /// commit of this store (its digest and size checked when it was taken
    /// in), so that a caller checking what it unpacks by a diff ID may take
    /// a blob's digest as given instead of hashing its bytes again. False
    /// by default: a provider that serves bytes from elsewhere (a registry,
    /// an archive) or that cannot vouch for its blobs must keep it false. A
    /// wrapper that forwards every read to one store forwards this too.
    ///
    /// # Security
    /// True only for a store whose blobs were all committed through its
    /// own digest check (and whose `fsck` finds one changed since).
    fn verified_at_ingest(&self) -> bool {
        false
    }

    /// Facts about a blob.
    ///
    /// # Errors
    /// [`ContentError::NotFound`], I/O errors.
    fn info(&self, digest: &Digest) -> Result<Info> {
        self.try_info(digest)?
            .ok_or_else(|| ContentError::NotFound {
                digest: digest.clone(),
            })
    }

    /// Whether a committed blob has this digest.
    ///
    /// # Errors
    /// I/O errors.
    fn exists(&self, digest: &Digest) -> Result<bool> {
        Ok(self.try_info(digest)?.is_some())
    }

    /// Reads a whole blob into memory, verified, refusing blobs larger than
    /// `limit` bytes (for manifests, indexes and configs).
    ///
    /// # Errors
    /// [`ContentError::NotFound`], [`ContentError::TooLarge`],
    /// [`ContentError::Read`] wrapping a [`VerifyError`] when the blob is corrupt.
    fn read_blob_to_vec(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let info = self.info(digest)?;
        if info.size > limit {
            return Err(ContentError::TooLarge {
                digest: digest.clone(),
                size: info.size,
                limit,
            });
        }
        let mut reader = self.reader(digest)?;
        let mut out = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .map_err(|source| ContentError::Read {
                what: format!("blob{}", unless_named(digest, &source)),
                source,
            })?;
        Ok(out)
    }

    /// Reads a whole document (manifest, index, config) by its descriptor,
    /// through [`reader_for`](Provider::reader_for), so a provider that
    /// serves content by kind reads it from the right place. The
    /// descriptor's size is checked against `limit` before anything is
    /// opened, and no more than that size (plus one byte, to see a longer
    /// stream) is read: a provider whose stream is longer or shorter than
    /// the descriptor fails with a size mismatch instead of growing the
    /// buffer.
    ///
    /// # Errors
    /// [`ContentError::InvalidDescriptor`], [`ContentError::TooLarge`] (the
    /// descriptor's size over `limit`), [`ContentError::NotFound`],
    /// [`ContentError::DescriptorMismatch`] (the blob's size is not the
    /// descriptor's), [`ContentError::Read`] wrapping a [`VerifyError`]
    /// when the blob is corrupt.
    fn read_descriptor_to_vec(&self, descriptor: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| ContentError::InvalidDescriptor { source })?;
        let size = descriptor.size();
        if size > limit {
            return Err(ContentError::TooLarge {
                digest,
                size,
                limit,
            });
        }
        let reader = self.reader_for(descriptor)?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .take(size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|source| ContentError::Read {
                what: format!(
                    "{}{}",
                    descriptor.media_type(),
                    unless_named(&digest, &source)
                ),
                source,
            })?;
        let found = out.len() as u64;
        if found != size {
            return Err(ContentError::DescriptorMismatch {
                source: VerifyError::Size {
                    digest,
                    expected: size,
                    found,
                    truncated: found > size,
                },
            });
        }
        Ok(out)
    }
}

/// Writes blobs through ingests.
pub trait Ingester {
    /// Opens the ingest `reference` hashing with `algorithm`, resuming its
    /// partial data when it exists.
    ///
    /// # Errors
    /// [`ContentError::Locked`] when another writer holds `reference`;
    /// [`ContentError::InvalidReference`]; I/O errors.
    fn writer_with(&self, reference: &str, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>>;

    /// Discards the ingest `reference` and its partial data. Discarding an
    /// ingest that does not exist is success.
    ///
    /// # Errors
    /// [`ContentError::Locked`] when a writer holds it; I/O errors.
    fn abort(&self, reference: &str) -> Result<()>;

    /// The ingests that exist and have not been committed or aborted.
    ///
    /// # Errors
    /// I/O errors.
    fn ingests(&self) -> Result<Vec<IngestStatus>>;

    /// Opens the ingest `reference` hashing with sha256 (see [`writer_with`](Ingester::writer_with)).
    ///
    /// # Errors
    /// As [`writer_with`](Ingester::writer_with).
    fn writer(&self, reference: &str) -> Result<Box<dyn ContentWriter>> {
        self.writer_with(reference, Algorithm::Sha256)
    }

    /// Stores `data` as a blob (sha256) and returns its digest.
    ///
    /// # Errors
    /// I/O errors.
    fn write_blob(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256(data);
        ingest_with_digest(self, &mut &data[..], Some(data.len() as u64), &digest)
    }

    /// Streams `reader` into a blob, verifying it against `expected` size
    /// and digest when given, and returns its digest. With an expected
    /// digest, the ingest reference is derived from it, so an interrupted
    /// ingest of the same blob resumes (the reader's first `offset` bytes
    /// are read and skipped). A blob already present is success (callers
    /// that can stat first skip the read with [`Provider::exists`]). A
    /// failure removes the ingest; at most `expected_size + 1` bytes are
    /// read from `reader`.
    ///
    /// For progress and cancellation, pass the source through
    /// [`Tracker::reader`](image_core::Tracker::reader): once its interrupt
    /// is set the next read fails, the ingest is removed and the error is
    /// of class [`ErrorKind::Cancelled`](image_core::ErrorKind::Cancelled).
    ///
    /// # Errors
    /// [`ContentError::Verify`], [`ContentError::Read`] when `reader` fails, I/O errors.
    fn ingest_reader(
        &self,
        reader: &mut dyn Read,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        match expected {
            Some(digest) => ingest_with_digest(self, reader, expected_size, digest),
            None => {
                let reference = unique_reference();
                let mut w = self.writer(&reference)?;
                if let Err(e) = fill(&mut *w, reader, expected_size) {
                    drop(w);
                    let _ = self.abort(&reference);
                    return Err(e);
                }
                w.commit(expected_size, None)
            }
        }
    }
}

fn ingest_with_digest<I: Ingester + ?Sized>(
    ingester: &I,
    reader: &mut dyn Read,
    expected_size: Option<u64>,
    digest: &Digest,
) -> Result<Digest> {
    let reference = format!("blob-{digest}");
    let mut w = match ingester.writer_with(&reference, digest.algorithm()) {
        Ok(w) => w,
        // Someone else ingests the same blob: write our own copy; the
        // commit that loses the race deduplicates.
        Err(ContentError::Locked { .. }) => {
            ingester.writer_with(&unique_reference(), digest.algorithm())?
        }
        Err(e) => return Err(e),
    };
    let reference = w.reference().to_owned();
    if let Err(e) = fill(&mut *w, reader, expected_size) {
        drop(w);
        let _ = ingester.abort(&reference);
        return Err(e);
    }
    w.commit(expected_size, Some(digest))
}

/// Writes the rest of `reader` into `w` after the `w.offset()` bytes a
/// resumed ingest already holds (skipped in `reader`), at most one byte
/// more than `expected_size`, so a source longer than its descriptor fails
/// the commit without filling the disk first.
fn fill(
    w: &mut dyn ContentWriter,
    reader: &mut dyn Read,
    expected_size: Option<u64>,
) -> Result<()> {
    let skip = w.offset();
    if skip > 0 {
        if expected_size.is_some_and(|s| skip > s) {
            w.truncate(0)?;
        } else {
            let skipped =
                io::copy(&mut (&mut *reader).take(skip), &mut io::sink()).map_err(|source| {
                    ContentError::Read {
                        what: "ingest source".into(),
                        source,
                    }
                })?;
            if skipped < skip {
                w.truncate(skipped)?;
            }
        }
    }
    match expected_size {
        Some(size) => {
            let rest = (size + 1).saturating_sub(w.offset());
            copy_into(&mut reader.take(rest), w, "ingest source")?;
        }
        None => {
            copy_into(reader, w, "ingest source")?;
        }
    }
    Ok(())
}

/// Copies `reader` into `writer`, telling read errors from write errors.
/// Copies `reader` into `writer` until the end of the source.
///
/// Sources longer than one chunk are copied in a pipeline: this thread
/// reads (waiting on the source) while a second thread hashes and writes
/// what was read before, with a few chunk buffers in flight, so a large
/// ingest takes about as long as its slowest stage instead of the sum of
/// reading, hashing and writing.
pub(crate) fn copy_into(
    reader: &mut dyn Read,
    writer: &mut (dyn Write + Send),
    what: &str,
) -> Result<u64> {
    const CHUNK: usize = 1 << 20;
    const IN_FLIGHT: usize = 4;
    let read_err = |source| ContentError::Read {
        what: what.to_owned(),
        source,
    };
    let write_err = |source| ContentError::io("write", PathBuf::from("<ingest>"), source);
    let mut first = vec![0u8; CHUNK];
    let n = read_full(reader, &mut first).map_err(read_err)?;
    if n < CHUNK {
        writer.write_all(&first[..n]).map_err(write_err)?;
        return Ok(n as u64);
    }
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        for _ in 1..IN_FLIGHT {
            let _ = empty_tx.send(vec![0u8; CHUNK]);
        }
        let worker = scope.spawn(move || -> io::Result<()> {
            for (buf, n) in full_rx {
                writer.write_all(&buf[..n])?;
                // The reader may have stopped; a lost buffer is fine then.
                let _ = empty_tx.send(buf);
            }
            Ok(())
        });
        let mut total = n as u64;
        let mut outcome = Ok(());
        if full_tx.send((first, n)).is_ok() {
            // `recv` fails once the worker stopped on a write error.
            while let Ok(mut buf) = empty_rx.recv() {
                match read_full(reader, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        total += n as u64;
                        if full_tx.send((buf, n)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        outcome = Err(read_err(e));
                        break;
                    }
                }
            }
        }
        drop(full_tx);
        let written = match worker.join() {
            Ok(r) => r.map_err(write_err),
            Err(_) => Err(write_err(io::Error::other(
                "the ingest writer thread panicked",
            ))),
        };
        outcome?;
        written?;
        Ok(total)
    })
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reference unique to this process and moment, for one-shot ingests.
pub fn unique_reference() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("tmp-{}-{}-{}", std::process::id(), nanos, n)
}

/// Lists and deletes committed blobs.
pub trait Manager {
    /// Every committed blob, in no particular order.
    ///
    /// # Errors
    /// I/O errors.
    fn list(&self) -> Result<Vec<Info>>;

    /// Removes a committed blob, and its labels.
    ///
    /// # Errors
    /// [`ContentError::NotFound`] when it is not there; I/O errors.
    fn delete(&self, digest: &Digest) -> Result<()>;

    /// Replaces the labels of a committed blob (an empty map removes them)
    /// and returns its `Info` with them (containerd's `Update` of the
    /// `labels` field). Labels live as long as the blob; they do not keep
    /// it from gc.
    ///
    /// # Errors
    /// [`ContentError::InvalidLabels`] over the limits of [`Labels`];
    /// [`ContentError::NotFound`]; I/O errors.
    fn set_labels(&self, digest: &Digest, labels: Labels) -> Result<Info>;
}

/// A full content store: read, ingest, list and delete.
pub trait ContentStore: Provider + Ingester + Manager {}

impl<T: Provider + Ingester + Manager + ?Sized> ContentStore for T {}

macro_rules! forward {
    ($($ptr:ty),*) => {$(
        impl<T: Provider + ?Sized> Provider for $ptr {
            fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
                (**self).reader(digest)
            }
            fn try_info(&self, digest: &Digest) -> Result<Option<Info>> {
                (**self).try_info(digest)
            }
            fn reader_for(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
                (**self).reader_for(descriptor)
            }
            fn reader_for_unverified(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
                (**self).reader_for_unverified(descriptor)
            }
            fn verified_at_ingest(&self) -> bool {
                (**self).verified_at_ingest()
            }
            fn info(&self, digest: &Digest) -> Result<Info> {
                (**self).info(digest)
            }
            fn exists(&self, digest: &Digest) -> Result<bool> {
                (**self).exists(digest)
            }
            fn read_blob_to_vec(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
                (**self).read_blob_to_vec(digest, limit)
            }
            fn read_descriptor_to_vec(&self, descriptor: &Descriptor, limit: u64) -> Result<Vec<u8>> {
                (**self).read_descriptor_to_vec(descriptor, limit)
            }
        }

        impl<T: Ingester + ?Sized> Ingester for $ptr {
            fn writer_with(&self, reference: &str, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
                (**self).writer_with(reference, algorithm)
            }
            fn abort(&self, reference: &str) -> Result<()> {
                (**self).abort(reference)
            }
            fn ingests(&self) -> Result<Vec<IngestStatus>> {
                (**self).ingests()
            }
            fn writer(&self, reference: &str) -> Result<Box<dyn ContentWriter>> {
                (**self).writer(reference)
            }
            fn write_blob(&self, data: &[u8]) -> Result<Digest> {
                (**self).write_blob(data)
            }
            fn ingest_reader(
                &self,
                reader: &mut dyn Read,
                expected_size: Option<u64>,
                expected: Option<&Digest>,
            ) -> Result<Digest> {
                (**self).ingest_reader(reader, expected_size, expected)
            }
        }

        impl<T: Manager + ?Sized> Manager for $ptr {
            fn list(&self) -> Result<Vec<Info>> {
                (**self).list()
            }
            fn delete(&self, digest: &Digest) -> Result<()> {
                (**self).delete(digest)
            }
            fn set_labels(&self, digest: &Digest, labels: Labels) -> Result<Info> {
                (**self).set_labels(digest, labels)
            }
        }
    )*};
}

forward!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked() {
        assert!(check_reference("pull-sha256:abc").is_ok());
        assert!(check_reference("").is_err());
        assert!(check_reference("a\0b").is_err());
        assert!(check_reference(&"x".repeat(1025)).is_err());
        assert!(check_reference(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn unique_references_differ() {
        assert_ne!(unique_reference(), unique_reference());
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    /// A source that returns short reads of varying length, then optionally fails.
    struct Choppy<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
        fail_at: Option<usize>,
    }

    impl Read for Choppy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Err(io::Error::other("source broke"));
            }
            self.step = (self.step * 7 + 13) % 100_003 + 1;
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    struct FailingWriter(usize);

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pipelined_copy_keeps_every_byte_in_order() {
        for len in [
            0,
            1,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 1,
            5 * (1 << 20) + 12345,
        ] {
            let src = data(len);
            let mut out = Vec::new();
            let mut r = Choppy {
                data: &src,
                pos: 0,
                step: 1,
                fail_at: None,
            };
            let n = copy_into(&mut r, &mut out, "test").expect("copies");
            assert_eq!(n, len as u64);
            assert!(out == src, "bytes differ for length {len}");
        }
    }

    #[test]
    fn pipelined_copy_reports_source_and_sink_failures() {
        let src = data(4 << 20);
        let mut r = Choppy {
            data: &src,
            pos: 0,
            step: 1,
            fail_at: Some(3 << 20),
        };
        let e = copy_into(&mut r, &mut Vec::new(), "layer").expect_err("source fails");
        assert!(
            matches!(e, ContentError::Read { ref what, .. } if what == "layer"),
            "{e}"
        );

        let mut r = Choppy {
            data: &src,
            pos: 0,
            step: 1,
            fail_at: None,
        };
        let e = copy_into(&mut r, &mut FailingWriter(2 << 20), "layer").expect_err("sink fails");
        assert!(matches!(e, ContentError::Io { .. }), "{e}");
    }
}
