//! The tar plumbing shared by import and export: where the reader's
//! stream may end, path normalisation, and a small streaming tar writer
//! that checks every entry has exactly the size its header announces.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use super::ArchiveError;

/// One tar block.
const BLOCK: u64 = 512;

/// Where an archive's tar stream may end, as Go's `archive/tar` (so
/// `docker load`) decides it: at an entry boundary, with the end-of-archive
/// marker (two zero blocks), one zero block of it, or none; and right after
/// the last entry's data with none of its padding (a Go `tar.Writer` left
/// unclosed writes the padding only before the next header). Anywhere else
/// (inside a header, an entry's data or its padding) the stream is cut
/// short. image-overlay holds the same rule for layer streams; the tiers
/// are kept apart (image-store does not depend on image-overlay), and the
/// rule is this small.
///
/// The parse loop tells [`EndState::entry`] where each entry's data ends;
/// the [`Ending`] reader over the stream supplies the missing padding as
/// zeros when the stream ends exactly there, and records that the stream
/// ended, so that the parser's complaints after it are truncations.
#[derive(Default)]
pub(crate) struct EndState {
    data_end: Cell<Option<u64>>,
    eof: Cell<bool>,
}

impl EndState {
    /// Records where the data of the entry just parsed ends (unknown for
    /// an old GNU sparse entry with extension headers, which must be padded).
    pub(crate) fn entry<R: Read>(&self, entry: &tar::Entry<'_, R>) {
        let extended = entry.header().entry_type().is_gnu_sparse()
            && entry.header().as_gnu().is_some_and(|g| g.is_extended());
        self.data_end.set(
            (!extended)
                .then(|| entry.raw_file_position().checked_add(entry.size()))
                .flatten(),
        );
    }

    /// Whether the stream has ended.
    pub(crate) fn hit_eof(&self) -> bool {
        self.eof.get()
    }
}

/// The archive's tar stream, ending as [`EndState`] says.
pub(crate) struct Ending<R> {
    inner: R,
    pos: u64,
    fill: u64,
    state: Rc<EndState>,
}

impl<R: Read> Ending<R> {
    pub(crate) fn new(inner: R, state: Rc<EndState>) -> Self {
        Ending {
            inner,
            pos: 0,
            fill: 0,
            state,
        }
    }
}

impl<R: Read> Read for Ending<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.fill == 0 && !self.state.eof.get() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
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

/// Normalises an entry path lexically: drops `.` and empty components,
/// resolves `..`; a path that climbs above the root is refused.
pub(crate) fn normalize(path: &str) -> Result<String, ArchiveError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ArchiveError::UnsafePath {
                        path: path.chars().take(300).collect(),
                    });
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target written in an entry at `from` (relative to the
/// entry's directory for symlinks, to the root for hard links).
pub(crate) fn resolve_link(
    from: &str,
    target: &str,
    symbolic: bool,
) -> Result<String, ArchiveError> {
    if !symbolic || target.starts_with('/') {
        return normalize(target);
    }
    let dir = from.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    normalize(&format!("{dir}/{target}"))
}

/// Why streaming one entry into the output failed.
pub(crate) enum CopyFail {
    /// The source failed.
    Read(io::Error),
    /// The source ended after this many bytes, before the announced size.
    Short(u64),
    /// The source had more bytes than announced.
    Long,
    /// The output failed.
    Write(io::Error),
    /// The entry's header could not be written (a name too long for it).
    Header(ArchiveError),
}

/// A streaming tar writer (ustar headers, 512-byte padding, two zero
/// blocks at the end) over any output.
pub(crate) struct TarWriter<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
}

fn write_err(source: io::Error) -> ArchiveError {
    ArchiveError::Write { source }
}

impl<'a> TarWriter<'a> {
    pub(crate) fn new(out: &'a mut dyn Write) -> Self {
        TarWriter {
            out,
            buf: vec![0u8; 1024 * 1024],
        }
    }

    fn header(&mut self, path: &str, size: u64, kind: tar::EntryType) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).map_err(write_err)?;
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(write_err)
    }

    fn pad(&mut self, size: u64) -> Result<(), ArchiveError> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; 512][..512 - rem])
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// A directory entry (`path` without the trailing slash).
    pub(crate) fn add_dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.header(&format!("{path}/"), 0, tar::EntryType::Directory)
    }

    /// A regular file with these bytes.
    pub(crate) fn add_bytes(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.header(path, data.len() as u64, tar::EntryType::Regular)?;
        self.out.write_all(data).map_err(write_err)?;
        self.pad(data.len() as u64)
    }

    /// A regular file of exactly `size` bytes streamed from `src`; `src`
    /// must end exactly there. On failure the output is unusable.
    pub(crate) fn add_stream(
        &mut self,
        path: &str,
        size: u64,
        src: &mut dyn Read,
    ) -> Result<(), CopyFail> {
        self.header(path, size, tar::EntryType::Regular)
            .map_err(|e| match e {
                ArchiveError::Write { source } => CopyFail::Write(source),
                other => CopyFail::Header(other),
            })?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
            let n = match src.read(&mut self.buf[..want]) {
                Ok(0) => return Err(CopyFail::Short(size - left)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyFail::Read(e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(CopyFail::Write)?;
            left -= n as u64;
        }
        // The source must be exhausted too (a verifying reader checks its
        // digest on this last read).
        loop {
            match src.read(&mut self.buf[..1]) {
                Ok(0) => break,
                Ok(_) => return Err(CopyFail::Long),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyFail::Read(e)),
            }
        }
        self.pad(size).map_err(|e| match e {
            ArchiveError::Write { source } => CopyFail::Write(source),
            other => CopyFail::Header(other),
        })
    }

    /// Writes the end-of-archive marker and flushes.
    pub(crate) fn finish(self) -> Result<(), ArchiveError> {
        self.out.write_all(&[0u8; 1024]).map_err(write_err)?;
        self.out.flush().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("./a//b/./c").ok().as_deref(), Some("a/b/c"));
        assert_eq!(normalize("a/../b").ok().as_deref(), Some("b"));
        assert!(normalize("../x").is_err());
        assert_eq!(
            resolve_link("abc/layer.tar", "../def/layer.tar", true)
                .ok()
                .as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(
            resolve_link("abc/layer.tar", "def/layer.tar", false)
                .ok()
                .as_deref(),
            Some("def/layer.tar")
        );
    }

    #[test]
    fn writer_round_trips_through_tar() {
        let mut out = Vec::new();
        {
            let mut w = TarWriter::new(&mut out);
            w.add_dir("d").ok();
            w.add_bytes("d/a", b"hello").ok();
            let mut src: &[u8] = b"0123456789";
            assert!(w.add_stream("d/b", 10, &mut src).is_ok());
            let mut short: &[u8] = b"01";
            assert!(matches!(
                w.add_stream("d/c", 3, &mut short),
                Err(CopyFail::Short(2))
            ));
        }
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .map(|es| {
                es.filter_map(|e| e.ok())
                    .map(|e| {
                        e.path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names[..3], ["d/", "d/a", "d/b"]);
    }
}
