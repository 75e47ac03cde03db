//! The compatibility matrix of layer producers.
//!
//! One source tree (every entry type, owners past the 21-bit octal field,
//! setuid/setgid/sticky modes, user xattrs, hard-link groups, names and
//! link targets longer than 100 bytes, a sparse file, sub-second mtimes) is
//! archived by every producer on the machine, and our unpack of each layer
//! is compared with GNU tar's extraction of the same bytes on paths, types,
//! modes, owners, sizes, content, link targets, hard-link groups, xattrs and
//! mtimes (to the nanosecond, since both read the same header), the target
//! directory's own metadata included. Producers that make whole images
//! (umoci, buildah, podman, skopeo) are compared through `umoci unpack`
//! (Go's archive/tar, as Docker and containerd read layers) as well.
//!
//! Producers: GNU tar (gnu, posix/pax, ustar, oldgnu; sparse files), bsdtar
//! (pax with SCHILY and LIBARCHIVE xattrs, its sparse form), Python's
//! tarfile (gnu and pax), umoci repack and insert (with and without
//! `--opaque`), buildah commit, podman commit, skopeo's recompression (gzip
//! to zstd and back), our own pack. Then the quirks real layers carry, each
//! as a hand-made tar.
//!
//! Where the readers disagree, we follow Go's archive/tar and containerd's
//! applier, and the difference is pinned where it shows:
//! - a stream that ends without the end-of-archive marker, or right after
//!   its last data without padding (umoci insert): GNU tar exits 2
//!   ("Unexpected EOF"), we and Go read it (see `ending`);
//! - a 0-byte plain stream: GNU tar refuses it ("does not look like a tar
//!   archive"), Go reads an empty layer;
//! - parent directories a layer has no entry for are made 0755 root:root
//!   by both, each with the time of its own extraction;
//! - umoci restores the mtime of a directory whose content a layer changes
//!   without an entry for it (see `umoci`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_core::Compression;
use image_overlay::flatten::flatten_image;
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{unpack, UnpackOptions, UnpackReport};
use image_store::image::resolve_image;
use image_store::OciDir;

use crate::common::{gzip, have, is_root, mkfifo, set_mtime, snapshot, Facts, Raw, TarBuf};
use crate::umoci::{gnu_tar_x, hardlink_groups, run};

// ---- the source tree -------------------------------------------------------------

/// What a format can hold.
#[derive(Clone, Copy)]
struct Profile {
    /// Names and link targets past ustar's fields.
    long_names: bool,
    /// Owners past 2^21 - 1.
    big_ids: bool,
    /// Device nodes (as root).
    devices: bool,
}

const FULL: Profile = Profile {
    long_names: true,
    big_ids: true,
    devices: true,
};

const USTAR: Profile = Profile {
    long_names: false,
    big_ids: false,
    devices: true,
};

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, data).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(p: &Path, uid: u32, gid: u32) {
    if is_root() {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
    }
}

fn xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).expect("setxattr");
}

/// The tree every producer archives.
fn source_tree(root: &Path, p: Profile) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root).expect("mkdir");
    for d in ["etc", "usr/bin", "var/empty", "tmp", "srv/data"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    std::fs::set_permissions(
        root.join("var/empty"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    for (i, size) in [0usize, 1, 100, 511, 512, 513, 4096, 70_001, 1_000_003]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..size).map(|k| ((k * 31 + i * 7) % 251) as u8).collect();
        write(root, &format!("srv/data/f{i}"), &data, 0o644);
    }
    write(root, "usr/bin/suid", b"#!/bin/sh\n", 0o4755);
    write(root, "usr/bin/sgid", b"g", 0o2711);
    write(root, "etc/private", b"secret", 0o600);
    write(root, "etc/hostname", b"producer\n", 0o644);
    chown(&root.join("usr/bin/sgid"), 1000, 1000);
    chown(&root.join("etc/private"), 12345, 54321);
    chown(&root.join("var/empty"), 7, 8);
    if p.big_ids {
        write(root, "srv/big-owner", b"ids past 2^21", 0o644);
        chown(&root.join("srv/big-owner"), 3_000_000, 4_000_000);
    }
    xattr(&root.join("etc/hostname"), "user.comment", b"hi");
    xattr(&root.join("srv"), "user.dir", b"on a directory");
    symlink("../srv/data/f1", root.join("etc/rel-link")).expect("symlink");
    symlink("/etc/hostname", root.join("abs-link")).expect("symlink");
    symlink("nowhere", root.join("dangling")).expect("symlink");
    chown(&root.join("dangling"), 5, 6);
    std::fs::hard_link(root.join("srv/data/f7"), root.join("srv/hard-a")).expect("link");
    std::fs::hard_link(root.join("srv/data/f7"), root.join("usr/hard-b")).expect("link");
    mkfifo(&root.join("tmp/fifo"), 0o640);
    if p.devices && is_root() {
        crate::common::dev_null(root);
    }
    if p.long_names {
        let long = format!(
            "deep/{}/{}/a-file-with-a-long-name",
            "a".repeat(90),
            "b".repeat(120)
        );
        write(root, &long, b"long", 0o644);
        symlink(
            format!("../{}/target", "t".repeat(150)),
            root.join("deep/long-link"),
        )
        .expect("symlink");
        std::fs::hard_link(root.join(&long), root.join("deep/hard-to-long")).expect("link");
    }
    // A sparse file: data at the start, in the middle and at the end.
    let mut f = std::fs::File::create(root.join("srv/sparse")).expect("create");
    f.write_all(b"head").expect("write");
    use std::os::unix::fs::FileExt;
    f.write_at(&[b'm'; 5000], 3 << 20).expect("write");
    f.write_at(b"tail", (8 << 20) - 4).expect("write");
    drop(f);
    // Distinct mtimes with a sub-second part, children first.
    let snap = snapshot(root, false);
    for (i, (rel, _)) in snap.iter().rev().enumerate() {
        set_mtime(
            &root.join(rel),
            1_600_000_000 + i as i64 * 1000,
            123_456_789,
        );
    }
    set_mtime(root, 1_599_000_000, 987_654_321);
}

// ---- comparison --------------------------------------------------------------------

/// A directory's facts as [`snapshot`] gives them, for the root itself.
fn root_facts(root: &Path) -> (u32, u32, u32, i64, i64) {
    let md = std::fs::metadata(root).expect("root");
    (
        md.permissions().mode() & 0o7777,
        md.uid(),
        md.gid(),
        md.mtime(),
        md.mtime_nsec(),
    )
}

/// In an `except` list: every directory's mtime.
const ALL_DIRS: &str = "*/";

/// Every fact of two trees, the target directories' own included, and
/// their hard-link groups, with `except` paths' mtimes left out.
fn assert_same(what: &str, ours: &Path, theirs: &Path, except: &[&str]) {
    let strip = |root: &Path| -> BTreeMap<PathBuf, Facts> {
        let mut s = snapshot(root, true);
        for (p, f) in s.iter_mut() {
            let all_dirs = except.contains(&ALL_DIRS) && f.kind == "dir";
            if all_dirs || except.iter().any(|e| Path::new(e) == p) {
                f.mtime = 0;
                f.mtime_nsec = 0;
            }
        }
        s
    };
    let (a, b) = (strip(ours), strip(theirs));
    let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
    assert_eq!(ka, kb, "{what}: paths differ (ours, theirs)");
    for (k, fa) in &a {
        assert_eq!(fa, &b[k], "{what}: {} differs (ours, theirs)", k.display());
    }
    assert_eq!(
        hardlink_groups(ours),
        hardlink_groups(theirs),
        "{what}: hard-link groups differ"
    );
    if !except.contains(&"") {
        assert_eq!(
            root_facts(ours),
            root_facts(theirs),
            "{what}: the root differs"
        );
    }
}

/// The facts of the tree that every full-fidelity producer must keep, so
/// that agreeing with GNU tar is not agreeing on nothing.
fn assert_carries_the_tree(what: &str, out: &Path, src: &Path) {
    let read = |p: &str| std::fs::read(out.join(p)).unwrap_or_else(|e| panic!("{what}: {p}: {e}"));
    assert_eq!(
        read("srv/sparse"),
        std::fs::read(src.join("srv/sparse")).expect("src")
    );
    assert_eq!(read("srv/data/f8").len(), 1_000_003, "{what}");
    let md = std::fs::metadata(out.join("usr/bin/suid")).expect("suid");
    assert_eq!(md.permissions().mode() & 0o7777, 0o4755, "{what}");
    assert_eq!(
        std::fs::read_link(out.join("etc/rel-link")).expect("link"),
        Path::new("../srv/data/f1"),
        "{what}"
    );
    assert!(
        !hardlink_groups(out).is_empty(),
        "{what}: hard links are kept"
    );
}

fn ours(layer: &Path, dir: &Path) -> UnpackReport {
    std::fs::create_dir_all(dir).expect("mkdir");
    let f = std::fs::File::open(layer).expect("layer");
    unpack(std::io::BufReader::new(f), dir, &UnpackOptions::default())
        .unwrap_or_else(|e| panic!("unpack {}: {e:?}", layer.display()))
}

/// Our unpack of `layer` against GNU tar's.
fn against_gnu_tar(what: &str, work: &Path, layer: &Path, except: &[&str]) -> PathBuf {
    let o = work.join(format!("{what}.ours"));
    let t = work.join(format!("{what}.gnu"));
    ours(layer, &o);
    gnu_tar_x(layer, &t);
    assert_same(what, &o, &t, except);
    o
}

fn tools(list: &[&str]) -> bool {
    crate::common::root("the producer matrix sets owners and makes devices")
        && list.iter().all(|t| have(t))
}

// ---- tar producers -------------------------------------------------------------------

#[test]
fn gnu_tar_formats() {
    if !tools(&["tar"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let full = w.join("src-full");
    source_tree(&full, FULL);
    let ustar = w.join("src-ustar");
    source_tree(&ustar, USTAR);
    for (format, src, extra) in [
        ("gnu", &full, &["--sparse"][..]),
        ("oldgnu", &full, &["--sparse"][..]),
        ("posix", &full, &["--sparse", "--xattrs"][..]),
        ("ustar", &ustar, &[][..]),
    ] {
        let layer = w.join(format!("{format}.tar"));
        run(Command::new("tar")
            .arg(format!("--format={format}"))
            .args(extra)
            .args(["--numeric-owner", "-cf"])
            .arg(&layer)
            .arg("-C")
            .arg(src)
            .arg("."));
        let what = format!("GNU tar --format={format}");
        let out = against_gnu_tar(format, w, &layer, &[]);
        assert_carries_the_tree(&what, &out, src);
        if format == "posix" {
            // Only pax carries xattrs and nanoseconds.
            assert_eq!(
                snapshot(&out, true),
                snapshot(src, true),
                "{what} is lossless"
            );
        }
    }
}

#[test]
fn bsdtar_pax() {
    if !tools(&["tar", "bsdtar"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    let layer = w.join("bsdtar.tar");
    run(Command::new("bsdtar")
        .args(["--format", "pax", "--xattrs", "-cf"])
        .arg(&layer)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let bytes = std::fs::read(&layer).expect("layer");
    let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
    assert!(has(b"SCHILY.xattr.user.comment") && has(b"LIBARCHIVE.xattr.user.comment"));
    assert!(has(b"GNU.sparse.major=1"), "bsdtar's sparse form");
    // bsdtar does not keep a directory's entries together (it follows
    // readdir order: `deep/aaa…/`, then `deep/long-link`, then
    // `deep/aaa…/bbb…/`). GNU tar sets a directory's time when it leaves
    // it, so later entries inside leave it with the time of extraction. We,
    // like containerd, set directory times after the last entry: they keep
    // their headers' times (checked against the source below).
    let out = against_gnu_tar("bsdtar", w, &layer, &[ALL_DIRS]);
    assert_carries_the_tree("bsdtar", &out, &src);
    assert_eq!(
        snapshot(&out, true),
        snapshot(&src, true),
        "bsdtar pax is lossless"
    );
}

#[test]
fn python_tarfile() {
    if !tools(&["tar", "python3"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    for format in ["GNU_FORMAT", "PAX_FORMAT"] {
        let layer = w.join(format!("{format}.tar"));
        let script = format!(
            "import sys, tarfile\n\
             with tarfile.open(sys.argv[1], 'w', format=tarfile.{format}) as t:\n\
             \tt.add(sys.argv[2], arcname='.')\n"
        );
        run(Command::new("python3")
            .args(["-c", &script])
            .arg(&layer)
            .arg(&src));
        let out = against_gnu_tar(format, w, &layer, &[]);
        // tarfile stores no xattrs and writes sparse files whole.
        assert_eq!(
            std::fs::read(out.join("srv/sparse")).expect("sparse"),
            std::fs::read(src.join("srv/sparse")).expect("src")
        );
        assert!(!hardlink_groups(&out).is_empty());
    }
}

#[test]
fn our_pack() {
    if !tools(&["tar"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let layer = w.join(format!("pack-{c:?}"));
        let mut f = std::fs::File::create(&layer).expect("create");
        pack_dir(&src, &mut f, &PackOptions::new(c)).expect("pack");
        drop(f);
        if c != Compression::None {
            // GNU tar reads it through the matching decompressor.
            let plain = w.join(format!("pack-{c:?}.tar"));
            let tool = if c == Compression::Gzip {
                "gzip"
            } else {
                "zstd"
            };
            let out = run(Command::new("sh").arg("-c").arg(format!(
                "{tool} -dc < '{}' > '{}'",
                layer.display(),
                plain.display()
            )));
            assert!(out.is_empty());
            let o = w.join(format!("pack-{c:?}.ours"));
            ours(&layer, &o);
            let t = w.join(format!("pack-{c:?}.gnu"));
            gnu_tar_x(&plain, &t);
            // Pack writes no entry for the root.
            assert_same(&format!("our pack ({c:?})"), &o, &t, &[""]);
            continue;
        }
        let out = against_gnu_tar("pack", w, &layer, &[""]);
        assert_carries_the_tree("our pack", &out, &src);
    }
}

// ---- image producers ---------------------------------------------------------------------

/// `umoci unpack` of `layout:tag` into `bundle`; the rootfs.
fn umoci_rootfs(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

/// Our flatten of `layout:tag` against umoci's unpack of it (the bundle's
/// rootfs directory itself aside: umoci gives it the epoch), and each
/// layer against GNU tar where GNU tar reads it.
fn image_against_umoci(
    what: &str,
    work: &Path,
    layout: &Path,
    tag: &str,
    except: &[&str],
) -> PathBuf {
    let store = OciDir::open(layout).expect("layout");
    let image = resolve_image(&store, tag, None).expect("resolve");
    let o = work.join(format!("{what}.flat"));
    flatten_image(&store, &image, &o, &UnpackOptions::default())
        .unwrap_or_else(|e| panic!("{what}: flatten: {e:?}"));
    let theirs = umoci_rootfs(layout, tag, &work.join(format!("{what}.bundle")));
    let mut except = except.to_vec();
    except.push("");
    assert_same(&format!("{what} (umoci unpack)"), &o, &theirs, &except);
    o
}

/// An OCI layout holding the source tree as one layer of our pack.
fn packed_layout(work: &Path, src: &Path) -> PathBuf {
    let layout = work.join("packed");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let layer = crate::umoci::layer_from_dir(&store, src, Compression::Gzip);
    crate::umoci::build_image(&store, &[layer], "t:1");
    layout
}

#[test]
fn umoci_repack_and_insert() {
    if !tools(&["tar", "umoci"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    let layout = packed_layout(w, &src);
    let name = image_store::tags::normalize_name("t:1").expect("name");
    let img = |tag: &str| format!("{}:{tag}", layout.display());
    // repack: a bundle changed in place.
    let bundle = w.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &img(&name)])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::remove_file(rootfs.join("srv/data/f3")).expect("rm");
    std::fs::remove_dir_all(rootfs.join("var")).expect("rm");
    std::fs::write(rootfs.join("etc/hostname"), b"changed\n").expect("write");
    std::fs::set_permissions(
        rootfs.join("etc/private"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::fs::create_dir_all(rootfs.join("new/dir")).expect("mkdir");
    std::fs::write(rootfs.join("new/dir/file"), vec![b'r'; 3000]).expect("write");
    run(Command::new("umoci")
        .args(["repack", "--image", &img("repacked")])
        .arg(&bundle));
    // The repacked layer replaces `etc/hostname` and whites out
    // `srv/data/f3` with no entry for their directories, whose mtimes the
    // kernel updates: umoci puts them back, we (like Docker and
    // containerd) leave the kernel's (pinned in `umoci`).
    let out = image_against_umoci("umoci repack", w, &layout, "repacked", &["etc", "srv/data"]);
    assert!(!out.join("var").exists() && !out.join("srv/data/f3").exists());
    assert_eq!(
        std::fs::read(out.join("new/dir/file")).expect("new").len(),
        3000
    );

    // insert, plain and opaque, on the repacked image.
    let extra = w.join("extra");
    std::fs::create_dir_all(extra.join("sub")).expect("mkdir");
    std::fs::write(extra.join("sub/x"), b"inserted").expect("write");
    std::fs::write(extra.join("y"), b"y").expect("write");
    run(Command::new("umoci")
        .args(["insert", "--image", &img("repacked"), "--tag", "inserted"])
        .arg(&extra)
        .arg("/srv/data"));
    run(Command::new("umoci")
        .args([
            "insert",
            "--image",
            &img("inserted"),
            "--tag",
            "opaque",
            "--opaque",
        ])
        .arg(&extra)
        .arg("/etc"));
    // umoci restores the mtimes of /srv and / around its inserts; the
    // directories the inserts replace have entries.
    let out = image_against_umoci("umoci insert", w, &layout, "opaque", &["srv", "etc"]);
    assert_eq!(
        std::fs::read(out.join("srv/data/sub/x")).expect("x"),
        b"inserted"
    );
    assert!(out.join("srv/data/f1").exists(), "plain insert merges");
    assert!(!out.join("etc/hostname").exists(), "--opaque masks");
    assert_eq!(std::fs::read(out.join("etc/y")).expect("y"), b"y");
    // The inserted layers end right after their last data: GNU tar lists
    // them and then fails ("Unexpected EOF in archive"); Go and we read them.
    let store = OciDir::open(&layout).expect("layout");
    let image = resolve_image(&store, "opaque", None).expect("resolve");
    let last = image.layers().last().expect("layer");
    let blob = store.blob_path(&image_core::Digest::try_from(last.digest()).expect("digest"));
    let gnu = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc < '{}' | tar -tf -", blob.display()))
        .output()
        .expect("sh");
    assert!(
        !gnu.status.success(),
        "GNU tar refuses umoci insert's layer"
    );
    assert!(String::from_utf8_lossy(&gnu.stderr).contains("Unexpected EOF"));
}

/// buildah and podman with their storage in `dir`, vfs driver.
fn containers(tool: &str, dir: &Path) -> Command {
    let mut c = Command::new(tool);
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"]);
    c
}

#[test]
fn buildah_and_podman_commit() {
    if !tools(&["tar", "umoci", "buildah", "podman"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    let storage = w.join("storage");
    // buildah: the tree copied into a scratch container (buildah copy makes
    // everything root's, as Docker's COPY does), committed, pushed.
    let ctr = run(containers("buildah", &storage).args(["from", "scratch"]));
    let ctr = ctr.trim();
    run(containers("buildah", &storage)
        .args(["copy", "--quiet", ctr])
        .arg(&src)
        .arg("/"));
    run(containers("buildah", &storage).args(["commit", "-q", "--format", "oci", ctr, "bimg"]));
    let blayout = w.join("buildah-layout");
    run(containers("buildah", &storage)
        .args(["push", "-q", "bimg"])
        .arg(format!("oci:{}:t", blayout.display())));
    let out = image_against_umoci("buildah commit", w, &blayout, "t", &[]);
    assert_eq!(
        std::fs::read(out.join("srv/sparse")).expect("sparse"),
        std::fs::read(src.join("srv/sparse")).expect("src")
    );
    each_layer_against_gnu_tar("buildah", w, &blayout, "t");

    // podman: a container of that image with files copied in, committed.
    run(containers("podman", &storage).args(["create", "-q", "--name", "pc", "bimg", "true"]));
    let extra = w.join("extra");
    std::fs::create_dir_all(extra.join("added/deeper")).expect("mkdir");
    std::fs::write(extra.join("added/deeper/f"), b"podman").expect("write");
    run(containers("podman", &storage)
        .arg("cp")
        .arg(extra.join("added"))
        .arg("pc:/srv/"));
    run(containers("podman", &storage).args(["commit", "-q", "pc", "pimg"]));
    let playout = w.join("podman-layout");
    run(containers("podman", &storage)
        .args(["push", "-q", "pimg"])
        .arg(format!("oci:{}:t", playout.display())));
    let out = image_against_umoci("podman commit", w, &playout, "t", &[]);
    assert_eq!(
        std::fs::read(out.join("srv/added/deeper/f")).expect("f"),
        b"podman"
    );
    each_layer_against_gnu_tar("podman", w, &playout, "t");
}

/// Each layer of `layout:tag` unpacked alone by us and by GNU tar.
fn each_layer_against_gnu_tar(what: &str, work: &Path, layout: &Path, tag: &str) {
    let store = OciDir::open(layout).expect("layout");
    let image = resolve_image(&store, tag, None).expect("resolve");
    for (i, l) in image.layers().iter().enumerate() {
        let digest = image_core::Digest::try_from(l.digest()).expect("digest");
        let blob = store.blob_path(&digest);
        let plain = work.join(format!("{what}-{i}.tar"));
        run(Command::new("sh").arg("-c").arg(format!(
            "gzip -dc < '{}' > '{}' 2>/dev/null || zstd -dc < '{}' > '{}'",
            blob.display(),
            plain.display(),
            blob.display(),
            plain.display()
        )));
        // Layers carry no entry for the root: GNU tar and we leave it as
        // made; compare below it.
        let o = work.join(format!("{what}-{i}.ours"));
        ours(&blob, &o);
        let t = work.join(format!("{what}-{i}.gnu"));
        gnu_tar_x(&plain, &t);
        assert_same(&format!("{what} layer {i}"), &o, &t, &[""]);
    }
}

#[test]
fn skopeo_recompression() {
    if !tools(&["tar", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = w.join("src");
    source_tree(&src, FULL);
    let layout = packed_layout(w, &src);
    let name = image_store::tags::normalize_name("t:1").expect("name");
    let zstd = w.join("zstd");
    let back = w.join("back");
    for (from, to, format) in [(&layout, &zstd, "zstd"), (&zstd, &back, "gzip")] {
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-compress-format", format])
            .arg(format!("oci:{}:{name}", from.display()))
            .arg(format!("oci:{}:{name}", to.display())));
    }
    let flat = |layout: &Path, what: &str| {
        let store = OciDir::open(layout).expect("layout");
        let image = resolve_image(&store, &name, None).expect("resolve");
        let o = w.join(what);
        flatten_image(&store, &image, &o, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        (
            o,
            image.diff_ids().to_vec(),
            image.layers()[0].media_type().to_string(),
        )
    };
    let (o0, ids0, _) = flat(&layout, "original");
    let (o1, ids1, mt1) = flat(&zstd, "as-zstd");
    let (o2, ids2, mt2) = flat(&back, "back-to-gzip");
    assert!(mt1.ends_with("+zstd"), "{mt1}");
    assert!(mt2.ends_with("+gzip"), "{mt2}");
    assert_eq!(ids0, ids1, "recompression keeps the diff ID");
    assert_eq!(ids0, ids2);
    assert_same("skopeo zstd", &o1, &o0, &[""]);
    assert_same("skopeo gzip", &o2, &o0, &[""]);
}

// ---- quirks ------------------------------------------------------------------------------

/// A GNU long-link ('K') entry for the next entry.
fn gnu_longlink(t: &mut TarBuf, target: &[u8]) {
    let mut data = target.to_vec();
    data.push(0);
    let h = Raw::new("././@LongLink", b'K').size(data.len() as u64);
    let mut b = h.block();
    b[257..265].copy_from_slice(b"ustar  \0");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    t.0.extend_from_slice(&b);
    t.0.extend_from_slice(&data);
    while t.0.len() % 512 != 0 {
        t.0.push(0);
    }
}

fn quirk(what: &str, work: &Path, tar: &[u8], except: &[&str]) -> PathBuf {
    let layer = work.join(format!("{what}.tar"));
    std::fs::write(&layer, tar).expect("write");
    against_gnu_tar(what, work, &layer, except)
}

#[test]
fn quirks_real_layers_carry() {
    if !tools(&["tar"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let dir = |name: &str, mode: u32, mtime: u64| {
        let mut d = Raw::new(name, b'5');
        d.mode = mode;
        d.mtime = mtime;
        d
    };

    // `./` prefixes and a `./` root entry (GNU tar's `-C dir .`): the
    // root entry's metadata goes on the target, as GNU tar and containerd
    // apply it.
    let mut t = TarBuf::new();
    t.raw(&dir("./", 0o750, 1_500_000_000), b"");
    t.raw(&dir("./etc/", 0o755, 1_500_000_001), b"");
    t.file("./etc/f", b"dot");
    let out = quirk("dot-prefix", w, &t.end(), &[]);
    assert_eq!(root_facts(&out).0, 0o750);
    assert_eq!(std::fs::read(out.join("etc/f")).expect("f"), b"dot");

    // Duplicate entries: the later wins, whatever the types.
    let mut t = TarBuf::new();
    t.file("dup", b"first");
    t.file("dup", b"second, longer");
    t.symlink("dup-type", "somewhere");
    t.file("dup-type", b"now a file");
    t.file("dup-link", b"file first");
    t.symlink("dup-link", "dup");
    let out = quirk("duplicates", w, &t.end(), &[""]);
    assert_eq!(
        std::fs::read(out.join("dup")).expect("dup"),
        b"second, longer"
    );
    assert!(std::fs::symlink_metadata(out.join("dup-link"))
        .expect("l")
        .is_symlink());

    // A directory after its contents: its mode and mtime hold at the end.
    let mut t = TarBuf::new();
    t.file("late/a/f", b"x");
    t.raw(&dir("late/a/", 0o700, 1_400_000_000), b"");
    t.raw(&dir("late/", 0o711, 1_400_000_001), b"");
    let out = quirk("dir-after-contents", w, &t.end(), &[""]);
    let md = std::fs::metadata(out.join("late/a")).expect("a");
    assert_eq!(
        (md.permissions().mode() & 0o7777, md.mtime()),
        (0o700, 1_400_000_000)
    );

    // Hard links to entries earlier in the same layer, chained.
    let mut t = TarBuf::new();
    t.file("h/one", b"shared");
    t.hardlink("h/two", "h/one");
    t.hardlink("h/three", "h/two");
    let out = quirk("hardlinks", w, &t.end(), &["", "h"]);
    assert_eq!(hardlink_groups(&out).len(), 1);

    // Parent directories without entries: made 0755 by both, each at the
    // time of its own extraction (compared without mtime).
    let mut t = TarBuf::new();
    t.file("missing/parents/here/f", b"orphan");
    quirk(
        "missing-parents",
        w,
        &t.end(),
        &["", "missing", "missing/parents", "missing/parents/here"],
    );

    // PAX: a long name, a long link target, large ids, sub-second mtime.
    let long = format!("pax/{}/{}", "p".repeat(120), "q".repeat(130));
    let mut t = TarBuf::new();
    t.raw(&dir("pax/", 0o755, 1_300_000_000), b"");
    t.pax(&[
        ("path", long.as_bytes()),
        ("uid", b"3000000"),
        ("gid", b"4000000000"),
        ("mtime", b"1300000000.5"),
    ]);
    t.file("pax/short", b"pax");
    t.pax(&[("linkpath", "l".repeat(200).as_bytes())]);
    t.symlink("pax/link", "short");
    let implicit = format!("pax/{}", "p".repeat(120));
    let out = quirk("pax-records", w, &t.end(), &["", &implicit]);
    let md = std::fs::metadata(out.join(&long)).expect("long");
    assert_eq!((md.uid(), md.gid()), (3_000_000, 4_000_000_000));
    assert_eq!(md.mtime_nsec(), 500_000_000);

    // GNU long names and long links.
    let long = format!("gnu/{}", "g".repeat(200));
    let mut t = TarBuf::new();
    t.raw(&dir("gnu/", 0o755, 1_300_000_000), b"");
    t.gnu_longname(long.as_bytes());
    t.file("gnu/cut", b"gnu long name");
    gnu_longlink(&mut t, "k".repeat(180).as_bytes());
    t.gnu_longname(format!("gnu/{}", "s".repeat(150)).as_bytes());
    t.symlink("gnu/cut-link", "cut");
    let out = quirk("gnu-long", w, &t.end(), &[""]);
    assert_eq!(
        std::fs::read(out.join(&long)).expect("long"),
        b"gnu long name"
    );
    let link = out.join(format!("gnu/{}", "s".repeat(150)));
    assert_eq!(
        std::fs::read_link(link).expect("link"),
        Path::new(&"k".repeat(180))
    );

    // Docker's empty layer (1024 zeros) and BuildKit's (gzip of nothing).
    let out = quirk("empty-marker", w, &[0u8; 1024], &[""]);
    assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 0);
    let layer = w.join("empty.gz");
    std::fs::write(&layer, gzip(b"")).expect("write");
    let out = against_gnu_tar("empty-gzip", w, &layer, &[""]);
    assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 0);
    // A 0-byte plain stream: Go reads an empty layer, GNU tar refuses it.
    let layer = w.join("zero-bytes.tar");
    std::fs::write(&layer, b"").expect("write");
    let r = ours(&layer, &w.join("zero-bytes.ours"));
    assert_eq!(r.entries, 0);
    let gnu = Command::new("tar")
        .arg("-tf")
        .arg(&layer)
        .output()
        .expect("tar");
    assert!(!gnu.status.success(), "GNU tar refuses a 0-byte archive");
}
