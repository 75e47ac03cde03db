//! Where a layer's tar stream may end.
//!
//! Go's `archive/tar` (so Docker, containerd, podman and umoci) ends a
//! stream cleanly where a header would start, with the end-of-archive
//! marker, with one zero block of it, or with none; and also right after
//! the data of the last entry when none of its padding follows (a Go
//! `tar.Writer` that is never closed, as `umoci insert` leaves it, writes
//! the padding only before the next header). Anywhere else, inside a
//! header, an entry's data or its padding, the stream is cut short. GNU tar
//! and Python's tarfile refuse the missing padding; we follow Go, as every
//! container engine does.
//!
//! Besides the named cases, [`every_cut_of_an_archive`] cuts one archive at
//! every offset and checks the outcome against that rule.

use image_core::{Classify, Compression, ErrorKind};
use image_overlay::unpack::{unpack, UnpackError, UnpackOptions, UnpackReport};

use crate::common::{compress, Raw, TarBuf};

const KINDS: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

/// Unpacks `tar` compressed with `c` into a new directory; returns the
/// report and the directory.
fn unpack_as(tar: &[u8], c: Compression) -> (Result<UnpackReport, UnpackError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = compress(tar, c);
    let r = unpack(&blob[..], dir.path(), &UnpackOptions::default());
    (r, dir)
}

pub(crate) fn two_files() -> TarBuf {
    let mut t = TarBuf::new();
    t.dir("d/");
    t.file("d/a", b"hello");
    t.file("b", b"x\n");
    t
}

/// A stream ending at an entry boundary, or right after its data, is
/// complete: everything in it is applied and the diff ID is of the bytes
/// as they are.
fn assert_complete(tar: &[u8], c: Compression) {
    let (r, dir) = unpack_as(tar, c);
    let r = r.unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
    assert_eq!(r.entries, 3, "{c:?}");
    assert_eq!(
        std::fs::read(dir.path().join("d/a")).expect("d/a"),
        b"hello"
    );
    assert_eq!(std::fs::read(dir.path().join("b")).expect("b"), b"x\n");
    assert_eq!(r.diff_id, image_core::Digest::sha256(tar), "{c:?}");
    assert_eq!(r.size, tar.len() as u64, "{c:?}");
    assert_eq!(r.trailing_bytes, 0, "{c:?}");
}

fn assert_truncated(tar: &[u8], c: Compression) {
    let (r, _dir) = unpack_as(tar, c);
    let e = r.expect_err("a stream cut short must fail");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, UnpackError::Truncated { .. }), "{c:?}: {e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn no_end_marker() {
    // The padded stream as it stands before the marker.
    let tar = two_files().0;
    assert_eq!(tar.len() % 512, 0);
    for c in KINDS {
        assert_complete(&tar, c);
    }
}

#[test]
fn one_zero_block() {
    let mut tar = two_files().0;
    tar.extend_from_slice(&[0u8; 512]);
    for c in KINDS {
        assert_complete(&tar, c);
    }
}

#[test]
fn no_padding_after_the_last_data_and_no_marker() {
    // What `umoci insert` writes: 512 + 2 bytes for a last entry of 2.
    let mut tar = two_files().0;
    tar.truncate(tar.len() - 510);
    for c in KINDS {
        assert_complete(&tar, c);
    }
}

#[test]
fn a_directory_last_without_marker() {
    let mut t = two_files();
    t.dir("e/");
    let tar = t.0;
    for c in KINDS {
        let (r, dir) = unpack_as(&tar, c);
        assert_eq!(r.expect("complete").entries, 4);
        assert!(dir.path().join("e").is_dir());
    }
}

#[test]
fn an_empty_stream_and_a_bare_marker() {
    // BuildKit's empty layer is a gzip of nothing; Docker's, 1024 zeros.
    for tar in [Vec::new(), vec![0u8; 1024]] {
        for c in KINDS {
            let (r, dir) = unpack_as(&tar, c);
            let r = r.unwrap_or_else(|e| panic!("{} bytes, {c:?}: {e:?}", tar.len()));
            assert_eq!(r.entries, 0);
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        }
    }
}

#[test]
fn cut_header() {
    let mut tar = two_files().0;
    tar.extend_from_slice(&Raw::new("c", b'5').block()[..100]);
    for c in KINDS {
        assert_truncated(&tar, c);
    }
}

#[test]
fn cut_data() {
    let mut t = two_files();
    let mut tar = std::mem::take(&mut t.0);
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
    tar.extend_from_slice(&Raw::new("big", b'0').size(3000).block());
    tar.extend_from_slice(&big[..1700]);
    for c in KINDS {
        assert_truncated(&tar, c);
    }
    // Cut inside the last data block, where padding would have gone: the
    // missing bytes are data, not padding, and are not made up.
    tar.extend_from_slice(&big[1700..2999]);
    for c in KINDS {
        assert_truncated(&tar, c);
    }
}

#[test]
fn cut_padding() {
    // Some of the padding but not all: Go refuses it, and so do we.
    let mut tar = two_files().0;
    tar.truncate(tar.len() - 200);
    for c in KINDS {
        assert_truncated(&tar, c);
    }
}

#[test]
fn cut_after_a_pax_header() {
    // A PAX header describes the next entry, which must follow.
    let mut t = two_files();
    t.pax(&[("path", b"long-name")]);
    for c in KINDS {
        assert_truncated(&t.0, c);
    }
}

#[test]
fn cut_after_a_gnu_long_name() {
    let mut t = two_files();
    t.gnu_longname(&[b'n'; 150]);
    for c in KINDS {
        assert_truncated(&t.0, c);
    }
}

#[test]
fn data_after_an_unterminated_stream_is_still_refused() {
    // One zero block then data: a second archive glued on, or garbage.
    let mut tar = two_files().0;
    tar.extend_from_slice(&[0u8; 512]);
    tar.extend_from_slice(&[1u8; 512]);
    for c in KINDS {
        let (r, _dir) = unpack_as(&tar, c);
        let e = r.expect_err("trailing data");
        image_testsupport::chain::assert_said_once(&e);
        assert!(
            matches!(e, UnpackError::TrailingData { .. }),
            "{c:?}: {e:?}"
        );
    }
}

/// One archive with every kind of header group, and where each may end.
pub(crate) struct Layout {
    pub(crate) tar: Vec<u8>,
    /// Offsets where a header group starts (with the count of complete
    /// entries before it), including the marker's first block.
    pub(crate) boundaries: Vec<(usize, u64)>,
    /// Offsets where an entry's data ends short of a block boundary (the
    /// count of entries including that one).
    pub(crate) data_ends: Vec<(usize, u64)>,
    /// Where the marker's first zero block ends: any end from there on is
    /// complete (the zeros after one zero block are padding, as GNU tar's
    /// records are; Go would refuse a partial second block, but nothing of
    /// the content is missing).
    pub(crate) zeros_from: usize,
    /// Entries in all.
    pub(crate) entries: u64,
}

pub(crate) fn layout() -> Layout {
    let mut t = TarBuf::new();
    let mut boundaries = Vec::new();
    let mut data_ends = Vec::new();
    let mut n = 0;
    let mut entry = |t: &mut TarBuf, add: &dyn Fn(&mut TarBuf), data_len: usize| {
        boundaries.push((t.0.len(), n));
        add(t);
        n += 1;
        let end = t.0.len() - (512 - data_len % 512) % 512;
        if data_len % 512 != 0 {
            data_ends.push((end, n));
        }
    };
    entry(
        &mut t,
        &|t| {
            t.dir("d/");
        },
        0,
    );
    entry(
        &mut t,
        &|t| {
            t.file("d/a", &[b'a'; 700]);
        },
        700,
    );
    entry(
        &mut t,
        &|t| {
            t.file("d/exact", &[b'e'; 1024]);
        },
        1024,
    );
    entry(
        &mut t,
        &|t| {
            t.pax(&[("path", b"d/from-pax"), ("uid", b"3000000000")]);
            t.file("d/ignored", b"p");
        },
        1,
    );
    entry(
        &mut t,
        &|t| {
            t.gnu_longname(&[b'l'; 150]);
            t.file("d/short", b"long");
        },
        4,
    );
    entry(
        &mut t,
        &|t| {
            t.symlink("d/link", "a");
        },
        0,
    );
    entry(
        &mut t,
        &|t| {
            t.file("last", b"z");
        },
        1,
    );
    boundaries.push((t.0.len(), n));
    let marker = t.0.len();
    let tar = t.end();
    Layout {
        tar,
        boundaries,
        data_ends,
        zeros_from: marker + 512,
        entries: n,
    }
}

#[test]
fn every_cut_of_an_archive() {
    let l = layout();
    let legal = |cut: usize| {
        if cut >= l.zeros_from {
            return Some(l.entries);
        }
        l.boundaries
            .iter()
            .chain(&l.data_ends)
            .find(|(at, _)| *at == cut)
            .map(|(_, n)| *n)
    };
    // Every offset near a place where the stream may end (and the marker's
    // end), and a sample of the rest: each unpack costs a directory.
    let near = |cut: usize| {
        l.boundaries
            .iter()
            .chain(&l.data_ends)
            .map(|(at, _)| *at)
            .chain([l.zeros_from, l.tar.len()])
            .any(|at| cut.abs_diff(at) <= 2)
    };
    let mut complete = 0;
    let mut cuts = 0;
    for cut in (0..=l.tar.len()).filter(|c| near(*c) || c % 61 == 0) {
        let tar = &l.tar[..cut];
        cuts += 1;
        for c in KINDS {
            let (r, _dir) = unpack_as(tar, c);
            match (legal(cut), r) {
                (Some(n), Ok(r)) => {
                    assert_eq!(r.entries, n, "cut at {cut}, {c:?}");
                    assert_eq!(r.diff_id, image_core::Digest::sha256(tar));
                    complete += 1;
                }
                (None, Err(UnpackError::Truncated { .. })) => {}
                (want, got) => panic!(
                    "cut at {cut} of {}, {c:?}: expected {}, got {got:?}",
                    l.tar.len(),
                    if want.is_some() {
                        "success"
                    } else {
                        "Truncated"
                    },
                ),
            }
        }
    }
    assert!(cuts > 200, "{cuts}");
    assert!(complete >= 3 * (l.boundaries.len() + l.data_ends.len()));
}

/// A source that gives at most 7 bytes a read.
struct Dribble<'a>(&'a [u8]);
impl std::io::Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(7);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_change_nothing() {
    let mut unpadded = two_files().0;
    unpadded.truncate(unpadded.len() - 510);
    let mut cut = two_files().0;
    cut.truncate(cut.len() - 200);
    for c in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = compress(&unpadded, c);
        let r = unpack(Dribble(&blob), dir.path(), &UnpackOptions::default()).expect("complete");
        assert_eq!(r.entries, 3, "{c:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = compress(&cut, c);
        let e = unpack(Dribble(&blob), dir.path(), &UnpackOptions::default()).expect_err("cut");
        image_testsupport::chain::assert_said_once(&e);
        assert!(matches!(e, UnpackError::Truncated { .. }), "{c:?}: {e:?}");
    }
}
