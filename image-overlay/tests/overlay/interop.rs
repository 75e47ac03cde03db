//! Interop with GNU tar, both ways.
//!
//! (umoci and skopeo interop over whole images needs the image store and
//! is left to the flattening work that sits on it.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use image_core::Compression;
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions};

use crate::common::{assert_same_tree, have, make_tree};

fn tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn same_inode(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (
        std::fs::metadata(a).expect("a"),
        std::fs::metadata(b).expect("b"),
    );
    ma.ino() == mb.ino() && ma.dev() == mb.dev()
}

#[test]
fn our_layer_unpacks_with_gnu_tar_to_the_same_tree() {
    if !have("tar") {
        return;
    }
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar.gz");
    let f = std::fs::File::create(&layer).expect("create");
    pack_dir(src.path(), f, &PackOptions::new(Compression::Gzip)).expect("pack");

    let by_tar = work.path().join("by-tar");
    std::fs::create_dir(&by_tar).expect("mkdir");
    tar(
        &[
            "--xattrs",
            "--xattrs-include=user.*",
            "--same-owner",
            "--numeric-owner",
            "-p",
            "-xzf",
            layer.to_str().expect("utf8"),
            "-C",
            by_tar.to_str().expect("utf8"),
        ],
        work.path(),
    );
    assert_same_tree(src.path(), &by_tar, false);
    assert!(same_inode(
        &by_tar.join("usr/bin/tool"),
        &by_tar.join("usr/bin/tool-hard")
    ));

    let by_us = work.path().join("by-us");
    std::fs::create_dir(&by_us).expect("mkdir");
    unpack(
        std::fs::File::open(&layer).expect("open"),
        &by_us,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    assert_same_tree(&by_tar, &by_us, false);
}

fn gnu_tar_to_us(format: &[&str], nanos: bool) {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    let mut args = format.to_vec();
    let l = layer.to_str().expect("utf8").to_owned();
    args.extend(["--xattrs", "--numeric-owner", "-cf", &l, "-C"]);
    let s = src.path().to_str().expect("utf8").to_owned();
    args.extend([s.as_str(), "."]);
    tar(&args, work.path());
    let dst = work.path().join("by-us");
    std::fs::create_dir(&dst).expect("mkdir");
    unpack(
        std::fs::File::open(&layer).expect("open"),
        &dst,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    assert_same_tree(src.path(), &dst, nanos);
    assert!(same_inode(
        &dst.join("usr/bin/tool"),
        &dst.join("usr/bin/tool-hard")
    ));
}

#[test]
fn gnu_tar_pax_layer_with_xattrs_unpacks_with_us() {
    if !have("tar") {
        return;
    }
    // PAX keeps sub-second mtimes: compare to the nanosecond.
    gnu_tar_to_us(&["--format=pax"], true);
}

#[test]
fn gnu_tar_gnu_format_layer_unpacks_with_us() {
    if !have("tar") {
        return;
    }
    gnu_tar_to_us(&["--format=gnu"], false);
}

#[test]
fn gnu_tar_gzip_layer_unpacks_with_us() {
    if !have("tar") || !have("gzip") {
        return;
    }
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar.gz");
    tar(
        &[
            "--format=pax",
            "--xattrs",
            "-czf",
            layer.to_str().expect("utf8"),
            "-C",
            src.path().to_str().expect("utf8"),
            ".",
        ],
        work.path(),
    );
    let dst = work.path().join("by-us");
    std::fs::create_dir(&dst).expect("mkdir");
    let r = unpack(
        std::fs::File::open(&layer).expect("open"),
        &dst,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    assert_eq!(r.compression, Compression::Gzip);
    assert_same_tree(src.path(), &dst, true);
}

fn sparse_case(extra: &[&str]) {
    let src = tempfile::tempdir().expect("tempdir");
    let f = src.path().join("sparse");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::create(&f).expect("create");
        file.write_all(b"start").expect("write");
        file.seek(SeekFrom::Start(32 << 20)).expect("seek");
        file.write_all(&[0xab; 10000]).expect("write");
        file.seek(SeekFrom::Start(64 << 20)).expect("seek");
        file.write_all(b"end").expect("write");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("sparse.tar");
    let mut args = vec!["-S"];
    args.extend(extra);
    let l = layer.to_str().expect("utf8").to_owned();
    let s = src.path().to_str().expect("utf8").to_owned();
    args.extend(["-cf", &l, "-C", &s, "sparse"]);
    tar(&args, work.path());
    assert!(
        std::fs::metadata(&layer).expect("layer").len() < 1 << 20,
        "tar stored holes"
    );
    let dst = work.path().join("by-us");
    std::fs::create_dir(&dst).expect("mkdir");
    unpack(
        std::fs::File::open(&layer).expect("open"),
        &dst,
        &UnpackOptions::default(),
    )
    .expect("unpack");
    let out = dst.join("sparse");
    let a = std::fs::read(&f).expect("read src");
    let b = std::fs::read(&out).expect("read out");
    assert!(a == b, "sparse content differs");
    let md = std::fs::metadata(&out).expect("md");
    assert!(
        md.blocks() * 512 < 4 << 20,
        "holes kept: {} blocks",
        md.blocks()
    );
}

#[test]
fn gnu_tar_sparse_gnu_format_unpacks_sparse() {
    if !have("tar") {
        return;
    }
    sparse_case(&["--format=gnu"]);
}

#[test]
fn gnu_tar_sparse_pax_1_0_unpacks_sparse() {
    if !have("tar") {
        return;
    }
    sparse_case(&["--format=pax", "--sparse-version=1.0"]);
}
