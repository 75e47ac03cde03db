//! Unpack: entry types, metadata, whiteouts, compression, digests.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use image_core::{Algorithm, Compression, Digest};
use image_overlay::unpack::{unpack, UnpackOptions};
use image_overlay::{OverlayXattrs, WhiteoutMode};

use crate::common::{compress, is_root, user_xattrs, Raw, TarBuf};

/// A reader that returns at most 7 bytes a call.
struct Dribble<'a>(&'a [u8]);
impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(7);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn sample() -> Vec<u8> {
    let mut t = TarBuf::new();
    let mut d = Raw::new("dir/", b'5');
    d.mode = 0o1777;
    d.mtime = 1_500_000_000;
    t.raw(&d, b"");
    let mut f = Raw::new("dir/suid", b'0').size(3);
    f.mode = 0o4755;
    f.uid = 1234;
    f.gid = 5678;
    t.raw(&f, b"abc");
    let mut g = Raw::new("dir/sgid", b'0');
    g.mode = 0o2711;
    t.raw(&g, b"");
    t.symlink("dir/link", "suid");
    t.hardlink("dir/hard", "dir/suid");
    t.raw(&Raw::new("fifo", b'6'), b"");
    let mut c = Raw::new("null", b'3');
    c.major = 1;
    c.minor = 3;
    c.mode = 0o666;
    t.raw(&c, b"");
    t.pax(&[
        ("mtime", b"1700000000.123456789"),
        ("SCHILY.xattr.user.test", b"value"),
    ]);
    t.file("nanos", b"n");
    t.end()
}

#[test]
fn every_entry_type_and_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = sample();
    let r = unpack(Dribble(&layer), dir.path(), &UnpackOptions::default()).expect("unpack");
    assert_eq!(r.entries, 8);
    let p = dir.path();
    let d = std::fs::symlink_metadata(p.join("dir")).expect("dir");
    assert_eq!(d.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(d.mtime(), 1_500_000_000, "directory mtime set last");
    let s = std::fs::symlink_metadata(p.join("dir/suid")).expect("suid");
    assert_eq!(s.permissions().mode() & 0o7777, 0o4755);
    if is_root() {
        assert_eq!((s.uid(), s.gid()), (1234, 5678));
    }
    assert_eq!(s.nlink(), 2);
    let h = std::fs::symlink_metadata(p.join("dir/hard")).expect("hard");
    assert_eq!(h.ino(), s.ino());
    let g = std::fs::symlink_metadata(p.join("dir/sgid")).expect("sgid");
    assert_eq!(g.permissions().mode() & 0o7777, 0o2711);
    assert_eq!(
        std::fs::read_link(p.join("dir/link"))
            .expect("link")
            .to_str(),
        Some("suid")
    );
    assert!(std::fs::symlink_metadata(p.join("fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    if is_root() {
        let n = std::fs::symlink_metadata(p.join("null")).expect("null");
        assert!(n.file_type().is_char_device());
        assert_eq!(n.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(n.permissions().mode() & 0o7777, 0o666);
    }
    let n = std::fs::symlink_metadata(p.join("nanos")).expect("nanos");
    assert_eq!((n.mtime(), n.mtime_nsec()), (1_700_000_000, 123_456_789));
    let xs = user_xattrs(&p.join("nanos"));
    assert!(
        xs.contains(&("user.test".to_owned(), b"value".to_vec())),
        "{xs:?}"
    );
}

#[test]
fn compression_is_sniffed_and_digests_computed() {
    let tar = sample();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let layer = compress(&tar, c);
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = UnpackOptions::default()
            .with_digest(Digest::sha256(&layer))
            .with_diff_id(Digest::sha256(&tar));
        let r = unpack(&layer[..], dir.path(), &opts).expect("unpack");
        assert_eq!(r.compression, c);
        assert_eq!(r.compressed_size, layer.len() as u64);
        assert_eq!(r.size, tar.len() as u64);
        // Declared compression agreeing with the bytes is fine too.
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(
            &layer[..],
            dir.path(),
            &UnpackOptions::default().with_compression(c),
        )
        .expect("declared");
    }
}

#[test]
fn sha512_digests_follow_the_expected_algorithm() {
    let tar = sample();
    let layer = compress(&tar, Compression::Gzip);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = UnpackOptions::default()
        .with_digest(Digest::of_bytes(Algorithm::Sha512, &layer))
        .with_diff_id(Digest::of_bytes(Algorithm::Sha512, &tar));
    let r = unpack(&layer[..], dir.path(), &opts).expect("unpack");
    assert_eq!(r.digest.algorithm(), Algorithm::Sha512);
}

#[test]
fn whiteouts_are_applied_when_flattening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l1 = TarBuf::new()
        .dir("a/")
        .file("a/gone", b"1")
        .file("a/stays", b"1")
        .dir("o/")
        .file("o/lower", b"1")
        .dir("o/sub/")
        .file("o/sub/deep", b"1")
        .file("linked", b"shared")
        .end();
    unpack(&l1[..], dir.path(), &UnpackOptions::default()).expect("l1");
    let l2 = TarBuf::new()
        .file("a/.wh.gone", b"")
        .dir("o/")
        .file("o/new-before-marker", b"2")
        .file("o/.wh..wh..opq", b"")
        .file("o/new", b"2")
        .hardlink("link-to-lower", "linked")
        .file("a/.wh..wh.plnk", b"")
        .end();
    let r = unpack(&l2[..], dir.path(), &UnpackOptions::default()).expect("l2");
    let p = dir.path();
    assert!(!p.join("a/gone").exists());
    assert!(p.join("a/stays").exists());
    assert!(!p.join("o/lower").exists());
    assert!(!p.join("o/sub").exists());
    assert!(p.join("o/new").exists());
    assert!(
        p.join("o/new-before-marker").exists(),
        "same-layer entries survive the opaque marker"
    );
    assert!(!p.join("o/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read(p.join("link-to-lower")).expect("link"),
        b"shared"
    );
    assert_eq!(r.skipped_total, 1, "{:?}", r.skipped);
}

/// Files get the owner the layer gives them even where a new file is
/// born with another group (a setgid directory), and when a directory
/// entry changes that group between two files: the `fchown` that is
/// skipped for files born right is skipped only when the owner a file is
/// born with was seen in that same directory since the last other entry.
#[test]
fn owners_are_right_where_new_files_inherit_a_group() {
    if !is_root() {
        eprintln!("SKIPPED: owners need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sg = dir.path().join("sg");
    std::fs::create_dir(&sg).expect("mkdir");
    std::os::unix::fs::chown(&sg, Some(0), Some(1234)).expect("chown");
    std::fs::set_permissions(&sg, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
    let owned = |name: &str, uid: u64, gid: u64| {
        let mut r = Raw::new(name, b'0').size(1);
        r.uid = uid;
        r.gid = gid;
        r
    };
    let mut t = TarBuf::new();
    let files = [
        ("sg/a", 0, 0),
        ("sg/b", 0, 1234),
        ("sg/c", 0, 1234),
        ("sg/d", 0, 0),
        ("sg/e", 5, 6),
        ("top", 0, 0),
        ("top2", 7, 8),
        ("top3", 0, 0),
    ];
    for (name, uid, gid) in files {
        t.raw(&owned(name, uid, gid), b"x");
    }
    // A directory entry regroups sg between two of its files.
    let mut d = Raw::new("sg/", b'5');
    d.gid = 999;
    d.mode = 0o2775;
    t.raw(&d, b"");
    let after = [("sg/f", 0, 1234), ("sg/g", 0, 999), ("sg/h", 0, 0)];
    for (name, uid, gid) in after {
        t.raw(&owned(name, uid, gid), b"x");
    }
    let layer = t.end();
    unpack(&layer[..], dir.path(), &UnpackOptions::default()).expect("unpack");
    for (name, uid, gid) in files.into_iter().chain(after) {
        let m = std::fs::symlink_metadata(dir.path().join(name)).expect(name);
        assert_eq!(
            (u64::from(m.uid()), u64::from(m.gid())),
            (uid, gid),
            "owner of {name}"
        );
        assert_eq!(m.mode() & 0o7777, 0o644, "mode of {name}");
    }
}

#[test]
fn whiteouts_become_overlayfs_form_in_their_own_directory() {
    if !is_root() {
        eprintln!("SKIPPED: trusted.* xattrs need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = TarBuf::new()
        .dir("o/")
        .file("o/.wh..wh..opq", b"")
        .file("o/kept", b"1")
        .file(".wh.deleted", b"")
        .end();
    let opts =
        UnpackOptions::default().with_whiteouts(WhiteoutMode::Overlay(OverlayXattrs::Trusted));
    unpack(&layer[..], dir.path(), &opts).expect("unpack");
    let w = std::fs::symlink_metadata(dir.path().join("deleted")).expect("whiteout");
    assert!(w.file_type().is_char_device());
    assert_eq!(w.rdev(), 0);
    let xs = user_xattrs(&dir.path().join("o"));
    assert!(
        xs.contains(&("trusted.overlay.opaque".to_owned(), b"y".to_vec())),
        "{xs:?}"
    );
    assert!(dir.path().join("o/kept").exists());

    let dir = tempfile::tempdir().expect("tempdir");
    let opts = UnpackOptions::default().with_whiteouts(WhiteoutMode::Overlay(OverlayXattrs::User));
    unpack(&layer[..], dir.path(), &opts).expect("unpack");
    let xs = user_xattrs(&dir.path().join("o"));
    assert!(
        xs.contains(&("user.overlay.opaque".to_owned(), b"y".to_vec())),
        "{xs:?}"
    );
}

#[test]
fn missing_parents_are_created_and_existing_dirs_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l1 = TarBuf::new().file("x/y/z/file", b"1").end();
    unpack(&l1[..], dir.path(), &UnpackOptions::default()).expect("l1");
    let l2 = TarBuf::new().dir("x/").file("x/y/other", b"2").end();
    unpack(&l2[..], dir.path(), &UnpackOptions::default()).expect("l2");
    assert!(dir.path().join("x/y/z/file").exists());
    assert!(dir.path().join("x/y/other").exists());
}
