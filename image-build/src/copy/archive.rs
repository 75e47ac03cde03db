//! `ADD` of a local archive: recognised by content as Docker does (a tar,
//! plain or compressed, whose first header reads), unpacked into the
//! destination by image-overlay's unpack with whiteouts kept as files.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use image_core::codec;
use image_core::Compression;
use image_overlay::unpack::{unpack_at, UnpackOptions};
use image_overlay::WhiteoutMode;

use super::CopyError;

/// True when the file is a tar archive, plain or gzip- or
/// zstd-compressed: its first 512 bytes (decompressed) are a tar header
/// with a valid checksum, as Go's `tar.Reader.Next` requires. A file
/// compressed with bzip2 or xz is refused by name (no decoder here).
pub(crate) fn is_archive(fd: OwnedFd, path: &str) -> Result<bool, CopyError> {
    let read_err = |source| CopyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::from(fd);
    let mut head = [0u8; 6];
    let n = read_full(&mut file, &mut head).map_err(read_err)?;
    let head = &head[..n];
    if let Some(name) = codec::sniff_unsupported(head) {
        return Err(CopyError::Unsupported {
            path: path.to_owned(),
            what: if name == "xz" {
                "xz-compressed file"
            } else {
                "bzip2-compressed file"
            },
        });
    }
    let compression = Compression::sniff(head);
    let chained = std::io::Cursor::new(head.to_vec()).chain(file);
    let mut block = [0u8; 512];
    let n = match codec::decoder(compression, chained) {
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
/// plain files. Returns the entries unpacked and their bytes.
pub(crate) fn unpack(
    file: OwnedFd,
    dest: BorrowedFd<'_>,
    path: &str,
) -> Result<(u64, u64), CopyError> {
    let options = UnpackOptions::default().with_whiteouts(WhiteoutMode::Keep);
    let report =
        unpack_at(std::fs::File::from(file), dest.as_fd(), &options).map_err(|source| {
            CopyError::Unpack {
                source_path: path.to_owned(),
                source,
            }
        })?;
    Ok((report.entries, report.size))
}
