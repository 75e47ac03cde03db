//! List a layer's entries without applying them, as `tar -tv` does.
//!
//! The listing reads the layer through the same path as [`unpack`]: the
//! compression is sniffed (or checked against the declared one), the blob
//! digest and the diff ID are computed on the way, the tar may end where
//! Go's `archive/tar` lets it (at an entry boundary with or without the
//! end-of-archive marker, or right after the last entry's data with none
//! of its padding), and an end anywhere else is [`UnpackError::Truncated`].
//! The same [`Limits`] bound the entry count, the expanded bytes and the
//! size of each entry's header group.
//!
//! # Security
//! Nothing is written; each entry's metadata is handed to the caller and
//! dropped, so memory stays bounded by one entry's header group (its PAX
//! records and GNU long names, which the tar parser reads whole), itself
//! bounded by [`Limits::max_header_bytes`] as for [`unpack`].
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use image_overlay::list::{list, EntryKind, ListOptions};
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut h = tar::Header::new_ustar();
//! h.set_path("hello.txt")?;
//! h.set_size(2);
//! h.set_mode(0o644);
//! h.set_uid(0);
//! h.set_gid(0);
//! h.set_mtime(1_700_000_000);
//! h.set_cksum();
//! tar.append(&h, &b"hi"[..])?;
//! let layer = tar.into_inner()?;
//! let mut names = Vec::new();
//! let report = list(&layer[..], &ListOptions::default(), |e| {
//!     names.push((e.path_lossy(), e.kind, e.size));
//! })?;
//! assert_eq!(names, [("hello.txt".to_string(), EntryKind::Regular, 2)]);
//! assert_eq!(report.entries, 1);
//! # Ok(()) }
//! ```
//!
//! [`unpack`]: crate::unpack::unpack

use std::io::{self, Read};

use image_core::{Algorithm, Compression, Digest, HashingReader};

use crate::fsops::display_path;
use crate::unpack::{
    classify_read, parse_pax_time, sniff, walk, Limits, SourceTag, UnpackError, Walked,
};
use crate::whiteout::{self, WhiteoutName};

/// Knobs of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// The declared compression (from the media type); `None` sniffs it.
    pub compression: Option<Compression>,
    /// The algorithm of the digest and diff ID computed.
    pub algorithm: Algorithm,
    /// Cost limits (entries, expanded bytes), as for unpack.
    pub limits: Limits,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            compression: None,
            algorithm: Algorithm::Sha256,
            limits: Limits::default(),
        }
    }
}

impl ListOptions {
    /// Uses these limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Expects this compression.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file (also a contiguous or GNU sparse file).
    Regular,
    /// A hard link to an earlier entry.
    HardLink,
    /// A symbolic link.
    Symlink,
    /// A directory.
    Directory,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// Any other type flag (as written in the header).
    Other(u8),
}

impl EntryKind {
    fn of(t: tar::EntryType) -> Self {
        use tar::EntryType as T;
        match t {
            T::Regular | T::Continuous | T::GNUSparse => EntryKind::Regular,
            T::Link => EntryKind::HardLink,
            T::Symlink => EntryKind::Symlink,
            T::Directory => EntryKind::Directory,
            T::Char => EntryKind::Char,
            T::Block => EntryKind::Block,
            T::Fifo => EntryKind::Fifo,
            other => EntryKind::Other(other.as_byte()),
        }
    }

    /// The letter `ls -l` and `tar -tv` show for it (`-` for a regular
    /// file or an unknown type).
    pub fn letter(self) -> char {
        match self {
            EntryKind::Directory => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::HardLink => 'h',
            EntryKind::Char => 'c',
            EntryKind::Block => 'b',
            EntryKind::Fifo => 'p',
            EntryKind::Regular | EntryKind::Other(_) => '-',
        }
    }
}

/// What an entry means to whiteout processing (see [`crate::whiteout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhiteoutKind {
    /// `.wh.NAME`: deletes `NAME` (the name) of the lower layers.
    Remove(Vec<u8>),
    /// `.wh..wh..opq`: its directory hides what the lower layers had there.
    Opaque,
    /// Another `.wh..wh.` name: reserved metadata, ignored by unpack.
    Meta,
    /// `.wh.`, `.wh..` or `.wh...`, which unpack refuses.
    Invalid,
}

/// One entry of a layer, as its headers (ustar, GNU, PAX) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListEntry {
    /// The path as written (after GNU long names and PAX `path`), raw bytes.
    pub path: Vec<u8>,
    /// The type.
    pub kind: EntryKind,
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The file's size (the real size of a sparse file).
    pub size: u64,
    /// A link's target (hard or symbolic), raw bytes.
    pub link_target: Option<Vec<u8>>,
    /// Modification time, seconds since the epoch (PAX `mtime` when given).
    pub mtime: i64,
    /// Nanoseconds of `mtime` (only PAX gives them).
    pub mtime_nanos: u32,
    /// Device major and minor numbers, for a device node.
    pub device: Option<(u32, u32)>,
    /// Extended attributes (PAX `SCHILY.xattr.*`), in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the entry is a whiteout, and which.
    pub whiteout: Option<WhiteoutKind>,
}

impl ListEntry {
    /// The path, lossily decoded as UTF-8.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// What a listing read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListReport {
    /// Digest of the bytes read (the blob digest).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the diff ID).
    pub diff_id: Digest,
    /// The compression of the stream.
    pub compression: Compression,
    /// Bytes read from the source.
    pub compressed_size: u64,
    /// Uncompressed bytes.
    pub size: u64,
    /// Entries listed (PAX global headers are not entries).
    pub entries: u64,
    /// Bytes after the last entry (the end-of-archive marker and padding).
    pub trailing_bytes: u64,
}

/// Lists the entries of the layer in `reader`, calling `visit` with each in
/// archive order; reads the stream to its end.
///
/// # Errors
/// An [`UnpackError`] of the stream: [`UnpackError::Truncated`] for a
/// header, data or compressed stream cut short, [`UnpackError::Corrupt`]
/// for a malformed header, [`UnpackError::TooManyEntries`] and
/// [`UnpackError::TooLarge`] and [`UnpackError::HeaderTooLarge`] for the
/// limits, [`UnpackError::Decompress`],
/// [`UnpackError::CompressionMismatch`], [`UnpackError::TrailingData`],
/// [`UnpackError::Source`].
pub fn list<R: Read, F: FnMut(&ListEntry)>(
    mut reader: R,
    options: &ListOptions,
    mut visit: F,
) -> Result<ListReport, UnpackError> {
    list_reading(&mut reader, options, &mut |entry, _| {
        visit(entry);
        Ok(())
    })
}

/// What [`list_reading`] hands each entry to: its metadata and its data
/// (what is not read is skipped by the walk); a read error it returns is
/// classified as unpack classifies it (truncated, too large, corrupt).
pub(crate) type DataVisitor<'v> = dyn FnMut(&ListEntry, &mut dyn Read) -> io::Result<()> + 'v;

/// [`list`] with each entry's data readable by the visitor (the analysis
/// reads the start of files in the same pass); an error of the visitor
/// stops the listing.
pub(crate) fn list_reading(
    src: &mut dyn Read,
    opts: &ListOptions,
    visit: &mut DataVisitor<'_>,
) -> Result<ListReport, UnpackError> {
    let mut tagged = SourceTag(src);
    let mut compressed = HashingReader::new(&mut tagged as &mut dyn Read, opts.algorithm);
    let (head, compression) = sniff(&mut compressed, opts.compression)?;
    let Walked {
        diff_id,
        size,
        trailing_bytes,
        nonzero_trailing,
        entries,
    } = walk(
        &mut compressed,
        &head,
        compression,
        opts.limits,
        opts.algorithm,
        &mut |entry, raw, global| {
            if global {
                return Ok(());
            }
            let described = describe(entry, raw)?;
            visit(&described, entry)
                .map_err(|e| classify_read(e, Some(raw), opts.limits, compression))
        },
    )?;
    io::copy(&mut compressed, &mut io::sink()).map_err(|e| UnpackError::Source { source: e })?;
    let (digest, compressed_size) = compressed.finish();
    if nonzero_trailing {
        return Err(UnpackError::TrailingData {
            count: trailing_bytes,
        });
    }
    Ok(ListReport {
        digest,
        diff_id,
        compression,
        compressed_size,
        size,
        entries,
        trailing_bytes,
    })
}

fn corrupt(raw: &[u8], what: &'static str) -> UnpackError {
    UnpackError::Corrupt {
        path: Some(display_path(raw)),
        source: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// An entry's metadata from its header and PAX records.
pub(crate) fn describe<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
) -> Result<ListEntry, UnpackError> {
    let bad = |e: io::Error| UnpackError::Corrupt {
        path: Some(display_path(raw)),
        source: e,
    };
    let mut path = raw.to_vec();
    let mut mtime = None;
    let mut xattrs = Vec::new();
    let mut real_size = None;
    if let Some(exts) = entry.pax_extensions().map_err(bad)? {
        for ext in exts {
            let ext = ext.map_err(bad)?;
            let (key, value) = (ext.key_bytes(), ext.value_bytes());
            if key == b"mtime" {
                mtime = Some(parse_pax_time(value).ok_or_else(|| corrupt(raw, "bad PAX mtime"))?);
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((name.to_vec(), value.to_vec()));
            } else if key == b"GNU.sparse.name" {
                path = value.to_vec();
            } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
                real_size = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
        }
    }
    let header = entry.header();
    let etype = header.entry_type();
    if etype.is_gnu_sparse() {
        real_size = header.as_gnu().and_then(|g| g.real_size().ok());
    }
    let kind = EntryKind::of(etype);
    let (mtime, mtime_nanos) = match mtime {
        Some(t) => (t.tv_sec, u32::try_from(t.tv_nsec).unwrap_or(0)),
        None => {
            let secs = header.mtime().map_err(bad)?;
            (i64::try_from(secs).unwrap_or(i64::MAX), 0)
        }
    };
    let device = match kind {
        EntryKind::Char | EntryKind::Block => Some((
            header.device_major().map_err(bad)?.unwrap_or(0),
            header.device_minor().map_err(bad)?.unwrap_or(0),
        )),
        _ => None,
    };
    let trimmed = path.strip_suffix(b"/").unwrap_or(&path);
    let name = trimmed.rsplit(|b| *b == b'/').next().unwrap_or(trimmed);
    let whiteout = match whiteout::classify(name) {
        Ok(WhiteoutName::Plain) => None,
        Ok(WhiteoutName::Remove(n)) => Some(WhiteoutKind::Remove(n.to_vec())),
        Ok(WhiteoutName::Opaque) => Some(WhiteoutKind::Opaque),
        Ok(WhiteoutName::Meta) => Some(WhiteoutKind::Meta),
        Err(_) => Some(WhiteoutKind::Invalid),
    };
    Ok(ListEntry {
        kind,
        mode: header.mode().map_err(bad)? & 0o7777,
        uid: header.uid().map_err(bad)?,
        gid: header.gid().map_err(bad)?,
        size: real_size.unwrap_or_else(|| entry.size()),
        link_target: entry.link_name_bytes().map(|l| l.into_owned()),
        mtime,
        mtime_nanos,
        device,
        xattrs,
        whiteout,
        path,
    })
}
