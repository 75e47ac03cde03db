//! Compression of layer streams: gzip and zstd, sniffed or declared.
//!
//! Decoding wraps any [`Read`]; encoding wraps any [`Write`]. gzip goes
//! through flate2 with the zlib-rs backend, on a worker thread when
//! [`Encoding::threads`] allows it (so deflate overlaps with reading the
//! source, hashing and writing, as `tar -c | gzip` overlaps two processes;
//! the bytes are those of the single-threaded encoder); zstd through
//! libzstd with its multi-threaded compressor.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use image_core::{Classify, Compression, ErrorKind};

/// How a layer is compressed when packing, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// The compression algorithm.
    pub compression: Compression,
    /// The level; `None` for the algorithm's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Worker threads for zstd (0 = single-threaded). gzip deflates on one
    /// worker thread when this is above 0 (same output bytes either way).
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
    #[error("{compression} compressor: {source}")]
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

/// A decoder over `inner` for `compression`.
///
/// # Errors
/// When the zstd decoder cannot be created.
pub fn decoder<'a, R: Read + 'a>(
    compression: Compression,
    inner: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

/// A compressing writer; call [`Encoder::finish`] to write the trailer.
pub enum Encoder<W: Write> {
    /// No compression.
    None(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// gzip deflated on a worker thread.
    GzipThreaded(ThreadedGzip<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Encoder::None(_) => "none",
            Encoder::Gzip(_) => "gzip",
            Encoder::GzipThreaded(_) => "gzip (threaded)",
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
                let level = level.unsigned_abs();
                if encoding.threads > 0 {
                    Encoder::GzipThreaded(ThreadedGzip::new(inner, level)?)
                } else {
                    Encoder::Gzip(gzip_encoder(inner, level))
                }
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
            Encoder::GzipThreaded(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::GzipThreaded(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::GzipThreaded(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// No file name, mtime 0, OS "unknown": deterministic.
fn gzip_encoder<W: Write>(inner: W, level: u32) -> flate2::write::GzEncoder<W> {
    flate2::GzBuilder::new()
        .operating_system(255)
        .write(inner, flate2::Compression::new(level))
}

/// Compressed bytes handed back by the worker at a time.
const CHUNK: usize = 256 * 1024;

/// What the caller's thread sends the deflate worker.
enum ToWorker {
    Data(Vec<u8>),
    Flush,
}

/// What the worker sends back.
enum FromWorker {
    Data(Vec<u8>),
    Flushed,
    Done,
    Failed(io::Error),
}

/// The worker's output: compressed bytes in chunks, sent back to the
/// caller's thread, which writes them (the inner writer need not be `Send`).
struct ChunkSink {
    tx: Sender<FromWorker>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(FromWorker::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "gzip writer gone"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn deflate_worker(level: u32, rx: Receiver<ToWorker>, tx: Sender<FromWorker>) {
    let sink = ChunkSink {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    let mut enc = gzip_encoder(sink, level);
    let run = |enc: &mut flate2::write::GzEncoder<ChunkSink>| -> io::Result<()> {
        // Ends when the caller drops its sender (finish, or drop on error).
        for msg in rx.iter() {
            match msg {
                ToWorker::Data(d) => enc.write_all(&d)?,
                ToWorker::Flush => {
                    enc.flush()?;
                    let _ = tx.send(FromWorker::Flushed);
                }
            }
        }
        enc.try_finish()?;
        enc.get_mut().send()
    };
    let last = match run(&mut enc) {
        Ok(()) => FromWorker::Done,
        Err(e) => FromWorker::Failed(e),
    };
    let _ = tx.send(last);
}

/// A gzip encoder that deflates on a worker thread while the caller's
/// thread goes on producing input and writes the compressed output to the
/// inner writer; the output is byte for byte that of the single-threaded
/// encoder at the same level given the same writes. At most a few writes
/// are in flight.
pub struct ThreadedGzip<W: Write> {
    inner: W,
    tx: Option<SyncSender<ToWorker>>,
    rx: Receiver<FromWorker>,
    worker: Option<JoinHandle<()>>,
}

impl<W: Write> ThreadedGzip<W> {
    fn new(inner: W, level: u32) -> Result<Self, CompressError> {
        let (tx, worker_rx) = mpsc::sync_channel(2);
        let (worker_tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("gzip".into())
            .spawn(move || deflate_worker(level, worker_rx, worker_tx))
            .map_err(|source| CompressError::Io {
                compression: "gzip",
                source,
            })?;
        Ok(ThreadedGzip {
            inner,
            tx: Some(tx),
            rx,
            worker: Some(worker),
        })
    }

    /// The worker stopped early: its error, or a generic one.
    fn worker_error(&mut self) -> io::Error {
        while let Ok(msg) = self.rx.recv() {
            if let FromWorker::Failed(e) = msg {
                return e;
            }
        }
        io::Error::other("gzip worker stopped")
    }

    fn send(&mut self, msg: ToWorker) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.worker_error())
        }
    }

    /// Handles one message from the worker; true when it ends a wait.
    fn handle(&mut self, msg: FromWorker) -> io::Result<bool> {
        match msg {
            FromWorker::Data(d) => {
                self.inner.write_all(&d)?;
                Ok(false)
            }
            FromWorker::Flushed | FromWorker::Done => Ok(true),
            FromWorker::Failed(e) => Err(e),
        }
    }

    /// Writes out whatever compressed output is ready, without waiting.
    fn drain(&mut self) -> io::Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg)?;
        }
        Ok(())
    }

    /// Writes out compressed output until the worker says `Flushed`/`Done`.
    fn wait(&mut self) -> io::Result<()> {
        loop {
            let msg = self
                .rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))?;
            if self.handle(msg)? {
                return Ok(());
            }
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    ///
    /// # Errors
    /// Write errors of the inner writer, or the worker's.
    pub fn finish(mut self) -> io::Result<W> {
        self.tx = None; // the worker finishes the stream and says Done
        self.wait()?;
        if let Some(w) = self.worker.take() {
            w.join()
                .map_err(|_| io::Error::other("gzip worker panicked"))?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ThreadedGzip<W> {
    /// Hands `buf` to the worker whole: deflate's output depends on how its
    /// input is split into writes, so the worker makes exactly the calls
    /// the single-threaded encoder would get from a `write_all` of `buf`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.send(ToWorker::Data(buf.to_vec()))?;
        }
        self.drain()?;
        Ok(buf.len())
    }

    /// A gzip sync flush, as the single-threaded encoder does, then a flush
    /// of the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.send(ToWorker::Flush)?;
        self.wait()?;
        self.inner.flush()
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

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
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
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn decompress_worker(
    compression: Compression,
    rx: Receiver<Compressed>,
    tx: SyncSender<Decompressed>,
    recycled: Receiver<Vec<u8>>,
) {
    let input = ChunkReader {
        rx,
        tx: tx.clone(),
        cur: Vec::new(),
        pos: 0,
        done: false,
    };
    let mut dec = match decoder(compression, input) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Decompressed::Failed(e));
            return;
        }
    };
    loop {
        // Output buffers the reader is done with come back: no allocation
        // (and no zeroing) per chunk once a few are in circulation.
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(OUT_CHUNK, 0);
        let msg = match dec.read(&mut buf) {
            Ok(0) => Decompressed::End,
            Ok(n) => {
                buf.truncate(n);
                Decompressed::Data(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Decompressed::Failed(e),
        };
        let last = !matches!(msg, Decompressed::Data(_));
        // The reader went away (an error, or the end): stop.
        if tx.send(msg).is_err() || last {
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
pub(crate) struct ThreadedDecoder<'a> {
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
}

/// A started decompressor thread, waiting for its source.
pub(crate) struct DecompressWorker {
    to_worker: Sender<Compressed>,
    from_worker: Receiver<Decompressed>,
    recycle: Sender<Vec<u8>>,
}

impl DecompressWorker {
    /// Starts a decompressor for `compression`; `None` when no thread can
    /// be started.
    pub(crate) fn start(compression: Compression) -> Option<Self> {
        let (to_worker, worker_rx) = mpsc::channel();
        let (worker_tx, from_worker) = mpsc::sync_channel(OUT_QUEUE);
        let (recycle, recycled) = mpsc::channel();
        std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn(move || decompress_worker(compression, worker_rx, worker_tx, recycled))
            .ok()?;
        Some(DecompressWorker {
            to_worker,
            from_worker,
            recycle,
        })
    }

    /// Decompresses `head` then the rest of `source`.
    pub(crate) fn decoder(self, head: Vec<u8>, source: &mut dyn Read) -> ThreadedDecoder<'_> {
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
        }
    }
}

impl ThreadedDecoder<'_> {
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
                    let used = std::mem::replace(&mut self.cur, d);
                    if used.capacity() > 0 {
                        // The worker may be gone: then the buffer just drops.
                        let _ = self.recycle.send(used);
                    }
                    self.pos = 0;
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

    #[test]
    fn threaded_gzip_writes_the_same_bytes() {
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> (i % 23)) as u8)
            .collect();
        let one = |threads: u32, split: usize, flush_at: Option<usize>| {
            let mut enc = Encoding::new(Compression::Gzip);
            enc.threads = threads;
            let mut e = Encoder::new(Vec::new(), enc).expect("encoder");
            for (i, c) in data.chunks(split).enumerate() {
                e.write_all(c).expect("write");
                if flush_at == Some(i) {
                    e.flush().expect("flush");
                }
            }
            e.finish().expect("finish")
        };
        for split in [7, 100_000, 256 * 1024] {
            assert_eq!(
                one(2, split, None),
                one(0, split, None),
                "writes of {split}"
            );
        }
        assert_eq!(one(1, 70_000, Some(3)), one(0, 70_000, Some(3)));
        let empty = |threads| {
            let mut enc = Encoding::new(Compression::Gzip);
            enc.threads = threads;
            Encoder::new(Vec::new(), enc)
                .expect("encoder")
                .finish()
                .expect("finish")
        };
        assert_eq!(empty(1), empty(0));
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

    #[test]
    fn bad_level() {
        let e = Encoder::new(Vec::new(), Encoding::new(Compression::Gzip).with_level(12))
            .expect_err("level 12");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
