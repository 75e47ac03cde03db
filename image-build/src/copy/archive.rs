//! `ADD` of a local archive: recognised by content as Docker does (a tar,
//! plain or compressed, whose first header reads), unpacked into the
//! destination by image-overlay's unpack with whiteouts kept as files.
//! bzip2 and xz, which image-overlay does not decode (no layer uses them),
//! are decoded here and handed to the unpack as a plain tar.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use image_core::codec;
use image_core::Compression;
use image_overlay::unpack::{unpack_at, UnpackOptions};
use image_overlay::WhiteoutMode;

use super::CopyError;

/// How an archive's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packing {
    /// Plain, gzip or zstd: image-overlay's unpack decodes them itself.
    Layer(Compression),
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
}

impl Packing {
    fn sniff(head: &[u8]) -> Packing {
        match codec::sniff_unsupported(head) {
            Some("xz") => Packing::Xz,
            Some(_) => Packing::Bzip2,
            None => Packing::Layer(Compression::sniff(head)),
        }
    }

    /// A reader of the decompressed bytes of `r`.
    fn decoder<'r>(self, r: impl Read + 'r) -> std::io::Result<Box<dyn Read + 'r>> {
        Ok(match self {
            Packing::Layer(c) => Box::new(codec::decoder(c, r)?),
            Packing::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Packing::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        })
    }
}

/// True when the file is a tar archive, plain or compressed (gzip, bzip2,
/// xz, zstd): its first 512 bytes, decompressed, are a tar header with a
/// valid checksum, as Go's `tar.Reader.Next` requires of what Docker
/// unpacks. Anything else is copied as a file.
pub(crate) fn is_archive(fd: OwnedFd, path: &str) -> Result<bool, CopyError> {
    let read_err = |source| CopyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::from(fd);
    let mut head = [0u8; 6];
    let n = read_full(&mut file, &mut head).map_err(read_err)?;
    let head = &head[..n];
    let chained = std::io::Cursor::new(head.to_vec()).chain(file);
    let mut block = [0u8; 512];
    let n = match Packing::sniff(head).decoder(chained) {
        // A stream that does not decode is not an archive: it is copied.
        Ok(mut d) => read_full(&mut d, &mut block).unwrap_or(0),
        Err(_) => 0,
    };
    Ok(n == 512 && tar_header(&block))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A tar header block: not all zeros, and its checksum (the unsigned sum
/// of its bytes with the checksum field as spaces, or the signed sum, as
/// old tars wrote) matches the octal field.
fn tar_header(b: &[u8; 512]) -> bool {
    let field = &b[148..156];
    let text: String = field
        .iter()
        .map(|&c| c as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(want) = i64::from_str_radix(&text, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    want == unsigned || want == signed
}

/// Unpacks the archive `file` into the directory `dest` (its links resolve
/// inside `dest`, as Docker's chrooted untar does); `.wh.` entries are
/// plain files; `owner` (`--chown`) replaces the entries' owners, as
/// BuildKit's unpack does. Returns the entries unpacked and their bytes.
pub(crate) fn unpack(
    file: OwnedFd,
    dest: BorrowedFd<'_>,
    path: &str,
    owner: Option<(u32, u32)>,
) -> Result<(u64, u64), CopyError> {
    let mut file = std::fs::File::from(file);
    let mut head = [0u8; 6];
    let n = read_full(&mut file, &mut head).map_err(|source| CopyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let packing = Packing::sniff(&head[..n]);
    let source = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    let mut options = UnpackOptions::default().with_whiteouts(WhiteoutMode::Keep);
    if let Some((uid, gid)) = owner {
        options = options.with_owner(uid, gid);
    }
    let unpack_err = |source| CopyError::Unpack {
        source_path: path.to_owned(),
        source,
    };
    let report = match packing {
        Packing::Layer(_) => unpack_at(source, dest.as_fd(), &options),
        other => {
            let decoded = other.decoder(source).map_err(|source| CopyError::Read {
                path: path.to_owned(),
                source,
            })?;
            unpack_at(
                decoded,
                dest.as_fd(),
                &options.with_compression(Compression::None),
            )
        }
    }
    .map_err(unpack_err)?;
    Ok((report.entries, report.size))
}
