//! Listing a layer: the same stream ending, decompression and limits as
//! unpack, and each entry's metadata.

use image_core::{Classify, Compression, Digest, ErrorKind};
use image_overlay::list::{list, EntryKind, ListEntry, ListOptions, ListReport, WhiteoutKind};
use image_overlay::unpack::{Limits, UnpackError};

use crate::common::{compress, Raw, TarBuf};
use crate::ending::{layout, two_files};

const KINDS: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

fn list_all(blob: &[u8]) -> (Result<ListReport, UnpackError>, Vec<ListEntry>) {
    let mut seen = Vec::new();
    let r = list(blob, &ListOptions::default(), |e| seen.push(e.clone()));
    (r, seen)
}

fn names(entries: &[ListEntry]) -> Vec<String> {
    entries.iter().map(ListEntry::path_lossy).collect()
}

fn assert_lists_two_files(tar: &[u8]) {
    for c in KINDS {
        let (r, seen) = list_all(&compress(tar, c));
        let r = r.unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
        assert_eq!(names(&seen), ["d/", "d/a", "b"], "{c:?}");
        assert_eq!(r.entries, 3);
        assert_eq!(r.compression, c);
        assert_eq!(r.diff_id, Digest::sha256(tar));
    }
}

#[test]
fn a_stream_without_marker_is_listed() {
    assert_lists_two_files(&two_files().0);
}

#[test]
fn a_stream_with_one_zero_block_is_listed() {
    let mut tar = two_files().0;
    tar.extend_from_slice(&[0u8; 512]);
    assert_lists_two_files(&tar);
}

#[test]
fn a_stream_without_padding_after_the_last_data_is_listed() {
    let mut tar = two_files().0;
    tar.truncate(tar.len() - 510);
    assert_lists_two_files(&tar);
}

#[test]
fn a_cut_header_or_data_is_truncated() {
    let mut cut_header = two_files().0;
    cut_header.extend_from_slice(&Raw::new("c", b'5').block()[..100]);
    let mut cut_data = two_files().0;
    cut_data.extend_from_slice(&Raw::new("big", b'0').size(3000).block());
    cut_data.extend_from_slice(&[7u8; 1700]);
    for tar in [cut_header, cut_data] {
        for c in KINDS {
            let e = list_all(&compress(&tar, c)).0.expect_err("cut short");
            image_testsupport::chain::assert_said_once(&e);
            assert!(matches!(e, UnpackError::Truncated { .. }), "{c:?}: {e:?}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}

/// Cut one archive (every header form) at every offset: the listing
/// succeeds exactly where the stream may end, with the entries before the
/// cut, and is `Truncated` everywhere else: the rule unpack follows.
#[test]
fn every_cut_lists_as_unpack_reads_it() {
    let l = layout();
    for cut in 0..=l.tar.len() {
        let legal = if cut >= l.zeros_from {
            Some(l.entries)
        } else {
            l.boundaries
                .iter()
                .chain(&l.data_ends)
                .find(|(at, _)| *at == cut)
                .map(|(_, n)| *n)
        };
        let (r, seen) = list_all(&l.tar[..cut]);
        match (legal, r) {
            (Some(n), Ok(r)) => {
                assert_eq!(r.entries, n, "cut at {cut}");
                assert_eq!(seen.len() as u64, n, "cut at {cut}");
            }
            (None, Err(UnpackError::Truncated { .. })) => {}
            (legal, r) => panic!("cut at {cut}: expected {legal:?}, got {r:?}"),
        }
    }
}

#[test]
fn limits_bound_a_listing() {
    let mut t = TarBuf::new();
    for i in 0..10 {
        t.file(&format!("f{i}"), b"x");
    }
    let tar = t.end();
    let few = ListOptions::default().with_limits(Limits {
        max_entries: 5,
        ..Limits::default()
    });
    let e = list(&tar[..], &few, |_| {}).expect_err("too many entries");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, UnpackError::TooManyEntries { limit: 5 }),
        "{e:?}"
    );
    let small = ListOptions::default().with_limits(Limits {
        max_expanded_bytes: 4096,
        ..Limits::default()
    });
    let e = list(&tar[..], &small, |_| {}).expect_err("too large");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, UnpackError::TooLarge { .. }), "{e:?}");
}

#[test]
fn entry_metadata_is_reported() {
    let mut t = TarBuf::new();
    t.pax(&[("mtime", b"1700000000.25"), ("SCHILY.xattr.user.k", b"v")]);
    t.file("d/f", b"abc");
    t.symlink("d/l", "f");
    t.hardlink("d/h", "d/f");
    t.file("d/.wh.gone", b"");
    t.file("d/.wh..wh..opq", b"");
    t.raw(&Raw::new("dev", b'3'), b"");
    let tar = t.end();
    let (r, seen) = list_all(&tar);
    r.expect("list");
    assert_eq!(seen[0].path, b"d/f");
    assert_eq!(seen[0].kind, EntryKind::Regular);
    assert_eq!(seen[0].size, 3);
    assert_eq!(
        (seen[0].mtime, seen[0].mtime_nanos),
        (1_700_000_000, 250_000_000)
    );
    assert_eq!(seen[0].xattrs, [(b"user.k".to_vec(), b"v".to_vec())]);
    assert_eq!(seen[0].whiteout, None);
    assert_eq!(seen[1].kind, EntryKind::Symlink);
    assert_eq!(seen[1].link_target.as_deref(), Some(&b"f"[..]));
    assert_eq!(seen[2].kind, EntryKind::HardLink);
    assert_eq!(seen[2].link_target.as_deref(), Some(&b"d/f"[..]));
    assert_eq!(
        seen[3].whiteout,
        Some(WhiteoutKind::Remove(b"gone".to_vec()))
    );
    assert_eq!(seen[4].whiteout, Some(WhiteoutKind::Opaque));
    assert_eq!(seen[5].kind, EntryKind::Char);
    assert_eq!(seen[5].device, Some((0, 0)));
}

/// The layers `umoci insert` writes (no padding after the last data, no
/// end-of-archive marker) list whole, compressed as umoci stored them.
#[test]
fn layers_from_umoci_insert_are_listed() {
    use image_store::image::resolve_image;
    use image_store::OciDir;
    if !crate::umoci::tools() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = crate::umoci::umoci_insert_image(work.path());
    let store = OciDir::open(&layout).expect("umoci's layout");
    let image = resolve_image(&store, "t", None).expect("resolve");
    let tars = crate::umoci::layer_tars(&store, &image);
    assert_eq!(tars[1].len(), 512 + 2, "not vacuous: no padding, no marker");
    let mut all = Vec::new();
    for l in image.layers() {
        let digest = Digest::try_from(l.digest()).expect("digest");
        let blob = std::fs::read(store.blob_path(&digest)).expect("blob");
        let (r, seen) = list_all(&blob);
        let r = r.unwrap_or_else(|e| panic!("layer {digest}: {e:?}"));
        assert_eq!(r.digest, digest);
        all.push(names(&seen));
    }
    assert!(all[0].iter().any(|n| n.ends_with("a/b/f")), "{all:?}");
    assert!(all[1].iter().any(|n| n.ends_with("top")), "{all:?}");
    assert!(all[2].iter().any(|n| n.ends_with("a/.wh.keep")), "{all:?}");
    assert!(
        all[3].iter().any(|n| n.ends_with("a/b/.wh..wh..opq")),
        "{all:?}"
    );
}

/// The tar parser holds an entry's PAX records and GNU long names in
/// memory: their size is bounded (as Go bounds each at 1 MiB), for unpack
/// and list alike, while file data of any size is not a header.
#[test]
fn header_groups_are_bounded() {
    use image_overlay::unpack::{unpack, UnpackOptions, DEFAULT_MAX_HEADER_BYTES};
    let limit = DEFAULT_MAX_HEADER_BYTES;
    let huge = vec![b'c'; usize::try_from(limit).expect("small") + 4096];
    let mut pax = TarBuf::new();
    pax.file("first", b"1");
    pax.pax(&[("comment", &huge)]);
    pax.file("f", b"x");
    let mut long = TarBuf::new();
    long.gnu_longname(&huge);
    long.file("f", b"x");
    for (what, tar) in [("PAX", pax.end()), ("GNU long name", long.end())] {
        for c in KINDS {
            let blob = compress(&tar, c);
            let e = list(&blob[..], &ListOptions::default(), |_| {}).expect_err("too large");
            image_testsupport::chain::assert_said_once(&e);
            assert!(
                matches!(e, UnpackError::HeaderTooLarge { limit: l, .. } if l == limit),
                "{what}, {c:?}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::Unsafe);
            let dir = tempfile::tempdir().expect("tempdir");
            let e =
                unpack(&blob[..], dir.path(), &UnpackOptions::default()).expect_err("too large");
            assert!(
                matches!(e, UnpackError::HeaderTooLarge { .. }),
                "{what}, {c:?}: {e:?}"
            );
        }
    }
    // Up to the limit (1 MiB records, as Go writes them), and data of any
    // size around them, is fine.
    let mib = vec![b'n'; 1 << 20];
    let mut ok = TarBuf::new();
    ok.file(
        "big",
        &vec![7u8; usize::try_from(limit).expect("small") * 2],
    );
    ok.pax(&[("comment", &mib)]);
    ok.gnu_longname(&mib);
    ok.file("f", b"x");
    let tar = ok.end();
    let (r, seen) = list_all(&tar);
    assert_eq!(r.expect("within the limit").entries, 2);
    assert_eq!(seen[1].path.len(), 1 << 20);
}
