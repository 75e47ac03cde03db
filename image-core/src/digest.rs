//! Content digests: `algorithm:hex`, validated, computed while bytes move.
//!
//! A [`Digest`] is only ever sha256 or sha512 with the exact number of
//! lower-case hex digits, so it is safe to use as a file name. Bytes are
//! hashed in the same pass that moves them: [`DigestWriter`] hashes what is
//! written through it, [`HashingReader`] what is read through it, and
//! [`VerifyingReader`] fails the read that reaches the end of the stream
//! when the size or the digest is not the expected one.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::{Classify, ErrorKind};

/// A hash algorithm that digests may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    /// SHA-256, the algorithm of almost every image in the wild.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in digests and in `blobs/<alg>/` directories.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The number of hex digits of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher(HasherInner::Sha256(sha2::Sha256::new())),
            Algorithm::Sha512 => Hasher(HasherInner::Sha512(sha2::Sha512::new())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm {
                algorithm: truncate(other),
            }),
        }
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// There is no `:` between algorithm and hex.
    #[error("digest {input:?} has no ':' between algorithm and hex")]
    MissingSeparator {
        /// The input, cut to 80 characters.
        input: String,
    },
    /// The algorithm is well formed but not one this library hashes with.
    #[error("unsupported digest algorithm {algorithm:?} (supported: sha256, sha512)")]
    UnsupportedAlgorithm {
        /// The algorithm named by the input, cut to 80 characters.
        algorithm: String,
    },
    /// The hex part has the wrong number of digits for its algorithm.
    #[error("{algorithm} digest must have {expected} hex digits, found {found}")]
    BadLength {
        /// The algorithm of the digest.
        algorithm: Algorithm,
        /// How many digits that algorithm needs.
        expected: usize,
        /// How many the input had.
        found: usize,
    },
    /// The hex part holds an upper-case hex digit; digests are lower case.
    #[error("digest hex must be lower case, found {found:?} at offset {offset}")]
    UpperCase {
        /// The character found.
        found: char,
        /// Its offset in the hex part.
        offset: usize,
    },
    /// The hex part holds a character that is not a hex digit.
    #[error("digest hex has the non-hex character {found:?} at offset {offset}")]
    BadHex {
        /// The character found.
        found: char,
        /// Its offset in the hex part.
        offset: usize,
    },
}

impl Classify for DigestError {
    fn kind(&self) -> ErrorKind {
        match self {
            DigestError::UnsupportedAlgorithm { .. } => ErrorKind::Unsupported,
            _ => ErrorKind::InvalidInput,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A validated content digest such as `sha256:e3b0c442...`.
///
/// Only sha256 and sha512 with lower-case hex of the exact length parse, so
/// the hex part can be used as a file name without further checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from an algorithm and raw hash bytes.
    ///
    /// # Errors
    /// [`DigestError::BadLength`] when `bytes` is not the algorithm's output size.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Digest, DigestError> {
        if bytes.len() * 2 != algorithm.hex_len() {
            return Err(DigestError::BadLength {
                algorithm,
                expected: algorithm.hex_len(),
                found: bytes.len() * 2,
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex::encode(bytes),
        })
    }

    /// Builds a digest from an algorithm and its hex part, validating it.
    ///
    /// # Errors
    /// A [`DigestError`] naming the first problem with `hex`.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        for (offset, c) in hex.char_indices() {
            match c {
                '0'..='9' | 'a'..='f' => {}
                'A'..='F' => return Err(DigestError::UpperCase { found: c, offset }),
                _ => return Err(DigestError::BadHex { found: c, offset }),
            }
        }
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::BadLength {
                algorithm,
                expected: algorithm.hex_len(),
                found: hex.len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of_bytes(Algorithm::Sha256, data)
    }

    /// The digest of `data` with `algorithm`.
    pub fn of_bytes(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    /// Reads `reader` to its end and returns the digest and the number of bytes.
    ///
    /// # Errors
    /// Any error of the reader.
    pub fn of_reader<R: Read>(algorithm: Algorithm, mut reader: R) -> io::Result<(Digest, u64)> {
        let mut hasher = algorithm.hasher();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((hasher.finish(), total))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex part (also called the encoded part).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for display: the first 12 hex digits, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::MissingSeparator { input: truncate(s) })?;
        Digest::from_hex(alg.parse()?, hex)
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        match d.algorithm {
            Algorithm::Sha256 => oci_spec::image::Sha256Digest::from_str(&d.hex)
                .map(Into::into)
                .unwrap_or_else(|_| unreachable_digest(d)),
            Algorithm::Sha512 => oci_spec::image::Digest::from_str(&d.to_string())
                .unwrap_or_else(|_| unreachable_digest(d)),
        }
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        (&d).into()
    }
}

#[cold]
fn unreachable_digest(d: &Digest) -> oci_spec::image::Digest {
    // Our digests are a strict subset of what oci-spec accepts; this cannot
    // happen, but library code does not panic, so fall back to the sha256 of
    // nothing and make the inconsistency visible in debug builds.
    debug_assert!(false, "oci-spec rejected the valid digest {d}");
    oci_spec::image::Sha256Digest::from_str(EMPTY_SHA256_HEX)
        .map(Into::into)
        .unwrap_or_else(|_| unreachable!())
}

const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

/// An incremental hasher for one [`Algorithm`].
#[derive(Clone)]
pub struct Hasher(HasherInner);

#[derive(Clone)]
enum HasherInner {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feeds bytes to the hash.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherInner::Sha256(h) => h.update(data),
            HasherInner::Sha512(h) => h.update(data),
        }
    }

    /// The algorithm of this hasher.
    pub fn algorithm(&self) -> Algorithm {
        match self.0 {
            HasherInner::Sha256(_) => Algorithm::Sha256,
            HasherInner::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Finishes the hash and returns the digest.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self.0 {
            HasherInner::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            HasherInner::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm())
    }
}

/// A [`Hasher`] that hashes on a thread of its own once the input is
/// large, so that the thread feeding it (a writer, a parser) does not pay
/// for the hash: the bytes are copied into batches of [`BATCH`](Self::BATCH)
/// bytes that a helper thread hashes while the feeder moves on, or, fed
/// by [`update_owned`](Self::update_owned), handed over in the feeder's
/// own buffers without a copy. The digest is the same as a [`Hasher`]'s
/// over the same bytes.
///
/// The first [`INLINE`](Self::INLINE) bytes are hashed on the caller's
/// thread, so small inputs start no thread; on a machine with one CPU, or
/// when no thread can be started, everything is hashed inline. At most
/// [`QUEUE`](Self::QUEUE) batches wait for the helper: a feeder faster than
/// the hash waits for it rather than buffering without bound.
///
/// A panic of the helper thread is resumed on the caller's thread.
#[derive(Debug)]
pub struct ThreadedHasher {
    algorithm: Algorithm,
    inline: Option<Hasher>,
    fed: u64,
    helper: Option<HashHelper>,
    batch: Vec<u8>,
    /// Bytes copied into batches so far (the cost `update_owned` avoids).
    copied: u64,
}

/// What the helper thread of a [`ThreadedHasher`] is sent.
enum HashJob {
    /// Bytes to hash; the buffer comes back to be refilled.
    Data(Vec<u8>),
    /// A copy of the hash state so far, sent back.
    Snapshot(std::sync::mpsc::SyncSender<Hasher>),
}

#[derive(Debug)]
struct HashHelper {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<Hasher>,
}

impl fmt::Debug for HashJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashJob::Data(d) => write!(f, "Data({} bytes)", d.len()),
            HashJob::Snapshot(_) => f.write_str("Snapshot"),
        }
    }
}

impl ThreadedHasher {
    /// Bytes per batch handed to the helper thread.
    pub const BATCH: usize = 256 * 1024;
    /// Bytes hashed on the caller's thread before a helper is started.
    pub const INLINE: u64 = 1 << 20;
    /// Batches that may wait for the helper.
    pub const QUEUE: usize = 4;

    /// A hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        Self::from_hasher(algorithm.hasher())
    }

    /// Continues `hasher` (which may already have hashed some bytes).
    pub fn from_hasher(hasher: Hasher) -> Self {
        ThreadedHasher {
            algorithm: hasher.algorithm(),
            inline: Some(hasher),
            fed: 0,
            helper: None,
            batch: Vec::new(),
            copied: 0,
        }
    }

    /// The algorithm of this hasher.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Bytes copied into batches for the helper thread so far: those fed
    /// by [`update`](Self::update) once the helper hashes; not those
    /// hashed inline nor those handed over by
    /// [`update_owned`](Self::update_owned).
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// Feeds bytes to the hash.
    pub fn update(&mut self, mut data: &[u8]) {
        if let Some(h) = self.inline_for(data.len()) {
            h.update(data);
            return;
        }
        self.copied += data.len() as u64;
        while !data.is_empty() {
            if self.batch.capacity() == 0 {
                self.batch = match self.take_spare() {
                    Some(mut b) => {
                        b.clear();
                        b
                    }
                    None => Vec::with_capacity(Self::BATCH),
                };
            }
            let room = Self::BATCH - self.batch.len();
            let k = room.min(data.len());
            self.batch.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.batch.len() == Self::BATCH {
                self.send_batch();
            }
        }
    }

    /// Feeds the bytes of `data` to the hash, as [`update`](Self::update)
    /// does, but hands the buffer itself to the helper thread instead of
    /// copying it into a batch (hashed inline, like the first
    /// [`INLINE`](Self::INLINE) bytes, it is only read). Returns a buffer
    /// free for reuse, when there is one: `data` itself once hashed
    /// inline, else one the helper has finished with, so a feeder that
    /// recycles what comes back keeps a bounded number of buffers in
    /// circulation (at most [`QUEUE`](Self::QUEUE) wait for the helper).
    /// A buffer comes back as it was fed, its length and bytes kept (a
    /// feeder refilling it in place need not zero it again).
    pub fn update_owned(&mut self, data: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(h) = self.inline_for(data.len()) {
            h.update(&data);
            return Some(data);
        }
        // Bytes fed by `update` before these go first.
        self.send_batch();
        self.send(data).or_else(|| self.take_spare())
    }

    /// Counts `len` more bytes fed and gives the inline hasher when they
    /// are to be hashed on the caller's thread: within the first
    /// [`INLINE`](Self::INLINE) bytes, or when no helper can be started.
    fn inline_for(&mut self, len: usize) -> Option<&mut Hasher> {
        self.fed += len as u64;
        let h = self.inline.as_mut()?;
        if self.fed <= Self::INLINE || !Self::start(h, &mut self.helper) {
            return self.inline.as_mut();
        }
        self.inline = None;
        None
    }

    /// Starts the helper with the state of `h`; false when there is a
    /// single CPU or no thread could be started.
    fn start(h: &Hasher, helper: &mut Option<HashHelper>) -> bool {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            return false;
        }
        let (jobs, rx) = std::sync::mpsc::sync_channel::<HashJob>(Self::QUEUE);
        let (give_back, spare) = std::sync::mpsc::channel();
        let mut state = h.clone();
        let thread = std::thread::Builder::new()
            .name("hash".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        HashJob::Data(d) => {
                            state.update(&d);
                            // The feeder may be gone; the buffer drops then.
                            let _ = give_back.send(d);
                        }
                        HashJob::Snapshot(reply) => {
                            let _ = reply.send(state.clone());
                        }
                    }
                }
                state
            });
        match thread {
            Ok(thread) => {
                *helper = Some(HashHelper {
                    jobs,
                    spare,
                    thread,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// An empty buffer the helper gave back, if one is waiting.
    fn take_spare(&mut self) -> Option<Vec<u8>> {
        self.helper.as_ref().and_then(|h| h.spare.try_recv().ok())
    }

    /// Hands the pending batch to the helper.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.send(batch);
    }

    /// Hands `data` to the helper; gives it back hashed when the helper
    /// had stopped.
    fn send(&mut self, data: Vec<u8>) -> Option<Vec<u8>> {
        let Some(helper) = &self.helper else {
            unreachable!("a threaded hasher has a helper")
        };
        let Err(std::sync::mpsc::SendError(job)) = helper.jobs.send(HashJob::Data(data)) else {
            return None;
        };
        // The helper stopped: only by a panic, which the join resumes;
        // a helper that returned instead is continued inline.
        let mut h = self.join_helper();
        let back = match job {
            HashJob::Data(d) => {
                h.update(&d);
                Some(d)
            }
            HashJob::Snapshot(_) => None,
        };
        self.inline = Some(h);
        back
    }

    /// Ends the helper and returns its state, resuming its panic.
    fn join_helper(&mut self) -> Hasher {
        let helper = self
            .helper
            .take()
            .unwrap_or_else(|| unreachable!("a threaded hasher has a helper"));
        drop(helper.jobs);
        match helper.thread.join() {
            Ok(h) => h,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The digest of the bytes fed so far, without finishing.
    pub fn digest(&mut self) -> Digest {
        self.send_batch();
        self.snapshot().finish()
    }

    /// A copy of the hash state: every batch sent so far is hashed.
    fn snapshot(&mut self) -> Hasher {
        if let Some(h) = &self.inline {
            return h.clone();
        }
        let (reply, state) = std::sync::mpsc::sync_channel(1);
        let asked = self
            .helper
            .as_ref()
            .is_some_and(|h| h.jobs.send(HashJob::Snapshot(reply)).is_ok());
        match state.recv() {
            Ok(h) if asked => h,
            // The helper stopped: only by a panic, which the join resumes;
            // a helper that returns instead is asked again inline.
            _ => {
                let h = self.join_helper();
                self.inline = Some(h.clone());
                h
            }
        }
    }

    /// Finishes the hash and returns the digest (waiting for the helper).
    pub fn finish(mut self) -> Digest {
        if let Some(h) = self.inline.take() {
            return h.finish();
        }
        self.send_batch();
        self.join_helper().finish()
    }
}

/// A writer that hashes and counts every byte written through it.
#[derive(Debug)]
pub struct DigestWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        DigestWriter {
            inner,
            hasher: algorithm.hasher(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of the bytes written so far, without finishing.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// A reference to the wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// A mutable reference to the wrapped writer. Bytes written to it
    /// directly are not hashed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the wrapped writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: algorithm.hasher(),
            read: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The digest of the bytes read so far, without finishing.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// A mutable reference to the wrapped reader. Bytes read from it
    /// directly are not hashed.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest and count of the bytes read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.read)
    }

    /// Returns the wrapped reader, the digest and the count.
    pub fn into_parts(self) -> (R, Digest, u64) {
        (self.inner, self.hasher.finish(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Content that did not match what was expected of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The content hashed to another digest.
    #[error("digest mismatch: expected {expected}, found {found}")]
    Digest {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest it had.
        found: Digest,
    },
    /// The content had another size.
    #[error("size mismatch for {digest}: expected {expected} bytes, found {found}{more}",
        more = if *.truncated { " or more" } else { "" })]
    Size {
        /// The digest of the content.
        digest: Digest,
        /// The size it was supposed to have.
        expected: u64,
        /// The size it had (when `truncated`, at least this).
        found: u64,
        /// Reading stopped early because the content was already too long.
        truncated: bool,
    },
}

impl Classify for VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::Digest { .. } => ErrorKind::DigestMismatch,
            VerifyError::Size { .. } => ErrorKind::SizeMismatch,
        }
    }
}

impl From<VerifyError> for io::Error {
    fn from(e: VerifyError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Checks a finished hash against expectations.
///
/// # Errors
/// [`VerifyError`] naming expected and found values.
pub fn verify(
    expected: &Digest,
    expected_size: Option<u64>,
    found: &Digest,
    found_size: u64,
) -> Result<(), VerifyError> {
    if let Some(size) = expected_size {
        if size != found_size {
            return Err(VerifyError::Size {
                digest: expected.clone(),
                expected: size,
                found: found_size,
                truncated: false,
            });
        }
    }
    if expected != found {
        return Err(VerifyError::Digest {
            expected: expected.clone(),
            found: found.clone(),
        });
    }
    Ok(())
}

/// A reader that checks size and digest of a stream as it is read.
///
/// The read that reaches the end of the stream fails with an
/// [`io::Error`] of kind `InvalidData` wrapping a [`VerifyError`] when the
/// content is not the expected one; reading more than the expected size
/// fails at once, without reading the rest. Only a reader that returned
/// `Ok(0)` has delivered verified content.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Digest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, expecting `digest` and, when given, `size` bytes.
    pub fn new(inner: R, digest: Digest, size: Option<u64>) -> Self {
        let algorithm = digest.algorithm();
        VerifyingReader {
            inner: HashingReader::new(inner, algorithm),
            expected: digest,
            expected_size: size,
            verified: false,
        }
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Whether the whole stream has been read and verified.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }

    /// Returns the wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner.inner
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        let read = self.inner.bytes_read();
        if let Some(size) = self.expected_size {
            if read > size {
                return Err(VerifyError::Size {
                    digest: self.expected.clone(),
                    expected: size,
                    found: read,
                    truncated: true,
                }
                .into());
            }
        }
        if n == 0 {
            let found = self.inner.digest();
            verify(&self.expected, self.expected_size, &found, read)?;
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A threaded hasher gives a plain hasher's digest for any split of
    /// the input into updates, copied or handed over as owned buffers in
    /// any mix, with snapshots taken anywhere, on either side of the
    /// inline threshold and of batch boundaries.
    #[test]
    fn threaded_hasher_matches_plain() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let total = ThreadedHasher::INLINE as usize + 5 * ThreadedHasher::BATCH + 123;
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 1000) as u8).collect();
        for round in 0..24 {
            let algorithm = if round % 3 == 2 {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            let len = match round {
                0 => 0,
                1 => ThreadedHasher::INLINE as usize,
                2 => ThreadedHasher::INLINE as usize + 1,
                3 => ThreadedHasher::INLINE as usize + ThreadedHasher::BATCH,
                _ => (next() % total as u64) as usize,
            };
            let mut plain = algorithm.hasher();
            let mut threaded = ThreadedHasher::new(algorithm);
            let mut pos = 0;
            while pos < len {
                let step = match next() % 4 {
                    0 => 1,
                    1 => (next() % 4096) as usize,
                    2 => ThreadedHasher::BATCH,
                    _ => (next() % (3 * ThreadedHasher::BATCH as u64)) as usize,
                };
                let end = (pos + step).min(len);
                plain.update(&data[pos..end]);
                if next() % 3 == 0 {
                    // Handed over; what comes back is free to overwrite.
                    if let Some(mut back) = threaded.update_owned(data[pos..end].to_vec()) {
                        back.fill(0xa5);
                    }
                } else {
                    threaded.update(&data[pos..end]);
                }
                pos = end;
                if next() % 16 == 0 {
                    assert_eq!(
                        threaded.digest(),
                        plain.clone().finish(),
                        "round {round} at {pos}"
                    );
                }
            }
            assert_eq!(threaded.algorithm(), algorithm);
            assert_eq!(
                threaded.finish(),
                plain.finish(),
                "round {round}, {len} bytes"
            );
        }
    }

    const ABC256: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_answers() {
        assert_eq!(Digest::sha256(b"abc").to_string(), ABC256);
        assert_eq!(
            Digest::sha256(b"").hex(),
            EMPTY_SHA256_HEX,
            "sha256 of nothing"
        );
        assert_eq!(
            Digest::of_bytes(Algorithm::Sha512, b"abc").to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn parse_errors() {
        let hex64 = "a".repeat(64);
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm { algorithm }) if algorithm == "md5"
        ));
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::MissingSeparator { .. })
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadLength {
                expected: 64,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            format!("sha512:{hex64}").parse::<Digest>(),
            Err(DigestError::BadLength {
                expected: 128,
                found: 64,
                ..
            })
        ));
        assert!(matches!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(DigestError::UpperCase {
                found: 'A',
                offset: 0
            })
        ));
        assert!(matches!(
            format!("sha256:{}/", &hex64[..63]).parse::<Digest>(),
            Err(DigestError::BadHex {
                found: '/',
                offset: 63
            })
        ));
        assert!(matches!(
            format!("sha256:../{}", &hex64[..61]).parse::<Digest>(),
            Err(DigestError::BadHex {
                found: '.',
                offset: 0
            })
        ));
        assert_eq!(
            "md5:abc".parse::<Digest>().map_err(|e| e.kind()),
            Err(ErrorKind::Unsupported)
        );
        let d: Digest = ABC256.parse().expect("valid");
        assert_eq!(d.to_string(), ABC256);
        assert_eq!(d.short(), "ba7816bf8f01");
    }

    #[test]
    fn oci_spec_round_trip() {
        let d: Digest = ABC256.parse().expect("valid");
        let o: oci_spec::image::Digest = (&d).into();
        assert_eq!(o.to_string(), ABC256);
        assert_eq!(Digest::try_from(&o).expect("back"), d);
        let md5: oci_spec::image::Digest = "md5:abc".parse().expect("oci-spec is lax");
        assert!(Digest::try_from(&md5).is_err());
    }

    #[test]
    fn verifying_reader_accepts_and_rejects() {
        let d = Digest::sha256(b"abc");
        let mut out = Vec::new();
        let mut r = VerifyingReader::new(&b"abc"[..], d.clone(), Some(3));
        io::copy(&mut r, &mut out).expect("verified");
        assert!(r.is_verified());

        let mut r = VerifyingReader::new(&b"abd"[..], d.clone(), Some(3));
        let err = io::copy(&mut r, &mut io::sink()).expect_err("wrong content");
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<VerifyError>())
            .expect("a VerifyError");
        assert!(matches!(inner, VerifyError::Digest { expected, found }
            if *expected == d && *found == Digest::sha256(b"abd")));
        assert_eq!(Classify::kind(&err), ErrorKind::DigestMismatch);

        let mut r = VerifyingReader::new(&b"abcd"[..], d.clone(), Some(3));
        let err = io::copy(&mut r, &mut io::sink()).expect_err("too long");
        assert_eq!(Classify::kind(&err), ErrorKind::SizeMismatch);

        let mut r = VerifyingReader::new(&b"ab"[..], d, Some(3));
        let err = io::copy(&mut r, &mut io::sink()).expect_err("too short");
        assert_eq!(Classify::kind(&err), ErrorKind::SizeMismatch);
    }

    #[test]
    fn writer_and_reader_hash_the_same() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = DigestWriter::new(Vec::new(), Algorithm::Sha256);
        for chunk in data.chunks(777) {
            w.write_all(chunk).expect("write");
        }
        let (out, d, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, Digest::sha256(&data));
        let (d2, n2) = Digest::of_reader(Algorithm::Sha256, &data[..]).expect("read");
        assert_eq!((d2, n2), (d, n));
    }
}
