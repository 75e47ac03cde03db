//! The snapshotter conformance suite, as containerd exports its snapshot
//! test suite: every implementation of [`Snapshotter`] runs the same checks
//! of the key (active) / name (committed) / parent model, views, labels,
//! usage, errors and their classes, reopening and concurrent use.
//!
//! Built with the `testsuite` feature, for this crate's drivers and for
//! another implementation:
//!
//! ```no_run
//! use image_overlay::snapshot::CopySnapshotter;
//!
//! image_overlay::testsuite::snapshotter(|root| CopySnapshotter::open(root).unwrap());
//! ```
//! (`no_run`: the checks that mount need root.)
//!
//! The suite expects what containerd's drivers return: an active snapshot
//! without a parent, and a view of one committed snapshot, are a single
//! bind mount of a directory. Checks that mount skip loudly where mounts
//! are not permitted ([`mounts_permitted`]), and fail under `CI=true`.
//! A failed check panics (the suite runs inside a `#[test]`).
//!
//! The helpers the checks are made of are public too, for a driver's own
//! tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed check panics

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use image_core::{Classify, ErrorKind};

use crate::mount::{Mount, MountGuard, SysMounter};
use crate::snapshot::{CommitOptions, Kind, Labels, SnapshotError, Snapshotter};

/// Runs every check of the suite; `open` opens the snapshotter on a root
/// directory (a fresh empty one for each check, the same one again where
/// a check reopens it).
///
/// # Panics
/// When the snapshotter behaves otherwise than a snapshotter must.
pub fn snapshotter<S, F>(open: F)
where
    S: Snapshotter + Send + Sync + 'static,
    F: Fn(&Path) -> S,
{
    if mounts_permitted("testsuite::snapshotter chains_and_views") {
        chains_and_views(&open);
    }
    stat_walk_labels(&open);
    rules_and_errors(&open);
    usage_counts(&open);
    restart(&open);
    concurrent_prepares(&open);
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether overlay and bind mounts work here; says so loudly when not
/// (`test` names who asks), and panics under `CI=true`.
pub fn mounts_permitted(test: &str) -> bool {
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
pub fn with_mounted<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = MountGuard::mount(SysMounter, mounts, dir.path()).expect("mount");
    let out = f(dir.path());
    guard.unmount().expect("unmount");
    out
}

/// Writes a file, making its parent directories.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

/// The directory of a snapshot's single writable bind mount.
pub fn bind_dir(mounts: &[Mount]) -> PathBuf {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].fs_type, "bind", "{mounts:?}");
    PathBuf::from(&mounts[0].source)
}

/// Writes `files` into an active snapshot through its mounts and commits it.
pub fn commit_layer<S: Snapshotter + ?Sized>(
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
            write_file(&root.join(p), data);
        }
        for p in delete {
            fs::remove_file(root.join(p)).expect("delete");
        }
    });
    sn.commit(name, &key).expect("commit");
}

fn chains_and_views<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = open(dir.path());
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
        write_file(&root.join("e"), b"e");
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

fn stat_walk_labels<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = open(dir.path());
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

fn rules_and_errors<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = open(dir.path());
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
}

fn usage_counts<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = open(dir.path());
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

fn restart<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let sn = open(dir.path());
        let m = sn.prepare("a", None).expect("prepare");
        fs::write(bind_dir(&m).join("f"), b"kept").expect("write");
        sn.commit("A", "a").expect("commit");
        sn.prepare("b", Some("A")).expect("prepare b");
    }
    let sn = open(dir.path());
    assert_eq!(sn.stat("A").expect("A").kind, Kind::Committed);
    assert_eq!(sn.stat("b").expect("b").parent.as_deref(), Some("A"));
    let v = sn.view("v", Some("A")).expect("view");
    assert_eq!(
        fs::read(PathBuf::from(&v[0].source).join("f")).expect("f"),
        b"kept"
    );
    // Two handles on one root see each other's changes.
    let other = open(dir.path());
    other.prepare("c", Some("A")).expect("prepare via other");
    assert_eq!(sn.stat("c").expect("c").kind, Kind::Active);
}

fn concurrent_prepares<S: Snapshotter + Send + Sync + 'static>(open: &dyn Fn(&Path) -> S) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = Arc::new(open(dir.path()));
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
    let other = open(dir.path());
    let t = {
        let sn = Arc::clone(&sn);
        std::thread::spawn(move || (0..20).all(|i| sn.prepare(&format!("p{i}"), None).is_ok()))
    };
    assert!((0..20).all(|i| other.prepare(&format!("q{i}"), None).is_ok()));
    assert!(t.join().expect("thread"));
    assert_eq!(sn.list().expect("list").len(), 50);
}
