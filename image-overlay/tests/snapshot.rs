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
use std::sync::{Arc, OnceLock};

use image_core::{
    Classify, Compression, Digest, ErrorKind, Interrupt, MediaType, Recorder, Tracker,
};
use image_overlay::image_unpack::{unpack_image, ImageUnpackError, ImageUnpackOptions};
use image_overlay::mount::{
    LegacyMounter, Mount, MountGuard, Mounter, RecordingMounter, SysMounter,
};
use image_overlay::pack::{pack_overlay_upper, PackOptions};
use image_overlay::snapshot::{
    CommitOptions, CopySnapshotter, Kind, Labels, OverlayOptions, OverlaySnapshotter,
    SnapshotError, Snapshotter,
};
use image_overlay::unpack::{unpack, UnpackOptions};
use image_overlay::whiteout::OverlayXattrs;
use image_store::{Ingester, OciDir, TagStore};

// ---- privilege probe ---------------------------------------------------------

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether overlay and bind mounts work here; says so loudly when not.
fn mounts_permitted(test: &str) -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        let t = tempfile::tempdir().map_err(|e| e.to_string())?;
        for d in ["l1", "l2", "u", "w", "m"] {
            fs::create_dir(t.path().join(d)).map_err(|e| e.to_string())?;
        }
        let p = |d: &str| t.path().join(d).to_string_lossy().into_owned();
        let m = Mount {
            fs_type: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![
                format!("lowerdir={}:{}", p("l1"), p("l2")),
                format!("upperdir={}", p("u")),
                format!("workdir={}", p("w")),
            ],
        };
        let g =
            MountGuard::mount(SysMounter, &[m], &t.path().join("m")).map_err(|e| e.to_string())?;
        g.unmount().map_err(|e| e.to_string())
    });
    match r {
        Ok(()) => true,
        Err(e) if ci() => panic!("{test}: mounts are required under CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: overlay mounts not permitted here: {e}");
            false
        }
    }
}

/// Mounts `mounts` on a fresh directory, runs `f` on it, unmounts.
fn with_mounted<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = MountGuard::mount(SysMounter, mounts, dir.path()).expect("mount");
    let out = f(dir.path());
    guard.unmount().expect("unmount");
    out
}

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

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

/// The directory of a snapshot's single writable bind mount.
fn bind_dir(mounts: &[Mount]) -> PathBuf {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].fs_type, "bind", "{mounts:?}");
    PathBuf::from(&mounts[0].source)
}

// ---- the conformance suite -------------------------------------------------

/// A driver under test: how to open a root.
trait Driver {
    type S: Snapshotter + 'static;
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

/// Writes `files` into an active snapshot through its mounts and commits it.
fn commit_layer<S: Snapshotter + ?Sized>(
    sn: &S,
    name: &str,
    parent: Option<&str>,
    files: &[(&str, &[u8])],
    delete: &[&str],
) {
    let key = format!("{name}-active");
    let mounts = sn.prepare(&key, parent).expect("prepare");
    with_mounted(&mounts, |root| {
        for (p, data) in files {
            write(&root.join(p), data);
        }
        for p in delete {
            fs::remove_file(root.join(p)).expect("delete");
        }
    });
    sn.commit(name, &key).expect("commit");
}

fn chains_and_views<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(dir.path());
    commit_layer(
        &sn,
        "base",
        None,
        &[("etc/a", b"a1"), ("etc/b", b"b1")],
        &[],
    );
    commit_layer(
        &sn,
        "mid",
        Some("base"),
        &[("etc/a", b"a2"), ("c", b"c")],
        &["etc/b"],
    );
    commit_layer(&sn, "top", Some("mid"), &[("d", b"d")], &[]);

    // An active snapshot on the chain sees the union.
    let mounts = sn.prepare("work", Some("top")).expect("prepare");
    with_mounted(&mounts, |root| {
        assert_eq!(fs::read(root.join("etc/a")).expect("a"), b"a2");
        assert!(!root.join("etc/b").exists());
        assert_eq!(fs::read(root.join("c")).expect("c"), b"c");
        assert_eq!(fs::read(root.join("d")).expect("d"), b"d");
        write(&root.join("e"), b"e");
    });
    // mounts() gives the same mounts again.
    assert_eq!(sn.mounts("work").expect("mounts"), mounts);

    // Views are read-only, of one parent or of a chain.
    for (key, parent) in [("v-top", "top"), ("v-base", "base")] {
        let mounts = sn.view(key, Some(parent)).expect("view");
        with_mounted(&mounts, |root| {
            let expect_a: &[u8] = if parent == "base" { b"a1" } else { b"a2" };
            assert_eq!(fs::read(root.join("etc/a")).expect("a"), expect_a);
            let err = fs::write(root.join("x"), b"x").expect_err("view is read-only");
            assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
        });
    }
    // A view's changes are never visible to others.
    let e = sn.view("v-empty", None).expect("empty view");
    with_mounted(&e, |root| {
        assert_eq!(fs::read_dir(root).expect("ls").count(), 0)
    });
}

fn stat_walk_labels<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(dir.path());
    let mut labels = Labels::new();
    labels.insert("owner".into(), "test".into());
    sn.prepare_with("a", None, labels.clone()).expect("prepare");
    let i = sn.stat("a").expect("stat");
    assert_eq!(
        (i.kind, i.name.as_str(), i.parent.as_deref()),
        (Kind::Active, "a", None)
    );
    assert_eq!(i.labels, labels);
    sn.commit_with(
        "A",
        "a",
        CommitOptions::default().with_labels(labels.clone()),
    )
    .expect("commit");
    assert!(matches!(sn.stat("a"), Err(SnapshotError::NotFound { .. })));
    let c = sn.stat("A").expect("stat A");
    assert_eq!(c.kind, Kind::Committed);
    assert_eq!(c.created, i.created);
    assert!(c.updated >= c.created);
    sn.prepare("b", Some("A")).expect("prepare b");
    sn.view("v", Some("A")).expect("view");
    let all = sn.list().expect("list");
    let names: Vec<_> = all
        .iter()
        .map(|i| (i.name.as_str(), i.kind, i.parent.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("A", Kind::Committed, None),
            ("b", Kind::Active, Some("A")),
            ("v", Kind::View, Some("A")),
        ]
    );
}

fn rules_and_errors<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(dir.path());
    sn.prepare("a", None).expect("prepare");
    let kind = |e: SnapshotError| e.kind();
    assert_eq!(
        kind(sn.prepare("a", None).expect_err("dup")),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(sn.prepare("b", Some("a")).expect_err("active parent")),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(sn.prepare("b", Some("nope")).expect_err("no parent")),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(sn.prepare("", None).expect_err("empty key")),
        ErrorKind::InvalidInput
    );
    sn.commit("A", "a").expect("commit");
    assert_eq!(
        kind(sn.mounts("A").expect_err("committed")),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(sn.commit("B", "A").expect_err("commit committed")),
        ErrorKind::FailedPrecondition
    );
    sn.view("v", Some("A")).expect("view");
    assert_eq!(
        kind(sn.commit("B", "v").expect_err("commit view")),
        ErrorKind::FailedPrecondition
    );
    sn.prepare("x", Some("A")).expect("prepare x");
    assert_eq!(
        kind(sn.commit("A", "x").expect_err("name taken")),
        ErrorKind::AlreadyExists
    );
    // Cannot remove a snapshot with children.
    let e = sn.remove("A").expect_err("has children");
    assert!(
        matches!(e, SnapshotError::HasChildren { children: 2, .. }),
        "{e}"
    );
    sn.remove("v").expect("remove view");
    sn.remove("x").expect("remove active");
    sn.remove("A").expect("remove parent");
    assert_eq!(kind(sn.remove("A").expect_err("gone")), ErrorKind::NotFound);
    // Only the lock and the metadata remain.
    let left: Vec<_> = fs::read_dir(dir.path().join("snapshots"))
        .expect("ls")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn usage_counts<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = D::open(dir.path());
    let mounts = sn.prepare("a", None).expect("prepare");
    let empty = sn.usage("a").expect("usage");
    assert_eq!(empty.inodes, 1);
    let d = bind_dir(&mounts);
    fs::write(d.join("big"), vec![7u8; 1 << 20]).expect("write");
    fs::hard_link(d.join("big"), d.join("big2")).expect("link");
    fs::create_dir(d.join("sub")).expect("mkdir");
    let u = sn.usage("a").expect("usage");
    assert_eq!(u.inodes, 3, "root, big (twice linked), sub");
    assert!(u.size >= 1 << 20, "{u:?}");
    assert!(u.size < 2 << 20, "hardlinks counted once: {u:?}");
}

fn restart_and_crash_leftovers<D: Driver>() {
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
    let v = sn.view("v", Some("A")).expect("view");
    assert_eq!(
        fs::read(PathBuf::from(&v[0].source).join("f")).expect("f"),
        b"kept"
    );
    // Two handles on one root see each other's changes.
    let other = D::open(dir.path());
    other.prepare("c", Some("A")).expect("prepare via other");
    assert_eq!(sn.stat("c").expect("c").kind, Kind::Active);
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

fn concurrent_prepares<D: Driver>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = Arc::new(D::open(dir.path()));
    let m = sn.prepare("a", None).expect("prepare");
    fs::write(bind_dir(&m).join("f"), b"base").expect("write");
    sn.commit("A", "a").expect("commit");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let sn = Arc::clone(&sn);
            std::thread::spawn(move || {
                let mine = sn.prepare(&format!("k{i}"), Some("A")).map(|_| ());
                let shared = sn.prepare("same", Some("A")).map(|_| ());
                (mine, shared)
            })
        })
        .collect();
    let mut shared_ok = 0;
    for h in handles {
        let (mine, shared) = h.join().expect("thread");
        mine.expect("distinct keys all succeed");
        match shared {
            Ok(()) => shared_ok += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
        }
    }
    assert_eq!(shared_ok, 1);
    assert_eq!(sn.list().expect("list").len(), 10);
    // A second process-like handle racing too.
    let other = D::open(dir.path());
    let t = {
        let sn = Arc::clone(&sn);
        std::thread::spawn(move || (0..20).all(|i| sn.prepare(&format!("p{i}"), None).is_ok()))
    };
    assert!((0..20).all(|i| other.prepare(&format!("q{i}"), None).is_ok()));
    assert!(t.join().expect("thread"));
    assert_eq!(sn.list().expect("list").len(), 50);
}

macro_rules! conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn chains_and_views() {
                if mounts_permitted(concat!(stringify!($module), "::chains_and_views")) {
                    super::chains_and_views::<$driver>();
                }
            }
            #[test]
            fn stat_walk_labels() {
                super::stat_walk_labels::<$driver>();
            }
            #[test]
            fn rules_and_errors() {
                super::rules_and_errors::<$driver>();
            }
            #[test]
            fn usage_counts() {
                super::usage_counts::<$driver>();
            }
            #[test]
            fn restart_and_crash_leftovers() {
                super::restart_and_crash_leftovers::<$driver>();
            }
            #[test]
            fn concurrent_prepares() {
                super::concurrent_prepares::<$driver>();
            }
        }
    };
}

conformance!(conformance_overlay, Overlay);
conformance!(conformance_copy, Copy);

// ---- overlay specifics -----------------------------------------------------

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
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(dir.path().join("layout")).expect("store");
    add_image(&store, layers, name);
    let image = image_store::resolve_image(&store, name, None).expect("resolve");
    TestImage {
        _dir: dir,
        store,
        image,
    }
}

fn add_image(store: &OciDir, layers: &[Vec<(&str, Vec<u8>)>], name: &str) {
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
        let d = store.write_blob(&blob).expect("blob");
        descs.push(serde_json::json!({"mediaType": MediaType::OciLayerGzip.as_str(), "digest": d.to_string(), "size": blob.len()}));
        diff_ids.push(r.diff_id.to_string());
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
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
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
