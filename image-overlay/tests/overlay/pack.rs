//! Pack: determinism, digests, clamping, overlay upper directories.

use std::io::Read;

use image_core::{Compression, Digest};
use image_overlay::pack::{pack_dir, pack_overlay_upper, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions};
use image_overlay::OverlayXattrs;

use crate::common::{assert_same_tree, is_root, make_tree, snapshot};

pub fn entries(layer: &[u8], c: Compression) -> Vec<String> {
    let mut tar = Vec::new();
    image_overlay::compress::decoder(c, layer)
        .expect("decoder")
        .read_to_end(&mut tar)
        .expect("decompress");
    let mut a = tar::Archive::new(&tar[..]);
    a.entries()
        .expect("entries")
        .map(|e| String::from_utf8_lossy(&e.expect("entry").path_bytes()).into_owned())
        .collect()
}

#[test]
fn packing_twice_gives_the_same_digest_and_the_report_is_true() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut a = Vec::new();
        let ra = pack_dir(src.path(), &mut a, &PackOptions::new(c)).expect("pack");
        let mut b = Vec::new();
        let rb = pack_dir(src.path(), &mut b, &PackOptions::new(c)).expect("pack");
        assert_eq!(ra.digest, rb.digest, "{c:?}");
        assert_eq!(a, b);
        assert_eq!(ra.digest, Digest::sha256(&a));
        assert_eq!(ra.size, a.len() as u64);
        let mut tar = Vec::new();
        image_overlay::compress::decoder(c, &a[..])
            .expect("decoder")
            .read_to_end(&mut tar)
            .expect("decompress");
        assert_eq!(ra.diff_id, Digest::sha256(&tar));
        assert_eq!(ra.uncompressed_size, tar.len() as u64);
        // The diff ID does not depend on the compression.
        let mut plain = Vec::new();
        let rp =
            pack_dir(src.path(), &mut plain, &PackOptions::new(Compression::None)).expect("pack");
        assert_eq!(rp.diff_id, ra.diff_id);
    }
}

#[test]
fn entries_are_sorted_and_dirs_come_first() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let mut out = Vec::new();
    pack_dir(src.path(), &mut out, &PackOptions::new(Compression::None)).expect("pack");
    let names = entries(&out, Compression::None);
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(pos("usr/") < pos("usr/bin/"));
    assert!(pos("usr/bin/") < pos("usr/bin/tool"));
    assert!(pos("usr/bin/link") < pos("usr/bin/suid"));
}

#[test]
fn round_trip_through_our_unpack() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut out = Vec::new();
        let r = pack_dir(src.path(), &mut out, &PackOptions::new(c).with_level(1)).expect("pack");
        let dst = tempfile::tempdir().expect("tempdir");
        let opts = UnpackOptions::default()
            .with_digest(r.digest)
            .with_diff_id(r.diff_id);
        unpack(&out[..], dst.path(), &opts).expect("unpack");
        assert_same_tree(src.path(), dst.path(), false);
    }
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let mut out = Vec::new();
    pack_dir(
        src.path(),
        &mut out,
        &PackOptions::new(Compression::Gzip).with_source_date_epoch(1_000_000),
    )
    .expect("pack");
    let dst = tempfile::tempdir().expect("tempdir");
    unpack(&out[..], dst.path(), &UnpackOptions::default()).expect("unpack");
    for (p, f) in snapshot(dst.path(), true) {
        assert_eq!(f.mtime, 1_000_000, "{}", p.display());
    }
}

#[test]
fn overlay_upper_whiteouts_become_oci_whiteouts() {
    if !is_root() {
        eprintln!("SKIPPED: overlay upper directories need root (trusted.* xattrs, mknod 0/0)");
        return;
    }
    let upper = tempfile::tempdir().expect("tempdir");
    let p = upper.path();
    std::fs::create_dir(p.join("opaque")).expect("mkdir");
    std::fs::write(p.join("opaque/new"), b"n").expect("write");
    rustix::fs::setxattr(
        p.join("opaque"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p.join("deleted"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .expect("whiteout");
    let mut out = Vec::new();
    pack_overlay_upper(
        p,
        &mut out,
        &PackOptions::new(Compression::None),
        OverlayXattrs::Trusted,
    )
    .expect("pack");
    let names = entries(&out, Compression::None);
    assert_eq!(
        names,
        [
            ".wh.deleted",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/new"
        ]
    );
}
