//! Pack a layer from a directory, deterministically, compressing and
//! hashing in the same pass.
//!
//! Entries come in a fixed order (depth first, names sorted bytewise
//! within each directory, a directory before its contents), headers are
//! normalised (uid, gid, mode and mtime in seconds kept; user and group
//! names empty; no atime or ctime; PAX records only where ustar cannot hold
//! a value, and for xattrs), hardlinks are found by (device, inode), and
//! mtimes can be clamped to `SOURCE_DATE_EPOCH`. Packing the same tree twice
//! gives the same digest. The target directory itself is not an entry.
//!
//! [`pack_overlay_upper`] reads an overlayfs upper directory: its 0/0
//! character devices become `.wh.NAME` whiteouts and its opaque directories
//! get a `.wh..wh..opq` marker.
//!
//! The writer stack is public for layers that do not come from a
//! directory: [`LayerWriter`] writes entries a caller makes (files held in
//! memory) with the same tar writer, and [`LayerStream`] takes a whole
//! uncompressed tar stream as it is (recompressing a layer tarball); both
//! give a [`PackReport`] with the digest and diff ID of the one pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use image_core::{
    Algorithm, Classify, Compression, Digest, DigestWriter, ErrorKind, MediaType, Tracker,
};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::compress::{CompressError, Encoder, Encoding};
use crate::fsops::{self, display_path, io_err, Xattrs};
pub use crate::tarwriter::{Entry as TarEntry, Kind as TarKind};
use crate::tarwriter::{Kind, TarWriter};
use crate::whiteout::{self, OverlayXattrs};

/// Knobs of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackOptions {
    /// Compression, level and threads.
    pub encoding: Encoding,
    /// The digest algorithm.
    pub algorithm: Algorithm,
    /// Clamp every mtime to at most this (seconds since the epoch), as
    /// `SOURCE_DATE_EPOCH` asks.
    pub source_date_epoch: Option<i64>,
    /// Include xattrs (as PAX `SCHILY.xattr.*`); overlayfs xattrs and
    /// `security.selinux` are never included.
    pub xattrs: bool,
    /// Reports the layer written as one item, `"layer"` (compressed bytes
    /// written, total unknown), and stops the pack at the next write once
    /// its interrupt is set (the output is then incomplete, as after any
    /// failed write: a caller packing into an ingest aborts it).
    pub tracker: Tracker,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            encoding: Encoding::default(),
            algorithm: Algorithm::Sha256,
            source_date_epoch: None,
            xattrs: true,
            tracker: Tracker::default(),
        }
    }
}

impl PackOptions {
    /// Options with `compression` at its default level.
    pub fn new(compression: Compression) -> Self {
        PackOptions {
            encoding: Encoding::new(compression),
            ..PackOptions::default()
        }
    }

    /// Sets the compression level.
    pub fn with_level(mut self, level: i32) -> Self {
        self.encoding.level = Some(level);
        self
    }

    /// Clamps mtimes to `epoch`.
    pub fn with_source_date_epoch(mut self, epoch: i64) -> Self {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// Reads `SOURCE_DATE_EPOCH` from the environment, if set and valid.
    pub fn with_source_date_epoch_from_env(mut self) -> Self {
        if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            self.source_date_epoch = Some(v);
        }
        self
    }

    /// Sets [`tracker`](PackOptions::tracker).
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }
}

/// What a pack wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackReport {
    /// The blob digest (of the compressed bytes).
    pub digest: Digest,
    /// The diff ID (of the uncompressed tar).
    pub diff_id: Digest,
    /// Compressed size in bytes.
    pub size: u64,
    /// Uncompressed (tar) size in bytes.
    pub uncompressed_size: u64,
    /// Entries written (whiteouts included).
    pub entries: u64,
    /// The OCI layer media type for the compression.
    pub media_type: MediaType,
}

/// A failed pack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// A file or directory of the source could not be opened or read.
    #[error("{op} {path}")]
    Read {
        /// The path relative to the source directory.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the layer failed.
    #[error("writing the layer")]
    Write {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The compressor could not be set up.
    #[error(transparent)]
    Compress(#[from] CompressError),
    /// A file changed size while it was read.
    #[error("{path} changed while it was packed")]
    FileChanged {
        /// The path.
        path: PathBuf,
    },
    /// A socket or other type a tar cannot hold.
    #[error("{path}: file type cannot be packed")]
    UnsupportedFileType {
        /// The path.
        path: PathBuf,
    },
    /// An overlayfs feature (redirect, metacopy) this packer does not resolve.
    #[error("{path}: overlayfs {xattr} is not supported")]
    UnsupportedOverlay {
        /// The path.
        path: PathBuf,
        /// The xattr that uses the feature.
        xattr: String,
    },
}

impl Classify for PackError {
    fn kind(&self) -> ErrorKind {
        match self {
            PackError::Read { source, .. } | PackError::Write { source } => Classify::kind(source),
            PackError::Compress(e) => e.kind(),
            PackError::FileChanged { .. } => ErrorKind::FailedPrecondition,
            PackError::UnsupportedFileType { .. } | PackError::UnsupportedOverlay { .. } => {
                ErrorKind::Unsupported
            }
        }
    }
}

pub(crate) fn read_err(path: &[u8], op: &'static str, e: Errno) -> PackError {
    PackError::Read {
        path: display_path(path),
        op,
        source: io_err(e),
    }
}

fn write_err(source: io::Error) -> PackError {
    PackError::Write { source }
}

/// Packs the tree under `dir` into a layer written to `out`.
///
/// # Errors
/// A [`PackError`] naming the path that failed.
pub fn pack_dir<W: Write>(
    dir: &Path,
    mut out: W,
    options: &PackOptions,
) -> Result<PackReport, PackError> {
    pack_core(dir, &mut out, options, Source::Plain)
}

/// Packs an overlayfs upper directory: 0/0 character devices (and
/// `overlay.whiteout` files) become `.wh.NAME`, directories with
/// `overlay.opaque=y` get a `.wh..wh..opq` entry.
///
/// # Errors
/// A [`PackError`]; [`PackError::UnsupportedOverlay`] for redirected or
/// metacopy entries.
pub fn pack_overlay_upper<W: Write>(
    upper: &Path,
    mut out: W,
    options: &PackOptions,
    xattrs: OverlayXattrs,
) -> Result<PackReport, PackError> {
    pack_core(upper, &mut out, options, Source::Overlay(xattrs))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Plain,
    Overlay(OverlayXattrs),
}

type Stack<'w> = BufWriter<DigestWriter<Encoder<DigestWriter<&'w mut dyn Write>>>>;

/// A layer's uncompressed tar stream in, the layer blob out: compressor
/// over hashing writer over the caller's writer, with a hashing writer
/// above the compressor for the diff ID, so both digests come from one
/// pass. Pack writes through it; so does a caller that recompresses a
/// whole tar stream it has checked (bytes written as they are, framing
/// included), or one that writes entries of its own ([`LayerWriter`]).
pub struct LayerStream<'w> {
    stack: Stack<'w>,
    compression: Compression,
}

impl<'w> LayerStream<'w> {
    /// A stream compressing with `options.encoding` and hashing with
    /// `options.algorithm` into `out`.
    ///
    /// # Errors
    /// [`PackError::Compress`] when the compressor cannot be set up.
    pub fn new(out: &'w mut dyn Write, options: &PackOptions) -> Result<Self, PackError> {
        let blob = DigestWriter::new(out, options.algorithm);
        let enc = Encoder::new(blob, options.encoding)?;
        let diff = DigestWriter::new(enc, options.algorithm);
        Ok(LayerStream {
            stack: BufWriter::with_capacity(256 * 1024, diff),
            compression: options.encoding.compression,
        })
    }

    /// Ends the compressed stream and reports both digests and sizes;
    /// `entries` is what the report says of the entry count.
    ///
    /// # Errors
    /// [`PackError::Write`] when the last bytes cannot be written.
    pub fn finish(self, entries: u64) -> Result<PackReport, PackError> {
        let diff = self
            .stack
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        let (enc, diff_id, uncompressed_size) = diff.finish();
        let mut blob = enc.finish().map_err(write_err)?;
        blob.flush().map_err(write_err)?;
        let (_, digest, size) = blob.finish();
        Ok(PackReport {
            digest,
            diff_id,
            size,
            uncompressed_size,
            entries,
            media_type: MediaType::oci_layer(self.compression),
        })
    }
}

impl Write for LayerStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stack.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stack.flush()
    }
}

/// A layer written entry by entry with pack's deterministic tar writer
/// (ustar headers, PAX records only where ustar cannot hold a value, empty
/// user and group names), compressed and hashed in the same pass. The
/// caller chooses the order and the paths (relative, without `./`; a
/// directory's path ends in `/`) and writes a hard link after its target.
pub struct LayerWriter<'w> {
    tar: TarWriter<LayerStream<'w>>,
    entries: u64,
}

impl<'w> LayerWriter<'w> {
    /// A layer writer into `out` (see [`LayerStream::new`]).
    ///
    /// # Errors
    /// [`PackError::Compress`] when the compressor cannot be set up.
    pub fn new(out: &'w mut dyn Write, options: &PackOptions) -> Result<Self, PackError> {
        Ok(LayerWriter {
            tar: TarWriter::new(LayerStream::new(out, options)?),
            entries: 0,
        })
    }

    /// Writes one entry: its header and, for a regular file, `data`, whose
    /// length must be the size its kind declares (other kinds take none).
    ///
    /// # Errors
    /// [`PackError::Write`]; of class `InvalidInput` when `data` does not
    /// fit the entry.
    pub fn entry(&mut self, entry: &TarEntry<'_>, data: &[u8]) -> Result<(), PackError> {
        let size = match entry.kind {
            Kind::File { size } => size,
            _ => 0,
        };
        if size != data.len() as u64 {
            return Err(write_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "entry data is not the size its header declares",
            )));
        }
        self.header(entry)?;
        self.tar.data(data).map_err(write_err)?;
        self.tar.pad(size).map_err(write_err)
    }

    fn header(&mut self, entry: &TarEntry<'_>) -> Result<(), PackError> {
        self.tar.header(entry).map_err(write_err)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the end-of-archive marker and ends the stream.
    ///
    /// # Errors
    /// [`PackError::Write`].
    pub fn finish(self) -> Result<PackReport, PackError> {
        let stream = self.tar.finish().map_err(write_err)?;
        stream.finish(self.entries)
    }
}

/// The shared writing core of pack and diff.
pub(crate) struct Packer<'w, 'o> {
    layer: LayerWriter<'w>,
    opts: &'o PackOptions,
    source: Source,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

/// Metadata of one file of the source, as packed.
pub(crate) struct Node {
    pub(crate) stat: rfs::Stat,
    pub(crate) file_type: FileType,
}

impl<'w, 'o> Packer<'w, 'o> {
    pub(crate) fn new(
        out: &'w mut dyn Write,
        opts: &'o PackOptions,
        source: Source,
    ) -> Result<Self, PackError> {
        Ok(Packer {
            layer: LayerWriter::new(out, opts)?,
            opts,
            source,
            links: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
        })
    }

    pub(crate) fn finish(self) -> Result<PackReport, PackError> {
        self.layer.finish()
    }

    /// Makes every later entry of file `(dev, ino)` with more than one link
    /// a hardlink to `path`, which the caller knows exists where the layer
    /// is applied (a diff: a file of the lower tree the layer leaves alone).
    pub(crate) fn link_to_existing(&mut self, dev: u64, ino: u64, path: Vec<u8>) {
        self.links.insert((dev, ino), path);
    }

    fn mtime(&self, st: &rfs::Stat) -> i64 {
        let m = st.st_mtime;
        match self.opts.source_date_epoch {
            Some(e) if m > e => e,
            _ => m,
        }
    }

    pub(crate) fn stat(dir: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<Node, PackError> {
        let stat = rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| read_err(path, "stat", e))?;
        Ok(Node {
            file_type: FileType::from_raw_mode(stat.st_mode),
            stat,
        })
    }

    fn filter_xattrs(
        &self,
        path: &[u8],
        all: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Xattrs, PackError> {
        if let Source::Overlay(ns) = self.source {
            for (k, _) in &all {
                let key = String::from_utf8_lossy(k);
                if let Some(rest) = key.strip_prefix(ns.prefix()) {
                    if rest == "redirect" || rest == "metacopy" {
                        return Err(PackError::UnsupportedOverlay {
                            path: display_path(path),
                            xattr: key.into_owned(),
                        });
                    }
                }
            }
        }
        Ok(all
            .into_iter()
            .filter(|(k, _)| !whiteout::is_overlay_xattr(k) && k != b"security.selinux")
            .collect())
    }

    pub(crate) fn xattrs_of(&self, fd: BorrowedFd<'_>, path: &[u8]) -> Result<Xattrs, PackError> {
        if !self.opts.xattrs && self.source == Source::Plain {
            return Ok(Vec::new());
        }
        let all = fsops::read_xattrs(fd).map_err(|e| read_err(path, "read xattrs of", e))?;
        let mut kept = self.filter_xattrs(path, all)?;
        if !self.opts.xattrs {
            kept.clear();
        }
        Ok(kept)
    }

    fn header(
        &mut self,
        path: &[u8],
        kind: Kind,
        st: &rfs::Stat,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), PackError> {
        let mtime = self.mtime(st);
        self.layer.header(&TarEntry {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime,
            xattrs,
        })
    }

    /// Writes a `.wh.NAME` (or the opaque marker) entry in directory `parent`.
    pub(crate) fn whiteout_entry(
        &mut self,
        parent: &[u8],
        name: &[u8],
        st: &rfs::Stat,
    ) -> Result<(), PackError> {
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let mtime = self.mtime(st);
        self.layer.header(&TarEntry {
            path: &path,
            kind: Kind::File { size: 0 },
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: &[],
        })
    }

    /// Writes one entry for `name` in `dir` (path `path`); for a directory
    /// returns its open descriptor so the caller can descend.
    pub(crate) fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        parent: &[u8],
        node: &Node,
    ) -> Result<Option<OwnedFd>, PackError> {
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let st = &node.stat;

        if let Source::Overlay(ns) = self.source {
            let is_whiteout = match node.file_type {
                FileType::CharacterDevice => st.st_rdev == 0,
                FileType::RegularFile if st.st_size == 0 => {
                    let f = rfs::openat(
                        dir,
                        name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| read_err(&path, "open", e))?;
                    let key = format!("{}whiteout", ns.prefix());
                    fsops::get_xattr(f.as_fd(), key.as_bytes())
                        .map_err(|e| read_err(&path, "read xattrs of", e))?
                        .is_some()
                }
                _ => false,
            };
            if is_whiteout {
                let mut wh = whiteout::WHITEOUT_PREFIX.as_bytes().to_vec();
                wh.extend_from_slice(name);
                return self.whiteout_entry(parent, &wh, st).map(|()| None);
            }
        }

        let key = (st.st_dev, st.st_ino);
        if node.file_type != FileType::Directory && st.st_nlink > 1 {
            if let Some(target) = self.links.get(&key) {
                let target = target.clone();
                self.header(&path, Kind::Hardlink(target), st, &[])?;
                return Ok(None);
            }
            self.links.insert(key, path.clone());
        }

        match node.file_type {
            FileType::Directory => {
                let fd =
                    fsops::open_child_dir(dir, name).map_err(|e| read_err(&path, "open", e))?;
                self.dir_header(fd.as_fd(), &path, st)?;
                Ok(Some(fd))
            }
            FileType::RegularFile => {
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| read_err(&path, "open", e))?;
                let xattrs = self.xattrs_of(fd.as_fd(), &path)?;
                let size = u64::try_from(st.st_size).unwrap_or(0);
                self.header(&path, Kind::File { size }, st, &xattrs)?;
                let mut file = File::from(fd);
                let mut left = size;
                while left > 0 {
                    let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(0);
                    let k = match file.read(&mut self.buf[..want]) {
                        Ok(0) => {
                            return Err(PackError::FileChanged {
                                path: display_path(&path),
                            })
                        }
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(PackError::Read {
                                path: display_path(&path),
                                op: "read",
                                source: e,
                            })
                        }
                    };
                    self.layer.tar.data(&self.buf[..k]).map_err(write_err)?;
                    left -= k as u64;
                }
                self.layer.tar.pad(size).map_err(write_err)?;
                Ok(None)
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| read_err(&path, "read link", e))?;
                self.header(&path, Kind::Symlink(target.into_bytes()), st, &[])?;
                Ok(None)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let (ma, mi) = (
                    u64::from(rfs::major(st.st_rdev)),
                    u64::from(rfs::minor(st.st_rdev)),
                );
                let kind = if node.file_type == FileType::CharacterDevice {
                    Kind::Char(ma, mi)
                } else {
                    Kind::Block(ma, mi)
                };
                self.header(&path, kind, st, &[])?;
                Ok(None)
            }
            FileType::Fifo => {
                self.header(&path, Kind::Fifo, st, &[])?;
                Ok(None)
            }
            _ => Err(PackError::UnsupportedFileType {
                path: display_path(&path),
            }),
        }
    }

    /// Writes the header of the directory open as `fd` (path `path`).
    pub(crate) fn dir_header(
        &mut self,
        fd: BorrowedFd<'_>,
        path: &[u8],
        st: &rfs::Stat,
    ) -> Result<(), PackError> {
        let xattrs = self.xattrs_of(fd, path)?;
        let mut dpath = path.to_vec();
        dpath.push(b'/');
        self.header(&dpath, Kind::Dir, st, &xattrs)?;
        if let Source::Overlay(ns) = self.source {
            let opaque = fsops::get_xattr(fd, ns.opaque().as_bytes())
                .map_err(|e| read_err(path, "read xattrs of", e))?;
            if opaque.as_deref() == Some(b"y") {
                self.whiteout_entry(path, whiteout::WHITEOUT_OPAQUE.as_bytes(), st)?;
            }
        }
        Ok(())
    }

    /// Writes `name` and, for a directory, everything below it.
    pub(crate) fn tree(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        parent: &[u8],
    ) -> Result<(), PackError> {
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let node = Packer::stat(dir, name, &path)?;
        if let Some(sub) = self.entry(dir, name, parent, &node)? {
            self.children(sub.as_fd(), &path)?;
        }
        Ok(())
    }

    /// Writes every child of `dir` (path `path`), recursively.
    pub(crate) fn children(&mut self, dir: BorrowedFd<'_>, path: &[u8]) -> Result<(), PackError> {
        let names = fsops::list_dir(dir).map_err(|e| read_err(path, "list", e))?;
        for name in names {
            self.tree(dir, &name, path)?;
        }
        Ok(())
    }
}

pub(crate) fn open_root(dir: &Path) -> Result<OwnedFd, PackError> {
    rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PackError::Read {
        path: dir.to_path_buf(),
        op: "open",
        source: io_err(e),
    })
}

fn pack_core(
    dir: &Path,
    out: &mut dyn Write,
    opts: &PackOptions,
    source: Source,
) -> Result<PackReport, PackError> {
    let root = open_root(dir)?;
    let mut out = opts.tracker.writer("layer", None, out);
    let mut packer = Packer::new(&mut out, opts, source)?;
    packer.children(root.as_fd(), b"")?;
    let report = packer.finish()?;
    out.finish();
    Ok(report)
}
