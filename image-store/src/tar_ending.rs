//! Where a tar stream may end: the one rule of the family, for outer
//! archives (`load`) and for layers (image-overlay's unpack and list).
//!
//! Go's `archive/tar` (so Docker, containerd, podman and umoci) accepts a
//! stream that ends at an entry boundary with the end-of-archive marker
//! (two zero blocks), one zero block of it, or none; and right after the
//! last entry's data with none of its padding to the block size (a Go
//! `tar.Writer` left unclosed, as `umoci insert` leaves it, writes the
//! padding only before the next header). An end anywhere else (inside a
//! header, an entry's data or its padding) is a truncation.
//!
//! The tar crate already stops cleanly when the stream ends where a header
//! would start. [`Ending`] wraps the stream the parser reads: when the
//! stream ends exactly where the current entry's data ends, it supplies the
//! missing padding as zeros (read from nowhere: a hasher below it never
//! sees them), and it records that the stream ended ([`EndState::hit_eof`]),
//! so that a caller reports the parser's complaints after that point as a
//! truncation. The parse loop tells [`EndState::entry`] where each entry's
//! data ends.
//!
//! It also bounds an entry's header group (PAX records, GNU long names,
//! which the tar crate reads whole into memory): with
//! [`EndState::set_header_limit`], a read that takes more than that many
//! bytes between one entry's padded data and the next entry fails with a
//! [`HeaderLimitHit`] as its inner error.
//!
//! ```
//! use std::io::Read;
//! use image_store::tar_ending::{EndState, Ending};
//!
//! // One 5-byte file and no padding, no end-of-archive marker.
//! let mut h = tar::Header::new_ustar();
//! h.set_path("a")?;
//! h.set_size(5);
//! h.set_cksum();
//! let mut stream = h.as_bytes().to_vec();
//! stream.extend_from_slice(b"hello");
//!
//! let end = EndState::default();
//! let mut archive = tar::Archive::new(Ending::new(&stream[..], &end));
//! let mut names = Vec::new();
//! for entry in archive.entries()? {
//!     let mut entry = entry?;
//!     end.entry(&entry);
//!     names.push(entry.path()?.display().to_string());
//!     entry.read_to_end(&mut Vec::new())?;
//! }
//! assert_eq!(names, ["a"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::io::{self, Read};

/// One tar block.
const BLOCK: u64 = 512;

/// What the parse loop and [`Ending`] share while the tar parser holds the
/// reader: where the current entry's data ends, whether the stream has
/// ended, and the header-size bound.
#[derive(Debug)]
pub struct EndState {
    /// Where the current entry's data ends, when known exactly.
    data_end: Cell<Option<u64>>,
    /// The stream has ended.
    eof: Cell<bool>,
    /// Where the header group of the next entry starts (the end of the
    /// current entry's padded data).
    header_from: Cell<u64>,
    /// The most header bytes of one entry.
    header_limit: Cell<u64>,
}

impl Default for EndState {
    fn default() -> Self {
        EndState {
            data_end: Cell::new(None),
            eof: Cell::new(false),
            header_from: Cell::new(0),
            header_limit: Cell::new(u64::MAX),
        }
    }
}

impl EndState {
    /// Records where the data of the entry just parsed ends: its data start
    /// plus its size in the archive. Not for an old GNU sparse entry with
    /// extension headers, whose data starts further on than the tar crate
    /// reports: such an entry must be padded (no Go writer makes one), and
    /// its extension blocks count as header bytes of the next entry.
    pub fn entry<R: Read>(&self, entry: &tar::Entry<'_, R>) {
        let extended = entry.header().entry_type().is_gnu_sparse()
            && entry.header().as_gnu().is_some_and(|g| g.is_extended());
        let data_end = entry.raw_file_position().saturating_add(entry.size());
        self.data_end.set((!extended).then_some(data_end));
        self.header_from
            .set(data_end.div_ceil(BLOCK).saturating_mul(BLOCK));
    }

    /// Whether the stream has ended: an error of the parser (or of reading
    /// an entry) after this is a truncation.
    pub fn hit_eof(&self) -> bool {
        self.eof.get()
    }

    /// Bounds the bytes of one entry's header group (`u64::MAX`, the
    /// default: no bound). Set it to `u64::MAX` once the entries are parsed
    /// and the rest of the stream is read.
    pub fn set_header_limit(&self, limit: u64) {
        self.header_limit.set(limit);
    }
}

/// The error inside the [`io::Error`] of a read that went past
/// [`EndState::set_header_limit`].
#[derive(Debug)]
pub struct HeaderLimitHit;

impl std::fmt::Display for HeaderLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("header-size limit reached")
    }
}

impl std::error::Error for HeaderLimitHit {}

/// A tar stream that ends as [`EndState`] allows (see the module docs).
#[derive(Debug)]
pub struct Ending<'s, R> {
    inner: R,
    /// Offset in the tar stream (what the parser has read).
    pos: u64,
    /// Zero bytes of padding still to supply.
    fill: u64,
    state: &'s EndState,
}

impl<'s, R: Read> Ending<'s, R> {
    /// The tar stream `inner`, its end decided with `state`.
    pub fn new(inner: R, state: &'s EndState) -> Self {
        Ending {
            inner,
            pos: 0,
            fill: 0,
            state,
        }
    }

    /// The stream under this one.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Ending<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.fill == 0 && !self.state.eof.get() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                let limit = self.state.header_limit.get();
                if self.pos.saturating_sub(self.state.header_from.get()) > limit {
                    return Err(io::Error::other(HeaderLimitHit));
                }
                return Ok(n);
            }
            self.state.eof.set(true);
            if self.state.data_end.get() == Some(self.pos) {
                self.fill = (BLOCK - self.pos % BLOCK) % BLOCK;
            }
        }
        let n = usize::try_from(self.fill).map_or(buf.len(), |f| f.min(buf.len()));
        buf[..n].fill(0);
        self.fill -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}
