//! Diff of two trees: applying the diff to the lower tree gives the upper tree.

use image_core::Compression;
use image_overlay::diff::diff_dirs;
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions};

use crate::common::{assert_same_tree, make_tree, set_mtime};

#[test]
fn applying_the_diff_to_lower_gives_upper() {
    let lower = tempfile::tempdir().expect("tempdir");
    make_tree(lower.path());
    // upper = a copy of lower, changed.
    let upper = tempfile::tempdir().expect("tempdir");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(lower.path().join("."))
        .arg(upper.path())
        .status()
        .expect("cp");
    assert!(st.success());
    let mut l = Vec::new();
    pack_dir(lower.path(), &mut l, &PackOptions::new(Compression::None)).expect("pack");
    let u = upper.path();
    std::fs::write(u.join("added"), b"new").expect("add");
    std::fs::create_dir_all(u.join("newdir/sub")).expect("mkdir");
    std::fs::write(u.join("newdir/sub/f"), b"f").expect("add");
    std::fs::remove_file(u.join("etc/hostname")).expect("delete");
    std::fs::remove_dir_all(u.join("deep")).expect("delete dir");
    // Same size, same (whole-second) mtime, other content: found by content.
    let md = std::fs::metadata(u.join("usr/bin/suid")).expect("md");
    std::fs::write(u.join("usr/bin/suid"), b"#!/bin/XX\n").expect("modify");
    set_mtime(
        &u.join("usr/bin/suid"),
        std::os::unix::fs::MetadataExt::mtime(&md),
        0,
    );
    // A file becomes a directory, a directory becomes a file.
    std::fs::remove_file(u.join("empty")).expect("rm");
    std::fs::create_dir(u.join("empty")).expect("mkdir");
    std::fs::remove_dir_all(u.join("var")).expect("rm");
    std::fs::write(u.join("var"), b"now a file").expect("write");

    let mut d = Vec::new();
    let r = diff_dirs(
        lower.path(),
        u,
        &mut d,
        &PackOptions::new(Compression::Gzip),
    )
    .expect("diff");
    let names = crate::pack::entries(&d, Compression::Gzip);
    for n in [
        "added",
        "etc/.wh.hostname",
        ".wh.deep",
        "usr/bin/suid",
        "empty/",
        "var",
        "newdir/sub/f",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    for n in ["usr/bin/tool", "abs-link", "unicodé ☃.txt", "run/fifo"] {
        assert!(!names.iter().any(|x| x == n), "unchanged {n} in {names:?}");
    }
    assert_eq!(r.entries, names.len() as u64);

    // lower' = a copy of lower with the diff applied.
    let result = tempfile::tempdir().expect("tempdir");
    unpack(&l[..], result.path(), &UnpackOptions::default()).expect("copy");
    unpack(&d[..], result.path(), &UnpackOptions::default()).expect("apply diff");
    assert_same_tree(u, result.path(), false);
}

#[test]
fn identical_trees_give_an_empty_diff() {
    let lower = tempfile::tempdir().expect("tempdir");
    make_tree(lower.path());
    let mut d = Vec::new();
    let r = diff_dirs(
        lower.path(),
        lower.path(),
        &mut d,
        &PackOptions::new(Compression::None),
    )
    .expect("diff");
    assert_eq!(r.entries, 0);
}
