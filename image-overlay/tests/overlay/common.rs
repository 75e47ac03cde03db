//! Shared helpers: raw tar blocks, trees, snapshots, sentinels.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

// ---- raw tar, compression, tools: the family's shared fixtures -------------

pub use image_testsupport::codec::{compress, gzip};
pub use image_testsupport::tar::{Raw, TarBuf};
pub use image_testsupport::tools::{have, is_root, ready, root, skip_or_fail};

// ---- snapshots of trees -----------------------------------------------------

/// One file's facts, as compared between trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub link: Option<PathBuf>,
    pub content: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

pub fn user_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    use rustix::fs::{lgetxattr, llistxattr};
    let mut buf = vec![0u8; 65536];
    let Ok(n) = llistxattr(p, &mut buf[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.")
            && !name.starts_with("trusted.")
            && name != "security.capability"
        {
            continue;
        }
        let mut v = vec![0u8; 65536];
        if let Ok(k) = lgetxattr(p, name.as_str(), &mut v[..]) {
            v.truncate(k);
            out.push((name, v));
        }
    }
    out.sort();
    out
}

/// Every path under `root` (relative) with its facts; `nanos` keeps sub-second mtimes.
pub fn snapshot(root: &Path, nanos: bool) -> BTreeMap<PathBuf, Facts> {
    let mut out = BTreeMap::new();
    walk(root, root, nanos, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, nanos: bool, out: &mut BTreeMap<PathBuf, Facts>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.expect("entry");
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        let kind = kind_of(md.file_type());
        let facts = Facts {
            kind,
            mode: md.permissions().mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == "file" { md.size() } else { 0 },
            mtime: md.mtime(),
            mtime_nsec: if nanos { md.mtime_nsec() } else { 0 },
            link: if kind == "symlink" {
                std::fs::read_link(&p).ok()
            } else {
                None
            },
            content: if kind == "file" {
                std::fs::read(&p).ok()
            } else {
                None
            },
            rdev: md.rdev(),
            xattrs: if kind == "symlink" {
                Vec::new()
            } else {
                user_xattrs(&p)
            },
        };
        let rel = p.strip_prefix(root).expect("rel").to_path_buf();
        out.insert(rel, facts);
        if kind == "dir" {
            walk(root, &p, nanos, out);
        }
    }
}

/// Asserts two trees are equal, reporting the first difference.
pub fn assert_same_tree(a: &Path, b: &Path, nanos: bool) {
    let sa = snapshot(a, nanos);
    let sb = snapshot(b, nanos);
    let ka: Vec<_> = sa.keys().collect();
    let kb: Vec<_> = sb.keys().collect();
    assert_eq!(
        ka,
        kb,
        "path sets differ between {} and {}",
        a.display(),
        b.display()
    );
    for (k, fa) in &sa {
        let fb = &sb[k];
        assert_eq!(fa, fb, "{} differs", k.display());
    }
}

// ---- sentinels --------------------------------------------------------------

/// A target directory with sentinels beside it and at an absolute path,
/// all under temp dirs that go away with the value.
pub struct Sandbox {
    pub base: tempfile::TempDir,
    pub abs: tempfile::TempDir,
    before: (BTreeMap<PathBuf, Facts>, BTreeMap<PathBuf, Facts>),
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let base = tempfile::tempdir().expect("tempdir");
        let abs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(base.path().join("target")).expect("mkdir");
        for dir in [base.path().join("sentinel"), abs.path().to_path_buf()] {
            std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
            std::fs::write(dir.join("keep"), b"sentinel").expect("write");
            std::fs::write(dir.join("sub/keep2"), b"sentinel").expect("write");
        }
        let before = (snapshot_beside(base.path()), snapshot(abs.path(), true));
        Sandbox { base, abs, before }
    }
    pub fn target(&self) -> PathBuf {
        self.base.path().join("target")
    }
    /// The absolute sentinel directory, as a string usable in tar entries.
    pub fn abs_path(&self) -> String {
        self.abs.path().to_str().expect("utf8").to_owned()
    }
    /// The absolute sentinel, relative to the target (for `..` escapes).
    pub fn beside_rel(&self) -> &'static str {
        "../sentinel"
    }
    /// Asserts that nothing outside the target changed.
    pub fn assert_untouched(&self) {
        assert_eq!(
            snapshot_beside(self.base.path()),
            self.before.0,
            "something beside the target changed"
        );
        assert_eq!(
            snapshot(self.abs.path(), true),
            self.before.1,
            "the absolute sentinel changed"
        );
        assert!(!self.abs.path().join("pwned").exists());
        assert!(!self.base.path().join("pwned").exists());
        assert!(!Path::new("/pwned").exists());
    }
}

/// Everything under `base` except the target.
fn snapshot_beside(base: &Path) -> BTreeMap<PathBuf, Facts> {
    snapshot(base, true)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("target") || k == Path::new("target"))
        .map(|(k, mut f)| {
            if k == Path::new("target") {
                // The target's own mtime changes as things are created in it.
                f.mtime = 0;
                f.mtime_nsec = 0;
                f.mode = 0;
                f.uid = 0;
                f.gid = 0;
            }
            (k, f)
        })
        .collect()
}

/// `dev/null` (1, 3), mode 0666, in a new `dev` below `root` (as root).
pub fn dev_null(root: &Path) {
    std::fs::create_dir(root.join("dev")).expect("mkdir");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    std::fs::set_permissions(
        root.join("dev/null"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
}

pub fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

// ---- a generated tree ---------------------------------------------------------

/// Builds a tree with every kind of entry and distinct metadata.
pub fn make_tree(root: &Path) {
    use std::os::unix::fs::symlink;
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    for d in ["etc", "usr/bin", "var/empty", "run"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::create_dir(root.join("tmp")).expect("mkdir");
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    std::fs::set_permissions(
        root.join("var/empty"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    w("etc/hostname", b"layer-test\n", 0o644);
    let big: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w("usr/bin/tool", &big, 0o755);
    w("usr/bin/suid", b"#!/bin/sh\n", 0o4755);
    w("etc/sgid", b"g", 0o2755);
    w("empty", b"", 0o600);
    let long = format!(
        "deep/{}/{}/file-with-a-long-name",
        "a".repeat(60),
        "b".repeat(60)
    );
    w(&long, b"long", 0o644);
    w("unicodé ☃.txt", b"snow", 0o644);
    symlink("tool", root.join("usr/bin/link")).expect("symlink");
    symlink("/etc/hostname", root.join("abs-link")).expect("symlink");
    symlink("nowhere", root.join("dangling")).expect("symlink");
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-hard")).expect("link");
    mkfifo(&root.join("run/fifo"), 0o640);
    rustix::fs::setxattr(
        root.join("etc/hostname"),
        "user.comment",
        b"hi",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    if is_root() {
        dev_null(root);
        std::os::unix::fs::lchown(root.join("usr/bin/tool"), Some(1000), Some(1000))
            .expect("chown");
        std::os::unix::fs::lchown(root.join("etc/sgid"), Some(12345), Some(54321)).expect("chown");
        std::fs::set_permissions(
            root.join("etc/sgid"),
            std::fs::Permissions::from_mode(0o2755),
        )
        .expect("chmod");
        std::os::unix::fs::lchown(root.join("usr/bin/link"), Some(7), Some(8)).expect("chown");
    }
    set_all_mtimes(root);
}

/// Gives every path a distinct mtime with a sub-second part, children first.
pub fn set_all_mtimes(root: &Path) {
    let snap = snapshot(root, false);
    for (i, (rel, _)) in snap.iter().rev().enumerate() {
        set_mtime(
            &root.join(rel),
            1_600_000_000 + i as i64 * 1000,
            123_456_789,
        );
    }
}

/// Makes a FIFO at `path` with exactly `mode` (the umask cleared by a chmod).
pub fn mkfifo(path: &Path, mode: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(mode),
        0,
    )
    .expect("mkfifo");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
