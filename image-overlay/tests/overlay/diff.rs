//! Diff of two trees: applying the diff to the lower tree gives the upper tree.

use image_core::Compression;
use image_overlay::diff::diff_dirs;
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions};

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::{assert_same_tree, have, make_tree, set_mtime};
use crate::umoci::{assert_same_image_tree, hardlink_groups, run};

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

/// Each entry of an uncompressed layer: path -> hardlink target (`None`
/// for any other kind of entry).
fn link_targets(layer: &[u8]) -> BTreeMap<String, Option<String>> {
    let mut a = tar::Archive::new(layer);
    a.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let target = (e.header().entry_type() == tar::EntryType::Link).then(|| {
                String::from_utf8_lossy(&e.link_name_bytes().expect("link name")).into_owned()
            });
            (path, target)
        })
        .collect()
}

fn file_content(layer: &[u8], path: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(layer);
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path_bytes().as_ref() == path.as_bytes() {
            assert_eq!(e.header().entry_type(), tar::EntryType::Regular, "{path}");
            let mut v = Vec::new();
            e.read_to_end(&mut v).expect("read");
            return v;
        }
    }
    panic!("{path} not in the layer");
}

fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from.join(".")).arg(to));
}

fn ino(p: &Path) -> (u64, u64) {
    let md = std::fs::symlink_metadata(p).expect("lstat");
    (md.dev(), md.ino())
}

fn diff(lower: &Path, upper: &Path) -> Vec<u8> {
    let mut d = Vec::new();
    diff_dirs(lower, upper, &mut d, &PackOptions::new(Compression::None)).expect("diff");
    d
}

/// `lower` packed and unpacked by us into a new directory, then `layer`
/// applied on top.
fn apply_on_lower(lower: &Path, layer: &[u8]) -> tempfile::TempDir {
    let mut l = Vec::new();
    pack_dir(lower, &mut l, &PackOptions::new(Compression::None)).expect("pack");
    let result = tempfile::tempdir().expect("tempdir");
    unpack(&l[..], result.path(), &UnpackOptions::default()).expect("copy");
    unpack(layer, result.path(), &UnpackOptions::default()).expect("apply diff");
    result
}

/// A lower tree (the generated one plus `data/`) and an upper copy of it
/// whose new and changed names are hardlinks to files the diff leaves out.
fn trees_with_new_links_to_unchanged_files() -> (tempfile::TempDir, tempfile::TempDir) {
    let lower = tempfile::tempdir().expect("tempdir");
    let l = lower.path();
    make_tree(l);
    std::fs::create_dir(l.join("data")).expect("mkdir");
    std::fs::write(l.join("data/target"), b"target").expect("write");
    std::fs::write(l.join("data/other"), b"other").expect("write");
    // A whole-second mtime: found unchanged by content.
    std::fs::write(l.join("data/whole"), b"whole").expect("write");
    set_mtime(&l.join("data/whole"), 1_650_000_000, 0);
    set_mtime(&l.join("data/target"), 1_650_000_001, 5);
    set_mtime(&l.join("data/other"), 1_650_000_002, 7);

    let upper = tempfile::tempdir().expect("tempdir");
    let u = upper.path();
    copy_tree(l, u);
    let link = |from: &str, to: &str| std::fs::hard_link(u.join(from), u.join(to)).expect("link");
    // New names before and after the unchanged one in the layer's order,
    // and in a new directory.
    link("data/target", "a-first");
    link("data/target", "data/zz-after");
    std::fs::create_dir(u.join("newdir")).expect("mkdir");
    link("data/target", "newdir/inside");
    // A changed name: another file replaced by a link.
    std::fs::remove_file(u.join("data/other")).expect("rm");
    link("data/target", "data/other");
    link("data/whole", "data/whole-link");
    // A file with two unchanged names (a pair in lower): linked to the
    // first in the layer's order.
    link("usr/bin/tool-hard", "usr/bin/a-tool");
    (lower, upper)
}

#[test]
fn a_new_hardlink_to_an_unchanged_file_survives_apply() {
    let (lower, upper) = trees_with_new_links_to_unchanged_files();
    let (l, u) = (lower.path(), upper.path());
    let d = diff(l, u);
    let entries = link_targets(&d);
    for (name, target) in [
        ("a-first", "data/target"),
        ("data/zz-after", "data/target"),
        ("newdir/inside", "data/target"),
        ("data/other", "data/target"),
        ("data/whole-link", "data/whole"),
        ("usr/bin/a-tool", "usr/bin/tool"),
    ] {
        assert_eq!(
            entries.get(name),
            Some(&Some(target.to_owned())),
            "{name} in {entries:?}"
        );
    }
    for unchanged in [
        "data/target",
        "data/whole",
        "usr/bin/tool",
        "usr/bin/tool-hard",
    ] {
        assert!(
            !entries.contains_key(unchanged),
            "{unchanged} in {entries:?}"
        );
    }
    assert!(entries.contains_key("newdir/"), "{entries:?}");

    // Applied by us on a copy of lower.
    let ours = apply_on_lower(l, &d);
    let o = ours.path();
    assert_same_image_tree(u, o, false);
    for name in ["a-first", "data/zz-after", "newdir/inside", "data/other"] {
        assert_eq!(ino(&o.join(name)), ino(&o.join("data/target")), "{name}");
    }
    assert_eq!(ino(&o.join("data/whole-link")), ino(&o.join("data/whole")));
    assert_eq!(ino(&o.join("usr/bin/a-tool")), ino(&o.join("usr/bin/tool")));

    // Applied by GNU tar on a copy of lower.
    if !have("tar") {
        return;
    }
    let by_tar = tempfile::tempdir().expect("tempdir");
    let t = by_tar.path();
    copy_tree(l, t);
    let layer = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(layer.path(), &d).expect("write layer");
    run(Command::new("tar")
        .args(["-p", "-xf"])
        .arg(layer.path())
        .arg("-C")
        .arg(t));
    assert_eq!(hardlink_groups(t), hardlink_groups(u));
    assert_same_image_tree(u, t, false);
    assert_eq!(ino(&t.join("a-first")), ino(&t.join("data/target")));
}

#[test]
fn a_link_group_whose_lower_name_is_deleted_or_replaced_is_written_at_its_first_name() {
    let lower = tempfile::tempdir().expect("tempdir");
    let l = lower.path();
    for (name, data) in [("old", &b"old"[..]), ("rep", b"rep"), ("mod", b"mod")] {
        std::fs::write(l.join(name), data).expect("write");
    }
    let upper = tempfile::tempdir().expect("tempdir");
    let u = upper.path();
    copy_tree(l, u);
    let link = |from: &str, to: &str| std::fs::hard_link(u.join(from), u.join(to)).expect("link");
    // Deleted: the lower name is whited out.
    link("old", "n1");
    link("old", "n2");
    std::fs::remove_file(u.join("old")).expect("rm");
    // Replaced: the lower name is another file now.
    link("rep", "r1");
    link("rep", "r2");
    std::fs::remove_file(u.join("rep")).expect("rm");
    std::fs::write(u.join("rep"), b"new rep").expect("write");
    // Changed in place: every name of the file changed.
    link("mod", "m1");
    std::fs::write(u.join("mod"), b"modified").expect("write");

    let d = diff(l, u);
    let entries = link_targets(&d);
    let expected: BTreeMap<String, Option<String>> = [
        ("m1", None),
        ("mod", Some("m1")),
        ("n1", None),
        ("n2", Some("n1")),
        (".wh.old", None),
        ("r1", None),
        ("r2", Some("r1")),
        ("rep", None),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
    .collect();
    assert_eq!(entries, expected);
    assert_eq!(file_content(&d, "n1"), b"old");
    assert_eq!(file_content(&d, "r1"), b"rep");
    assert_eq!(file_content(&d, "rep"), b"new rep");
    assert_eq!(file_content(&d, "m1"), b"modified");

    let ours = apply_on_lower(l, &d);
    let o = ours.path();
    assert_same_image_tree(u, o, false);
    assert_eq!(ino(&o.join("n1")), ino(&o.join("n2")));
    assert_eq!(ino(&o.join("r1")), ino(&o.join("r2")));
    assert_ne!(ino(&o.join("r1")), ino(&o.join("rep")));
    assert_eq!(ino(&o.join("m1")), ino(&o.join("mod")));
}

#[test]
fn diffs_with_links_to_unchanged_files_are_deterministic() {
    let (lower, upper) = trees_with_new_links_to_unchanged_files();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = PackOptions::new(c);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let ra = diff_dirs(lower.path(), upper.path(), &mut a, &opts).expect("diff");
        let rb = diff_dirs(lower.path(), upper.path(), &mut b, &opts).expect("diff");
        assert_eq!(a, b, "{c:?}");
        assert_eq!(ra, rb, "{c:?}");
    }
    // The entries are in the pack's order: sorted, a directory first.
    let names: Vec<String> = link_targets(&diff(lower.path(), upper.path()))
        .into_keys()
        .collect();
    let listed = crate::pack::entries(&diff(lower.path(), upper.path()), Compression::None);
    let mut sorted = listed.clone();
    sorted.sort_by(|x, y| {
        x.trim_end_matches('/')
            .split('/')
            .cmp(y.trim_end_matches('/').split('/'))
    });
    assert_eq!(listed, sorted);
    assert_eq!(names.len(), listed.len());
}

#[test]
fn a_diff_from_an_empty_tree_is_the_pack() {
    let empty = tempfile::tempdir().expect("tempdir");
    let (_, upper) = trees_with_new_links_to_unchanged_files();
    for c in [Compression::None, Compression::Gzip] {
        let opts = PackOptions::new(c);
        let (mut p, mut d) = (Vec::new(), Vec::new());
        pack_dir(upper.path(), &mut p, &opts).expect("pack");
        diff_dirs(empty.path(), upper.path(), &mut d, &opts).expect("diff");
        assert_eq!(p, d, "{c:?}");
    }
}
