//! Snapshotters: one conformance suite run over both drivers, overlay
//! specifics (mount options, 128 layers, copy-on-write with real mounts),
//! the copy driver's faithful copy, and image unpack into snapshots.
//!
//! Tests that need mounts skip loudly when the kernel refuses them, and fail
//! under `CI=true`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_core::{
    Classify, Compression, DescriptorExt, Digest, ErrorKind, Interrupt, MediaType, Recorder,
    Tracker,
};
use image_overlay::image_unpack::{unpack_image, ImageUnpackError, ImageUnpackOptions};
use image_overlay::mount::{
    LegacyMounter, Mount, MountError, MountGuard, Mounter, RecordingMounter, SysMounter,
};
use image_overlay::pack::{pack_overlay_upper, PackOptions};
use image_overlay::snapshot::{
    CommitOptions, CopySnapshotter, Kind, OverlayOptions, OverlaySnapshotter, SnapshotError,
    Snapshotter,
};
use image_overlay::testsuite::{
    bind_dir, commit_layer, mounts_permitted, with_mounted, write_file as write,
};
use image_overlay::unpack::{unpack, UnpackOptions};
use image_overlay::whiteout::OverlayXattrs;
use image_store::{Ingester, OciDir, TagStore};

// ---- privilege probe ---------------------------------------------------------

// ---- trees -----------------------------------------------------------------

/// A comparable description of a tree: path -> (type+mode, owner, size,
/// content or link target, rdev).
type Tree = BTreeMap<String, String>;

fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let md = fs::symlink_metadata(&p).expect("lstat");
            let ft = md.file_type();
            let what = if ft.is_dir() {
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("link->{}", fs::read_link(&p).expect("readlink").display())
            } else if ft.is_file() {
                format!("file {}", Digest::sha256(&fs::read(&p).expect("read")))
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {:x}", md.rdev())
            } else {
                "other".to_owned()
            };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} {}:{}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid()
                ),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

// ---- the conformance suite -------------------------------------------------

/// A driver under test: how to open a root.
trait Driver {
    type S: Snapshotter + Send + Sync + 'static;
    fn open(root: &Path) -> Self::S;
}

struct Overlay;
impl Driver for Overlay {
    type S = OverlaySnapshotter;
    fn open(root: &Path) -> OverlaySnapshotter {
        OverlaySnapshotter::open(root).expect("open overlay")
    }
}

struct Copy;
impl Driver for Copy {
    type S = CopySnapshotter;
    fn open(root: &Path) -> CopySnapshotter {
        CopySnapshotter::open(root).expect("open copy")
    }
}

/// What the exported suite leaves to each driver: its directory layout.
/// Removing every snapshot leaves no directory in `snapshots/`.
fn removal_leaves_no_directories<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(dir.path());
    sn.prepare("a", None).expect("prepare");
    sn.commit("A", "a").expect("commit");
    sn.view("v", Some("A")).expect("view");
    sn.prepare("x", Some("A")).expect("prepare x");
    sn.remove("v").expect("remove view");
    sn.remove("x").expect("remove active");
    sn.remove("A").expect("remove parent");
    // Only the lock and the metadata remain.
    let left: Vec<_> = fs::read_dir(dir.path().join("snapshots"))
        .expect("ls")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Leftovers of a crash are removed when the root is opened again, and the
/// other driver refuses the root.
fn crash_leftovers_and_the_other_driver<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let sn = D::open(dir.path());
        let m = sn.prepare("a", None).expect("prepare");
        fs::write(bind_dir(&m).join("f"), b"kept").expect("write");
        sn.commit("A", "a").expect("commit");
        sn.prepare("b", Some("A")).expect("prepare b");
    }
    // Leftovers of a crash: a half-built directory, a directory the
    // metadata never named, a temp metadata file.
    let snaps = dir.path().join("snapshots");
    fs::create_dir_all(snaps.join(".tmp-77/fs")).expect("mkdir");
    fs::create_dir_all(snaps.join("999/fs")).expect("mkdir");
    fs::write(dir.path().join(".metadata.json.tmp-1"), b"{").expect("write");
    let sn = D::open(dir.path());
    assert!(!snaps.join(".tmp-77").exists());
    assert!(!snaps.join("999").exists());
    assert_eq!(sn.stat("A").expect("A").kind, Kind::Committed);
    assert_eq!(sn.stat("b").expect("b").parent.as_deref(), Some("A"));
    // The other driver refuses this root.
    let wrong = if sn.driver() == "overlay" {
        CopySnapshotter::open(dir.path())
            .map(|_| ())
            .expect_err("copy on overlay root")
    } else {
        OverlaySnapshotter::open(dir.path())
            .map(|_| ())
            .expect_err("overlay on copy root")
    };
    assert!(matches!(wrong, SnapshotError::BadRoot { .. }), "{wrong}");
}

macro_rules! conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn exported_suite() {
                image_testsupport::overlay::snapshotter(<$driver>::open);
            }
            #[test]
            fn removal_leaves_no_directories() {
                super::removal_leaves_no_directories::<$driver>();
            }
            #[test]
            fn crash_leftovers_and_the_other_driver() {
                super::crash_leftovers_and_the_other_driver::<$driver>();
            }
        }
    };
}

conformance!(conformance_overlay, Overlay);
conformance!(conformance_copy, Copy);

// ---- overlay specifics -----------------------------------------------------

/// Every mounter reads a mount's options with the one parser: a tmpfs (a
/// type other than overlay and bind, which the runtime mounts for a root
/// filesystem given as mounts) is mounted with its flags and data; a bind
/// and an overlay take every flag word (`noatime` too, which overlayfs
/// refused when it was passed to it as one of its own options).
#[test]
fn every_mounter_takes_every_flag_of_the_one_parser() {
    if !mounts_permitted("every_mounter_takes_every_flag_of_the_one_parser") {
        return;
    }
    use rustix::fs::StatVfsMountFlags as F;
    let t = tempfile::tempdir().expect("tempdir");
    for d in ["src", "l1", "l2", "u", "w"] {
        fs::create_dir(t.path().join(d)).expect("mkdir");
    }
    let p = |d: &str| t.path().join(d).to_string_lossy().into_owned();
    let s = |v: &[&str]| v.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>();
    let tmpfs = Mount {
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: None,
        options: s(&[
            "nosuid",
            "nodev",
            "noexec",
            "rprivate",
            "mode=0710",
            "size=1m",
        ]),
    };
    let mut bind = Mount::bind(p("src"), false);
    bind.options.extend(s(&["noatime", "nodev"]));
    let overlay = Mount {
        fs_type: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            "noatime".into(),
            "nosuid".into(),
            format!("lowerdir={}:{}", p("l1"), p("l2")),
            format!("upperdir={}", p("u")),
            format!("workdir={}", p("w")),
        ],
    };
    let mounters: [(&str, &dyn Mounter); 2] = [("sys", &SysMounter), ("legacy", &LegacyMounter)];
    for (name, mounter) in mounters {
        let flags = |m: &Mount| {
            with_mounted_by(mounter, std::slice::from_ref(m), |dir| {
                let st = rustix::fs::statvfs(dir).expect("statvfs");
                (st.f_flag, fs::metadata(dir).expect("stat").mode() & 0o7777)
            })
        };
        let (f, mode) = flags(&tmpfs);
        assert!(f.contains(F::NOSUID | F::NODEV | F::NOEXEC), "{name} {f:?}");
        assert_eq!(mode, 0o710, "{name}");
        let (f, _) = flags(&bind);
        assert!(f.contains(F::NOATIME | F::NODEV), "{name} {f:?}");
        let (f, _) = flags(&overlay);
        assert!(f.contains(F::NOATIME | F::NOSUID), "{name} {f:?}");
    }
}

/// A mount stacked below the mount point (a relative `target`) lands in
/// the tree mounted there, never through a symlink of it: an image whose
/// `data` is a link to `/etc` must not get a tmpfs over the host's `/etc`.
#[test]
fn a_relative_mount_target_is_never_reached_through_a_symlink() {
    if !mounts_permitted("a_relative_mount_target_is_never_reached_through_a_symlink") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let (root, outside) = (t.path().join("root"), t.path().join("outside"));
    for d in [root.join("dir/sub"), outside.join("sub")] {
        fs::create_dir_all(d).expect("mkdir");
    }
    std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("/", root.join("dir/up")).expect("symlink");
    let tmpfs = |target: &str| Mount {
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: Some(target.into()),
        options: vec!["size=1m".into()],
    };
    let mounters: [(&str, &dyn Mounter); 2] = [("sys", &SysMounter), ("legacy", &LegacyMounter)];
    for (name, mounter) in mounters {
        for target in ["link/sub", "link", "dir/up/tmp"] {
            let e = mounter
                .mount(&[tmpfs(target)], &root)
                .expect_err(&format!("{name}: {target} mounted"));
            assert!(
                matches!(&e, MountError::SymlinkTarget { .. }),
                "{name}: {target}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::Unsafe);
        }
        // Nothing reached outside; a plain relative target is mounted.
        let outside_dev = fs::metadata(outside.join("sub")).expect("stat").dev();
        assert_eq!(outside_dev, fs::metadata(t.path()).expect("stat").dev());
        let g = MountGuard::mount(mounter, &[tmpfs("dir/sub")], &root).expect("mount");
        assert_ne!(
            fs::metadata(root.join("dir/sub")).expect("stat").dev(),
            outside_dev,
            "{name}"
        );
        g.unmount().expect("unmount");
    }
}

/// Mounts `mounts` with `mounter` on a fresh directory, runs `f`, unmounts.
fn with_mounted_by<T>(mounter: &dyn Mounter, mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = MountGuard::mount(mounter, mounts, dir.path()).expect("mount");
    let out = f(dir.path());
    guard.unmount().expect("unmount");
    out
}

/// In a user namespace (`userxattr`) the kernel refuses `redirect_dir=off`
/// ("redirect_dir requires permission to access trusted xattrs"): the
/// rootless mount asks for `nofollow`, which it takes.
#[test]
fn userxattr_mounts_ask_for_redirect_dir_nofollow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open_with(
        dir.path(),
        image_overlay::snapshot::OverlayOptions::default().with_userxattr(true),
    )
    .expect("open");
    sn.prepare("l1-a", None).expect("prepare");
    sn.commit("l1", "l1-a").expect("commit");
    let m = sn.prepare("c", Some("l1")).expect("prepare");
    let o = &m[0].options;
    for want in [
        "userxattr",
        "redirect_dir=nofollow",
        "index=off",
        "metacopy=off",
    ] {
        assert!(o.iter().any(|x| x == want), "{want} missing: {o:?}");
    }
    assert!(!o.iter().any(|x| x == "redirect_dir=off"), "{o:?}");
}

#[test]
fn overlay_mount_options_are_explicit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path()).expect("open");
    for (name, parent) in [("l1", None), ("l2", Some("l1")), ("l3", Some("l2"))] {
        sn.prepare(&format!("{name}-a"), parent).expect("prepare");
        sn.commit(name, &format!("{name}-a")).expect("commit");
    }
    let m = sn.prepare("c", Some("l3")).expect("prepare");
    assert_eq!(m.len(), 1);
    let m = &m[0];
    assert_eq!(m.fs_type, "overlay");
    for o in ["index=off", "redirect_dir=off", "metacopy=off"] {
        assert!(
            m.options.iter().any(|x| x == o),
            "{o} missing: {:?}",
            m.options
        );
    }
    let lowers = m.lowerdirs();
    assert_eq!(lowers.len(), 3);
    let root = sn.root().join("snapshots");
    let id = |n: u32| {
        root.join(n.to_string())
            .join("fs")
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(lowers, vec![id(3), id(2), id(1)], "nearest first");
    assert!(m.option("upperdir").is_some_and(|u| u.ends_with("/fs")));
    assert!(m.option("workdir").is_some_and(|w| w.ends_with("/work")));
    // A view of several layers is an overlay without upper.
    let v = sn.view("v", Some("l3")).expect("view");
    assert_eq!(v[0].fs_type, "overlay");
    assert!(v[0].option("upperdir").is_none());
    // The recording mounter sees exactly that.
    let rec = RecordingMounter::default();
    rec.mount(&v, Path::new("/t")).expect("record");
    assert_eq!(rec.calls().len(), 1);
    // userxattr for rootless roots.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let opts = image_overlay::snapshot::OverlayOptions::default().with_userxattr(true);
    let sn2 = OverlaySnapshotter::open_with(dir2.path(), opts).expect("open");
    sn2.prepare("a", None).expect("prepare");
    sn2.commit("A", "a").expect("commit");
    let m2 = sn2.prepare("b", Some("A")).expect("prepare");
    assert!(m2[0].has_flag("userxattr"));
}

#[test]
fn overlay_128_layers() {
    if !mounts_permitted("overlay_128_layers") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = image_overlay::snapshot::OverlayOptions::default().with_sync_on_commit(false);
    let sn = OverlaySnapshotter::open_with(dir.path(), opts).expect("open");
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let key = format!("layer-{i}-active");
        let m = sn.prepare(&key, None).expect("prepare");
        let d = bind_dir(&m);
        fs::write(d.join(format!("f{i:03}")), format!("{i}")).expect("write");
        fs::write(d.join("last"), format!("{i}")).expect("write");
        let mut opts = CommitOptions::default();
        if let Some(p) = &parent {
            opts = opts.with_rebase(p.clone());
        }
        let name = format!("sha256:{:064x}", i);
        sn.commit_with(&name, &key, opts).expect("commit");
        parent = Some(name);
    }
    let mounts = sn.prepare("root", parent.as_deref()).expect("prepare");
    let lower = mounts[0].option("lowerdir").expect("lowerdir");
    assert!(
        lower.len() > 4096,
        "the list is longer than a page: {}",
        lower.len()
    );
    with_mounted(&mounts, |root| {
        for i in 0..128 {
            assert_eq!(
                fs::read_to_string(root.join(format!("f{i:03}"))).expect("f"),
                i.to_string()
            );
        }
        assert_eq!(fs::read_to_string(root.join("last")).expect("last"), "127");
    });
    let v = sn.view("view", parent.as_deref()).expect("view");
    with_mounted(&v, |root| {
        assert_eq!(fs::read_dir(root).expect("ls").count(), 129)
    });
    // Kernels before 6.8 (no `lowerdir+`) get `mount(2)`, whose options
    // must fit a page: the same root and view through that path.
    for m in [&mounts, &v] {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = MountGuard::mount(LegacyMounter, m, dir.path()).expect("legacy mount");
        let root = dir.path();
        assert_eq!(fs::read_dir(root).expect("ls").count(), 129);
        assert_eq!(fs::read_to_string(root.join("f000")).expect("f"), "0");
        assert_eq!(fs::read_to_string(root.join("last")).expect("last"), "127");
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let line = info
            .lines()
            .find(|l| l.contains(&*root.to_string_lossy()))
            .expect("mounted");
        assert!(line.contains("/proc/self/fd/"), "{line}");
        guard.unmount().expect("unmount");
    }
}

/// overlayfs stacks at most 500 lower directories: a root on 500 layers
/// mounts (so the limit is not below the kernel's), one on 501 is refused
/// before the kernel is asked, with a typed error instead of its bare
/// `EINVAL`, and nothing is left mounted.
#[test]
fn overlay_refuses_more_lowers_than_the_kernel_stacks() {
    use image_overlay::mount::{MountError, MAX_OVERLAY_LOWERS};
    if !mounts_permitted("overlay_refuses_more_lowers_than_the_kernel_stacks") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = OverlayOptions::default().with_sync_on_commit(false);
    let sn = OverlaySnapshotter::open_with(dir.path(), opts).expect("open");
    let mut chain: Vec<String> = Vec::new();
    for i in 0..=MAX_OVERLAY_LOWERS {
        let key = format!("layer-{i}-active");
        let m = sn.prepare(&key, None).expect("prepare");
        fs::write(bind_dir(&m).join(format!("f{i}")), "x").expect("write");
        let mut opts = CommitOptions::default();
        if let Some(p) = chain.last() {
            opts = opts.with_rebase(p.clone());
        }
        let name = format!("sha256:{i:064x}");
        sn.commit_with(&name, &key, opts).expect("commit");
        chain.push(name);
    }
    let at_limit = sn
        .prepare("at-limit", Some(&chain[MAX_OVERLAY_LOWERS - 1]))
        .expect("prepare");
    assert_eq!(at_limit[0].lowerdirs().len(), MAX_OVERLAY_LOWERS);
    with_mounted(&at_limit, |root| {
        assert!(root.join("f0").is_file());
        assert!(root.join(format!("f{}", MAX_OVERLAY_LOWERS - 1)).is_file());
    });
    let over = sn
        .prepare("over", Some(&chain[MAX_OVERLAY_LOWERS]))
        .expect("prepare (not mounted yet)");
    let target = tempfile::tempdir().expect("tempdir");
    for mounter in [&SysMounter as &dyn Mounter, &LegacyMounter] {
        let e = mounter.mount(&over, target.path()).expect_err("501 lowers");
        assert!(
            matches!(
                &e,
                MountError::TooManyLayers { lowers, max, .. }
                    if *lowers == MAX_OVERLAY_LOWERS + 1 && *max == MAX_OVERLAY_LOWERS
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("at most 500"), "{e}");
    }
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !info.contains(&*target.path().to_string_lossy()),
        "left mounted"
    );
}

#[test]
fn overlay_copy_on_write_and_pack_upper() {
    if !mounts_permitted("overlay_copy_on_write_and_pack_upper") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path()).expect("open");
    commit_layer(
        &sn,
        "l1",
        None,
        &[
            ("etc/conf", b"original"),
            ("etc/gone", b"x"),
            ("bin/tool", b"tool"),
            ("var/d/f", b"f"),
        ],
        &[],
    );
    commit_layer(&sn, "l2", Some("l1"), &[("etc/extra", b"extra")], &[]);
    let mounts = sn.prepare("ctr", Some("l2")).expect("prepare");
    // Bottom first.
    let mut lower_fs: Vec<PathBuf> = mounts[0]
        .lowerdirs()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    lower_fs.reverse();
    let lower_before: Vec<Tree> = lower_fs.iter().map(|p| tree(p)).collect();
    let upper = PathBuf::from(mounts[0].option("upperdir").expect("upper"));
    let container_view = with_mounted(&mounts, |root| {
        fs::write(root.join("etc/conf"), b"changed").expect("write lower file");
        fs::remove_file(root.join("etc/gone")).expect("delete lower file");
        fs::remove_dir_all(root.join("var/d")).expect("delete lower dir");
        fs::create_dir(root.join("var/d")).expect("recreate dir");
        fs::write(root.join("var/d/new"), b"n").expect("write");
        fs::write(root.join("new"), b"new").expect("write");
        tree(root)
    });
    // Copied up, lower unchanged.
    assert_eq!(fs::read(upper.join("etc/conf")).expect("upper"), b"changed");
    assert_eq!(
        fs::read(lower_fs[0].join("etc/conf")).expect("lower"),
        b"original"
    );
    let lower_after: Vec<Tree> = lower_fs.iter().map(|p| tree(p)).collect();
    assert_eq!(lower_before, lower_after);
    // A 0/0 character device whiteout for the deleted file.
    let md = fs::symlink_metadata(upper.join("etc/gone")).expect("whiteout");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);

    // Packing the upper gives a layer that reproduces the container's view
    // when applied onto the flattened lowers.
    let mut layer = Vec::new();
    let packed = pack_overlay_upper(
        &upper,
        &mut layer,
        &PackOptions::new(Compression::Gzip),
        OverlayXattrs::Trusted,
    )
    .expect("pack upper");
    let flat = tempfile::tempdir().expect("tempdir");
    let flat_root = flat.path().join("root");
    fs::create_dir(&flat_root).expect("mkdir");
    for l in &lower_fs {
        let mut tarball = Vec::new();
        pack_overlay_upper(
            l,
            &mut tarball,
            &PackOptions::new(Compression::None),
            OverlayXattrs::Trusted,
        )
        .expect("pack lower");
        unpack(&tarball[..], &flat_root, &UnpackOptions::default()).expect("apply lower");
    }
    let report = unpack(
        &layer[..],
        &flat_root,
        &UnpackOptions::default().with_diff_id(packed.diff_id),
    )
    .expect("apply upper");
    assert!(report.entries > 0);
    let mut got = tree(&flat_root);
    let mut want = container_view;
    // The root directory's own mode is not part of a layer.
    got.remove("");
    want.remove("");
    assert_eq!(got, want);
}

// ---- copy driver specifics --------------------------------------------------

#[test]
fn copy_prepare_is_a_faithful_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = CopySnapshotter::open(dir.path()).expect("open");
    let m = sn.prepare("a", None).expect("prepare");
    let d = bind_dir(&m);
    write(&d.join("dir/file"), b"content");
    fs::set_permissions(d.join("dir/file"), fs::Permissions::from_mode(0o4751)).expect("chmod");
    fs::hard_link(d.join("dir/file"), d.join("hard")).expect("link");
    std::os::unix::fs::symlink("dir/file", d.join("sym")).expect("symlink");
    let root = rustix::process::geteuid().is_root();
    if root {
        std::os::unix::fs::lchown(d.join("dir/file"), Some(1234), Some(5678)).expect("chown");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .expect("mknod");
        fs::set_permissions(d.join("dir/file"), fs::Permissions::from_mode(0o4751)).expect("chmod");
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    let _ = rustix::fs::setxattr(
        d.join("dir/file"),
        "user.test",
        b"v",
        rustix::fs::XattrFlags::empty(),
    );
    let old = rustix::fs::Timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 123_456_789,
    };
    let ts = rustix::fs::Timestamps {
        last_access: old,
        last_modification: old,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        d.join("dir"),
        &ts,
        rustix::fs::AtFlags::empty(),
    )
    .expect("utimens");
    sn.commit("A", "a").expect("commit");

    let m2 = sn.prepare("b", Some("A")).expect("prepare b");
    let c = bind_dir(&m2);
    assert_ne!(c, d);
    assert_eq!(tree(&c), tree(&d));
    let a = fs::metadata(c.join("dir/file")).expect("stat");
    let h = fs::metadata(c.join("hard")).expect("stat");
    assert_eq!(a.ino(), h.ino(), "hardlink kept");
    assert_eq!(a.mode() & 0o7777, 0o4751);
    let dm = fs::metadata(c.join("dir")).expect("stat dir");
    assert_eq!(
        (dm.mtime(), dm.mtime_nsec()),
        (1_000_000_000, 123_456_789),
        "dir mtime kept"
    );
    let mut buf = [0u8; 8];
    if let Ok(n) = rustix::fs::getxattr(d.join("dir/file"), "user.test", &mut buf[..]) {
        let mut got = [0u8; 8];
        let m = rustix::fs::getxattr(c.join("dir/file"), "user.test", &mut got[..])
            .expect("xattr copied");
        assert_eq!(&got[..m], &buf[..n]);
    }
    // The copy is independent of the parent.
    fs::write(c.join("dir/file"), b"changed").expect("write");
    assert_eq!(fs::read(d.join("dir/file")).expect("read"), b"content");
}

// ---- image unpack -------------------------------------------------------------

/// Packs each tree (a list of files, deletions as `.wh.` names) as a gzip
/// layer, writes an image to a fresh store, tags it `name`.
struct TestImage {
    _dir: tempfile::TempDir,
    store: OciDir,
    image: image_store::Image,
}

fn make_image(layers: &[Vec<(&str, Vec<u8>)>], name: &str) -> TestImage {
    make_image_with(layers, name, image_core::Algorithm::Sha256)
}

/// [`make_image`] with its layers, config and manifest stored and named
/// by digests of `algorithm`.
fn make_image_with(
    layers: &[Vec<(&str, Vec<u8>)>],
    name: &str,
    algorithm: image_core::Algorithm,
) -> TestImage {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    add_image_with(&store, layers, name, algorithm);
    let image = image_store::resolve_image(&store, name, None).expect("resolve");
    TestImage {
        _dir: dir,
        store,
        image,
    }
}

fn add_image(store: &OciDir, layers: &[Vec<(&str, Vec<u8>)>], name: &str) {
    add_image_with(store, layers, name, image_core::Algorithm::Sha256);
}

fn add_image_with(
    store: &OciDir,
    layers: &[Vec<(&str, Vec<u8>)>],
    name: &str,
    algorithm: image_core::Algorithm,
) {
    let put = |bytes: &[u8]| {
        let digest = image_core::Digest::of_bytes(algorithm, bytes);
        store
            .ingest_reader(&mut &bytes[..], Some(bytes.len() as u64), Some(&digest))
            .expect("blob")
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for files in layers {
        let src = tempfile::tempdir().expect("tempdir");
        for (p, data) in files {
            if let Some(target) = p.strip_prefix("WH:") {
                // An OCI whiteout entry: made by packing a 0/0 char device
                // from an overlay-form tree.
                let path = src.path().join(target);
                fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .expect("mknod whiteout");
            } else {
                write(&src.path().join(p), data);
            }
        }
        let mut blob = Vec::new();
        let opts = PackOptions::new(Compression::Gzip).with_source_date_epoch(1_600_000_000);
        let r =
            pack_overlay_upper(src.path(), &mut blob, &opts, OverlayXattrs::Trusted).expect("pack");
        let d = put(&blob);
        descs.push(serde_json::json!({"mediaType": MediaType::OciLayerGzip.as_str(), "digest": d.to_string(), "size": blob.len()}));
        diff_ids.push(r.diff_id.to_string());
    }
    let host = image_core::platform::Platform::host();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    let md = put(&manifest);
    let desc =
        image_core::manifest::descriptor(&MediaType::OciManifest, &md, manifest.len() as u64);
    store.set_tag(name, &desc).expect("tag");
}

fn layers_abc() -> Vec<Vec<(&'static str, Vec<u8>)>> {
    vec![
        vec![
            ("etc/os", b"base".to_vec()),
            ("etc/old", b"old".to_vec()),
            ("bin/sh", vec![1u8; 100_000]),
        ],
        vec![
            ("etc/os", b"mid".to_vec()),
            ("WH:etc/old", Vec::new()),
            ("usr/lib/x", b"x".to_vec()),
        ],
        vec![("app/main", b"main".to_vec())],
    ]
}

/// The flattened tree of an image, for comparison.
fn flattened(t: &TestImage) -> Tree {
    let out = tempfile::tempdir().expect("tempdir");
    let root = out.path().join("root");
    image_overlay::flatten::flatten_image(&t.store, &t.image, &root, &UnpackOptions::default())
        .expect("flatten");
    let mut tr = tree(&root);
    tr.remove("");
    tr
}

fn unpack_into<S: Snapshotter>(sn: &S, parallel: usize) {
    let t = make_image(&layers_abc(), "test/abc:1");
    let report = unpack_image(
        &t.store,
        &t.image,
        sn,
        &ImageUnpackOptions::default().with_parallelism(parallel),
    )
    .expect("unpack image");
    assert_eq!(report.unpacked.len(), 3);
    let chains = image_core::chain_ids(t.image.diff_ids());
    assert_eq!(report.chain_ids, chains);
    for (i, c) in chains.iter().enumerate() {
        let info = sn.stat(&c.to_string()).expect("chain snapshot");
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent, (i > 0).then(|| chains[i - 1].to_string()));
    }
    // No temporary snapshot left.
    assert_eq!(sn.list().expect("list").len(), 3);
    // Unpacking again reuses everything.
    let again =
        unpack_image(&t.store, &t.image, sn, &ImageUnpackOptions::default()).expect("again");
    assert!(again.unpacked.is_empty());
    assert_eq!(again.reused.len(), 3);
    // The image's root, seen through a view, is the flattened image.
    let top = report.top().expect("top");
    let want = flattened(&t);
    let v = sn.view("check", Some(&top)).expect("view");
    let got = if sn.driver() == "copy" {
        tree(Path::new(&v[0].source))
    } else {
        if !mounts_permitted("unpack_into overlay view") {
            return;
        }
        with_mounted(&v, tree)
    };
    let mut got = got;
    got.remove("");
    assert_eq!(got, want);
}

#[test]
fn image_unpack_overlay_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_into(&OverlaySnapshotter::open(dir.path()).expect("open"), 0);
}

#[test]
fn image_unpack_overlay_sequential() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_into(&OverlaySnapshotter::open(dir.path()).expect("open"), 1);
}

#[test]
fn image_unpack_without_sync_on_commit() {
    // Durability is the default and is reported; a driver opened without
    // it says so, and images unpack into it the same (unsynced).
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        OverlaySnapshotter::open(dir.path())
            .expect("open")
            .capabilities()
            .sync_on_commit
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = OverlayOptions::default().with_sync_on_commit(false);
    let sn = OverlaySnapshotter::open_with(dir.path(), opts).expect("open");
    assert!(!sn.capabilities().sync_on_commit);
    unpack_into(&sn, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = CopySnapshotter::open_with(dir.path(), false).expect("open");
    assert!(!sn.capabilities().sync_on_commit);
    unpack_into(&sn, 0);
}

#[test]
fn image_unpack_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_into(&CopySnapshotter::open(dir.path()).expect("open"), 0);
}

/// An image whose manifest, config and layers are named by sha512 digests
/// unpacks as the same image named by sha256 does, keyed by its own
/// digests.
#[test]
fn image_unpack_of_an_image_named_by_sha512() {
    let t = make_image_with(&layers_abc(), "test/abc:512", image_core::Algorithm::Sha512);
    assert_eq!(
        t.image.manifest_digest().algorithm(),
        image_core::Algorithm::Sha512
    );
    assert_eq!(t.image.id().algorithm(), image_core::Algorithm::Sha512);
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = CopySnapshotter::open(dir.path()).expect("open");
    let report = unpack_image(&t.store, &t.image, &sn, &ImageUnpackOptions::default())
        .expect("unpack image");
    assert_eq!(report.chain_ids, image_core::chain_ids(t.image.diff_ids()));
    let top = report.top().expect("top");
    let v = sn.view("check", Some(&top)).expect("view");
    let mut got = tree(Path::new(&v[0].source));
    got.remove("");
    assert_eq!(got, flattened(&make_image(&layers_abc(), "test/abc:256")));
}

#[test]
fn image_unpack_shares_layers_between_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path()).expect("open");
    let t = make_image(&layers_abc(), "test/abc:1");
    let mut other = layers_abc();
    other[2] = vec![("app/other", b"other".to_vec())];
    add_image(&t.store, &other, "test/abd:1");
    let img2 = image_store::resolve_image(&t.store, "test/abd:1", None).expect("resolve");
    unpack_image(&t.store, &t.image, &sn, &ImageUnpackOptions::default()).expect("first");
    let r = unpack_image(&t.store, &img2, &sn, &ImageUnpackOptions::default()).expect("second");
    assert_eq!(r.reused.len(), 2, "the two shared layers are reused");
    assert_eq!(r.unpacked.len(), 1);
    assert_eq!(sn.list().expect("list").len(), 4);
}

#[test]
fn image_unpack_failure_leaves_no_partial_snapshot() {
    for driver in ["overlay", "copy"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sn: Box<dyn Snapshotter> = if driver == "overlay" {
            Box::new(OverlaySnapshotter::open(dir.path()).expect("open"))
        } else {
            Box::new(CopySnapshotter::open(dir.path()).expect("open"))
        };
        let t = make_image(&layers_abc(), "test/abc:1");
        // Lie about layer 2's diff ID in a second image.
        let mut config: serde_json::Value =
            serde_json::from_slice(t.image.config.raw()).expect("config");
        config["rootfs"]["diff_ids"][1] =
            serde_json::json!(Digest::sha256(b"not the layer").to_string());
        let config = serde_json::to_vec(&config).expect("json");
        let cd = t.store.write_blob(&config).expect("blob");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(t.image.manifest.raw()).expect("manifest");
        manifest["config"]["digest"] = serde_json::json!(cd.to_string());
        manifest["config"]["size"] = serde_json::json!(config.len());
        let manifest = serde_json::to_vec(&manifest).expect("json");
        let md = t.store.write_blob(&manifest).expect("blob");
        let desc =
            image_core::manifest::descriptor(&MediaType::OciManifest, &md, manifest.len() as u64);
        t.store.set_tag("test/bad:1", &desc).expect("tag");
        let bad = image_store::resolve_image(&t.store, "test/bad:1", None).expect("resolve");

        let err = unpack_image(&t.store, &bad, &sn, &ImageUnpackOptions::default())
            .expect_err("bad diff id");
        assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{driver}: {err}");
        assert!(
            matches!(err, ImageUnpackError::Unpack { index: 1, .. }),
            "{driver}: {err}"
        );
        // Only the good layer below the failure is committed; nothing else remains.
        let names: Vec<_> = sn
            .list()
            .expect("list")
            .into_iter()
            .map(|i| (i.name, i.kind))
            .collect();
        let chains = image_core::chain_ids(bad.diff_ids());
        assert_eq!(
            names,
            vec![(chains[0].to_string(), Kind::Committed)],
            "{driver}"
        );
        let dirs = fs::read_dir(dir.path().join("snapshots"))
            .expect("ls")
            .count();
        assert_eq!(dirs, 1, "{driver}: no directory of a failed layer remains");
    }
}

#[test]
fn image_unpack_removes_stale_temporaries_of_dead_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path()).expect("open");
    // A pid that cannot exist (above pid_max's ceiling).
    sn.prepare("extract-99999999-1-sha256:abc", None)
        .expect("prepare");
    sn.prepare("unrelated", None).expect("prepare");
    let t = make_image(&layers_abc(), "test/abc:1");
    unpack_image(&t.store, &t.image, &sn, &ImageUnpackOptions::default()).expect("unpack");
    assert!(sn
        .try_stat("extract-99999999-1-sha256:abc")
        .expect("stat")
        .is_none());
    assert!(sn.try_stat("unrelated").expect("stat").is_some());
}

// ---- hostile layers in overlay form -------------------------------------------

/// A tar built entry by entry, with raw names and PAX records.
struct RawTar(tar::Builder<Vec<u8>>);

impl RawTar {
    fn new() -> RawTar {
        RawTar(tar::Builder::new(Vec::new()))
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|(k, v)| image_testsupport::tar::pax_record(k, v))
            .collect();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.0.append(&h, &body[..]).expect("pax");
    }

    fn entry(&mut self, name: &[u8], kind: tar::EntryType, data: &[u8], link: Option<&str>) {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            h.set_link_name(l).expect("link");
        }
        h.set_cksum();
        self.0.append(&h, data).expect("append");
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("finish")
    }
}

/// An image of uncompressed tar layers in a fresh store.
fn image_of_tars(tars: Vec<Vec<u8>>) -> TestImage {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for t in &tars {
        let d = store.write_blob(t).expect("blob");
        descs.push(serde_json::json!({"mediaType": MediaType::OciLayer.as_str(), "digest": d.to_string(), "size": t.len()}));
        diff_ids.push(d.to_string());
    }
    let host = image_core::platform::Platform::host();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let cd = store.write_blob(&config).expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    let md = store.write_blob(&manifest).expect("manifest");
    let desc =
        image_core::manifest::descriptor(&MediaType::OciManifest, &md, manifest.len() as u64);
    store.set_tag("hostile:1", &desc).expect("tag");
    let image = image_store::resolve_image(&store, "hostile:1", None).expect("resolve");
    TestImage {
        _dir: dir,
        store,
        image,
    }
}

fn base_layer() -> Vec<u8> {
    let mut t = RawTar::new();
    t.entry(b"d/", tar::EntryType::Directory, b"", None);
    t.entry(b"d/keep", tar::EntryType::Regular, b"lower", None);
    t.finish()
}

/// Unpacks `tars` into a fresh overlay root; returns the root, the
/// snapshotter and the result.
fn overlay_unpack(
    tars: Vec<Vec<u8>>,
) -> (
    tempfile::TempDir,
    OverlaySnapshotter,
    TestImage,
    Result<image_overlay::ImageUnpackReport, ImageUnpackError>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path().join("root")).expect("open");
    let t = image_of_tars(tars);
    let r = unpack_image(&t.store, &t.image, &sn, &ImageUnpackOptions::default());
    (dir, sn, t, r)
}

fn assert_nothing_partial(sn: &OverlaySnapshotter, committed: usize) {
    let all = sn.list().expect("list");
    assert!(all.iter().all(|i| i.kind == Kind::Committed), "{all:?}");
    assert_eq!(all.len(), committed, "{all:?}");
}

#[test]
fn hostile_overlay_path_traversal_is_rejected() {
    let sentinel = tempfile::tempdir().expect("tempdir");
    let escape = format!("../../../../../../..{}/pwned", sentinel.path().display());
    let mut t = RawTar::new();
    t.entry(escape.as_bytes(), tar::EntryType::Regular, b"x", None);
    let (_d, sn, _t, r) = overlay_unpack(vec![base_layer(), t.finish()]);
    let err = r.expect_err("traversal");
    assert_eq!(err.kind(), ErrorKind::Unsafe, "{err}");
    assert_nothing_partial(&sn, 1);
    assert_eq!(fs::read_dir(sentinel.path()).expect("ls").count(), 0);
}

#[test]
fn hostile_overlay_symlink_from_lower_layer_leads_nowhere() {
    if !mounts_permitted("hostile_overlay_symlink_from_lower_layer_leads_nowhere") {
        return;
    }
    let sentinel = tempfile::tempdir().expect("tempdir");
    let mut l1 = RawTar::new();
    let target = sentinel.path().to_string_lossy().into_owned();
    l1.entry(b"evil", tar::EntryType::Symlink, b"", Some(&target));
    let mut l2 = RawTar::new();
    l2.entry(b"evil/pwned", tar::EntryType::Regular, b"x", None);
    let (_d, sn, _t, r) = overlay_unpack(vec![l1.finish(), l2.finish()]);
    // Each layer goes into its own directory: the write lands in the
    // layer, contained or refused, never through the lower symlink.
    if let Err(e) = &r {
        assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
    }
    if let Ok(report) = &r {
        let v = sn.view("v", report.top().as_deref()).expect("view");
        with_mounted(&v, |root| {
            let _ = fs::read_dir(root.join("evil"));
        });
    }
    assert_eq!(fs::read_dir(sentinel.path()).expect("ls").count(), 0);
}

#[test]
fn hostile_overlay_xattrs_from_the_image_never_take_effect() {
    if !mounts_permitted("hostile_overlay_xattrs_from_the_image_never_take_effect") {
        return;
    }
    let mut l2 = RawTar::new();
    l2.pax(&[
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.opaque", b"y"),
    ]);
    l2.entry(b"d/", tar::EntryType::Directory, b"", None);
    l2.pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]);
    l2.entry(b"d/new", tar::EntryType::Regular, b"n", None);
    let (_d, sn, _t, r) = overlay_unpack(vec![base_layer(), l2.finish()]);
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            // Refusing them is as good as dropping them.
            assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
            assert_nothing_partial(&sn, 1);
            return;
        }
    };
    let v = sn.view("v", report.top().as_deref()).expect("view");
    with_mounted(&v, |root| {
        assert_eq!(
            fs::read(root.join("d/keep")).expect("lower file still visible"),
            b"lower"
        );
        assert_eq!(fs::read(root.join("d/new")).expect("new"), b"n");
    });
    // The layer's own directory carries no overlay xattr.
    let mounts = sn.prepare("c", report.top().as_deref()).expect("prepare");
    let top_dir = PathBuf::from(mounts[0].lowerdirs()[0]);
    let mut buf = [0u8; 16];
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        assert!(rustix::fs::lgetxattr(top_dir.join("d"), name, &mut buf[..]).is_err());
    }
}

#[test]
fn hostile_overlay_forged_whiteout_is_rejected() {
    let mut l2 = RawTar::new();
    l2.entry(b"d/keep", tar::EntryType::Char, b"", None);
    let (_d, sn, _t, r) = overlay_unpack(vec![base_layer(), l2.finish()]);
    let err = r.expect_err("a 0/0 char device would hide d/keep");
    assert_eq!(err.kind(), ErrorKind::Unsafe, "{err}");
    assert_nothing_partial(&sn, 1);
}

// ---- hardlinks across layers ----------------------------------------------------

/// A tar entry with an explicit mode and mtime.
fn entry_with(
    t: &mut RawTar,
    name: &str,
    kind: tar::EntryType,
    data: &[u8],
    mode: u32,
    mtime: u64,
) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("path");
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(mtime);
    h.set_cksum();
    t.0.append(&h, data).expect("append");
}

/// The facts of a tree that hardlinks and copy-ups could get wrong beyond
/// [`tree`]: the mtimes of everything and which names share an inode.
fn links_and_times(root: &Path) -> BTreeMap<String, String> {
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (rel, _) in tree(root) {
        let md = fs::symlink_metadata(root.join(&rel)).expect("lstat");
        let group = if md.is_file() {
            inodes
                .entry(md.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            String::new()
        };
        // Directories this unpack changed have the current time: compare
        // that as such, not to the second.
        let mtime = if md.mtime() > 1_700_000_000 {
            "now".to_owned()
        } else {
            md.mtime().to_string()
        };
        out.insert(rel, format!("mtime={mtime} nlink-group={group}"));
    }
    out
}

/// Unpacks `t` with every driver (overlay parallel and sequential, copy)
/// and checks that the image's root equals the flattened image, hardlink
/// groups and mtimes included.
fn assert_drivers_match_flatten(t: &TestImage, test: &str) {
    let out = tempfile::tempdir().expect("tempdir");
    let flat = out.path().join("flat");
    image_overlay::flatten::flatten_image(&t.store, &t.image, &flat, &UnpackOptions::default())
        .expect("flatten");
    let mut want = tree(&flat);
    want.remove("");
    let mut want_links = links_and_times(&flat);
    want_links.remove("");
    for (driver, parallel) in [("overlay", 0), ("overlay", 1), ("copy", 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sn: Box<dyn Snapshotter> = if driver == "overlay" {
            Box::new(OverlaySnapshotter::open(dir.path()).expect("open"))
        } else {
            Box::new(CopySnapshotter::open(dir.path()).expect("open"))
        };
        let report = unpack_image(
            &t.store,
            &t.image,
            &sn,
            &ImageUnpackOptions::default().with_parallelism(parallel),
        )
        .unwrap_or_else(|e| panic!("{driver}/{parallel}: {e}"));
        assert_eq!(report.unpacked.len(), t.image.layers().len());
        assert_eq!(
            sn.list().expect("list").len(),
            t.image.layers().len(),
            "{driver}: no temporary snapshot or view left"
        );
        let v = sn.view("check", report.top().as_deref()).expect("view");
        let (mut got, mut got_links) = if driver == "copy" {
            let root = PathBuf::from(&v[0].source);
            (tree(&root), links_and_times(&root))
        } else {
            if !mounts_permitted(test) {
                return;
            }
            with_mounted(&v, |root| (tree(root), links_and_times(root)))
        };
        got.remove("");
        got_links.remove("");
        assert_eq!(got, want, "{driver}/{parallel}");
        assert_eq!(got_links, want_links, "{driver}/{parallel}");
    }
}

fn tool_layer() -> Vec<u8> {
    let mut l1 = RawTar::new();
    entry_with(
        &mut l1,
        "usr/",
        tar::EntryType::Directory,
        b"",
        0o750,
        1_500_000_000,
    );
    entry_with(
        &mut l1,
        "usr/bin/",
        tar::EntryType::Directory,
        b"",
        0o711,
        1_500_000_001,
    );
    entry_with(
        &mut l1,
        "usr/bin/tool",
        tar::EntryType::Regular,
        b"the tool",
        0o4755,
        1_500_000_002,
    );
    l1.finish()
}

#[test]
fn image_unpack_hardlink_to_a_file_of_the_layer_below() {
    let mut l2 = RawTar::new();
    // No directory entries: the copy-up makes usr/ and usr/bin/ with the
    // lower layer's metadata.
    l2.entry(
        b"usr/bin/alias",
        tar::EntryType::Link,
        b"",
        Some("usr/bin/tool"),
    );
    l2.entry(b"top", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    let t = image_of_tars(vec![tool_layer(), l2.finish()]);
    assert_drivers_match_flatten(&t, "image_unpack_hardlink_to_a_file_of_the_layer_below");
}

#[test]
fn image_unpack_hardlink_to_a_file_two_layers_below() {
    let mut l2 = RawTar::new();
    entry_with(
        &mut l2,
        "usr/",
        tar::EntryType::Directory,
        b"",
        0o755,
        1_600_000_000,
    );
    l2.entry(b"etc/other", tar::EntryType::Regular, b"other", None);
    let mut l3 = RawTar::new();
    l3.entry(b"alias", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    l3.entry(
        b"usr/bin/alias2",
        tar::EntryType::Link,
        b"",
        Some("/usr/bin/tool"),
    );
    let t = image_of_tars(vec![tool_layer(), l2.finish(), l3.finish()]);
    assert_drivers_match_flatten(&t, "image_unpack_hardlink_to_a_file_two_layers_below");

    // The lower layer's file is untouched: the copy is the upper layer's.
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = OverlaySnapshotter::open(dir.path()).expect("open");
    let report =
        unpack_image(&t.store, &t.image, &sn, &ImageUnpackOptions::default()).expect("unpack");
    let m = sn.prepare("c", report.top().as_deref()).expect("prepare");
    let lowers: Vec<PathBuf> = m[0].lowerdirs().iter().map(PathBuf::from).collect();
    assert_eq!(lowers.len(), 3);
    let bottom = fs::metadata(lowers[2].join("usr/bin/tool")).expect("bottom");
    assert_eq!(bottom.nlink(), 1, "the lower file gained no link");
    let copy = fs::metadata(lowers[0].join("usr/bin/tool")).expect("copied up");
    assert_eq!(copy.nlink(), 3);
    assert_eq!(copy.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::read(lowers[0].join("alias")).expect("alias"),
        b"the tool"
    );
}

#[test]
fn image_unpack_hardlink_finds_the_nearest_version() {
    let mut l2 = RawTar::new();
    // With its parents' entries: a layer without them gets new parents in
    // overlay form (unlike flattening, which keeps the lower ones).
    entry_with(
        &mut l2,
        "usr/",
        tar::EntryType::Directory,
        b"",
        0o750,
        1_500_000_000,
    );
    entry_with(
        &mut l2,
        "usr/bin/",
        tar::EntryType::Directory,
        b"",
        0o711,
        1_500_000_001,
    );
    l2.entry(
        b"usr/bin/tool",
        tar::EntryType::Regular,
        b"newer tool",
        None,
    );
    let mut l3 = RawTar::new();
    l3.entry(b"alias", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    let t = image_of_tars(vec![tool_layer(), l2.finish(), l3.finish()]);
    assert_drivers_match_flatten(&t, "image_unpack_hardlink_finds_the_nearest_version");
}

/// A hardlink to a target that a layer in between deleted fails as the
/// flattened unpack does, with every driver, leaving only the layers below.
fn assert_target_missing_everywhere(tars: Vec<Vec<u8>>) {
    let t = image_of_tars(tars);
    let flat = tempfile::tempdir().expect("tempdir");
    let e = image_overlay::flatten::flatten_image(
        &t.store,
        &t.image,
        &flat.path().join("root"),
        &UnpackOptions::default(),
    )
    .expect_err("flatten: target deleted");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let n = t.image.layers().len();
    for (driver, parallel) in [("overlay", 0), ("overlay", 1), ("copy", 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sn: Box<dyn Snapshotter> = if driver == "overlay" {
            Box::new(OverlaySnapshotter::open(dir.path()).expect("open"))
        } else {
            Box::new(CopySnapshotter::open(dir.path()).expect("open"))
        };
        let err = unpack_image(
            &t.store,
            &t.image,
            &sn,
            &ImageUnpackOptions::default().with_parallelism(parallel),
        )
        .expect_err("target deleted in between");
        assert!(
            matches!(
                &err,
                ImageUnpackError::Unpack {
                    index,
                    source: image_overlay::UnpackError::HardlinkTargetMissing { .. },
                    ..
                } if *index == n - 1
            ),
            "{driver}: {err}"
        );
        let all = sn.list().expect("list");
        assert_eq!(all.len(), n - 1, "{driver}: {all:?}");
        assert!(all.iter().all(|i| i.kind == Kind::Committed), "{driver}");
    }
}

#[test]
fn image_unpack_hardlink_to_a_file_deleted_in_between_is_missing() {
    let mut l2 = RawTar::new();
    l2.entry(b"usr/bin/.wh.tool", tar::EntryType::Regular, b"", None);
    let mut l3 = RawTar::new();
    l3.entry(b"alias", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    assert_target_missing_everywhere(vec![tool_layer(), l2.finish(), l3.finish()]);
}

#[test]
fn image_unpack_hardlink_below_a_deleted_directory_is_missing() {
    let mut l2 = RawTar::new();
    l2.entry(b".wh.usr", tar::EntryType::Regular, b"", None);
    let mut l3 = RawTar::new();
    l3.entry(b"alias", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    assert_target_missing_everywhere(vec![tool_layer(), l2.finish(), l3.finish()]);
}

#[test]
fn image_unpack_hardlink_below_an_opaque_directory_is_missing() {
    let mut l2 = RawTar::new();
    l2.entry(b"usr/bin/.wh..wh..opq", tar::EntryType::Regular, b"", None);
    l2.entry(b"usr/bin/other", tar::EntryType::Regular, b"o", None);
    let mut l3 = RawTar::new();
    l3.entry(b"alias", tar::EntryType::Link, b"", Some("usr/bin/tool"));
    assert_target_missing_everywhere(vec![tool_layer(), l2.finish(), l3.finish()]);
}

#[test]
fn image_unpack_hardlink_to_a_lower_symlink_is_refused_in_overlay_form() {
    let mut l1 = RawTar::new();
    l1.entry(b"s", tar::EntryType::Symlink, b"", Some("/etc/passwd"));
    let mut l2 = RawTar::new();
    l2.entry(b"h", tar::EntryType::Link, b"", Some("s"));
    let (_d, sn, _t, r) = overlay_unpack(vec![l1.finish(), l2.finish()]);
    let err = r.expect_err("only regular files are copied up");
    assert!(
        matches!(
            &err,
            ImageUnpackError::Unpack {
                index: 1,
                source: image_overlay::UnpackError::HardlinkTargetNotRegular { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_nothing_partial(&sn, 1);
}

#[test]
fn image_unpack_refuses_encrypted_layers_before_unpacking_anything() {
    // The layer's bytes are a valid gzip tar: only the media type says
    // they must not be read as one.
    for (driver, media_type) in [
        (
            "overlay",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        ),
        ("copy", "application/vnd.oci.image.layer.v1.tar+encrypted"),
        ("overlay", "application/vnd.example.layer.unknown"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sn: Box<dyn Snapshotter> = if driver == "overlay" {
            Box::new(OverlaySnapshotter::open(dir.path()).expect("open"))
        } else {
            Box::new(CopySnapshotter::open(dir.path()).expect("open"))
        };
        let t = make_image(&layers_abc(), "test/abc:1");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(t.image.manifest.raw()).expect("manifest");
        manifest["layers"][1]["mediaType"] = serde_json::json!(media_type);
        let manifest = serde_json::to_vec(&manifest).expect("json");
        let md = t.store.write_blob(&manifest).expect("blob");
        let desc =
            image_core::manifest::descriptor(&MediaType::OciManifest, &md, manifest.len() as u64);
        t.store.set_tag("test/enc:1", &desc).expect("tag");
        let enc = image_store::resolve_image(&t.store, "test/enc:1", None).expect("resolve");

        let err = unpack_image(&t.store, &enc, &*sn, &ImageUnpackOptions::default())
            .expect_err("an encrypted layer");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{driver}: {err}");
        match &err {
            ImageUnpackError::MediaType {
                index: 1,
                source: image_core::MediaTypeError::Unknown(found),
            } => assert_eq!(found, media_type),
            other => panic!("{driver}: {other:?}"),
        }
        // Refused before anything was unpacked, not even the layer below.
        assert!(sn.list().expect("list").is_empty(), "{driver}");
        // `unpack` (flatten) refuses it with the same error and class,
        // before it makes or applies anything.
        let out = tempfile::tempdir().expect("tempdir");
        let root = out.path().join("root");
        let flat =
            image_overlay::flatten::flatten_image(&t.store, &enc, &root, &UnpackOptions::default())
                .expect_err("flatten of an encrypted layer");
        assert_eq!(flat.kind(), ErrorKind::Unsupported, "{driver}: {flat}");
        match &flat {
            image_overlay::FlattenError::MediaType {
                index: 1,
                source: image_core::MediaTypeError::Unknown(found),
                ..
            } => assert_eq!(found, media_type),
            other => panic!("{driver}: {other:?}"),
        }
        assert!(!root.exists(), "{driver}: flatten made {}", root.display());
    }
}

// ---- the changes of a snapshot as a layer (compare) ---------------------------

/// The files of the parent the changes are made on: a file to change, one
/// to delete, a directory to delete and make again.
const BASE: &[(&str, &[u8])] = &[
    ("etc/conf", b"original"),
    ("etc/gone", b"x"),
    ("bin/tool", b"tool"),
    ("var/d/f", b"f"),
    ("var/d/g", b"g"),
];

/// Changes every kind of thing a layer carries, through the snapshot's
/// mounts: a changed file, a deleted file, a directory replaced by a new
/// one (its old content must not come back), new files and directories.
fn change_everything(root: &Path) {
    fs::write(root.join("etc/conf"), b"changed").expect("change");
    fs::remove_file(root.join("etc/gone")).expect("delete file");
    fs::remove_dir_all(root.join("var/d")).expect("delete dir");
    fs::create_dir(root.join("var/d")).expect("make dir again");
    write(&root.join("var/d/new"), b"n");
    write(&root.join("new/deep/file"), b"new");
    std::os::unix::fs::symlink("../bin/tool", root.join("etc/tool")).expect("symlink");
}

/// Applies `blobs` (gzip layers, bottom first) onto an empty directory and
/// returns its tree, root entry excluded (a layer does not carry it).
fn applied(blobs: &[(Vec<u8>, Digest)]) -> Tree {
    let flat = tempfile::tempdir().expect("tempdir");
    for (blob, diff_id) in blobs {
        unpack(
            &blob[..],
            flat.path(),
            &UnpackOptions::default().with_diff_id(diff_id.clone()),
        )
        .expect("apply layer");
    }
    let mut t = tree(flat.path());
    t.remove("");
    t
}

/// The blob of `desc` in `store`, checked against the descriptor.
fn stored_blob(store: &OciDir, layer: &image_overlay::ComparedLayer) -> Vec<u8> {
    use image_store::Provider;
    let digest = layer
        .descriptor
        .checked_digest()
        .expect("descriptor digest");
    assert_eq!(digest, layer.report.digest);
    assert_eq!(layer.descriptor.size(), layer.report.size);
    assert_eq!(
        image_core::manifest::descriptor_media_type(&layer.descriptor),
        MediaType::OciLayerGzip
    );
    let blob = store
        .read_blob_to_vec(&digest, 1 << 30)
        .expect("blob in store");
    assert_eq!(blob.len() as u64, layer.report.size);
    blob
}

/// The changes of an active snapshot on a parent, stored as a layer:
/// applied onto the parent's content they give exactly what the snapshot
/// shows, and the parent's view made for the comparison is gone.
fn changes_on_a_parent_as_a_layer<D: Driver>(test: &str) {
    if !mounts_permitted(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(&dir.path().join("snapshots"));
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    commit_layer(&sn, "base", None, BASE, &[]);
    let mounts = sn.prepare("work", Some("base")).expect("prepare");
    let want = with_mounted(&mounts, |root| {
        change_everything(root);
        let mut t = tree(root);
        t.remove("");
        t
    });

    let opts = PackOptions::new(Compression::Gzip);
    let layer = image_overlay::compare_into(&store, &sn, "work", &opts).expect("compare");
    let blob = stored_blob(&store, &layer);
    assert!(store.ingests().expect("ingests").is_empty());

    // The base as a layer of its own (its whole tree), then the changes.
    let base_mounts = sn.view("base-view", Some("base")).expect("view");
    let mut base_blob = Vec::new();
    let base_report = with_mounted(&base_mounts, |root| {
        image_overlay::pack_dir(root, &mut base_blob, &opts).expect("pack base")
    });
    sn.remove("base-view").expect("remove view");
    let got = applied(&[
        (base_blob, base_report.diff_id),
        (blob, layer.report.diff_id.clone()),
    ]);
    assert_eq!(got, want);

    // Only what the test made is left: no view of the comparison.
    let mut names: Vec<String> = sn
        .list()
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(names, ["base", "work"]);

    // The same changes into a writer are the same layer.
    let mut again = Vec::new();
    let report = image_overlay::compare(&sn, "work", &mut again, &opts).expect("compare");
    assert_eq!(report.diff_id, layer.report.diff_id);
}

/// Without a parent, the whole tree of the snapshot is the change.
fn changes_without_a_parent_are_the_tree<D: Driver>(test: &str) {
    if !mounts_permitted(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(&dir.path().join("snapshots"));
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    let mounts = sn.prepare("solo", None).expect("prepare");
    let want = with_mounted(&mounts, |root| {
        for (p, data) in BASE {
            write(&root.join(p), data);
        }
        let mut t = tree(root);
        t.remove("");
        t
    });
    let layer =
        image_overlay::compare_into(&store, &sn, "solo", &PackOptions::new(Compression::Gzip))
            .expect("compare");
    let blob = stored_blob(&store, &layer);
    assert_eq!(applied(&[(blob, layer.report.diff_id)]), want);
}

/// A committed snapshot, a view and a missing key have no changes to
/// compare: each is refused with its class, and nothing is left in the
/// store (no blob, no ingest).
fn what_has_no_changes_is_refused<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(&dir.path().join("snapshots"));
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    let m = sn.prepare("a", None).expect("prepare");
    write(&bind_dir(&m).join("f"), b"f");
    sn.commit("c", "a").expect("commit");
    sn.view("v", Some("c")).expect("view");
    let opts = PackOptions::new(Compression::Gzip);
    for (key, kind) in [
        ("c", ErrorKind::FailedPrecondition),
        ("v", ErrorKind::Unsupported),
        ("nope", ErrorKind::NotFound),
    ] {
        let e = image_overlay::compare_into(&store, &sn, key, &opts).unwrap_err();
        assert_eq!(e.kind(), kind, "{key}: {e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    assert!(store.ingests().expect("ingests").is_empty());
    use image_store::Manager;
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn compare_overlay_changes_on_a_parent() {
    changes_on_a_parent_as_a_layer::<Overlay>("compare_overlay_changes_on_a_parent");
}

#[test]
fn compare_copy_changes_on_a_parent() {
    changes_on_a_parent_as_a_layer::<Copy>("compare_copy_changes_on_a_parent");
}

#[test]
fn compare_overlay_without_a_parent() {
    changes_without_a_parent_are_the_tree::<Overlay>("compare_overlay_without_a_parent");
}

#[test]
fn compare_copy_without_a_parent() {
    changes_without_a_parent_are_the_tree::<Copy>("compare_copy_without_a_parent");
}

#[test]
fn compare_overlay_refuses_what_has_no_changes() {
    what_has_no_changes_is_refused::<Overlay>();
}

#[test]
fn compare_copy_refuses_what_has_no_changes() {
    what_has_no_changes_is_refused::<Copy>();
}

/// The driver of a root is read from its metadata: none for a new root,
/// the driver that made it otherwise, a typed error for a corrupt file.
#[test]
fn driver_at_names_the_driver_of_a_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (o, c) = (dir.path().join("o"), dir.path().join("c"));
    assert_eq!(image_overlay::snapshot::driver_at(&o).expect("new"), None);
    let sn = OverlaySnapshotter::open(&o).expect("open");
    sn.prepare("k", None).expect("prepare");
    let sn = CopySnapshotter::open(&c).expect("open");
    sn.prepare("k", None).expect("prepare");
    assert_eq!(
        image_overlay::snapshot::driver_at(&o)
            .expect("overlay")
            .as_deref(),
        Some("overlay")
    );
    assert_eq!(
        image_overlay::snapshot::driver_at(&c)
            .expect("copy")
            .as_deref(),
        Some("copy")
    );
    fs::write(c.join("metadata.json"), b"{not json").expect("corrupt");
    let e = image_overlay::snapshot::driver_at(&c).unwrap_err();
    assert!(matches!(e, SnapshotError::Metadata { .. }), "{e:?}");
}

/// The overlay probe mounts through the mounter it is given and leaves
/// nothing under the root.
#[test]
fn overlay_works_at_probes_through_the_mounter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = RecordingMounter::default();
    assert!(OverlaySnapshotter::works_at(dir.path(), &rec));
    let calls = rec.calls();
    assert!(!calls.is_empty(), "{calls:?}");
    assert_eq!(fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    if mounts_permitted("overlay_works_at_probes_through_the_mounter") {
        assert!(OverlaySnapshotter::works_at(dir.path(), &SysMounter));
        assert_eq!(fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }
}

/// The system mounter's probe of a lone overlay creates the filesystem
/// and closes it unattached: it needs no mount point (a probe by mounting
/// fails on a missing one), yet refuses what a mount refuses (a missing
/// upper directory), with the mount's error.
#[test]
fn the_system_overlay_probe_mounts_nothing() {
    if !mounts_permitted("the_system_overlay_probe_mounts_nothing") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["lower", "upper", "work"] {
        fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    let s = |d: &str| dir.path().join(d).to_string_lossy().into_owned();
    let overlay = |upper: &str| Mount {
        fs_type: "overlay".to_owned(),
        source: "overlay".to_owned(),
        target: None,
        options: vec![
            format!("lowerdir={}", s("lower")),
            format!("upperdir={}", s(upper)),
            format!("workdir={}", s("work")),
        ],
    };
    let nowhere = dir.path().join("no-mount-point");
    SysMounter
        .probe(&[overlay("upper")], &nowhere)
        .expect("the probe needs no mount point");
    assert!(!nowhere.exists());
    let e = SysMounter
        .probe(&[overlay("no-upper")], &nowhere)
        .expect_err("a missing upper directory");
    assert!(matches!(e, MountError::Mount { .. }), "{e:?}");
}

/// A deterministic generator: the SHA-256 of a seed and a counter, so
/// that a failing seed can be replayed.
struct Gen {
    seed: u64,
    count: u64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen { seed, count: 0 }
    }

    fn next(&mut self) -> u64 {
        self.count += 1;
        let input = [self.seed.to_le_bytes(), self.count.to_le_bytes()].concat();
        let d = Digest::sha256(&input);
        u64::from_str_radix(&d.hex()[..16], 16).expect("hex")
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A path of one to three components from a small namespace, so that
    /// changes often meet what the parent holds.
    fn path(&mut self) -> PathBuf {
        let mut p = PathBuf::new();
        for _ in 0..=self.below(3) {
            p.push(["a", "b", "c", "d"][self.below(4)]);
        }
        p
    }
}

/// Every entry below `root` (not `root` itself), parents before children.
fn entries(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = tree(root)
        .into_keys()
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .collect();
    out.sort();
    out
}

/// Removes whatever is at `p` (a directory with its content).
fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).expect("remove dir"),
        Ok(_) => fs::remove_file(p).expect("remove"),
        Err(_) => {}
    }
}

/// Writes a file at `rel` under `root`, replacing any non-directory on the
/// way (a file where a directory is wanted goes).
fn put_file(root: &Path, rel: &Path, data: &[u8]) {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len() - 1] {
        at.push(c);
        if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            remove_any(&at);
            fs::create_dir(&at).expect("mkdir");
        }
    }
    let file = root.join(rel);
    if fs::symlink_metadata(&file).is_ok_and(|m| m.is_dir()) {
        remove_any(&file);
    }
    let _ = fs::remove_file(&file);
    fs::write(&file, data).expect("write");
}

/// One random change under `root`: a new or changed file, a removal (of a
/// file, link or whole directory), a file replaced by a directory or the
/// reverse, a symlink, a mode change, an emptied directory.
fn random_change(g: &mut Gen, root: &Path) {
    let existing = entries(root);
    let pick = |g: &mut Gen| existing.get(g.below(existing.len().max(1))).cloned();
    match g.below(7) {
        0 | 1 => {
            let p = g.path();
            put_file(root, &p, format!("data {}", g.next()).as_bytes());
        }
        2 => {
            if let Some(p) = pick(g) {
                remove_any(&root.join(p));
            }
        }
        3 => {
            if let Some(p) = pick(g) {
                let full = root.join(&p);
                let was_dir = fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir());
                remove_any(&full);
                if was_dir {
                    fs::write(&full, b"was a directory").expect("write");
                } else {
                    fs::create_dir(&full).expect("mkdir");
                    fs::write(full.join("inside"), b"new").expect("write");
                }
            }
        }
        4 => {
            let p = g.path();
            put_file(root, &p, b"");
            let full = root.join(&p);
            fs::remove_file(&full).expect("remove");
            std::os::unix::fs::symlink(format!("target-{}", g.below(9)), &full).expect("symlink");
        }
        5 => {
            if let Some(p) = pick(g) {
                let full = root.join(p);
                if fs::symlink_metadata(&full).is_ok_and(|m| m.is_file()) {
                    let mode = [0o600, 0o644, 0o755, 0o700][g.below(4)];
                    fs::set_permissions(&full, fs::Permissions::from_mode(mode)).expect("chmod");
                }
            }
        }
        _ => {
            if let Some(p) = pick(g) {
                let full = root.join(p);
                if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&full).expect("remove");
                    fs::create_dir(&full).expect("mkdir");
                }
            }
        }
    }
}

/// For many generated parents and changes, on both drivers: the layer
/// `compare_into` stores, applied onto the parent's content, gives exactly
/// the tree the active snapshot shows.
fn generated_changes_round_trip<D: Driver>(test: &str) {
    if !mounts_permitted(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(&dir.path().join("snapshots"));
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    let opts = PackOptions::new(Compression::Gzip);
    for seed in 1..=24u64 {
        let mut g = Gen::new(seed);
        let (base, work) = (format!("base-{seed}"), format!("work-{seed}"));
        let key = format!("{base}-active");
        let mounts = sn.prepare(&key, None).expect("prepare base");
        let base_tree = with_mounted(&mounts, |root| {
            for _ in 0..=g.below(8) {
                let p = g.path();
                put_file(root, &p, format!("base {}", g.next()).as_bytes());
            }
            tree(root)
        });
        sn.commit(&base, &key).expect("commit base");
        let mounts = sn.prepare(&work, Some(&base)).expect("prepare");
        let mut want = with_mounted(&mounts, |root| {
            for _ in 0..=g.below(10) {
                random_change(&mut g, root);
            }
            tree(root)
        });
        want.remove("");
        let layer = compare_into_ok(&store, &sn, &work, &opts, seed);
        let blob = stored_blob(&store, &layer);
        // The parent's content as a plain layer of its tree.
        let view = sn.view(&format!("view-{seed}"), Some(&base)).expect("view");
        let mut base_blob = Vec::new();
        let base_report = with_mounted(&view, |root| {
            assert_eq!(tree(root), base_tree, "seed {seed}: the parent's view");
            image_overlay::pack_dir(root, &mut base_blob, &opts).expect("pack base")
        });
        let got = applied(&[
            (base_blob, base_report.diff_id),
            (blob, layer.report.diff_id.clone()),
        ]);
        assert_eq!(got, want, "seed {seed}");
    }
}

fn compare_into_ok(
    store: &OciDir,
    sn: &dyn Snapshotter,
    key: &str,
    opts: &PackOptions,
    seed: u64,
) -> image_overlay::ComparedLayer {
    image_overlay::compare_into(store, sn, key, opts)
        .unwrap_or_else(|e| panic!("seed {seed}: compare {key}: {e}"))
}

#[test]
fn compare_overlay_generated_changes() {
    generated_changes_round_trip::<Overlay>("compare_overlay_generated_changes");
}

#[test]
fn compare_copy_generated_changes() {
    generated_changes_round_trip::<Copy>("compare_copy_generated_changes");
}

// ---- progress and cancellation ------------------------------------------------

/// `n` bytes that do not compress.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A recorder that sets its tracker's interrupt once an item reaches `at`
/// (never, for `u64::MAX`), and the tracker.
fn recorder(at: u64) -> (Arc<Recorder>, Tracker) {
    let interrupt = Interrupt::new();
    let rec = Arc::new(Recorder::stopping_at(interrupt.clone(), at));
    (rec.clone(), Tracker::new(rec, interrupt))
}

#[test]
fn image_unpack_reports_each_layer_and_a_stopped_one_leaves_no_snapshot() {
    let layers = vec![
        vec![("big/file", noise(3 << 20))],
        vec![("small", b"x".to_vec())],
    ];
    let t = make_image(&layers, "test/big:1");
    for driver in ["copy", "overlay"] {
        let open = |dir: &Path| -> Box<dyn Snapshotter> {
            match driver {
                "copy" => Box::new(CopySnapshotter::open(dir).expect("open copy")),
                _ => Box::new(OverlaySnapshotter::open(dir).expect("open overlay")),
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let sn = open(dir.path());
        let (rec, tracker) = recorder(u64::MAX);
        let options = ImageUnpackOptions::default()
            .with_parallelism(1)
            .with_tracker(tracker);
        unpack_image(&t.store, &t.image, &*sn, &options).expect("unpack");
        assert!(rec.violations().is_empty(), "{:?}", rec.violations());
        let items = rec.items();
        assert_eq!(items.len(), 2, "{driver}");
        for layer in t.image.layers() {
            let r = &items[&layer.digest().to_string()];
            assert!(r.finished, "{driver}");
            assert_eq!((r.total, r.done), (Some(layer.size()), layer.size()));
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let sn = open(dir.path());
        let (_rec, tracker) = recorder(1 << 20);
        let options = ImageUnpackOptions::default()
            .with_parallelism(1)
            .with_tracker(tracker);
        let e = unpack_image(&t.store, &t.image, &*sn, &options).expect_err("stopped");
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{driver}: {e}");
        // The big layer is the first: nothing is left, not even a temporary snapshot.
        assert!(sn.list().expect("list").is_empty(), "{driver}");
        unpack_image(&t.store, &t.image, &*sn, &ImageUnpackOptions::default())
            .expect("unpack after a stop");
        assert_eq!(sn.list().expect("list").len(), 2, "{driver}");
    }
}

#[test]
fn an_interrupted_unpack_and_pack_stop_with_cancelled() {
    let src = tempfile::tempdir().expect("tempdir");
    write(&src.path().join("big"), &noise(3 << 20));
    let (rec, tracker) = recorder(u64::MAX);
    let mut layer = Vec::new();
    let opts = PackOptions::new(Compression::Gzip).with_tracker(tracker);
    let report = image_overlay::pack::pack_dir(src.path(), &mut layer, &opts).expect("pack");
    let items = rec.items();
    assert!(rec.violations().is_empty(), "{:?}", rec.violations());
    assert_eq!(
        (items["layer"].done, items["layer"].finished),
        (report.size, true)
    );
    assert_eq!(report.size, layer.len() as u64);

    let (_rec, tracker) = recorder(1 << 20);
    let opts = PackOptions::new(Compression::Gzip).with_tracker(tracker);
    let e = image_overlay::pack::pack_dir(src.path(), &mut Vec::new(), &opts)
        .expect_err("pack stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");

    // Stopped mid-layer, and before it starts.
    let set = Interrupt::new();
    set.set();
    for tracker in [recorder(1 << 20).1, Tracker::default().with_interrupt(set)] {
        let out = tempfile::tempdir().expect("tempdir");
        let options = UnpackOptions::default().with_tracker(tracker);
        let e = unpack(&layer[..], out.path(), &options).expect_err("unpack stopped");
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    }
}

#[test]
fn dropping_an_image_unpack_future_stops_it_and_leaves_no_snapshot() {
    let t = make_image(
        &[
            vec![("big/file", noise(8 << 20))],
            vec![("small", b"x".to_vec())],
        ],
        "test/big:1",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let (rec, tracker) = recorder(u64::MAX);
    let interrupt = tracker.interrupt().clone();
    let sn = CopySnapshotter::open(dir.path()).expect("open");
    let options = ImageUnpackOptions::default()
        .with_parallelism(1)
        .with_tracker(tracker);
    let unpack =
        image_overlay::nonblocking::unpack_image(t.store.clone(), t.image.clone(), sn, options);
    rt.block_on(async {
        let mut unpack = Box::pin(unpack);
        loop {
            let finished = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(unpack.as_mut(), cx).is_ready())
            })
            .await;
            if finished || rec.items().values().any(|r| r.done > 0) {
                assert!(!finished, "the unpack finished before it was dropped");
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    assert!(interrupt.is_set(), "dropping the future sets the interrupt");
    // Dropping the runtime waits for its blocking tasks.
    drop(rt);
    let items = rec.items();
    assert!(items.values().all(|r| !r.finished), "{items:?}");
    let sn = CopySnapshotter::open(dir.path()).expect("open");
    assert!(sn.list().expect("list").is_empty());
}

/// What a stream unpack test needs: a directory with overlay snapshots
/// (`snapshots`) and a store (`store`), and unpack options of
/// `parallelism` that keep no ownership.
fn streaming(
    parallelism: usize,
) -> (
    tempfile::TempDir,
    Arc<dyn Snapshotter>,
    OciDir,
    ImageUnpackOptions,
) {
    let dir = tempfile::tempdir().unwrap();
    let snapshotter: Arc<dyn Snapshotter> =
        Arc::new(OverlaySnapshotter::open(dir.path().join("snapshots")).unwrap());
    let store = OciDir::open_or_create(dir.path().join("store")).unwrap();
    let mut options = ImageUnpackOptions::default().with_parallelism(parallelism);
    options.unpack.preserve_ownership = false;
    (dir, snapshotter, store, options)
}

/// A layer unpacked while its blob streams is kept only given the store's
/// proof that it committed that blob verified ([`image_store::VerifiedBlob`],
/// which only a store's commit makes): the proof of another blob is
/// refused, typed, and the layer's snapshot goes; its own keeps it.
#[test]
fn a_streamed_layer_is_kept_only_with_the_stores_proof_of_its_blob() {
    let (_dir, snapshotter, store, options) = streaming(0);
    let unpacker = image_overlay::StreamUnpacker::new(snapshotter.clone(), &options);
    let layer = image_testsupport::tar::TarBuf::new()
        .file("a", b"streamed")
        .end();
    let digest = Digest::sha256(&layer);
    let descriptor =
        image_core::manifest::descriptor(&MediaType::OciLayer, &digest, layer.len() as u64);
    let committed = |bytes: &[u8], reference: &str| {
        let mut w = store.writer(reference).unwrap();
        w.write_all(bytes).unwrap();
        w.commit_verified(bytes.len() as u64, &Digest::sha256(bytes))
            .unwrap()
    };
    let other = committed(b"another blob", "other");
    assert_eq!(other.digest(), &Digest::sha256(b"another blob"));
    assert_eq!(other.size(), 12);

    let mut feed = unpacker
        .begin(&descriptor)
        .unwrap()
        .expect("overlay streams");
    feed.write(&layer).unwrap();
    let e = feed.finish(&other).unwrap_err();
    assert!(
        matches!(&e, image_overlay::unpack::UnpackError::WrongProof { layer, given }
            if layer == &digest && given == other.digest()),
        "{e:?}"
    );
    // The caller's mistake, not content that hashed wrong.
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(snapshotter.list().unwrap().is_empty());

    let mut feed = unpacker
        .begin(&descriptor)
        .unwrap()
        .expect("overlay streams");
    feed.write(&layer).unwrap();
    let ours = committed(&layer, "layer");
    let report = feed.finish(&ours).unwrap();
    assert_eq!(report.diff_id, digest);
    assert_eq!(snapshotter.list().unwrap().len(), 1);
}

/// On an unpacker bounded to one slot and given the store, a layer
/// declined for want of the slot is noted as such, waits for the slot
/// once its blob is stored (`stored`, once), and a dropped unpacker
/// stops it: once the last feed goes, no snapshot is left.
#[test]
fn a_declined_layer_waits_for_the_slot_and_a_dropped_unpacker_leaves_nothing() {
    let (_dir, snapshotter, store, options) = streaming(1);
    let provider: Arc<dyn image_store::Provider + Send + Sync> = Arc::new(store.clone());
    let unpacker = image_overlay::StreamUnpacker::bounded_with_store(
        snapshotter.clone(),
        provider.clone(),
        &options,
    );
    let big = image_overlay::stream_unpack::SLOTLESS_BELOW as usize + 4096;
    let layers: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            image_testsupport::tar::TarBuf::new()
                .file(&format!("big{i}"), &noise(big + i))
                .end()
        })
        .collect();
    let descriptors: Vec<_> = layers
        .iter()
        .map(|l| {
            image_core::manifest::descriptor(
                &MediaType::OciLayer,
                &Digest::sha256(l),
                l.len() as u64,
            )
        })
        .collect();
    let committed = |bytes: &[u8]| {
        let mut w = store.writer(&Digest::sha256(bytes).to_string()).unwrap();
        w.write_all(bytes).unwrap();
        w.commit_verified(bytes.len() as u64, &Digest::sha256(bytes))
            .unwrap()
    };

    let mut first = unpacker
        .begin(&descriptors[0])
        .unwrap()
        .expect("the free slot");
    assert!(!unpacker.declined(&descriptors[0]));
    assert!(unpacker.begin(&descriptors[1]).unwrap().is_none());
    assert!(unpacker.declined(&descriptors[1]));
    let second = committed(&layers[1]);
    assert!(unpacker.stored(&second));
    assert!(!unpacker.stored(&second), "queued once");
    assert!(!unpacker.declined(&descriptors[1]));
    // The first layer's feed holds the slot: the second waits for it.
    assert_eq!(snapshotter.list().unwrap().len(), 1);

    // A small layer (no slot) keeps what the unpacker made alive.
    let small = image_testsupport::tar::TarBuf::new().file("s", b"s").end();
    let small = image_core::manifest::descriptor(
        &MediaType::OciLayer,
        &Digest::sha256(&small),
        small.len() as u64,
    );
    let keep = unpacker.begin(&small).unwrap().expect("no slot needed");

    drop(unpacker);
    // The slot frees, but the second layer's unpack does not start.
    first.write(&layers[0]).unwrap();
    let proof = committed(&layers[0]);
    let second = Digest::sha256(&layers[1]).to_string();
    let report = first.finish(&proof).unwrap();
    let left = snapshotter.list().unwrap();
    assert_eq!(report.diff_id, Digest::sha256(&layers[0]));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.iter().any(|i| i.name.ends_with(&second)), "{left:?}");
    drop(keep);
    // No unpack from the store goes on holding it.
    assert_eq!(Arc::strong_count(&provider), 1);
    let left = snapshotter.list().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// An image of `layers` (each one file of `noise` of that many bytes, so
/// each above the slotless size), an overlay snapshotter beside it, and
/// unpack options of one slot that keep no ownership.
fn early(
    layers: &[(&str, usize)],
) -> (
    TestImage,
    tempfile::TempDir,
    Arc<dyn Snapshotter>,
    ImageUnpackOptions,
) {
    let files: Vec<Vec<(&str, Vec<u8>)>> = layers
        .iter()
        .enumerate()
        .map(|(i, (name, size))| vec![(*name, noise(size + i % 2))])
        .collect();
    let t = make_image(&files, "test/early:1");
    let dir = tempfile::tempdir().unwrap();
    let snapshotter: Arc<dyn Snapshotter> =
        Arc::new(OverlaySnapshotter::open(dir.path().join("snapshots")).unwrap());
    let mut options = ImageUnpackOptions::default().with_parallelism(1);
    options.unpack.preserve_ownership = false;
    (t, dir, snapshotter, options)
}

/// The store's proof that it holds `layer`'s blob verified (committed
/// again: the store has it).
fn proof(store: &OciDir, layer: &image_core::Descriptor) -> image_store::VerifiedBlob {
    use std::io::Write;
    let bytes =
        image_store::Provider::read_blob_to_vec(store, &layer.checked_digest().unwrap(), u64::MAX)
            .unwrap();
    let mut w = store
        .writer(&layer.checked_digest().unwrap().to_string())
        .unwrap();
    w.write_all(&bytes).unwrap();
    w.commit_verified(layer.size(), &layer.checked_digest().unwrap())
        .unwrap()
}

/// On an unpacker of one slot given the store: the first layer streams
/// (its feed holds the slot), the second is declined and stored, so it
/// is unpacked from the store as soon as the first layer's feed ends,
/// which this does. The unpacker.
fn stream_first_store_second(
    t: &TestImage,
    snapshotter: &Arc<dyn Snapshotter>,
    provider: Arc<dyn image_store::Provider + Send + Sync>,
    options: &ImageUnpackOptions,
) -> image_overlay::StreamUnpacker {
    let unpacker =
        image_overlay::StreamUnpacker::bounded_with_store(snapshotter.clone(), provider, options);
    let layers = t.image.layers();
    let first = unpacker.begin(&layers[0]).unwrap().expect("the free slot");
    assert!(unpacker.begin(&layers[1]).unwrap().is_none());
    assert!(unpacker.declined(&layers[1]));
    assert!(unpacker.stored(&proof(&t.store, &layers[1])));
    feed_whole(first, &t.store, &layers[0]);
    unpacker
}

/// Writes `layer`'s blob from `store` into its `feed` and finishes it
/// with the store's proof; the proof.
fn feed_whole(
    mut feed: image_overlay::LayerFeed,
    store: &OciDir,
    layer: &image_core::Descriptor,
) -> image_store::VerifiedBlob {
    let digest = layer.checked_digest().unwrap();
    let bytes = image_store::Provider::read_blob_to_vec(store, &digest, u64::MAX).unwrap();
    feed.write(&bytes).unwrap();
    let blob = proof(store, layer);
    feed.finish(&blob).unwrap();
    blob
}

/// The caller's interrupt (given at construction) stops an unpack from
/// the store while it runs, which reports its progress to the caller's
/// tracker: the recorder sets the interrupt once 1 MiB of the second
/// layer is read, so that layer is never read whole; `finish` returns
/// the typed cancellation, and no snapshot is left.
#[test]
fn the_callers_interrupt_stops_an_unpack_from_the_store_and_finish_is_cancelled() {
    let (t, _dir, snapshotter, options) = early(&[("a", 2 << 20), ("b", 16 << 20)]);
    let (rec, tracker) = recorder(1 << 20);
    let options = options.with_tracker(tracker);
    let provider = Arc::new(t.store.clone());
    let unpacker = stream_first_store_second(&t, &snapshotter, provider, &options);
    let e = unpacker
        .finish(&t.store, &t.image, &options)
        .expect_err("cancelled");
    assert!(matches!(e, ImageUnpackError::Cancelled(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    let second = t.image.layers()[1].clone();
    let items = rec.items();
    let item = &items[&second.checked_digest().unwrap().to_string()];
    assert_eq!(item.total, Some(second.size()), "{items:?}");
    assert!(
        !item.finished && item.done < second.size(),
        "read whole: {items:?}"
    );
    let left = snapshotter.list().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// `finish` called with its interrupt set does not wait for the unpack
/// from the store that runs (a large layer): it stops it and returns the
/// typed cancellation, no snapshot left.
#[test]
fn a_cancelled_finish_stops_the_unpacks_from_the_store_and_leaves_nothing() {
    let (t, _dir, snapshotter, options) = early(&[("a", 2 << 20), ("b", 32 << 20)]);
    let provider = Arc::new(t.store.clone());
    let unpacker = stream_first_store_second(&t, &snapshotter, provider, &options);
    let interrupt = Interrupt::new();
    interrupt.set();
    let cancelled = options
        .clone()
        .with_tracker(Tracker::default().with_interrupt(interrupt));
    let e = unpacker
        .finish(&t.store, &t.image, &cancelled)
        .expect_err("cancelled");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e:?}");
    let left = snapshotter.list().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// A store whose reads for an unpack that hashes on its own panic (a
/// bug in a provider), the rest delegated to `inner`.
struct PanickingStore {
    inner: OciDir,
}

impl image_store::Provider for PanickingStore {
    fn reader(
        &self,
        digest: &Digest,
    ) -> image_store::content::Result<Box<dyn std::io::Read + Send>> {
        self.inner.reader(digest)
    }

    fn try_info(
        &self,
        digest: &Digest,
    ) -> image_store::content::Result<Option<image_store::content::Info>> {
        self.inner.try_info(digest)
    }

    fn reader_for_unverified(
        &self,
        _: &image_core::Descriptor,
    ) -> image_store::content::Result<Box<dyn std::io::Read + Send>> {
        panic!("a provider's bug");
    }
}

/// A worker that panics after preparing its snapshot leaves no snapshot,
/// and `finish` reports the panic, naming the layer.
#[test]
fn a_panic_in_an_unpack_from_the_store_leaves_nothing_and_fails_finish() {
    let (t, _dir, snapshotter, options) = early(&[("a", 2 << 20), ("b", 2 << 20)]);
    let provider = Arc::new(PanickingStore {
        inner: t.store.clone(),
    });
    let unpacker = stream_first_store_second(&t, &snapshotter, provider, &options);
    let e = unpacker
        .finish(&t.store, &t.image, &options)
        .expect_err("the panic");
    let second = t.image.layers()[1].checked_digest().unwrap();
    assert!(
        matches!(&e, ImageUnpackError::Panicked { digest: Some(d) } if d == &second),
        "{e:?}"
    );
    let left = snapshotter.list().unwrap();
    assert!(left.is_empty(), "{left:?}");
}
/// The trees of the layers under the top snapshot of `report`, bottom
/// first.
fn layer_trees(sn: &dyn Snapshotter, report: &image_overlay::ImageUnpackReport) -> Vec<Tree> {
    let mounts = sn.view("compare", report.top().as_deref()).unwrap();
    let lower = mounts[0].option("lowerdir").expect("an overlay of layers");
    let trees = lower.split(':').rev().map(|d| tree(Path::new(d))).collect();
    sn.remove("compare").unwrap();
    trees
}

/// An image whose two layers are the same blob, under one slot: the
/// first copy streams, the second is declined, then stored. The streamed
/// copy is kept (not replaced by an unpack from the store), and the
/// snapshots are those of a plain unpack.
#[test]
fn a_layer_repeated_in_an_image_streams_once_and_unpacks_as_a_plain_unpack() {
    let big = image_overlay::stream_unpack::SLOTLESS_BELOW as usize + 4096;
    let files = vec![("same", noise(big))];
    let t = make_image(&[files.clone(), files], "test/twice:1");
    let (_, dir, snapshotter, options) = early(&[]);
    let layers = t.image.layers();
    assert_eq!(layers[0], layers[1]);
    let provider = Arc::new(t.store.clone());
    let unpacker =
        image_overlay::StreamUnpacker::bounded_with_store(snapshotter.clone(), provider, &options);
    let first = unpacker.begin(&layers[0]).unwrap().expect("the slot");
    assert!(unpacker.begin(&layers[1]).unwrap().is_none());
    let blob = feed_whole(first, &t.store, &layers[0]);
    // The repeat's download ends: its blob is the streamed one's.
    unpacker.stored(&blob);
    let ours = unpacker.finish(&t.store, &t.image, &options).unwrap();
    let chains = image_core::chain_ids(t.image.diff_ids());
    assert_eq!(unpacker.streamed(), vec![chains[0].clone()]);

    let plain = OverlaySnapshotter::open(dir.path().join("plain")).unwrap();
    let theirs = unpack_image(&t.store, &t.image, &plain, &options).unwrap();
    assert_eq!(ours.chain_ids, theirs.chain_ids);
    assert_eq!(ours.unpacked, theirs.unpacked);
    assert_eq!(
        layer_trees(&*snapshotter, &ours),
        layer_trees(&plain, &theirs)
    );
    let left = snapshotter.list().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|i| i.kind == Kind::Committed), "{left:?}");
}
