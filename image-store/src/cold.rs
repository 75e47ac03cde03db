//! Reading a large blob that is not in the page cache: with direct I/O
//! (`O_DIRECT`), instead of through the page cache, into two aligned 1 MiB
//! buffers that are reused: a thread of the reader's own (`blob-read`)
//! fills one while the other is read out.
//!
//! A blob is read once, from start to end, by an unpack, a copy or a
//! push; a cold buffered read fills the page cache with it (pages that
//! must be allocated, filled and then copied out again, and that push
//! other files out) for a second read that seldom comes. Direct I/O moves
//! the bytes from the disk straight into the reader's buffer. On a virtual
//! machine whose free memory goes back to the host (a balloon with free
//! page reporting, as Firecracker's), the difference is large: each page
//! the cache takes must first be faulted in on the host if the host has
//! taken it back. On the bench machine a cold buffered read of the bench
//! image's blobs (358 MB) took 0.11-0.21 s when the host had taken no
//! pages back since the cache was dropped and 0.23-0.49 s when it had; a
//! direct read took 0.19-0.22 s either way, with no page-cache pages to
//! allocate and fill (see docs/ARCHITECTURE.md, session 11).
//!
//! A blob is read directly only when it is large ([`DIRECT_READ_MIN`]),
//! cold (three pages of it, at its start, middle and end, are all missing
//! from the page cache: `preadv2(RWF_NOWAIT)` fails with `EAGAIN`), and
//! its filesystem takes `O_DIRECT`. Anything else is read as before: a
//! blob partly or wholly cached, or with pages not yet written back (a
//! blob just pulled), a filesystem without direct I/O or without
//! `RWF_NOWAIT`. A read that would leave the aligned offsets direct I/O
//! needs goes on buffered. Once a blob has been read directly, what the
//! probes' readahead left in the cache is dropped, so the blob is seen
//! cold again the next time.

use std::fs::File;
use std::io::{self, IoSliceMut, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use rustix::fs::OFlags;
use rustix::io::{Errno, ReadWriteFlags};

/// Where [`cold`] probes a blob of `size` bytes: its first page, the page
/// in its middle and its last page.
fn probe_places(size: u64) -> [u64; 3] {
    let page = ALIGN as u64;
    [
        0,
        size / 2 / page * page,
        size.saturating_sub(1) / page * page,
    ]
}

/// Blobs smaller than this are always read through the page cache: what
/// direct I/O saves on them is less than the probe and the thread cost,
/// and documents (manifests, configs, at most 8 MiB) are read whole into
/// memory or looked at for a byte.
pub(crate) const DIRECT_READ_MIN: u64 = 16 << 20;

/// Bytes read by each direct read.
const CHUNK: usize = 1 << 20;

/// Alignment of the buffers and of every file offset of a direct read:
/// enough for disks of 512- and 4096-byte logical blocks. A device that
/// needs more refuses the read (`EINVAL`), and the reader goes on
/// buffered.
const ALIGN: usize = 4096;

/// `file` (of `size` bytes, opened for reading, its offset at 0), read
/// from start to end: directly when it is large and cold and its
/// filesystem allows, else as it is.
pub(crate) fn sequential(file: File, size: u64) -> Box<dyn Read + Send> {
    if size < DIRECT_READ_MIN || !cold(&file, size) {
        return Box::new(file);
    }
    match rustix::fs::fcntl_getfl(&file)
        .and_then(|fl| rustix::fs::fcntl_setfl(&file, fl | OFlags::DIRECT))
    {
        Ok(()) => Box::new(DirectReader::new(file, size)),
        Err(_) => Box::new(file),
    }
}

/// Whether none of three pages of `file` (at its start, middle and last
/// page) is in the page cache. A page that is there, or any answer but
/// `EAGAIN` (a filesystem without `RWF_NOWAIT`), says no.
///
/// A probe of a missing page starts the kernel's readahead of a few pages
/// there (the call does not wait for it): a few KiB read twice per blob.
fn cold(file: &File, size: u64) -> bool {
    let mut byte = [0u8; 1];
    probe_places(size).into_iter().all(|offset| {
        let mut bufs = [IoSliceMut::new(&mut byte)];
        rustix::io::preadv2(file, &mut bufs, offset, ReadWriteFlags::NOWAIT) == Err(Errno::AGAIN)
    })
}

/// An aligned buffer of [`CHUNK`] bytes and how much of it holds data.
struct Chunk {
    buf: Vec<u8>,
    /// Where the aligned part of `buf` starts.
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Self {
        let buf = vec![0u8; CHUNK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Chunk { buf, start, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Bytes of the page cache dropped at each probed place once a blob has
/// been read directly: more than the readahead a probe starts there.
const PROBE_SPAN: u64 = 256 << 10;

/// A file opened `O_DIRECT`, read a [`Chunk`] at a time. Goes on with
/// buffered reads (clearing `O_DIRECT`) if the kernel refuses a direct read
/// or a short read leaves the offset unaligned.
struct Source {
    file: File,
    direct: bool,
    /// The size at open (where the probes were made).
    size: u64,
    /// Bytes read so far.
    offset: u64,
}

impl Source {
    /// Reads the file as a plain file from here on.
    fn buffered(&mut self) -> io::Result<()> {
        self.direct = false;
        let fl = rustix::fs::fcntl_getfl(&self.file)?;
        rustix::fs::fcntl_setfl(&self.file, fl - OFlags::DIRECT)?;
        Ok(())
    }

    /// Fills `chunk` with the next bytes; 0 at the end of the file.
    fn fill(&mut self, chunk: &mut Chunk) -> io::Result<usize> {
        let room = chunk.start..chunk.start + CHUNK;
        let n = loop {
            match self.file.read(&mut chunk.buf[room.clone()]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EINVAL: the kernel wants another alignment than ours
                // (a device of larger logical blocks); nothing was read.
                Err(e) if self.direct && e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    self.buffered()?;
                }
                Err(e) => return Err(e),
            }
        };
        chunk.len = n;
        self.offset += n as u64;
        // A short direct read before the end (the size at open) would
        // leave the next offset unaligned: go on buffered from there.
        // Should O_DIRECT stay set, the next read fails (EINVAL, no longer
        // retried): the bytes read here are kept either way. (A file grown
        // since its open fails its next direct read with EINVAL, which
        // goes on buffered above.)
        if self.direct && n % ALIGN != 0 && self.offset < self.size {
            let _ = self.buffered();
        }
        Ok(n)
    }

    /// Drops from the page cache what the probes of [`cold`] left there
    /// (the readahead a missing page starts): else the next open of the
    /// blob would find its first page cached, take the blob for warm and
    /// read it all through the cache. Only pages whose reading has ended
    /// can be dropped: at the end of a blob read directly they all have;
    /// for a reader dropped at once after its open, some may still be on
    /// their way in, and stay (the next read of the blob is then a
    /// buffered one).
    fn forget_probes(&self) {
        for at in probe_places(self.size) {
            let _ = rustix::fs::fadvise(
                &self.file,
                at,
                std::num::NonZeroU64::new(PROBE_SPAN),
                rustix::fs::Advice::DontNeed,
            );
        }
    }
}

/// Chunks in circulation between a [`DirectReader`] and its thread: one
/// being read out while the next is filled.
const IN_FLIGHT: usize = 2;

/// Reads a file opened `O_DIRECT` from start to end: a thread of its own
/// (started at the first read: a flatten opens the blobs of the layers
/// after the one it reads well before it reads them) fills the next
/// chunk while this one is handed out, so the disk is not idle while the
/// reader works (the kernel's readahead does that for a buffered read).
/// Without a thread, chunks are filled on the caller's thread. An error
/// is returned again by every read after it.
struct DirectReader {
    feed: Feed,
    cur: Option<Chunk>,
    pos: usize,
}

enum Feed {
    /// Not read yet: the source.
    NotStarted(Source),
    Inline(Source),
    Ahead {
        full: Receiver<io::Result<Chunk>>,
        free: Sender<Chunk>,
    },
    /// At the end.
    Done,
    /// Failed: the error (its errno, or its kind and message), returned
    /// again by each read.
    Failed(Option<i32>, io::ErrorKind, String),
}

impl Feed {
    fn failed(e: &io::Error) -> Feed {
        Feed::Failed(e.raw_os_error(), e.kind(), e.to_string())
    }
}

impl DirectReader {
    fn new(file: File, size: u64) -> Self {
        DirectReader {
            feed: Feed::NotStarted(Source {
                file,
                direct: true,
                size,
                offset: 0,
            }),
            cur: None,
            pos: 0,
        }
    }

    /// Starts the thread; where none can be started, the chunks are
    /// filled on this thread (from a second descriptor of the same open
    /// file, taken first, as a failed spawn drops the source with it).
    fn start(&mut self) {
        let Feed::NotStarted(source) = std::mem::replace(&mut self.feed, Feed::Done) else {
            return;
        };
        let spare = source.file.try_clone().map(|file| Source {
            file,
            direct: source.direct,
            size: source.size,
            offset: source.offset,
        });
        let (full_tx, full) = mpsc::sync_channel(IN_FLIGHT);
        let (free, free_rx) = mpsc::channel::<Chunk>();
        let spawned = std::thread::Builder::new()
            .name("blob-read".into())
            .spawn(move || read_ahead(source, &free_rx, &full_tx));
        self.feed = match (spawned, spare) {
            (Ok(_), _) => {
                for _ in 0..IN_FLIGHT {
                    let _ = free.send(Chunk::new());
                }
                Feed::Ahead { full, free }
            }
            (Err(_), Ok(spare)) => Feed::Inline(spare),
            (Err(e), Err(_)) => Feed::failed(&e),
        };
    }

    /// The next chunk with data, `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let used = self.cur.take();
        let got = match &mut self.feed {
            Feed::NotStarted(_) | Feed::Done => return Ok(None),
            Feed::Failed(Some(errno), _, _) => return Err(io::Error::from_raw_os_error(*errno)),
            Feed::Failed(None, kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
            Feed::Inline(source) => {
                let mut chunk = used.unwrap_or_else(Chunk::new);
                let filled = source.fill(&mut chunk);
                if matches!(filled, Ok(0)) {
                    source.forget_probes();
                }
                filled.map(|_| chunk)
            }
            Feed::Ahead { full, free } => {
                if let Some(used) = used {
                    // The thread may be done: the chunk just drops then.
                    let _ = free.send(used);
                }
                full.recv()
                    .unwrap_or_else(|_| Err(io::Error::other("the blob's reading thread stopped")))
            }
        };
        match got {
            Ok(chunk) if chunk.len > 0 => Ok(Some(chunk)),
            Ok(_) => {
                self.feed = Feed::Done;
                Ok(None)
            }
            Err(e) => {
                self.feed = Feed::failed(&e);
                Err(e)
            }
        }
    }
}

impl Drop for DirectReader {
    fn drop(&mut self) {
        // Opened, probed and never read: the probes' pages go all the same.
        if let Feed::NotStarted(source) = &self.feed {
            source.forget_probes();
        }
    }
}

/// The thread of a [`DirectReader`]: fills each chunk given back, in
/// turn, until the end of the file (an empty chunk), an error, or the
/// reader is gone.
fn read_ahead(mut source: Source, free: &Receiver<Chunk>, full: &SyncSender<io::Result<Chunk>>) {
    for mut chunk in free {
        let filled = source.fill(&mut chunk);
        let last = !matches!(filled, Ok(n) if n > 0);
        if last {
            source.forget_probes();
        }
        if full.send(filled.map(|_| chunk)).is_err() || last {
            return;
        }
    }
    // Ended early (the reader is gone): the probes' pages go all the same.
    source.forget_probes();
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if matches!(self.feed, Feed::NotStarted(_)) {
            self.start();
        }
        if self.cur.as_ref().is_none_or(|c| self.pos == c.len) {
            self.pos = 0;
            match self.next_chunk()? {
                Some(chunk) => self.cur = Some(chunk),
                None => return Ok(0),
            }
        }
        let Some(chunk) = &self.cur else {
            return Ok(0);
        };
        let data = &chunk.data()[self.pos..];
        let k = out.len().min(data.len());
        out[..k].copy_from_slice(&data[..k]);
        self.pos += k;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        let mut rng = image_testsupport::rng::Rng(0x9e37_79b9);
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// Writes `bytes` to a new file in a directory of the test's own (on
    /// the disk the tests run from, not a tmpfs), synced and dropped from
    /// the page cache, so it reads cold.
    fn cold_file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        std::fs::create_dir_all(base).expect("mkdir target");
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let path = dir.path().join("blob");
        let mut f = File::create(&path).expect("create");
        f.write_all(bytes).expect("write");
        f.sync_all().expect("sync");
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        (dir, path)
    }

    /// `f` (of `len` bytes) through [`sequential`]: whether it went
    /// direct, and everything read.
    fn read_sequential(f: File, len: usize) -> (bool, Vec<u8>) {
        let probe = f.try_clone().expect("dup");
        let mut r = sequential(f, len as u64);
        let direct = is_direct(&probe);
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        (direct, got)
    }

    fn is_direct(f: &File) -> bool {
        rustix::fs::fcntl_getfl(f)
            .expect("getfl")
            .contains(OFlags::DIRECT)
    }

    /// A large cold file is read directly, to its end (no fall back to
    /// buffered reads on the way), and gives its bytes exactly, whatever
    /// the reader's buffer size (its length is not a multiple of the
    /// alignment: the last read is short); it is still cold after each
    /// read (the probes' readahead is dropped too), so the next read is
    /// direct again; the same file cached is read through the cache.
    #[test]
    fn a_large_cold_blob_reads_directly_and_whole() {
        let bytes = data(DIRECT_READ_MIN as usize + 3 * CHUNK + 1234);
        let (_dir, path) = cold_file(&bytes);
        let f = File::open(&path).expect("open");
        if !cold(&f, bytes.len() as u64) {
            image_testsupport::tools::skip_or_fail(
                "direct reads: the test file is not seen cold (no RWF_NOWAIT here?)",
            );
            return;
        }
        // What that probe left in the cache, once its reading has ended
        // (a buffered read of those places waits for it).
        let mut settle = File::open(&path).expect("open");
        let mut page = vec![0u8; PROBE_SPAN as usize];
        for at in probe_places(bytes.len() as u64) {
            std::io::Seek::seek(&mut settle, std::io::SeekFrom::Start(at)).expect("seek");
            let _ = settle.read(&mut page).expect("read");
        }
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        for piece in [1usize, 4096, 1000, CHUNK, 3 * CHUNK + 7] {
            let f = File::open(&path).expect("open");
            let probe = f.try_clone().expect("dup");
            let mut r = sequential(f, bytes.len() as u64);
            assert!(is_direct(&probe), "piece {piece}: cold and large: direct");
            let mut got = Vec::with_capacity(bytes.len());
            let mut buf = vec![0u8; piece];
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if piece == 1 && got.len() > 3 * ALIGN {
                    // Byte by byte through the first pages, then the rest.
                    r.read_to_end(&mut got).expect("read the rest");
                    break;
                }
            }
            assert!(is_direct(&probe), "piece {piece}: direct to the end");
            assert!(got == bytes, "piece {piece}: the bytes read differ");
        }
        // Cached (read once): buffered.
        let (_dir, path) = cold_file(&bytes);
        std::fs::read(&path).expect("warm it");
        let (direct, got) = read_sequential(File::open(&path).expect("open"), bytes.len());
        assert!(!direct, "cached: through the cache");
        assert!(got == bytes);
    }

    /// A small blob, or one with only its end cached, is read through the
    /// page cache.
    #[test]
    fn a_small_or_partly_cached_blob_reads_through_the_cache() {
        let small = data(DIRECT_READ_MIN as usize - 1);
        let (_dir, path) = cold_file(&small);
        let (direct, got) = read_sequential(File::open(&path).expect("open"), small.len());
        assert!(!direct, "small: through the cache");
        assert!(got == small);

        let large = data(DIRECT_READ_MIN as usize * 2);
        let (_dir, path) = cold_file(&large);
        let mut f = File::open(&path).expect("open");
        // Its last MiB read, so cached.
        let mut tail = Vec::new();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::End(-(1 << 20))).expect("seek");
        f.read_to_end(&mut tail).expect("read the tail");
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).expect("seek");
        let (direct, got) = read_sequential(f, large.len());
        assert!(!direct, "partly cached: through the cache");
        assert!(got == large);
    }

    /// A source that must go on buffered (here: after a first direct
    /// chunk, as after a short read) keeps the stream whole; and so does
    /// a reader whose chunks are filled on its own thread.
    #[test]
    fn a_source_that_falls_back_to_buffered_reads_keeps_every_byte() {
        let bytes = data(3 * CHUNK + 99);
        let (_dir, path) = cold_file(&bytes);
        let f = File::open(&path).expect("open");
        let fl = rustix::fs::fcntl_getfl(&f).expect("getfl");
        if rustix::fs::fcntl_setfl(&f, fl | OFlags::DIRECT).is_err() {
            image_testsupport::tools::skip_or_fail("direct reads: O_DIRECT refused here");
            return;
        }
        let mut source = Source {
            file: f,
            direct: true,
            size: bytes.len() as u64,
            offset: 0,
        };
        let mut chunk = Chunk::new();
        let mut got = Vec::new();
        assert_eq!(source.fill(&mut chunk).expect("a direct chunk"), CHUNK);
        got.extend_from_slice(chunk.data());
        source.buffered().expect("clear O_DIRECT");
        assert!(!is_direct(&source.file));
        while source.fill(&mut chunk).expect("a buffered chunk") > 0 {
            got.extend_from_slice(chunk.data());
        }
        assert!(got == bytes);

        let (_dir, path) = cold_file(&bytes);
        let f = File::open(&path).expect("open");
        rustix::fs::fcntl_setfl(&f, fl | OFlags::DIRECT).expect("O_DIRECT");
        let mut r = DirectReader::new(f, bytes.len() as u64);
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        assert!(got == bytes);
        assert!(matches!(r.feed, Feed::Done), "read to the end");
    }

    /// A read that fails fails again when tried again: it is not taken
    /// for the end of the blob (here: a descriptor not open for reading).
    #[test]
    fn a_failed_read_is_not_taken_for_the_end() {
        let bytes = data(2 * CHUNK);
        let (_dir, path) = cold_file(&bytes);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        let mut r = DirectReader::new(f, bytes.len() as u64);
        let mut buf = vec![0u8; 4096];
        let first = r.read(&mut buf).expect_err("not open for reading");
        let again = r.read(&mut buf).expect_err("still an error");
        assert_eq!(first.raw_os_error(), Some(Errno::BADF.raw_os_error()));
        assert_eq!(again.raw_os_error(), first.raw_os_error());
    }
}
