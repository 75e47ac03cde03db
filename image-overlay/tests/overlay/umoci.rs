//! Interop with umoci and GNU tar over whole images.
//!
//! Images are built in an [`OciDir`] from Debian's busybox-static plus a
//! generated tree, then unpacked both by `umoci unpack` and by
//! [`flatten_image`]; the two root filesystems must agree on every path,
//! type, mode, owner, size, content, link target, hardlink group, xattr and
//! mtime (files and directories, to the nanosecond).
//!
//! What umoci does differently, found here: the bundle's own files
//! (`config.json`, `umoci.json`, the mtree manifest) and the `rootfs`
//! directory itself, whose mtime umoci sets to the epoch (no layer has an
//! entry for the root), are left out of the comparison; and umoci restores
//! the mtime of a directory whose content a layer changes without an entry
//! for the directory, where we (like GNU tar and Docker) keep the kernel's
//! update: pinned by its own test below. Everything below `rootfs` is
//! compared.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_core::config::History;
use image_core::{Classify, Compression, Digest, ErrorKind, MediaType};
use image_overlay::diff::diff_dirs;
use image_overlay::flatten::flatten_image;
use image_overlay::pack::{pack_dir, PackOptions};
use image_overlay::unpack::{UnpackError, UnpackOptions};
use image_store::image::{resolve_image, Image};
use image_store::mutate::{append, NewLayer};
use image_store::tags::normalize_name;
use image_store::{Ingester, OciDir, TagStore};

use crate::common::{
    assert_same_tree, compress, is_root, make_tree, set_all_mtimes, set_mtime, snapshot, Raw,
    TarBuf,
};

// ---- building images -----------------------------------------------------------

fn history(what: &str) -> History {
    History {
        created_by: Some(what.to_owned()),
        ..History::default()
    }
}

/// Packs `dir` straight into the store as one layer.
pub(crate) fn layer_from_dir(store: &OciDir, dir: &Path, c: Compression) -> NewLayer {
    let mut w = store
        .writer(&image_store::content::unique_reference())
        .expect("writer");
    let r = pack_dir(dir, &mut w, &PackOptions::new(c)).expect("pack");
    w.commit(Some(r.size), Some(&r.digest)).expect("commit");
    NewLayer {
        media_type: r.media_type,
        digest: r.digest,
        size: r.size,
        diff_id: r.diff_id,
        history: history("pack"),
    }
}

/// The diff from `lower` to `upper`, straight into the store as one layer.
pub(crate) fn layer_from_diff(
    store: &OciDir,
    lower: &Path,
    upper: &Path,
    c: Compression,
) -> NewLayer {
    let mut w = store
        .writer(&image_store::content::unique_reference())
        .expect("writer");
    let r = diff_dirs(lower, upper, &mut w, &PackOptions::new(c)).expect("diff");
    w.commit(Some(r.size), Some(&r.digest)).expect("commit");
    NewLayer {
        media_type: r.media_type,
        digest: r.digest,
        size: r.size,
        diff_id: r.diff_id,
        history: history("diff"),
    }
}

/// A hand-made tar, compressed with `c`, as one layer.
pub(crate) fn layer_from_tar(store: &OciDir, tar: &[u8], c: Compression) -> NewLayer {
    let blob = compress(tar, c);
    let digest = store.write_blob(&blob).expect("write blob");
    NewLayer {
        media_type: MediaType::oci_layer(c),
        digest,
        size: blob.len() as u64,
        diff_id: Digest::sha256(tar),
        history: history("hand-made"),
    }
}

/// Writes an image of `layers` tagged `tag` and resolves it.
pub(crate) fn build_image(store: &OciDir, layers: &[NewLayer], tag: &str) -> Image {
    let appended = append(
        store,
        None,
        &image_core::Platform::new("linux", "amd64"),
        layers,
        |c| {
            c.config.get_or_insert_with(Default::default).cmd = Some(vec!["/bin/sh".into()]);
        },
    )
    .expect("append");
    store
        .set_tag(tag, &appended.manifest.descriptor())
        .expect("tag");
    resolve_image(store, tag, None).expect("resolve")
}

/// Runs a command, panicking with its stderr when it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `umoci unpack` of `tag` in `layout` into `bundle`; returns the rootfs.
pub(crate) fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    // Our store writes the normalised name as the ref annotation, which is
    // what umoci matches.
    let name = normalize_name(tag).expect("name");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{name}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

// ---- trees ---------------------------------------------------------------------

/// Groups of paths sharing an inode (non-directories with more than one link).
pub(crate) fn hardlink_groups(root: &Path) -> BTreeSet<BTreeSet<PathBuf>> {
    let mut by_ino: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    for rel in snapshot(root, false).keys() {
        let md = std::fs::symlink_metadata(root.join(rel)).expect("lstat");
        if !md.is_dir() && md.nlink() > 1 {
            by_ino
                .entry((md.dev(), md.ino()))
                .or_default()
                .insert(rel.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

/// Same paths and facts (mtimes to the nanosecond when `nanos`) and the
/// same hardlink groups.
pub(crate) fn assert_same_image_tree(a: &Path, b: &Path, nanos: bool) {
    assert_same_tree(a, b, nanos);
    assert_eq!(
        hardlink_groups(a),
        hardlink_groups(b),
        "hardlink groups differ between {} and {}",
        a.display(),
        b.display()
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(p: &Path, uid: u32, gid: u32) {
    if is_root() {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).expect("setxattr");
}

/// Debian's busybox-static as `/bin/busybox` with its applet symlinks.
fn busybox(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    chmod(&root.join("bin/busybox"), 0o755);
    let list = run(Command::new("/bin/busybox").arg("--list-full"));
    for applet in list.lines().filter(|l| !l.is_empty()) {
        let p = root.join(applet);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        if std::fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &p).expect("symlink");
        }
    }
}

/// A few hundred generated files: nested directories, sizes around block
/// boundaries, modes with setuid/setgid/sticky, owners, user xattrs,
/// hardlinks, symlinks, a fifo and the entries of [`make_tree`].
fn generated(root: &Path) {
    const SIZES: [usize; 8] = [0, 1, 100, 511, 512, 513, 4096, 70_001];
    const MODES: [u32; 7] = [0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750, 0o640];
    for i in 0..320usize {
        let dir = root.join(format!("data/d{}/s{}", i % 6, i % 4));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let size = SIZES[i % SIZES.len()];
        let data: Vec<u8> = (0..size).map(|k| ((k * 31 + i * 7) % 251) as u8).collect();
        let p = dir.join(format!("f{i:03}"));
        std::fs::write(&p, &data).expect("write");
        if i % 10 == 0 {
            set_xattr(&p, "user.index", i.to_string().as_bytes());
        }
        chown(&p, (i % 5) as u32 * 1000, (i % 3) as u32 * 100);
        chmod(&p, MODES[i % MODES.len()]);
    }
    std::fs::create_dir_all(root.join("data/links")).expect("mkdir");
    std::fs::hard_link(root.join("data/d0/s0/f000"), root.join("data/links/hard")).expect("link");
    for n in ["triple-a", "triple-b"] {
        std::fs::hard_link(
            root.join("data/d1/s1/f001"),
            root.join("data/links").join(n),
        )
        .expect("link");
    }
    std::os::unix::fs::symlink("../d2/s2/f002", root.join("data/links/rel")).expect("symlink");
    std::os::unix::fs::symlink("/data/d3", root.join("data/links/abs-dir")).expect("symlink");
    std::os::unix::fs::symlink("missing", root.join("data/links/dangling")).expect("symlink");
    chown(&root.join("data/links/rel"), 5, 6);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("data/links/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    std::fs::write(root.join("data/suid-root"), b"#!/bin/sh\necho hi\n").expect("write");
    chown(&root.join("data/suid-root"), 0, 0);
    chmod(&root.join("data/suid-root"), 0o4755);
    std::fs::create_dir_all(root.join("data/nested/a/b/c/d/e/empty")).expect("mkdir");
    std::fs::create_dir(root.join("data/private")).expect("mkdir");
    std::fs::write(root.join("data/private/secret"), b"s").expect("write");
    chown(&root.join("data/private"), 1234, 4321);
    chmod(&root.join("data/private"), 0o700);
    set_xattr(&root.join("data/nested"), "user.dir", b"on a directory");
    std::fs::create_dir(root.join("data/sticky")).expect("mkdir");
    chmod(&root.join("data/sticky"), 0o1777);
    // The directory the hand-made layer makes opaque.
    std::fs::create_dir_all(root.join("srv/opq/oldsub")).expect("mkdir");
    std::fs::write(root.join("srv/opq/old1"), b"old").expect("write");
    std::fs::write(root.join("srv/opq/oldsub/x"), b"x").expect("write");
    std::os::unix::fs::symlink("old1", root.join("srv/opq/link")).expect("symlink");
    make_tree(&root.join("gen"));
}

/// The base root filesystem: busybox plus the generated tree, every path
/// with a distinct mtime.
fn base_rootfs(root: &Path) {
    busybox(root);
    generated(root);
    set_all_mtimes(root);
}

/// A copy of `lower` (`cp -a`) with deletions, modifications, additions
/// and type changes.
fn changed_copy(lower: &Path, upper: &Path, type_changes: bool) {
    run(Command::new("cp").arg("-a").arg(lower.join(".")).arg(upper));
    let u = upper;
    // Deletions: a directory with contents, files, an applet symlink, one
    // name of a hardlink pair.
    std::fs::remove_dir_all(u.join("data/d1/s3")).expect("rm");
    std::fs::remove_file(u.join("data/d2/s0/f008")).expect("rm");
    std::fs::remove_file(u.join("data/d4/s2/f010")).expect("rm");
    std::fs::remove_file(u.join("bin/ls")).expect("rm");
    std::fs::remove_file(u.join("data/links/triple-b")).expect("rm");
    // Modifications: content, mode, owner, xattr, symlink target.
    std::fs::write(u.join("data/d3/s3/f003"), b"changed content").expect("write");
    chmod(&u.join("data/d4/s0/f004"), 0o600);
    chown(&u.join("data/d5/s1/f005"), 77, 88);
    set_xattr(&u.join("data/d0/s0/f000"), "user.added", b"later");
    std::fs::remove_file(u.join("data/links/rel")).expect("rm");
    std::os::unix::fs::symlink("../d0/s0/f000", u.join("data/links/rel")).expect("symlink");
    // Additions: files, a directory, a hardlink to a file of the lower layer.
    std::fs::create_dir_all(u.join("data/new/deeper")).expect("mkdir");
    std::fs::write(u.join("data/new/deeper/file"), b"new file").expect("write");
    std::fs::write(u.join("data/d0/added"), vec![7u8; 10_000]).expect("write");
    std::fs::hard_link(u.join("data/d3/s1/f021"), u.join("data/links/hard-new")).expect("link");
    set_mtime(&u.join("data/new/deeper/file"), 1_700_000_000, 0);
    set_mtime(&u.join("data/new/deeper"), 1_700_000_100, 0);
    if type_changes {
        // A file becomes a directory, a directory a file, a file a symlink.
        std::fs::remove_file(u.join("data/d5/s3/f011")).expect("rm");
        std::fs::create_dir(u.join("data/d5/s3/f011")).expect("mkdir");
        std::fs::write(u.join("data/d5/s3/f011/inside"), b"in").expect("write");
        std::fs::remove_dir_all(u.join("data/nested/a/b/c")).expect("rm");
        std::fs::write(u.join("data/nested/a/b/c"), b"was a dir").expect("write");
        std::fs::remove_file(u.join("data/d3/s1/f009")).expect("rm");
        std::os::unix::fs::symlink("f003", u.join("data/d3/s1/f009")).expect("symlink");
    }
}

/// A layer that makes `srv/opq` opaque (umoci's repack never writes the
/// marker) and removes a directory of the base with a plain whiteout.
fn opaque_layer() -> Vec<u8> {
    let mut t = TarBuf::new();
    let mut dir = Raw::new("srv/opq/", b'5');
    dir.mode = 0o750;
    dir.uid = 3;
    dir.gid = 4;
    dir.mtime = 1_650_000_000;
    t.raw(&dir, b"");
    t.file("srv/opq/.wh..wh..opq", b"");
    let mut new = Raw::new("srv/opq/new", b'0').size(5);
    new.mtime = 1_650_000_001;
    t.raw(&new, b"fresh");
    let mut sub = Raw::new("srv/opq/oldsub/", b'5');
    sub.mtime = 1_650_000_002;
    t.raw(&sub, b"");
    let mut d0 = Raw::new("data/d0/", b'5');
    d0.mtime = 1_650_000_003;
    t.raw(&d0, b"");
    t.file("data/d0/.wh.s2", b"");
    t.end()
}

pub(crate) fn tools() -> bool {
    crate::common::ready(&["umoci", "tar"])
}

// ---- the tests -------------------------------------------------------------------

#[test]
fn umoci_unpack_and_our_flatten_give_identical_trees() {
    if !tools() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let base = work.path().join("base");
    let upper = work.path().join("upper");
    std::fs::create_dir(&base).expect("mkdir");
    std::fs::create_dir(&upper).expect("mkdir");
    base_rootfs(&base);
    changed_copy(&base, &upper, true);

    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let layers = vec![
        layer_from_dir(&store, &base, Compression::Gzip),
        layer_from_diff(&store, &base, &upper, Compression::Gzip),
        layer_from_tar(&store, &opaque_layer(), Compression::None),
    ];
    let image = build_image(&store, &layers, "t:1");

    let ours = work.path().join("ours");
    flatten_image(&store, &image, &ours, &UnpackOptions::default()).expect("flatten");
    let theirs = umoci_unpack(&layout, "t:1", &work.path().join("bundle"));

    // The image is what it should be, so the comparison is not vacuous.
    let o = |p: &str| ours.join(p);
    assert!(o("bin/busybox").is_file());
    assert!(std::fs::symlink_metadata(o("bin/sh")).is_ok());
    assert!(std::fs::symlink_metadata(o("bin/ls")).is_err());
    assert!(!o("data/d1/s3").exists());
    assert!(!o("data/d0/s2").exists());
    assert!(o("data/d5/s3/f011/inside").is_file());
    assert!(o("data/nested/a/b/c").is_file());
    let opq: BTreeSet<_> = std::fs::read_dir(o("srv/opq"))
        .expect("read opq")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(opq, ["new", "oldsub"].map(std::ffi::OsString::from).into());
    assert_eq!(
        std::fs::read_dir(o("srv/opq/oldsub")).expect("dir").count(),
        0
    );
    assert!(hardlink_groups(&ours).len() >= 3);
    // The diff's new name for a file it leaves out is linked to it.
    assert!(
        hardlink_groups(&ours).contains(&BTreeSet::from(
            ["data/d3/s1/f021", "data/links/hard-new"].map(PathBuf::from)
        )),
        "new hardlink to an unchanged file"
    );
    assert!(!snapshot(&ours, false).is_empty());

    assert_same_image_tree(&theirs, &ours, true);
    // busybox from the image runs.
    let out = run(Command::new(ours.join("bin/busybox")).args(["echo", "ok"]));
    assert_eq!(out.trim(), "ok");
}

/// Applies OCI whiteouts left as plain files by GNU tar: removes
/// `.wh.NAME` with NAME, and for `.wh..wh..opq` every sibling not in
/// `keep`, keeping the directory's mtime as tar set it.
fn apply_whiteouts_by_hand(root: &Path) {
    let snap = snapshot(root, true);
    for rel in snap.keys().rev() {
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(victim) = name.strip_prefix(".wh.") else {
            continue;
        };
        assert_ne!(victim, ".wh..opq", "no opaque markers in these layers");
        let parent = root.join(rel.parent().expect("parent"));
        let md = std::fs::metadata(&parent).expect("parent");
        let v = parent.join(victim);
        match std::fs::symlink_metadata(&v) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&v).expect("rm"),
            Ok(_) => std::fs::remove_file(&v).expect("rm"),
            Err(_) => {}
        }
        std::fs::remove_file(root.join(rel)).expect("rm marker");
        set_mtime(&parent, md.mtime(), md.mtime_nsec());
    }
}

/// GNU tar's extraction of `layer` into `dir` (made if missing), with
/// owners, modes and user xattrs.
pub(crate) fn gnu_tar_x(layer: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=user.*",
            "--same-owner",
            "--numeric-owner",
            "-p",
            "-xf",
        ])
        .arg(layer)
        .arg("-C")
        .arg(dir));
}

#[test]
fn our_pack_and_diff_unpack_with_gnu_tar_and_umoci_to_the_same_tree() {
    if !tools() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let lower = work.path().join("lower");
    let upper = work.path().join("upper");
    std::fs::create_dir(&lower).expect("mkdir");
    std::fs::create_dir(&upper).expect("mkdir");
    base_rootfs(&lower);
    // GNU tar cannot replace a directory by a file without
    // --recursive-unlink, which would also empty directories the diff
    // only updates: no type changes here (the umoci test has them).
    changed_copy(&lower, &upper, false);

    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let packed = layer_from_dir(&store, &lower, Compression::Gzip);
    let diff = layer_from_diff(&store, &lower, &upper, Compression::Gzip);
    build_image(&store, std::slice::from_ref(&packed), "pack:1");
    build_image(&store, &[packed.clone(), diff.clone()], "diff:1");

    // The packed layer alone: GNU tar, umoci, and the source agree (pack
    // keeps whole-second mtimes).
    let blob = |l: &NewLayer| store.blob_path(&l.digest);
    let by_tar = work.path().join("by-tar");
    std::fs::create_dir(&by_tar).expect("mkdir");
    gnu_tar_x(&blob(&packed), &by_tar);
    assert_same_image_tree(&lower, &by_tar, false);
    let by_umoci = umoci_unpack(&layout, "pack:1", &work.path().join("bundle-pack"));
    assert_same_image_tree(&by_tar, &by_umoci, true);

    // The diff on top: GNU tar (whiteouts applied by hand) and umoci give
    // the upper tree.
    gnu_tar_x(&blob(&diff), &by_tar);
    apply_whiteouts_by_hand(&by_tar);
    // The new name linked to a file the diff leaves out (unchanged since
    // the lower tree) is a hardlink to the lower path: the group survives.
    let new_group: BTreeSet<PathBuf> = ["data/d3/s1/f021", "data/links/hard-new"]
        .map(PathBuf::from)
        .into();
    assert!(
        hardlink_groups(&upper).contains(&new_group),
        "upper has the new hardlink"
    );
    assert_same_image_tree(&upper, &by_tar, false);
    let by_umoci = umoci_unpack(&layout, "diff:1", &work.path().join("bundle-diff"));
    assert_same_image_tree(&by_tar, &by_umoci, true);
}

/// The one difference found: a layer that adds or whites out a name in a
/// directory without an entry for the directory itself. umoci puts the
/// directory's mtime back as it was (it restores the parent's mtime after
/// every change); we, like GNU tar and Docker's applier, leave the kernel's
/// update, since the layer says nothing about the directory. Layers made by
/// diff tools (ours, containerd's, umoci's) carry the parent entries, so the
/// trees agree on them (see the tests above). Pinned here so a change on
/// either side is noticed.
#[test]
fn umoci_alone_restores_mtimes_of_directories_a_layer_has_no_entry_for() {
    if !tools() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let base = work.path().join("base");
    std::fs::create_dir(&base).expect("mkdir");
    generated(&base);
    set_all_mtimes(&base);
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let mut t = TarBuf::new();
    t.file("data/d5/newfile", b"x");
    t.file("data/d4/.wh.s0", b"");
    let layers = vec![
        layer_from_dir(&store, &base, Compression::Gzip),
        layer_from_tar(&store, &t.end(), Compression::None),
    ];
    let image = build_image(&store, &layers, "headerless:1");
    let ours = work.path().join("ours");
    flatten_image(&store, &image, &ours, &UnpackOptions::default()).expect("flatten");
    let theirs = umoci_unpack(&layout, "headerless:1", &work.path().join("bundle"));

    let touched = ["data/d4", "data/d5"];
    for p in touched {
        let mtime = |root: &Path| std::fs::metadata(root.join(p)).expect("stat").mtime();
        assert_eq!(mtime(&theirs), mtime(&base), "umoci restored {p}");
        assert!(mtime(&ours) > mtime(&base), "{p} keeps the kernel's mtime");
    }
    // Everything else agrees.
    let strip = |root: &Path| {
        let mut s = snapshot(root, true);
        for p in touched {
            let f = s.get_mut(Path::new(p)).expect("dir");
            f.mtime = 0;
            f.mtime_nsec = 0;
        }
        s
    };
    assert_eq!(strip(&theirs), strip(&ours));
    assert_eq!(hardlink_groups(&theirs), hardlink_groups(&ours));
}

// ---- layers `umoci insert` writes ------------------------------------------------

/// The uncompressed tar of every layer of `image`.
pub(crate) fn layer_tars(store: &OciDir, image: &Image) -> Vec<Vec<u8>> {
    use std::io::Read;
    image
        .layers()
        .iter()
        .map(|l| {
            let blob =
                std::fs::read(store.blob_path(&Digest::try_from(l.digest()).expect("digest")))
                    .expect("blob");
            let mut tar = Vec::new();
            image_overlay::compress::decoder(Compression::sniff(&blob), &blob[..])
                .expect("decoder")
                .read_to_end(&mut tar)
                .expect("decompress");
            tar
        })
        .collect()
}

/// An image made by umoci alone: `umoci insert` of a directory (its last
/// entry a file of 6 bytes), of a single file (2 bytes), of a whiteout,
/// and of a directory with `--opaque`. umoci 0.4.7 never closes its tar
/// writer, so these layers end right after the last entry's data: no
/// padding to the block size and no end-of-archive marker. Go's
/// archive/tar (umoci, Docker, containerd) reads them; GNU tar and
/// Python's tarfile do not.
pub(crate) fn umoci_insert_image(work: &Path) -> PathBuf {
    let layout = work.join("umoci-layout");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
    std::fs::write(src.join("a/b/f"), b"hello\n").expect("write");
    std::fs::write(src.join("a/keep"), b"kept").expect("write");
    std::fs::write(src.join("top"), b"x\n").expect("write");
    std::fs::create_dir_all(src.join("opq/inner")).expect("mkdir");
    std::fs::write(src.join("opq/inner/new"), vec![b'n'; 512]).expect("write");
    set_all_mtimes(&src);
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(src.join("a"))
        .arg("/a"));
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(src.join("top"))
        .arg("/top"));
    run(Command::new("umoci").args(["insert", "--image", &image, "--whiteout", "/a/keep"]));
    run(Command::new("umoci")
        .args(["insert", "--image", &image, "--opaque"])
        .arg(src.join("opq"))
        .arg("/a/b"));
    layout
}

/// The regression of issue 17: an image made by `umoci insert` loads,
/// flattens and unpacks into snapshots, giving umoci's own tree.
#[test]
fn layers_from_umoci_insert_without_padding_or_end_marker_unpack() {
    use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};
    use image_overlay::mount::{MountGuard, SysMounter};
    use image_overlay::snapshot::{CopySnapshotter, OverlaySnapshotter, Snapshotter};
    if !tools() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = umoci_insert_image(work.path());
    let store = OciDir::open(&layout).expect("umoci's layout");
    let image = resolve_image(&store, "t", None).expect("resolve");
    assert_eq!(image.layers().len(), 4);
    // Not vacuous: the layers do end without padding or marker.
    let tars = layer_tars(&store, &image);
    assert_eq!(tars[1].len(), 512 + 2, "umoci insert of a 2-byte file");
    assert!(tars
        .iter()
        .all(|t| t.len() < 1024 || t[t.len() - 1024..] != [0u8; 1024]));

    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));
    let theirs = bundle.join("rootfs");
    let ours = work.path().join("ours");
    flatten_image(&store, &image, &ours, &UnpackOptions::default()).expect("flatten");
    assert_eq!(std::fs::read(ours.join("top")).expect("top"), b"x\n");
    assert!(!ours.join("a/keep").exists(), "whiteout applied");
    assert!(!ours.join("a/b/f").exists(), "opaque applied");
    assert!(ours.join("a/b/inner/new").is_file());
    // umoci restores the mtimes of directories a layer has no entry for
    // (see the test above): compare everything else.
    let strip = |root: &Path| {
        let mut s = snapshot(root, true);
        let f = s.get_mut(Path::new("a")).expect("dir");
        f.mtime = 0;
        f.mtime_nsec = 0;
        s
    };
    assert_eq!(strip(&theirs), strip(&ours));

    // Into snapshots: the top view of either driver is the flattened tree
    // (the overlay driver's seen through a mount).
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = CopySnapshotter::open(dir.path().join("copy")).expect("copy driver");
    let r = unpack_image(&store, &image, &copy, &ImageUnpackOptions::default()).expect("copy");
    assert_eq!(r.unpacked.len(), 4);
    let v = copy.view("check", r.top().as_deref()).expect("view");
    // (`a` has the time of the whiteout's unpack, as in every tree here.)
    assert_eq!(strip(Path::new(&v[0].source)), strip(&ours));
    let overlay = OverlaySnapshotter::open(dir.path().join("overlay")).expect("overlay driver");
    let r =
        unpack_image(&store, &image, &overlay, &ImageUnpackOptions::default()).expect("overlay");
    assert_eq!(r.unpacked.len(), 4);
    let v = overlay.view("check", r.top().as_deref()).expect("view");
    let m = tempfile::tempdir().expect("tempdir");
    match MountGuard::mount(SysMounter, &v, m.path()) {
        Ok(guard) => {
            let merged = strip(m.path());
            guard.unmount().expect("unmount");
            assert_eq!(merged, strip(&ours), "the overlay view");
        }
        Err(e) => crate::common::skip_or_fail(&format!("overlay mounts for the overlay view: {e}")),
    }
}

/// A failure's error chain names each context once: no message repeats
/// the message of its source (issue 17 saw "truncated layer: truncated
/// layer").
#[test]
fn a_failed_flatten_says_its_cause_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let mut t = TarBuf::new();
    t.file("f", b"data");
    let mut tar = t.0;
    tar.extend_from_slice(&Raw::new("g", b'0').block()[..200]);
    let layers = vec![layer_from_tar(&store, &tar, Compression::Gzip)];
    let image = build_image(&store, &layers, "cut:1");
    let e = flatten_image(
        &store,
        &image,
        &work.path().join("out"),
        &UnpackOptions::default(),
    )
    .expect_err("cut header");
    let mut chain: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        cur = err.source();
    }
    assert!(chain.len() >= 2, "{chain:?}");
    for w in chain.windows(2) {
        assert!(
            !w[0].contains(&w[1]),
            "{:?} repeats its source {:?}",
            w[0],
            w[1]
        );
    }
    assert!(
        chain.join(": ").contains("layer ends inside an entry"),
        "{chain:?}"
    );
}

/// A layer blob damaged in the store: the store's verifying reader finds
/// it, and the flatten reports the unpack's own mismatch variant (class
/// DigestMismatch or SizeMismatch), naming the layer's digest once; it was
/// `UnpackError::Source` ("reading the layer") with the store's error
/// inside an io::Error, and the digest in the chain twice.
#[test]
fn a_damaged_blob_is_the_unpacks_mismatch() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let mut t = TarBuf::new();
    t.file("f", &[7u8; 70_000]);
    let layers = vec![layer_from_tar(&store, &t.0, Compression::Gzip)];
    let image = build_image(&store, &layers, "damaged:1");
    let blob = store
        .root()
        .join("blobs/sha256")
        .join(layers[0].digest.hex());
    for (cut, wanted) in [(true, "truncated"), (false, "one byte changed")] {
        let good = std::fs::read(&blob).expect("read blob");
        let mut bad = good.clone();
        if cut {
            bad.truncate(good.len() - 1);
        } else {
            // The gzip trailer's size field: the decoder does not check it
            // before the end, the store's digest check does.
            *bad.last_mut().expect("bytes") ^= 1;
        }
        std::fs::write(&blob, &bad).expect("damage");
        let e = flatten_image(
            &store,
            &image,
            &work.path().join(format!("out-{cut}")),
            &UnpackOptions::default(),
        )
        .expect_err(wanted);
        std::fs::write(&blob, &good).expect("restore");
        let unpack = match &e {
            image_overlay::FlattenError::Unpack { source, .. } => &**source,
            other => panic!("{wanted}: {other:?}"),
        };
        assert!(
            matches!(
                unpack,
                UnpackError::DigestMismatch { .. } | UnpackError::SizeMismatch { .. }
            ),
            "{wanted}: {unpack:?}"
        );
        assert!(
            matches!(
                e.kind(),
                ErrorKind::DigestMismatch | ErrorKind::SizeMismatch
            ),
            "{wanted}: {:?}",
            e.kind()
        );
        let chain = image_core::error::Chain(&e).to_string();
        let digest = layers[0].digest.to_string();
        assert_eq!(chain.matches(&digest).count(), 1, "{wanted}: {chain}");
    }
}
