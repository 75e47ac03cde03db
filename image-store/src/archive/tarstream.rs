//! The tar plumbing shared by import and export: path normalisation and a
//! small streaming tar writer that checks every entry has exactly the size
//! its header announces. Where the reader's stream may end is the family's
//! one rule, [`crate::tar_ending`].

use std::io::{self, Read, Write};

use super::ArchiveError;

/// Normalises an entry path lexically ([`image_core::path::clean_relative`]):
/// drops `.` and empty components, resolves `..`; a path that climbs above
/// the root is refused.
pub(crate) fn normalize(path: &str) -> Result<String, ArchiveError> {
    image_core::path::clean_relative(path).ok_or_else(|| ArchiveError::UnsafePath {
        path: path.chars().take(300).collect(),
    })
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
        if h.set_path(path).is_err() {
            // Too long for ustar's name and prefix (`blobs/sha512/<128
            // hex>`): a PAX header gives the path, and the entry's own
            // name is cut, as Go's archive/tar (so skopeo, Docker) writes it.
            self.pax_path(path)?;
            h.set_path(cut_name(path)).map_err(write_err)?;
        }
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

    /// A PAX extended header (`x`) whose one record is `path`, for the
    /// entry that follows.
    fn pax_path(&mut self, path: &str) -> Result<(), ArchiveError> {
        let record = pax_record("path", path);
        let mut h = tar::Header::new_ustar();
        h.set_path(cut_name(&format!("PaxHeaders.0/{path}")))
            .map_err(write_err)?;
        h.set_size(record.len() as u64);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(write_err)?;
        self.out.write_all(&record).map_err(write_err)?;
        self.pad(record.len() as u64)
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

/// A PAX record, `"<length> <key>=<value>\n"`, whose length counts its
/// own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// The first 100 bytes of `path` (at a character boundary): the name a
/// ustar header holds when a PAX header gives the whole path.
fn cut_name(path: &str) -> &str {
    let mut end = path.len().min(100);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
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

    /// The entry names tar-rs (the loader's reader) reads from `out`.
    fn names(out: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(out);
        a.entries()
            .map(|es| {
                es.filter_map(|e| e.ok())
                    .map(|e| {
                        e.path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
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
        assert_eq!(names(&out)[..3], ["d/", "d/a", "d/b"]);
    }

    /// A path too long for ustar (a sha512 blob's) is written with a PAX
    /// header and read back whole by tar-rs (the loader's reader).
    #[test]
    fn a_path_longer_than_ustar_holds_goes_in_a_pax_header() {
        let long = format!("blobs/sha512/{}", "ab".repeat(64));
        let mut out = Vec::new();
        {
            let mut w = TarWriter::new(&mut out);
            assert!(w.add_bytes(&long, b"x").is_ok());
            assert!(w.add_bytes("short", b"y").is_ok());
            assert!(w.finish().is_ok());
        }
        assert_eq!(names(&out), [long.as_str(), "short"]);
        for (key, value) in [("path", "a"), ("path", &"x".repeat(91)), ("path", &long)] {
            let r = pax_record(key, value);
            let (len, _) = std::str::from_utf8(&r)
                .expect("utf8")
                .split_once(' ')
                .expect("len");
            assert_eq!(len.parse::<usize>().expect("number"), r.len(), "{r:?}");
        }
    }
}
