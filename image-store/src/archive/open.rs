//! An OCI archive read in place (`oci-archive:`), as a read-only store.
//!
//! [`OciArchive::open`] walks the tar's headers once, seeking over every
//! entry's data, and remembers where each `blobs/<alg>/<hex>` entry's bytes
//! lie; `index.json` is read into memory (bounded). A blob is then read
//! straight from the file at its offset, verified against its digest as
//! any store's reader is ([`Provider`]), so copying from an archive never
//! unpacks it to disk. Tags are `index.json`'s `ref.name` annotations
//! ([`TagStore`]; setting one is refused: the archive is read-only).
//!
//! Only an uncompressed tar can be read in place; a compressed one is
//! refused with [`ArchiveError::CompressedArchive`] (`load` reads those).
//!
//! # Security
//! Entry names are only looked up, never used as paths; a name climbing
//! above the archive root is refused. The entries are at most
//! [`MAX_ENTRIES`], links are followed at most 32 hops, `index.json` is
//! read up to [`MAX_DOCUMENT_SIZE`], and an entry whose data would lie
//! past the end of the file is refused when the archive is opened. Every
//! blob read is checked against its digest and size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_core::codec;
use image_core::{Compression, Descriptor, Digest, Index, VerifyingReader};

use super::tarstream::{normalize, resolve_link};
use super::ArchiveError;
use crate::content::{Info, Provider};
use crate::error::{ContentError, TagError};
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::{ref_name, TagStore, Tagged};

/// The most tar entries an archive opened in place may have.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Where a blob's bytes lie in the archive file.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    size: u64,
}

/// An OCI archive opened in place; see the [module documentation](self).
#[derive(Debug)]
pub struct OciArchive {
    path: PathBuf,
    file: Arc<File>,
    blobs: HashMap<Digest, Span>,
    index: Index,
}

impl OciArchive {
    /// Opens the OCI archive at `path` and reads its table of entries.
    ///
    /// # Errors
    /// [`ArchiveError::Read`] when the file cannot be read (or is not a
    /// regular file), [`ArchiveError::CompressedArchive`],
    /// [`ArchiveError::Tar`] or [`ArchiveError::Truncated`] for a
    /// malformed tar, [`ArchiveError::NotAnArchive`] without `oci-layout`
    /// and `index.json`, [`ArchiveError::Parse`] for an `index.json` that
    /// is not an index, and the bounds of the
    /// [module documentation](self).
    pub fn open(path: impl AsRef<Path>) -> Result<OciArchive, ArchiveError> {
        let path = path.as_ref();
        let read_err = |source| ArchiveError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mut head = [0u8; 6];
        let n = file.read_at(&mut head, 0).map_err(read_err)?;
        let head = &head[..n];
        if let Some(compression) = codec::sniff_unsupported(head) {
            return Err(ArchiveError::CompressedArchive { compression });
        }
        match Compression::sniff(head) {
            Compression::None => {}
            Compression::Gzip => {
                return Err(ArchiveError::CompressedArchive {
                    compression: "gzip",
                })
            }
            Compression::Zstd => {
                return Err(ArchiveError::CompressedArchive {
                    compression: "zstd",
                })
            }
        }
        let (blobs, index) = scan(&file, meta.len())?;
        Ok(OciArchive {
            path: path.to_owned(),
            file: Arc::new(file),
            blobs,
            index,
        })
    }

    /// The archive's `index.json`.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The archive's index entry when it holds exactly one, skopeo's rule
    /// for `oci-archive:PATH` without a reference. An archive written with
    /// referrers lists them beside the image:
    /// [`referrers::only_image`](crate::referrers::only_image) leaves
    /// them out.
    pub fn only_image(&self) -> Option<&Descriptor> {
        match self.index.manifests() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The blobs' spans and the index, from one pass over the headers.
fn scan(file: &File, len: u64) -> Result<(HashMap<Digest, Span>, Index), ArchiveError> {
    let mut reader = file;
    reader.rewind().map_err(|e| tar_err(e, "<start>"))?;
    let mut archive = tar::Archive::new(reader);
    let mut files: HashMap<String, Span> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut index = None;
    let mut layout = false;
    let mut last = String::from("<start>");
    let entries = archive.entries_with_seek().map_err(|e| tar_err(e, &last))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(ArchiveError::Unsupported {
                what: format!("an archive of more than {MAX_ENTRIES} entries"),
            });
        }
        let mut entry = entry.map_err(|e| tar_err(e, &last))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = normalize(&raw)?;
        last = name.clone();
        let kind = entry.header().entry_type();
        if kind.is_hard_link() || kind.is_symlink() {
            if let Some(target) = entry.link_name_bytes() {
                let target = String::from_utf8_lossy(&target).into_owned();
                links.insert(name, resolve_link(&last, &target, kind.is_symlink())?);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let span = Span {
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if span
            .offset
            .checked_add(span.size)
            .is_none_or(|end| end > len)
        {
            return Err(ArchiveError::Truncated {
                what: format!("entry {name:?} ends past the end of the file"),
            });
        }
        match name.as_str() {
            "index.json" => {
                if span.size > MAX_DOCUMENT_SIZE {
                    return Err(ArchiveError::TooLarge {
                        path: name,
                        size: span.size,
                        limit: MAX_DOCUMENT_SIZE,
                    });
                }
                let mut raw = Vec::new();
                entry
                    .read_to_end(&mut raw)
                    .map_err(|e| tar_err(e, "index.json"))?;
                index = Some(raw);
            }
            "oci-layout" => layout = true,
            _ => {
                files.insert(name, span);
            }
        }
    }
    let (Some(index), true) = (index, layout) else {
        return Err(ArchiveError::NotAnArchive);
    };
    let index = Index::from_bytes(index).map_err(|source| ArchiveError::Parse {
        what: "index.json".into(),
        source,
    })?;
    let mut blobs = HashMap::new();
    let names = files.keys().chain(links.keys());
    for name in names {
        let Some((alg, hex)) = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
            continue;
        };
        if let Some(span) = follow(name, &files, &links) {
            blobs.insert(digest, span);
        }
    }
    Ok((blobs, index))
}

/// The file `name` is, or leads to through at most 32 links.
fn follow(
    name: &str,
    files: &HashMap<String, Span>,
    links: &HashMap<String, String>,
) -> Option<Span> {
    let mut at = name;
    for _ in 0..32 {
        if let Some(span) = files.get(at) {
            return Some(*span);
        }
        at = links.get(at)?;
    }
    None
}

fn tar_err(source: io::Error, entry: &str) -> ArchiveError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated {
            what: format!("after entry {entry:?}"),
        }
    } else {
        ArchiveError::Tar {
            entry: entry.to_owned(),
            source,
        }
    }
}

/// A span of the archive file, read with `pread`.
struct Section {
    file: Arc<File>,
    at: u64,
    left: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Provider for OciArchive {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        let span = self
            .blobs
            .get(digest)
            .ok_or_else(|| ContentError::NotFound {
                digest: digest.clone(),
            })?;
        let section = Section {
            file: Arc::clone(&self.file),
            at: span.offset,
            left: span.size,
        };
        Ok(Box::new(VerifyingReader::new(
            section,
            digest.clone(),
            Some(span.size),
        )))
    }

    fn try_info(&self, digest: &Digest) -> Result<Option<Info>, ContentError> {
        Ok(self
            .blobs
            .get(digest)
            .map(|span| Info::new(digest.clone(), span.size, None)))
    }
}

impl TagStore for OciArchive {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        Ok(self
            .index
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| Tagged::new(n.to_owned(), d.clone())))
            .collect())
    }

    fn index_entries(&self) -> Result<Vec<Descriptor>, TagError> {
        Ok(self.index.manifests().to_vec())
    }

    fn set_tag(&self, name: &str, _descriptor: &Descriptor) -> Result<(), TagError> {
        Err(TagError::ReadOnly {
            name: name.to_owned(),
            path: self.path.clone(),
        })
    }

    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        Err(TagError::ReadOnly {
            name: name.to_owned(),
            path: self.path.clone(),
        })
    }
}
