//! Compression of layer and archive streams: gzip and zstd (and plain),
//! sniffed or declared; the one codec of the family, behind image-core's
//! `codec` feature so that a user of digests and documents alone does not
//! build flate2 and libzstd.
//!
//! Decoding wraps any [`Read`] ([`decoder`]; [`DecompressWorker`] inflates
//! on a second thread while the caller hashes and applies); encoding wraps
//! any [`Write`] ([`Encoder`]). gzip goes through flate2 with the zlib-rs
//! backend, deflating 128 KiB blocks on [`Encoding::threads`] workers as
//! pigz does ([`ParallelGzip`]: one ordinary gzip member, whose bytes do not
//! depend on the thread count); zstd through libzstd with its
//! multi-threaded compressor. [`Compression::sniff`] recognises what a
//! stream holds from its first bytes; [`sniff_unsupported`] names the
//! compressions that are recognised but not decoded (xz, bzip2).
//!
//! ```
//! use std::io::{Read, Write};
//! use image_core::codec::{decoder, Encoder, Encoding};
//! use image_core::Compression;
//!
//! let mut e = Encoder::new(Vec::new(), Encoding::new(Compression::Zstd))?;
//! e.write_all(b"a layer tar")?;
//! let blob = e.finish()?;
//! assert_eq!(Compression::sniff(&blob), Compression::Zstd);
//!
//! let mut back = Vec::new();
//! decoder(Compression::sniff(&blob), &blob[..])?.read_to_end(&mut back)?;
//! assert_eq!(back, b"a layer tar");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::digest::ThreadedHasher;
use crate::{Classify, Compression, ErrorKind};

/// How a layer is compressed when packing, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// The compression algorithm.
    pub compression: Compression,
    /// The level; `None` for the algorithm's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Worker threads (0 = all on the caller's thread). gzip's bytes are
    /// the same whatever the count; zstd's are the same for any count above
    /// 0 (libzstd's single-threaded mode writes other bytes).
    pub threads: u32,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            compression: Compression::Gzip,
            level: None,
            threads: default_threads(),
        }
    }
}

impl Encoding {
    /// An encoding with the algorithm's default level.
    pub fn new(compression: Compression) -> Self {
        Encoding {
            compression,
            ..Encoding::default()
        }
    }

    /// The same encoding at another level.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }
}

fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

/// A compression failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The level is outside what the algorithm accepts.
    #[error("{compression} level {level} is out of range ({min}..={max})")]
    BadLevel {
        /// The algorithm.
        compression: &'static str,
        /// The level asked for.
        level: i32,
        /// The lowest level.
        min: i32,
        /// The highest level.
        max: i32,
    },
    /// The compressor failed to start or to write.
    #[error("{compression} compressor")]
    Io {
        /// The algorithm.
        compression: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Classify for CompressError {
    fn kind(&self) -> ErrorKind {
        match self {
            CompressError::BadLevel { .. } => ErrorKind::InvalidInput,
            CompressError::Io { source, .. } => Classify::kind(source),
        }
    }
}

/// Compressed bytes buffered ahead of a gzip decoder.
const GZIP_READ_BUFFER: usize = 256 * 1024;

/// A decompressing reader over `R`, made by [`decoder`]: the plain bytes of
/// a gzip (every member), zstd (every frame) or uncompressed stream. It is
/// `Send` when `R` is.
pub struct Decoder<R: Read>(DecoderKind<R>);

enum DecoderKind<R: Read> {
    Plain(R),
    // Boxed: the gzip state is several times the others' size.
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.0 {
            DecoderKind::Plain(_) => "none",
            DecoderKind::Gzip(_) => "gzip",
            DecoderKind::Zstd(_) => "zstd",
        };
        write!(f, "Decoder({name})")
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            DecoderKind::Plain(r) => r.read(buf),
            DecoderKind::Gzip(d) => d.read(buf),
            DecoderKind::Zstd(d) => d.read(buf),
        }
    }
}

/// A decoder over `inner` for `compression`.
///
/// # Errors
/// When the zstd decoder cannot be created.
pub fn decoder<R: Read>(compression: Compression, inner: R) -> io::Result<Decoder<R>> {
    Ok(Decoder(match compression {
        Compression::None => DecoderKind::Plain(inner),
        Compression::Gzip => DecoderKind::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(GZIP_READ_BUFFER, inner),
        ))),
        Compression::Zstd => DecoderKind::Zstd(zstd::stream::read::Decoder::new(inner)?),
    }))
}

/// The name of a compression recognised from the first bytes of a stream
/// (at least 6) that this codec does not decode: `"xz"` or `"bzip2"`. A
/// caller refuses such a stream by name ("decompress it first") rather than
/// read it as a tar.
pub fn sniff_unsupported(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some("xz")
    } else if head.starts_with(b"BZh") && head.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        Some("bzip2")
    } else {
        None
    }
}

/// A compressing writer; call [`Encoder::finish`] to write the trailer.
pub enum Encoder<W: Write> {
    /// No compression.
    None(W),
    /// gzip, deflated in blocks on worker threads.
    Gzip(ParallelGzip<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Encoder::None(_) => "none",
            Encoder::Gzip(_) => "gzip",
            Encoder::Zstd(_) => "zstd",
        };
        write!(f, "Encoder({name})")
    }
}

impl<W: Write> Encoder<W> {
    /// Starts compressing into `inner`.
    ///
    /// # Errors
    /// [`CompressError::BadLevel`] for a level the algorithm does not have;
    /// [`CompressError::Io`] when the zstd context cannot be set up.
    pub fn new(inner: W, encoding: Encoding) -> Result<Self, CompressError> {
        Ok(match encoding.compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip => {
                let level = encoding.level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(CompressError::BadLevel {
                        compression: "gzip",
                        level,
                        min: 0,
                        max: 9,
                    });
                }
                Encoder::Gzip(ParallelGzip::new(
                    inner,
                    level.unsigned_abs(),
                    encoding.threads,
                )?)
            }
            Compression::Zstd => {
                let level = encoding.level.unwrap_or(3);
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(CompressError::BadLevel {
                        compression: "zstd",
                        level,
                        min: *range.start(),
                        max: *range.end(),
                    });
                }
                let zerr = |source| CompressError::Io {
                    compression: "zstd",
                    source,
                };
                let mut enc = zstd::stream::write::Encoder::new(inner, level).map_err(zerr)?;
                if encoding.threads > 0 {
                    enc.multithread(encoding.threads).map_err(zerr)?;
                }
                enc.include_checksum(true).map_err(zerr)?;
                Encoder::Zstd(enc)
            }
        })
    }

    /// Writes the trailer and returns the inner writer.
    ///
    /// # Errors
    /// Any write error of the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

// ---- gzip in parallel blocks -----------------------------------------------------

/// Uncompressed bytes per deflate block (pigz's default).
const BLOCK: usize = 128 * 1024;
/// Deflate's window: each block is primed with this much of the input
/// before it, so splitting costs almost no compression.
const WINDOW: usize = 32 * 1024;

/// One block for a worker: its place in the stream, the input before it
/// (at most [`WINDOW`] bytes) and its own input.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

/// A compressed block (or the failure to compress it), with the job's input
/// buffer handed back for reuse.
struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    data: Vec<u8>,
}

/// Compresses one block as raw deflate, primed with `dict`: a sync flush
/// ends a block in the middle of the stream (byte-aligned, not final), the
/// last block finishes the stream. Appends to `out`.
///
/// Each block gets a new compressor: a reset one (zlib-rs 0.6) did not
/// always give the bytes of a new one, which made the output depend on
/// which blocks a worker had compressed before (zlib-ng, which zlib-rs
/// ports, had the same bug: zlib-ng/zlib-ng#2100). A new one costs nothing
/// measurable next to deflating 128 KiB.
fn deflate_block(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Sync
    };
    out.reserve(data.len() + data.len() / 8 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        let status = c
            .compress_vec(&data[consumed.min(data.len())..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() == data.len() as u64;
        // Done: the stream ended, or (sync flush) all input is in and the
        // compressor stopped with room to spare, so the flush is complete.
        if status == flate2::Status::StreamEnd || (!last && all_in && out.len() < out.capacity()) {
            return Ok(());
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

fn gzip_worker(level: u32, jobs: &std::sync::Mutex<Receiver<Job>>, done: &Sender<Done>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut out = Vec::new();
        // A panic would lose the block and leave the writer waiting for
        // it: report it as this block's error instead.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deflate_block(level, &job.dict, &job.data, job.last, &mut out)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("the gzip compressor panicked")))
        .map(|()| out);
        let msg = Done {
            seq: job.seq,
            out: r,
            data: job.data,
        };
        if done.send(msg).is_err() {
            return;
        }
    }
}

/// Worker threads and their queues.
struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// The most blocks handed out and not yet written.
    max_in_flight: usize,
}

/// A gzip encoder that deflates fixed-size blocks of its input on several
/// threads at once, as pigz does: each block is raw deflate primed with the
/// 32 KiB of input before it and ends on a byte boundary (a sync flush), so
/// the blocks join into one ordinary gzip member that any gunzip reads.
/// The bytes depend only on the input and the level: not on the number of
/// threads (none: all on the caller's thread) nor on how the input is split
/// into writes. A flush ends the current block early, as gzip's sync flush
/// does. The CRC is computed on the caller's thread; at most a few blocks
/// per thread are in flight.
pub struct ParallelGzip<W: Write> {
    /// The output; taken by `finish`.
    inner: Option<W>,
    level: u32,
    header: bool,
    /// Input of the block being filled.
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes of input handed out so far.
    window: Vec<u8>,
    crc: flate2::Crc,
    /// Workers; none: blocks are compressed on the caller's thread.
    pool: Option<Pool>,
    /// Blocks handed out, and written.
    sent: u64,
    written: u64,
    /// Compressed blocks that came back ahead of their turn.
    ready: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Input buffers back from the workers.
    spare: Vec<Vec<u8>>,
    out: Vec<u8>,
}

impl<W: Write> ParallelGzip<W> {
    /// A gzip stream at `level` (0-9) into `inner`, deflated on `threads`
    /// worker threads (0: on the caller's thread).
    ///
    /// # Errors
    /// [`CompressError::Io`] when a thread cannot be started.
    pub fn new(inner: W, level: u32, threads: u32) -> Result<Self, CompressError> {
        let pool = if threads == 0 {
            None
        } else {
            let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let jobs_rx = std::sync::Arc::new(std::sync::Mutex::new(jobs_rx));
            let mut handles = Vec::new();
            for _ in 0..threads {
                let rx = std::sync::Arc::clone(&jobs_rx);
                let tx = done_tx.clone();
                let h = std::thread::Builder::new()
                    .name("gzip".into())
                    .spawn(move || gzip_worker(level, &rx, &tx))
                    .map_err(|source| CompressError::Io {
                        compression: "gzip",
                        source,
                    })?;
                handles.push(h);
            }
            Some(Pool {
                jobs: Some(jobs_tx),
                done: done_rx,
                threads: handles,
                max_in_flight: 2 * threads as usize + 1,
            })
        };
        Ok(ParallelGzip {
            inner: Some(inner),
            level,
            header: false,
            block: Vec::with_capacity(BLOCK),
            window: Vec::with_capacity(WINDOW),
            crc: flate2::Crc::new(),
            pool,
            sent: 0,
            written: 0,
            ready: std::collections::BTreeMap::new(),
            spare: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Writes compressed bytes to the inner writer (a field, so that a
    /// buffer of `self` can be written).
    fn emit(inner: &mut Option<W>, bytes: &[u8]) -> io::Result<()> {
        match inner {
            Some(w) => w.write_all(bytes),
            None => Err(io::Error::other("gzip stream already finished")),
        }
    }

    /// The gzip header: no name, mtime 0, OS "unknown" (deterministic), and
    /// the extra flags gzip sets for the fastest and best levels.
    fn write_header(&mut self) -> io::Result<()> {
        if !self.header {
            let xfl = match self.level {
                9.. => 2,
                0 | 1 => 4,
                _ => 0,
            };
            Self::emit(&mut self.inner, &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header = true;
        }
        Ok(())
    }

    /// Hands the current block out (or compresses it here without a pool).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let fresh = self.spare.pop().map_or_else(
            || Vec::with_capacity(BLOCK),
            |mut b| {
                b.clear();
                b
            },
        );
        let data = std::mem::replace(&mut self.block, fresh);
        let dict = self.window.clone();
        // The window after this block: its last WINDOW bytes, topped up
        // from the window before it when the block is shorter.
        if data.len() >= WINDOW {
            self.window.clear();
            self.window.extend_from_slice(&data[data.len() - WINDOW..]);
        } else {
            let keep = WINDOW - data.len();
            let drop = self.window.len().saturating_sub(keep);
            self.window.drain(..drop);
            self.window.extend_from_slice(&data);
        }
        let seq = self.sent;
        self.sent += 1;
        if self.pool.is_none() {
            self.out.clear();
            deflate_block(self.level, &dict, &data, last, &mut self.out)?;
            Self::emit(&mut self.inner, &self.out)?;
            self.written += 1;
            self.spare.push(data);
            return Ok(());
        }
        let job = Job {
            seq,
            dict,
            data,
            last,
        };
        let sent = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            return Err(io::Error::other("gzip workers stopped"));
        }
        let max = self.pool.as_ref().map_or(1, |p| p.max_in_flight);
        while self.sent - self.written >= max as u64 {
            self.collect(true)?;
        }
        self.collect(false)
    }

    /// Takes finished blocks from the workers (waiting for one when `wait`)
    /// and writes out those whose turn has come.
    fn collect(&mut self, wait: bool) -> io::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let mut first = wait;
        loop {
            let msg = if first {
                first = false;
                pool.done
                    .recv()
                    .map_err(|_| io::Error::other("gzip workers stopped"))?
            } else {
                match pool.done.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            if self.spare.len() < 4 {
                self.spare.push(msg.data);
            }
            self.ready.insert(msg.seq, msg.out?);
        }
        while let Some(out) = self.ready.remove(&self.written) {
            Self::emit(&mut self.inner, &out)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Waits for every block handed out and writes them.
    fn drain(&mut self) -> io::Result<()> {
        while self.written < self.sent {
            self.collect(true)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    ///
    /// # Errors
    /// Write errors of the inner writer, or a compressor's.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        self.submit(true)?;
        self.drain()?;
        let crc = self.crc.sum();
        let size = self.crc.amount();
        Self::emit(&mut self.inner, &crc.to_le_bytes())?;
        Self::emit(&mut self.inner, &size.to_le_bytes())?;
        self.stop();
        self.inner
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    /// Stops and joins the workers.
    fn stop(&mut self) {
        if let Some(pool) = &mut self.pool {
            pool.jobs = None;
            for h in pool.threads.drain(..) {
                let _ = h.join();
            }
        }
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_header()?;
        self.crc.update(buf);
        let mut rest = buf;
        while !rest.is_empty() {
            let n = rest.len().min(BLOCK - self.block.len());
            self.block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.block.len() == BLOCK {
                self.submit(false)?;
            }
        }
        Ok(buf.len())
    }

    /// Ends the current block (a sync flush), writes out every block handed
    /// out so far and flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.write_header()?;
        if !self.block.is_empty() {
            self.submit(false)?;
        }
        self.drain()?;
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

// ---- decoding on a worker thread ------------------------------------------------

/// Compressed bytes read from the source at a time.
const IN_CHUNK: usize = 128 * 1024;
/// Compressed chunks handed to the worker and not yet taken.
const IN_FLIGHT: usize = 4;
/// Decompressed chunks the worker may have ready (bounds a bomb's lead).
const OUT_QUEUE: usize = 4;
/// The most decompressed bytes in one chunk.
const OUT_CHUNK: usize = 256 * 1024;

/// What the caller's thread sends the decompressor: compressed bytes, or
/// the source's error at that point of the stream (the end is the sender
/// going away).
enum Compressed {
    Data(Vec<u8>),
    Failed(io::Error),
}

/// What the decompressor sends back.
enum Decompressed {
    Data(Vec<u8>),
    /// One compressed chunk was taken off the queue; the buffer of the
    /// one before it comes back for reuse.
    Took(Vec<u8>),
    End,
    Failed(io::Error),
}

/// The decompressor's input: chunks from the caller's thread, in order.
struct ChunkReader {
    rx: Receiver<Compressed>,
    tx: SyncSender<Decompressed>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

/// The decompressor reads the chunks where they are ([`BufRead`]): no copy
/// into a buffer of its own.
impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Compressed::Data(d)) => {
                    let used = std::mem::replace(&mut self.cur, d);
                    let _ = self.tx.send(Decompressed::Took(used));
                    self.pos = 0;
                }
                Ok(Compressed::Failed(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.cur.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let chunk = self.fill_buf()?;
            let n = buf.len().min(chunk.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// A decoder for `compression` over a reader that is buffered already:
/// [`decoder`] without a [`BufReader`] (and its copy) of its own.
fn buffered_decoder<'a, B: BufRead + 'a>(
    compression: Compression,
    inner: B,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(inner)?),
    })
}

fn decompress_worker(
    compression: Compression,
    rx: Receiver<Compressed>,
    tx: SyncSender<Decompressed>,
    recycled: Receiver<Vec<u8>>,
    allocated: Arc<AtomicUsize>,
) {
    let input = ChunkReader {
        rx,
        tx: tx.clone(),
        cur: Vec::new(),
        pos: 0,
        done: false,
    };
    let mut dec = match buffered_decoder(compression, input) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Decompressed::Failed(e));
            return;
        }
    };
    loop {
        // Output buffers the reader is done with come back: no allocation
        // per chunk once a few are in circulation, and no zeroing either,
        // since each is filled whole (a buffer comes back at the length it
        // was sent with).
        let mut buf = recycled.try_recv().unwrap_or_else(|_| {
            allocated.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        });
        buf.resize(OUT_CHUNK, 0);
        let mut n = 0;
        let mut last = None;
        while n < buf.len() {
            match dec.read(&mut buf[n..]) {
                Ok(0) => {
                    last = Some(Decompressed::End);
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    last = Some(Decompressed::Failed(e));
                    break;
                }
            }
        }
        // The bytes before the end or the error go first; the reader went
        // away (an error, or the end): stop.
        buf.truncate(n);
        if n > 0 && tx.send(Decompressed::Data(buf)).is_err() {
            return;
        }
        if let Some(last) = last {
            let _ = tx.send(last);
            return;
        }
    }
}

/// A decoder that decompresses on a worker thread while the caller's
/// thread reads the source (hashing it on the way) and consumes the
/// output: the same bytes and the same errors, at the same points of the
/// stream, as [`decoder`] over the same source. The source need not be
/// `Send`: it is read on the caller's thread and handed over in chunks. At
/// most a few chunks are in flight either way, so a decompression bomb
/// gets no further ahead of the reader than that.
pub struct ThreadedDecoder<'a> {
    source: &'a mut dyn Read,
    head: Option<Vec<u8>>,
    to_worker: Option<Sender<Compressed>>,
    from_worker: Receiver<Decompressed>,
    in_flight: usize,
    source_done: bool,
    cur: Vec<u8>,
    pos: usize,
    finished: bool,
    /// Output buffers going back to the worker.
    recycle: Sender<Vec<u8>>,
    /// Input buffers the worker is done with.
    spare: Vec<Vec<u8>>,
    /// Hashes every byte read ([`DecompressWorker::hashing_decoder`]).
    hasher: Option<ThreadedHasher>,
    /// Output buffers the worker has allocated (the rest were recycled).
    allocated: Arc<AtomicUsize>,
}

/// A started decompressor thread, waiting for its source.
pub struct DecompressWorker {
    to_worker: Sender<Compressed>,
    from_worker: Receiver<Decompressed>,
    recycle: Sender<Vec<u8>>,
    allocated: Arc<AtomicUsize>,
}

impl DecompressWorker {
    /// Starts a decompressor for `compression`; `None` when no thread can
    /// be started.
    pub fn start(compression: Compression) -> Option<Self> {
        let (to_worker, worker_rx) = mpsc::channel();
        let (worker_tx, from_worker) = mpsc::sync_channel(OUT_QUEUE);
        let (recycle, recycled) = mpsc::channel();
        let allocated = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&allocated);
        std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn(move || decompress_worker(compression, worker_rx, worker_tx, recycled, counted))
            .ok()?;
        Some(DecompressWorker {
            to_worker,
            from_worker,
            recycle,
            allocated,
        })
    }

    /// Decompresses `head` then the rest of `source`.
    pub fn decoder(self, head: Vec<u8>, source: &mut dyn Read) -> ThreadedDecoder<'_> {
        self.decoder_with(head, source, None)
    }

    /// Decompresses `head` then the rest of `source`, as
    /// [`decoder`](Self::decoder) does, and feeds `hasher` exactly the
    /// bytes read from the decoder: each output buffer, once read whole,
    /// is handed to the hasher as it is (no copy of the bytes; the buffers
    /// come back to the decompressor, so a bounded number circulate), and
    /// what was read of the last one when the hasher is taken back
    /// ([`ThreadedDecoder::take_hasher`]).
    pub fn hashing_decoder(
        self,
        head: Vec<u8>,
        source: &mut dyn Read,
        hasher: ThreadedHasher,
    ) -> ThreadedDecoder<'_> {
        self.decoder_with(head, source, Some(hasher))
    }

    fn decoder_with(
        self,
        head: Vec<u8>,
        source: &mut dyn Read,
        hasher: Option<ThreadedHasher>,
    ) -> ThreadedDecoder<'_> {
        ThreadedDecoder {
            source,
            head: Some(head),
            to_worker: Some(self.to_worker),
            from_worker: self.from_worker,
            in_flight: 0,
            source_done: false,
            cur: Vec::new(),
            pos: 0,
            finished: false,
            recycle: self.recycle,
            spare: Vec::new(),
            hasher,
            allocated: self.allocated,
        }
    }
}

impl ThreadedDecoder<'_> {
    /// The hasher of a [`DecompressWorker::hashing_decoder`], having been
    /// fed every byte read so far and no other; `None` for a plain
    /// decoder, or once taken. Bytes read after it is taken are not hashed.
    pub fn take_hasher(&mut self) -> Option<ThreadedHasher> {
        let mut hasher = self.hasher.take()?;
        if self.pos == self.cur.len() {
            let read = std::mem::take(&mut self.cur);
            self.pos = 0;
            self.give_back(hasher.update_owned(read));
        } else {
            hasher.update(&self.cur[..self.pos]);
            // Those bytes are hashed; the rest of the buffer is still to read.
            self.cur.drain(..self.pos);
            self.pos = 0;
        }
        Some(hasher)
    }

    /// Output buffers the decompressor has allocated so far; every other
    /// chunk it gave reused a buffer that came back (from the reader, or
    /// from the hasher of a [`DecompressWorker::hashing_decoder`]), so the
    /// count stays small whatever the stream's length.
    pub fn buffers_allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Sends an output buffer back to the worker for reuse.
    fn give_back(&mut self, used: Option<Vec<u8>>) {
        if let Some(used) = used.filter(|u| u.capacity() > 0) {
            // The worker may be gone: then the buffer just drops.
            let _ = self.recycle.send(used);
        }
    }

    /// Reads one chunk of the source (or its end, or its error) and hands
    /// it to the worker.
    fn feed(&mut self) {
        let chunk = match self.head.take() {
            Some(h) => Compressed::Data(h),
            None => {
                let mut b = self.spare.pop().unwrap_or_default();
                b.resize(IN_CHUNK, 0);
                loop {
                    match self.source.read(&mut b) {
                        Ok(0) => {
                            self.source_done = true;
                            self.to_worker = None;
                            return;
                        }
                        Ok(n) => {
                            b.truncate(n);
                            break Compressed::Data(b);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            self.source_done = true;
                            break Compressed::Failed(e);
                        }
                    }
                }
            }
        };
        if let Some(tx) = &self.to_worker {
            if tx.send(chunk).is_ok() {
                self.in_flight += 1;
            }
        }
        if self.source_done {
            self.to_worker = None;
        }
    }
}

impl Read for ThreadedDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            let stopped = || io::Error::other("the decompressor stopped");
            let msg = if !self.source_done && self.in_flight < IN_FLIGHT {
                match self.from_worker.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => {
                        self.feed();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            } else {
                self.from_worker.recv().map_err(|_| stopped())?
            };
            match msg {
                Decompressed::Data(d) => {
                    // Read whole: hashed in place by the hasher's thread,
                    // which gives a buffer back.
                    let used = std::mem::replace(&mut self.cur, d);
                    self.pos = 0;
                    let back = match &mut self.hasher {
                        Some(h) if !used.is_empty() => h.update_owned(used),
                        _ => Some(used),
                    };
                    self.give_back(back);
                }
                Decompressed::Took(used) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    if used.capacity() >= IN_CHUNK && self.spare.len() <= IN_FLIGHT {
                        self.spare.push(used);
                    }
                }
                Decompressed::End => self.finished = true,
                Decompressed::Failed(e) => {
                    self.finished = true;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), Encoding::new(c)).expect("encoder");
            e.write_all(&data).expect("write");
            let out = e.finish().expect("finish");
            assert_eq!(Compression::sniff(&out), c);
            let mut back = Vec::new();
            decoder(c, &out[..])
                .expect("decoder")
                .read_to_end(&mut back)
                .expect("read");
            assert_eq!(back, data);
        }
    }

    fn gzip_with(data: &[u8], threads: u32, split: usize, flush_at: Option<usize>) -> Vec<u8> {
        let mut enc = Encoding::new(Compression::Gzip);
        enc.threads = threads;
        let mut e = Encoder::new(Vec::new(), enc).expect("encoder");
        for (i, c) in data.chunks(split.max(1)).enumerate() {
            e.write_all(c).expect("write");
            if flush_at == Some(i) {
                e.flush().expect("flush");
            }
        }
        e.finish().expect("finish")
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .expect("gunzip");
        back
    }

    /// Half text-like, half noise: compressible, with matches that reach
    /// back across block boundaries.
    fn sample(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| {
                if (i / 5000) % 2 == 0 {
                    b"layer tarball of a container image "[(i % 35) as usize]
                } else {
                    (i.wrapping_mul(2_654_435_761) >> (i % 23)) as u8
                }
            })
            .collect()
    }

    #[test]
    fn parallel_gzip_bytes_depend_only_on_the_input() {
        let data = sample(700_000);
        let want = gzip_with(&data, 0, data.len(), None);
        assert_eq!(gunzip(&want), data);
        for threads in [1, 2, 4] {
            for split in [7, 100_000, BLOCK, BLOCK + 1, data.len()] {
                assert_eq!(
                    gzip_with(&data, threads, split, None),
                    want,
                    "{threads} threads, writes of {split}"
                );
            }
        }
        // A flush ends a block early: the same with or without threads.
        let flushed = gzip_with(&data, 0, 70_000, Some(3));
        assert_ne!(flushed, want);
        assert_eq!(gzip_with(&data, 2, 70_000, Some(3)), flushed);
        assert_eq!(gunzip(&flushed), data);
        assert_eq!(gzip_with(&[], 2, 1, None), gzip_with(&[], 0, 1, None));
        // Longer and more varied: many blocks per worker, in any order.
        let mut long = Vec::new();
        for i in 0..24u32 {
            let part = sample(100_000 + i as usize * 7919);
            long.extend(part.iter().map(|b| b.wrapping_add((i % 3) as u8)));
        }
        let want = gzip_with(&long, 0, 65_536, None);
        assert_eq!(gzip_with(&long, 3, 10_000, None), want);
        assert_eq!(gunzip(&want), long);
        assert_eq!(gunzip(&gzip_with(&[], 2, 1, None)), b"");
    }

    #[test]
    fn parallel_gzip_round_trips_at_block_edges() {
        for len in [
            1,
            WINDOW - 1,
            WINDOW + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 17,
        ] {
            let data = sample(len);
            for level in [0, 1, 6, 9] {
                let mut enc = Encoding::new(Compression::Gzip).with_level(level);
                enc.threads = 2;
                let mut e = Encoder::new(Vec::new(), enc).expect("encoder");
                e.write_all(&data).expect("write");
                let gz = e.finish().expect("finish");
                assert_eq!(gunzip(&gz), data, "{len} bytes at level {level}");
                assert_eq!(
                    gz[8],
                    [4, 4, 0, 2][[0, 1, 6, 9].iter().position(|l| *l == level).unwrap_or(2)]
                );
            }
        }
    }

    #[test]
    fn parallel_gzip_compresses_as_well_as_one_stream() {
        // Each block is primed with the 32 KiB before it: the blocks cost a
        // few bytes each (the sync flush marker), not the matches.
        let data = sample(2_000_000);
        let blocks = gzip_with(&data, 2, data.len(), None);
        let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        one.write_all(&data).expect("write");
        let one = one.finish().expect("finish");
        assert!(
            blocks.len() as f64 <= one.len() as f64 * 1.01,
            "blocks {} vs one stream {}",
            blocks.len(),
            one.len()
        );
    }

    #[test]
    fn parallel_gzip_is_read_by_gnu_gzip_and_pigz() {
        let data = sample(1_000_000);
        let gz = gzip_with(&data, 2, 4096, None);
        for tool in ["gzip", "pigz"] {
            let child = std::process::Command::new(tool)
                .arg("-dc")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{tool} missing under CI"
                );
                eprintln!("SKIP: {tool} is not installed");
                continue;
            };
            let mut stdin = child.stdin.take().expect("stdin");
            let input = gz.clone();
            let feeder = std::thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output().expect("wait");
            feeder.join().expect("join").expect("feed");
            assert!(out.status.success(), "{tool} -dc failed");
            assert_eq!(out.stdout, data, "{tool} -dc");
        }
    }

    /// A writer that fails after some bytes.
    struct Failing(usize);
    impl Write for Failing {
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

    #[test]
    fn threaded_gzip_reports_write_errors() {
        let mut enc = Encoding::new(Compression::Gzip);
        enc.threads = 2;
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut e = Encoder::new(Failing(10), enc).expect("encoder");
        let r = e.write_all(&data).and_then(|()| e.finish().map(|_| ()));
        assert_eq!(r.expect_err("fails").to_string(), "disk full");
    }

    /// A source that fails after `ok` bytes, in short reads.
    struct Flaky<'a> {
        data: &'a [u8],
        ok: usize,
        pos: usize,
    }
    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.ok {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "source broke",
                ));
            }
            let n = buf
                .len()
                .min(777)
                .min(self.ok - self.pos)
                .min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn threaded_decoder_gives_the_same_bytes_and_errors() {
        let data: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> (i % 19)) as u8)
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), Encoding::new(c)).expect("encoder");
            e.write_all(&data).expect("write");
            let blob = e.finish().expect("finish");
            // Whole: same bytes.
            let mut src = &blob[3..];
            let mut back = Vec::new();
            DecompressWorker::start(c)
                .expect("thread")
                .decoder(blob[..3].to_vec(), &mut src)
                .read_to_end(&mut back)
                .expect("decode");
            assert!(back == data, "{c:?} round trip");
            // Truncated and corrupt: the same error kind as the plain decoder.
            for cut in [blob.len() / 2, blob.len() - 3] {
                let mut mangled = blob[..cut].to_vec();
                if cut == blob.len() / 2 {
                    mangled.extend_from_slice(&[0xff; 64]);
                }
                let plain = decoder(c, &mangled[..])
                    .expect("decoder")
                    .read_to_end(&mut Vec::new())
                    .expect_err("plain fails");
                let mut src = &mangled[..];
                let threaded = DecompressWorker::start(c)
                    .expect("thread")
                    .decoder(Vec::new(), &mut src)
                    .read_to_end(&mut Vec::new())
                    .expect_err("threaded fails");
                assert_eq!(threaded.kind(), plain.kind(), "{c:?} cut at {cut}");
            }
            // A source error comes through after the bytes before it.
            let mut flaky = Flaky {
                data: &blob,
                ok: blob.len() / 3,
                pos: 0,
            };
            let mut got = Vec::new();
            let mut d = DecompressWorker::start(c)
                .expect("thread")
                .decoder(Vec::new(), &mut flaky);
            let err = d.read_to_end(&mut got).expect_err("source error");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            assert!(!got.is_empty() && data.starts_with(&got));
        }
    }

    /// A hashing decoder's hasher has been fed exactly the bytes read from
    /// it, wherever the reading stops and however it is split; its output
    /// buffers go to the hasher as they are (no byte copied once it hashes
    /// on its helper thread) and come back, so a few circulate.
    #[test]
    fn hashing_decoder_hashes_what_is_read_without_a_copy() {
        // A linear congruential sequence: reproducible read sizes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        // Well beyond the hasher's inline start and many output chunks.
        let data = sample(8 << 20);
        for (round, c) in [Compression::Gzip, Compression::Zstd, Compression::Gzip]
            .into_iter()
            .enumerate()
        {
            let mut e = Encoder::new(Vec::new(), Encoding::new(c)).expect("encoder");
            e.write_all(&data).expect("write");
            let blob = e.finish().expect("finish");
            // Read to the end, then cut short at a random point.
            for whole in [true, false] {
                let stop = if whole {
                    data.len()
                } else {
                    (next() % data.len() as u64) as usize
                };
                let mut src = &blob[2..];
                let mut d = DecompressWorker::start(c).expect("thread").hashing_decoder(
                    blob[..2].to_vec(),
                    &mut src,
                    ThreadedHasher::new(crate::digest::Algorithm::Sha256),
                );
                let mut buf = vec![0u8; 3 * OUT_CHUNK];
                let mut got = 0;
                while got < stop {
                    let want = match next() % 3 {
                        0 => 512,
                        1 => (next() % 70_000) as usize + 1,
                        _ => buf.len(),
                    }
                    .min(stop - got);
                    let n = d.read(&mut buf[..want]).expect("read");
                    assert_eq!(&buf[..n], &data[got..got + n], "{c:?}");
                    got += n;
                }
                if whole {
                    assert_eq!(d.read(&mut buf).expect("end"), 0);
                }
                let hasher = d.take_hasher().expect("a hashing decoder");
                assert!(d.take_hasher().is_none(), "taken once");
                let allocated = d.buffers_allocated();
                if whole {
                    assert_eq!(hasher.copied(), 0, "{c:?}: no byte copied for the hash");
                    // The worker's queue, the reader's chunk, the hasher's
                    // queue and helper, a few in passing: not one per chunk.
                    let bound = OUT_QUEUE + ThreadedHasher::QUEUE + 6;
                    assert!(
                        allocated <= bound,
                        "{c:?}: {allocated} output buffers allocated for {} chunks",
                        data.len() / OUT_CHUNK
                    );
                }
                assert_eq!(
                    hasher.finish(),
                    crate::digest::Digest::sha256(&data[..stop]),
                    "{c:?} round {round}, read {stop} of {}",
                    data.len()
                );
            }
        }
    }

    /// A source that gives at most `step` bytes a read.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The worker fills each output chunk whole before it hands it over
    /// (only the last is short), however the source and the decompressor
    /// split their reads: a recycled chunk is then refilled without being
    /// zeroed again.
    #[test]
    fn threaded_decoder_hands_over_whole_chunks() {
        let data = sample(3 << 20);
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), Encoding::new(c)).expect("encoder");
            e.write_all(&data).expect("write");
            let blob = e.finish().expect("finish");
            let mut src = Dribble {
                data: &blob,
                step: 1000,
            };
            let mut d = DecompressWorker::start(c)
                .expect("thread")
                .decoder(Vec::new(), &mut src);
            let mut buf = vec![0u8; 2 * OUT_CHUNK];
            let mut sizes = Vec::new();
            loop {
                let n = d.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                sizes.push(n);
            }
            assert_eq!(sizes.iter().sum::<usize>(), data.len());
            let (_, whole) = sizes.split_last().expect("some");
            assert!(
                whole.iter().all(|n| *n == OUT_CHUNK),
                "{c:?}: chunks of {sizes:?}"
            );
        }
    }

    #[test]
    fn unsupported_compressions_are_named() {
        assert_eq!(
            sniff_unsupported(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Some("xz")
        );
        assert_eq!(sniff_unsupported(b"BZh91AY"), Some("bzip2"));
        assert_eq!(sniff_unsupported(b"BZh0"), None);
        assert_eq!(sniff_unsupported(&[0x1f, 0x8b, 8, 0, 0, 0]), None);
        assert_eq!(sniff_unsupported(b"etc/\0\0"), None);
    }

    #[test]
    fn decoder_is_send_over_a_send_source() {
        // The store hands decoders of its blob readers across threads.
        fn send<T: Send>(_: &T) {}
        let d = decoder(Compression::Gzip, io::empty()).expect("decoder");
        send(&d);
        assert_eq!(format!("{d:?}"), "Decoder(gzip)");
    }

    #[test]
    fn bad_level() {
        let e = Encoder::new(Vec::new(), Encoding::new(Compression::Gzip).with_level(12))
            .expect_err("level 12");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
