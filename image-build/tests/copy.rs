//! COPY and ADD into a plain destination directory: BuildKit's rules
//! (destinations, directories, globs, owners, modes, times, links),
//! `.dockerignore`, the escape cases (nothing written outside, a sentinel
//! proves it) and the plan's digest (what changes it and what does not).
//! Run as root (owners are set).

use image_testsupport::rng::Rng;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use image_build::context::Context;
use image_build::copy::{apply, plan, CopyError, CopyPlan, CopyReport, CopySource, CopySpec};
use image_core::error::{Classify, ErrorKind};
use image_core::Compression;
use image_testsupport::tar::{Raw, TarBuf};

mod fifo;
use fifo::FifoProbe;

/// One entry of a tree as read back: kind and target or content, mode,
/// owner, mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Every entry below `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let kind = if m.file_type().is_symlink() {
            format!("link:{}", fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            "dir".to_owned()
        } else {
            format!("file:{}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
            },
        );
        if m.is_dir() {
            walk(root, &p, out);
        }
    }
}

fn write(path: &Path, content: &str, mode: u32, mtime: i64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime);
}

fn set_mtime(path: &Path, mtime: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A context directory and a destination root, side by side in one
/// temporary directory (so a sentinel beside them shows any escape).
struct Fixture {
    top: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let top = tempfile::tempdir().unwrap();
        fs::create_dir(top.path().join("ctx")).unwrap();
        fs::create_dir(top.path().join("root")).unwrap();
        fs::write(top.path().join("sentinel"), "untouched").unwrap();
        Fixture { top }
    }
    fn ctx(&self) -> std::path::PathBuf {
        self.top.path().join("ctx")
    }
    fn root(&self) -> std::path::PathBuf {
        self.top.path().join("root")
    }
    fn context(&self) -> Context {
        Context::open(&self.ctx(), None).unwrap()
    }
    fn plan(&self, spec: &CopySpec) -> Result<CopyPlan, CopyError> {
        let c = self.context();
        plan(&CopySource::Context(&c), spec)
    }
    fn copy(&self, spec: &CopySpec) -> Result<CopyReport, CopyError> {
        let c = self.context();
        let p = plan(&CopySource::Context(&c), spec)?;
        apply(&p, &CopySource::Context(&c), spec, &self.root())
    }
    fn sentinel_intact(&self) {
        assert_eq!(
            fs::read_to_string(self.top.path().join("sentinel")).unwrap(),
            "untouched"
        );
        let names: Vec<_> = fs::read_dir(self.top.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "nothing new beside the roots: {names:?}");
    }
}

fn spec(sources: &[&str], dest: &str) -> CopySpec {
    CopySpec::new(sources.iter().map(|s| s.to_string()).collect(), dest, "/")
}

fn node(kind: &str, mode: u32, uid: u32, gid: u32, mtime: i64) -> Node {
    Node {
        kind: kind.to_owned(),
        mode,
        uid,
        gid,
        mtime,
    }
}

#[test]
fn a_directory_copies_its_contents_with_modes_times_links_and_owner_root() {
    let f = Fixture::new();
    let c = f.ctx();
    write(&c.join("src/a.txt"), "A", 0o640, 1_000);
    write(&c.join("src/sub/b.sh"), "B", 0o755, 2_000);
    symlink("a.txt", c.join("src/link")).unwrap();
    set_mtime(&c.join("src/link"), 3_000);
    fs::hard_link(c.join("src/a.txt"), c.join("src/sub/hard")).unwrap();
    fs::set_permissions(c.join("src/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&c.join("src/sub"), 4_000);
    set_mtime(&c.join("src"), 5_000);
    chown(&c.join("src/a.txt"), 1234, 1234);

    let report = f.copy(&spec(&["src"], "/app")).unwrap();
    assert_eq!(report.files, 6); // app, a.txt, link, sub, b.sh, hard
    let t = tree(&f.root());
    let want = BTreeMap::from([
        ("app/a.txt".to_owned(), node("file:A", 0o640, 0, 0, 1_000)),
        (
            "app/link".to_owned(),
            node("link:a.txt", 0o777, 0, 0, 3_000),
        ),
        ("app/sub".to_owned(), node("dir", 0o750, 0, 0, 4_000)),
        (
            "app/sub/b.sh".to_owned(),
            node("file:B", 0o755, 0, 0, 2_000),
        ),
        (
            "app/sub/hard".to_owned(),
            node("file:A", 0o640, 0, 0, 1_000),
        ),
    ]);
    let mut t = t;
    // The destination directory made for the copy is BuildKit's: 0755,
    // the copy's owner, its own time (not the source directory's).
    let app = t.remove("app").unwrap();
    assert_eq!((app.mode, app.uid, app.gid), (0o755, 0, 0));
    assert_ne!(app.mtime, 5_000);
    assert_eq!(t, want);
    let a = fs::metadata(f.root().join("app/a.txt")).unwrap();
    let h = fs::metadata(f.root().join("app/sub/hard")).unwrap();
    assert_eq!(a.ino(), h.ino(), "hard links stay one file");
    assert_eq!(a.nlink(), 2);
}

#[test]
fn a_file_goes_to_a_file_path_or_into_a_directory() {
    let f = Fixture::new();
    write(&f.ctx().join("f.txt"), "x", 0o644, 7);
    f.copy(&spec(&["f.txt"], "/renamed")).unwrap();
    f.copy(&spec(&["f.txt"], "/dir/")).unwrap();
    fs::create_dir(f.root().join("exists")).unwrap();
    f.copy(&spec(&["f.txt"], "/exists")).unwrap();
    // Relative to the working directory; parents created 0755.
    let mut s = spec(&["f.txt"], "rel/");
    s.workdir = "/work/dir".into();
    f.copy(&s).unwrap();
    let t = tree(&f.root());
    assert_eq!(t["renamed"].kind, "file:x");
    assert_eq!(t["dir/f.txt"].kind, "file:x");
    assert_eq!(t["exists/f.txt"].kind, "file:x");
    assert_eq!(t["work/dir/rel/f.txt"].mtime, 7);
    assert_eq!(t["work"].mode, 0o755);
}

#[test]
fn several_sources_need_a_directory_destination() {
    let f = Fixture::new();
    write(&f.ctx().join("a"), "a", 0o644, 1);
    write(&f.ctx().join("b"), "b", 0o644, 1);
    let e = f.copy(&spec(&["a", "b"], "/dest")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::DestNotDirectory { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = f.copy(&spec(&["*"], "/dest")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::DestNotDirectory { .. }), "{e}");
    f.copy(&spec(&["a", "b"], "/dest/")).unwrap();
    assert_eq!(tree(&f.root())["dest/b"].kind, "file:b");
}

#[test]
fn globs_match_within_one_element_and_must_match_something() {
    let f = Fixture::new();
    for n in ["a1.txt", "a2.txt", "b.txt", "a3.md", "d/a4.txt"] {
        write(&f.ctx().join(n), n, 0o644, 1);
    }
    f.copy(&spec(&["a?.txt", "[b]*"], "/out/")).unwrap();
    let names: Vec<_> = tree(&f.root()).into_keys().collect();
    assert_eq!(names, ["out", "out/a1.txt", "out/a2.txt", "out/b.txt"]);
    f.copy(&spec(&["*/*.txt"], "/two/")).unwrap();
    assert!(f.root().join("two/a4.txt").exists());
    let e = f.copy(&spec(&["*.none"], "/x/")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NoMatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = f.copy(&spec(&["missing"], "/x/")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NotFound { .. }), "{e}");
}

#[test]
fn chown_names_resolve_in_the_destination_and_chmod_applies_to_all() {
    let f = Fixture::new();
    write(&f.ctx().join("d/f"), "f", 0o600, 1);
    write(
        &f.root().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        0o644,
        1,
    );
    write(
        &f.root().join("etc/group"),
        "root:x:0:\nstaff:x:50:\n",
        0o644,
        1,
    );
    let mut s = spec(&["d"], "/srv/a/");
    s.chown = Some("app".into());
    s.chmod = Some("u+x,go=rX".into());
    f.copy(&s).unwrap();
    let t = tree(&f.root());
    // X counts the x that u+x set just before, as chmod(1) does.
    assert_eq!(t["srv/a/f"], node("file:f", 0o755, 1000, 1001, 1));
    // Parents made for the destination belong to the --chown owner.
    assert_eq!(
        (t["srv"].uid, t["srv"].gid, t["srv"].mode),
        (1000, 1001, 0o755)
    );

    let mut s = spec(&["d/f"], "/g");
    s.chown = Some("7:staff".into());
    s.chmod = Some("0750".into());
    f.copy(&s).unwrap();
    assert_eq!(tree(&f.root())["g"], node("file:f", 0o750, 7, 50, 1));
    let mut s = spec(&["d/f"], "/n");
    s.chown = Some("42".into());
    f.copy(&s).unwrap();
    assert_eq!(
        (tree(&f.root())["n"].uid, tree(&f.root())["n"].gid),
        (42, 42)
    );

    let mut s = spec(&["d/f"], "/x");
    s.chown = Some("nobody".into());
    let e = f.copy(&s).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::Chown { .. }), "{e}");
    let mut s = spec(&["d/f"], "/x");
    s.chmod = Some("u*x".into());
    assert!(matches!(f.plan(&s).unwrap_err(), CopyError::Chmod { .. }));
}

#[test]
fn chown_names_are_read_inside_the_destination_root() {
    let f = Fixture::new();
    write(&f.ctx().join("f"), "f", 0o644, 1);
    // The destination's /etc links to an etc outside the root that knows
    // "app": read in-root, the link names the root's own (missing) path.
    let host_etc = f.top.path().join("host-etc");
    write(
        &host_etc.join("passwd"),
        "app:x:1000:1000::/:/bin/sh\n",
        0o644,
        1,
    );
    symlink(&host_etc, f.root().join("etc")).unwrap();
    let mut s = spec(&["f"], "/x");
    s.chown = Some("app".into());
    let e = f.copy(&s).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::Chown { .. }), "{e}");
}

#[test]
fn escapes_from_the_context_are_errors() {
    let f = Fixture::new();
    let c = f.ctx();
    write(&c.join("ok"), "ok", 0o644, 1);
    symlink("/etc", c.join("abs")).unwrap();
    symlink("../sentinel", c.join("up")).unwrap();
    symlink("hop", c.join("chain")).unwrap();
    symlink("../../sentinel", c.join("hop")).unwrap();
    for src in [
        "../sentinel",
        "sub/../../sentinel",
        "abs/passwd",
        "up",
        "chain",
        "abs",
    ] {
        let e = f.copy(&spec(&[src], "/x")).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert!(
            matches!(e, CopyError::OutsideContext { .. }),
            "{src}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Unsafe);
    }
    // Links inside a copied directory are copied as links, not followed.
    fs::create_dir(c.join("d")).unwrap();
    symlink("/etc/passwd", c.join("d/p")).unwrap();
    f.copy(&spec(&["d"], "/d")).unwrap();
    assert_eq!(tree(&f.root())["d/p"].kind, "link:/etc/passwd");
    f.sentinel_intact();
    assert_eq!(fs::read_dir(f.root()).unwrap().count(), 1);
}

#[test]
fn destination_links_resolve_inside_the_root_and_are_replaced_below_it() {
    let f = Fixture::new();
    write(&f.ctx().join("s/file"), "new", 0o644, 1);
    write(&f.ctx().join("one"), "one", 0o644, 1);
    let out = f.top.path().join("sentinel");
    // The destination path itself goes through links in-root.
    symlink(f.top.path(), f.root().join("escape")).unwrap();
    f.copy(&spec(&["one"], "/escape/sentinel")).unwrap();
    f.sentinel_intact();
    assert_eq!(
        fs::read_to_string(
            f.root()
                .join(f.top.path().strip_prefix("/").unwrap())
                .join("sentinel")
        )
        .unwrap(),
        "one"
    );
    // An entry of the copy meeting a link in the destination replaces it.
    fs::create_dir(f.root().join("app")).unwrap();
    symlink(&out, f.root().join("app/file")).unwrap();
    f.copy(&spec(&["s"], "/app")).unwrap();
    f.sentinel_intact();
    assert_eq!(tree(&f.root())["app/file"].kind, "file:new");
    // A file copied onto a link named as the destination replaces it too.
    symlink(&out, f.root().join("lnk")).unwrap();
    f.copy(&spec(&["one"], "/lnk")).unwrap();
    f.sentinel_intact();
    assert_eq!(tree(&f.root())["lnk"].kind, "file:one");
}

#[test]
fn dockerignore_excludes_with_exceptions_and_may_exclude_itself() {
    let f = Fixture::new();
    let c = f.ctx();
    fs::write(
        c.join(".dockerignore"),
        "**/*.log\nbuild\n!build/keep\n.dockerignore\nDockerfile\n/secret\n",
    )
    .unwrap();
    write(&c.join("Dockerfile"), "FROM scratch\n", 0o644, 1);
    write(&c.join("a.log"), "x", 0o644, 1);
    write(&c.join("d/e/b.log"), "x", 0o644, 1);
    write(&c.join("d/e/c.txt"), "c", 0o644, 1);
    write(&c.join("build/out"), "x", 0o644, 1);
    write(&c.join("build/keep"), "k", 0o644, 1);
    write(&c.join("secret"), "s", 0o644, 1);
    write(&c.join("src/secret"), "s", 0o644, 1);
    f.copy(&spec(&["."], "/ctx/")).unwrap();
    let names: Vec<_> = tree(&f.root().join("ctx")).into_keys().collect();
    assert_eq!(
        names,
        [
            "build",
            "build/keep",
            "d",
            "d/e",
            "d/e/c.txt",
            "src",
            "src/secret"
        ]
    );
    let e = f.copy(&spec(&["secret"], "/x")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NotFound { .. }), "{e}");
    let e = f.copy(&spec(&["*.log"], "/x/")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NoMatch { .. }), "{e}");
}

#[test]
fn a_named_dockerfile_has_its_own_ignore_file() {
    let f = Fixture::new();
    let c = f.ctx();
    fs::write(c.join(".dockerignore"), "a\n").unwrap();
    fs::write(c.join("app.Dockerfile.dockerignore"), "b\n").unwrap();
    write(&c.join("a"), "a", 0o644, 1);
    write(&c.join("b"), "b", 0o644, 1);
    let ctx = Context::open(&c, Some(&c.join("app.Dockerfile"))).unwrap();
    let s = spec(&["a"], "/a");
    let p = plan(&CopySource::Context(&ctx), &s).unwrap();
    apply(&p, &CopySource::Context(&ctx), &s, &f.root()).unwrap();
    let e = plan(&CopySource::Context(&ctx), &spec(&["b"], "/b")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NotFound { .. }));
}

#[test]
fn exclude_and_parents() {
    let f = Fixture::new();
    let c = f.ctx();
    write(&c.join("p/q/a.txt"), "a", 0o644, 1);
    write(&c.join("p/q/b.md"), "b", 0o644, 1);
    write(&c.join("p/r/c.txt"), "c", 0o644, 1);
    let mut s = spec(&["p"], "/e/");
    s.exclude = vec!["**/*.md".into()];
    f.copy(&s).unwrap();
    let mut s = spec(&["p/*/a.txt", "p/./r/c.txt"], "/par/");
    s.parents = true;
    f.copy(&s).unwrap();
    let names: Vec<_> = tree(&f.root()).into_keys().collect();
    assert_eq!(
        names,
        [
            "e",
            "e/q",
            "e/q/a.txt",
            "e/r",
            "e/r/c.txt",
            "par",
            "par/p",
            "par/p/q",
            "par/p/q/a.txt",
            "par/r",
            "par/r/c.txt"
        ]
    );
}

#[test]
fn exclude_applies_to_matched_files_too() {
    let f = Fixture::new();
    for n in ["a.txt", "b.txt", "c.md"] {
        write(&f.ctx().join(n), n, 0o644, 1);
    }
    let mut s = spec(&["*"], "/x/");
    s.exclude = vec!["*.md".into(), "b.*".into()];
    f.copy(&s).unwrap();
    let names: Vec<_> = tree(&f.root()).into_keys().collect();
    assert_eq!(names, ["x", "x/a.txt"]);
}

#[test]
fn walks_are_bounded_in_depth() {
    let f = Fixture::new();
    let mut p = f.ctx().join("deep");
    for _ in 0..(image_build::copy::MAX_DEPTH + 2) {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    let e = f.plan(&spec(&["deep"], "/x")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::TooLarge { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unsafe);
}

#[test]
fn heredocs_become_files() {
    let f = Fixture::new();
    let mut s = spec(&[], "/etc/");
    s.heredocs = vec![("conf".into(), "x=1\n".into())];
    f.copy(&s).unwrap();
    let t = tree(&f.root());
    assert_eq!(
        (t["etc/conf"].kind.as_str(), t["etc/conf"].mode),
        ("file:x=1\n", 0o644)
    );
}

#[test]
fn no_context_fails_clearly() {
    let c = Context::none();
    let e = plan(&CopySource::Context(&c), &spec(&["a"], "/a")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::NoContext { .. }), "{e}");
}

#[test]
fn from_a_root_links_resolve_inside_that_root() {
    let f = Fixture::new();
    let stage = f.top.path().join("ctx"); // used as a stage root here
    write(&stage.join("etc/conf"), "stage", 0o600, 9);
    symlink("/etc/conf", stage.join("abs")).unwrap();
    symlink("../../../../../etc", stage.join("up")).unwrap();
    let src = CopySource::Root(&stage);
    for (source, dest) in [("abs", "/a"), ("/../../abs", "/b"), ("up/conf", "/c")] {
        let s = spec(&[source], dest);
        let p = plan(&src, &s).unwrap();
        apply(&p, &src, &s, &f.root()).unwrap();
    }
    let t = tree(&f.root());
    for n in ["a", "b", "c"] {
        assert_eq!(t[n], node("file:stage", 0o600, 0, 0, 9));
    }
    f.sentinel_intact();
}

/// As Docker and BuildKit (moby#38599): a copy from another stage or an
/// image keeps its owners, one from the context is root's, and `--chown`
/// overrides both. (Found by the buildah parity test.)
#[test]
fn a_copy_from_a_root_keeps_owners_and_one_from_the_context_does_not() {
    let f = Fixture::new();
    for top in [f.ctx(), f.top.path().join("stage")] {
        write(&top.join("out/data/seed"), "x", 0o640, 9);
        chown(&top.join("out/data/seed"), 1000, 1000);
        chown(&top.join("out/data"), 1000, 50);
        symlink("seed", top.join("out/data/link")).unwrap();
        chown(&top.join("out/data/link"), 7, 7);
    }
    let stage = f.top.path().join("stage");
    let from_stage = CopySource::Root(&stage);
    let s = spec(&["/out"], "/srv");
    apply(&plan(&from_stage, &s).unwrap(), &from_stage, &s, &f.root()).unwrap();
    let t = tree(&f.root());
    assert_eq!(t["srv/data/seed"], node("file:x", 0o640, 1000, 1000, 9));
    assert_eq!((t["srv/data"].uid, t["srv/data"].gid), (1000, 50));
    assert_eq!((t["srv/data/link"].uid, t["srv/data/link"].gid), (7, 7));

    let mut s = spec(&["/out"], "/chowned");
    s.chown = Some("5:6".into());
    apply(&plan(&from_stage, &s).unwrap(), &from_stage, &s, &f.root()).unwrap();
    f.copy(&spec(&["out"], "/ctx")).unwrap();
    let t = tree(&f.root());
    for (dir, owner) in [("chowned", (5, 6)), ("ctx", (0, 0))] {
        for p in ["data", "data/seed", "data/link"] {
            let n = &t[&format!("{dir}/{p}")];
            assert_eq!((n.uid, n.gid), owner, "{dir}/{p}");
        }
    }
    fs::remove_dir_all(&stage).unwrap();
    f.sentinel_intact();
}

fn add_spec(sources: &[&str], dest: &str) -> CopySpec {
    let mut s = spec(sources, dest);
    s.add = true;
    s
}

/// `data` compressed by name: plain, gzip, zstd, bzip2, xz.
fn pack(data: &[u8], how: &str) -> Vec<u8> {
    use std::io::Write;
    match how {
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "gzip" => image_testsupport::codec::compress(data, Compression::Gzip),
        "zstd" => image_testsupport::codec::compress(data, Compression::Zstd),
        _ => data.to_vec(),
    }
}

#[test]
fn add_unpacks_local_archives_keeping_whiteout_names() {
    for c in ["plain", "gzip", "zstd", "bzip2", "xz"] {
        let f = Fixture::new();
        let mut tar = TarBuf::new();
        let mut h = Raw::new("d/f", b'0').size(2);
        h.mtime = 12_345;
        h.uid = 33;
        tar.raw(&h, b"hi");
        tar.file("d/.wh.gone", b"");
        tar.symlink("d/l", "/etc/passwd");
        let bytes = pack(&tar.end(), c);
        fs::write(f.ctx().join("a.tar"), bytes).unwrap();
        write(&f.root().join("x/gone"), "stays", 0o644, 1);
        f.copy(&add_spec(&["a.tar"], "/x")).unwrap();
        let t = tree(&f.root());
        assert_eq!(t["x/d/f"].kind, "file:hi", "{c:?}");
        assert_eq!((t["x/d/f"].mtime, t["x/d/f"].uid), (12_345, 33));
        assert_eq!(t["x/d/.wh.gone"].kind, "file:", "{c:?}");
        assert_eq!(t["x/gone"].kind, "file:stays");
        f.sentinel_intact();
    }
    // --chown owns every entry the archive holds.
    let f = Fixture::new();
    let mut tar = TarBuf::new();
    let mut h = Raw::new("a/f", b'0').size(1);
    h.uid = 33;
    h.gid = 33;
    tar.raw(&h, b"x");
    fs::write(f.ctx().join("a.tar"), tar.end()).unwrap();
    let mut s = add_spec(&["a.tar"], "/x/");
    s.chown = Some("7:8".into());
    f.copy(&s).unwrap();
    let t = tree(&f.root());
    assert_eq!((t["x/a/f"].uid, t["x/a/f"].gid), (7, 8));
    // Not an archive (compressed or not): copied as a file, even under ADD.
    for c in ["plain", "gzip", "zstd", "bzip2", "xz"] {
        let f = Fixture::new();
        fs::write(f.ctx().join("a.tar.gz"), pack(&[b'x'; 600], c)).unwrap();
        f.copy(&add_spec(&["a.tar.gz"], "/y")).unwrap();
        assert!(tree(&f.root())["y"].kind.starts_with("file:"), "{c}");
    }
}

#[test]
fn add_refuses_remote_sources_and_local_checksums() {
    let f = Fixture::new();
    write(&f.ctx().join("a"), "a", 0o644, 1);
    for src in [
        "https://example.com/x.tar",
        "http://h/x",
        "git@github.com:moby/moby.git",
        "git://h/r",
        "github.com/moby/moby.git",
    ] {
        let e = f.copy(&add_spec(&[src], "/x")).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        match &e {
            CopyError::Remote { source } => assert_eq!(source, src),
            other => panic!("{src}: {other:?}"),
        }
        assert!(e.to_string().contains(src));
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }
    let mut s = add_spec(&["a"], "/x");
    s.checksum = Some("sha256:00".into());
    assert!(matches!(
        f.copy(&s).unwrap_err(),
        CopyError::ChecksumLocal { .. }
    ));
}

#[test]
fn the_digest_follows_content_mode_and_a_kept_owner_but_not_mtime() {
    let f = Fixture::new();
    let c = f.ctx();
    write(&c.join("d/a"), "a", 0o644, 1);
    write(&c.join("d/b"), "b", 0o644, 1);
    let s = spec(&["d"], "/d");
    let d0 = f.plan(&s).unwrap();
    assert!(d0.created_by_source.starts_with("dir:"));
    set_mtime(&c.join("d/a"), 99);
    set_mtime(&c.join("d"), 99);
    assert_eq!(f.plan(&s).unwrap().digest, d0.digest, "mtime ignored");
    // A copy from the context is owned by root whoever owns the files:
    // their owner (the machine's checkout user) is not in the digest, so a
    // cache key is the same on every machine. A copy from a root keeps its
    // owners: there they are.
    let from_root = || plan(&CopySource::Root(&c), &s).unwrap().digest;
    let root0 = from_root();
    chown(&c.join("d/b"), 5, 5);
    assert_eq!(
        f.plan(&s).unwrap().digest,
        d0.digest,
        "context owner ignored"
    );
    assert_ne!(from_root(), root0, "a kept owner is in the digest");
    let mut seen = vec![d0.digest.clone()];
    let changes: [&dyn Fn(); 4] = [
        &|| fs::write(c.join("d/a"), "A").unwrap(),
        &|| fs::set_permissions(c.join("d/a"), fs::Permissions::from_mode(0o600)).unwrap(),
        &|| symlink("a", c.join("d/l")).unwrap(),
        &|| fs::rename(c.join("d/b"), c.join("d/c")).unwrap(),
    ];
    for change in changes {
        change();
        let d = f.plan(&s).unwrap().digest;
        assert!(!seen.contains(&d), "each change changes the digest");
        seen.push(d);
    }
    let one = f.plan(&spec(&["d/a"], "/a")).unwrap();
    assert!(one.created_by_source.starts_with("file:"));
    let multi = f.plan(&spec(&["d/a", "d/c"], "/m/")).unwrap();
    assert!(multi.created_by_source.starts_with("multi:"));
}

/// Every regular file below `dir` (no link followed) holds no byte of
/// what lies outside the context.
fn holds_no_secret(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().all(|e| {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            holds_no_secret(&p)
        } else {
            !m.is_file() || !fs::read(&p).unwrap().windows(6).any(|w| w == b"SECRET")
        }
    })
}

/// Generated contexts and destinations full of links that point out (to
/// `/`, `..` chains, absolute paths of a secret and of an outside
/// directory): whatever is copied, nothing outside the context is read
/// and nothing outside the destination root is written.
#[test]
fn generated_links_never_lead_a_copy_out() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..400 {
        let f = Fixture::new();
        let top = f.top.path();
        let secret = top.join("secret");
        fs::create_dir(&secret).unwrap();
        fs::write(secret.join("s"), "SECRET").unwrap();
        let outside = top.join("outside");
        fs::create_dir(&outside).unwrap();
        let secret_s = secret.display().to_string();
        let outside_s = outside.display().to_string();
        let outside_new = format!("{outside_s}/new");
        let targets = [
            "/",
            "/etc",
            "..",
            "../..",
            "../secret",
            "../../secret/s",
            "a/../../secret",
            secret_s.as_str(),
            "d",
            "d/f",
            "l0",
            "l1",
        ];
        let c = f.ctx();
        write(&c.join("d/f"), "ok", 0o644, 1);
        for i in 0..4 {
            let dir = rng.pick(&["", "d/"]);
            let _ = symlink(rng.pick(&targets), c.join(format!("{dir}l{i}")));
        }
        let droot = f.root();
        for i in 0..3 {
            let t = rng.pick(&[
                outside_s.as_str(),
                outside_new.as_str(),
                "/",
                "..",
                "../../outside",
                "../outside/new",
                "x",
                "dl0",
            ]);
            let _ = symlink(t, droot.join(format!("dl{i}")));
        }
        let src = rng.pick(&[
            ".", "d", "d/f", "d/f", "l0", "l1", "l2", "l3", "d/l1", "l*", "d/*", "*/f",
        ]);
        let dest = rng.pick(&["/", "/dl0", "/dl1", "/dl1/", "/dl2/x", "/new/", "dl0/sub/f"]);
        let mut s = spec(&[src], dest);
        s.parents = rng.next() % 4 == 0;
        let r = f.copy(&s);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "case {case}: {src} -> {dest}: {r:?}"
        );
        assert_eq!(fs::read_to_string(secret.join("s")).unwrap(), "SECRET");
        assert!(holds_no_secret(&droot), "case {case}: {src} -> {dest}");
        assert_eq!(
            fs::read_to_string(top.join("sentinel")).unwrap(),
            "untouched"
        );
        assert_eq!(fs::read_dir(top).unwrap().count(), 5, "case {case}");
    }
}

#[test]
fn a_source_changed_after_the_plan_fails_the_copy() {
    let f = Fixture::new();
    write(&f.ctx().join("d/a"), "a", 0o644, 1);
    let s = spec(&["d"], "/d");
    let c = f.context();
    let p = plan(&CopySource::Context(&c), &s).unwrap();
    fs::write(f.ctx().join("d/a"), "longer").unwrap();
    let e = apply(&p, &CopySource::Context(&c), &s, &f.root()).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::Changed { .. }), "{e}");
    // Replaced by another file (another inode: the old one is kept) of the
    // same size.
    let p = plan(&CopySource::Context(&c), &s).unwrap();
    fs::rename(f.ctx().join("d/a"), f.ctx().join("old")).unwrap();
    fs::write(f.ctx().join("d/a"), "LONGER").unwrap();
    let e = apply(&p, &CopySource::Context(&c), &s, &f.root()).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::Changed { .. }), "{e}");
}

/// Generated symbolic `--chmod` values give the mode chmod(1) gives (with
/// no umask) to a file of the same starting mode.
#[test]
fn generated_symbolic_chmod_matches_chmod_1() {
    if !image_testsupport::tools::have("chmod") {
        return;
    }
    let chmod = "chmod";
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let f = Fixture::new();
    let probe = f.top.path().join("probe");
    for case in 0..300 {
        let clauses = 1 + rng.next() % 3;
        let spec_text: Vec<String> = (0..clauses)
            .map(|_| {
                let who = rng.pick(&["", "u", "g", "o", "a", "ug", "go", "uo"]);
                let op = rng.pick(&["+", "-", "="]);
                let perms: String = "rwxXst".chars().filter(|_| rng.next() % 3 == 0).collect();
                format!("{who}{op}{perms}")
            })
            .collect();
        let spec_text = spec_text.join(",");
        let start = (rng.next() % 0o10000) as u32;
        write(&f.ctx().join("x"), "x", start, 1);
        // Set again: a set-group-ID bit survives fs::write's open as root.
        fs::set_permissions(f.ctx().join("x"), fs::Permissions::from_mode(start)).unwrap();
        fs::copy(f.ctx().join("x"), &probe).unwrap();
        fs::set_permissions(&probe, fs::Permissions::from_mode(start)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask 0 && {chmod} -- \"$0\" \"$1\""))
            .arg(&spec_text)
            .arg(&probe)
            .output()
            .unwrap();
        assert!(out.status.success(), "{spec_text}: {out:?}");
        let want = fs::metadata(&probe).unwrap().mode() & 0o7777;
        let mut s = spec(&["x"], "/x");
        s.chmod = Some(spec_text.clone());
        f.copy(&s).unwrap();
        let got = fs::metadata(f.root().join("x")).unwrap().mode() & 0o7777;
        assert_eq!(got, want, "case {case}: {start:o} with {spec_text}");
    }
}

/// A source file rewritten in place (same inode, same size, other bytes)
/// between the plan and the copy: the layer would not hold what the cache
/// key says it holds, so the copy fails, for a file in a copied directory
/// and for a file named as the source.
#[test]
fn a_source_rewritten_in_place_with_the_same_size_fails_the_copy() {
    let f = Fixture::new();
    write(&f.ctx().join("d/a"), "aaaa", 0o644, 1);
    let c = f.context();
    for s in [spec(&["d"], "/d"), spec(&["d/a"], "/a")] {
        fs::write(f.ctx().join("d/a"), "aaaa").unwrap();
        let p = plan(&CopySource::Context(&c), &s).unwrap();
        let ino = fs::metadata(f.ctx().join("d/a")).unwrap().ino();
        fs::write(f.ctx().join("d/a"), "bbbb").unwrap();
        assert_eq!(fs::metadata(f.ctx().join("d/a")).unwrap().ino(), ino);
        let e = apply(&p, &CopySource::Context(&c), &s, &f.root()).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert!(matches!(e, CopyError::Changed { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    }
}

/// A destination nested deeper than the walk bound is refused before
/// anything is made (each component would be resolved from the root:
/// quadratic in the depth).
#[test]
fn a_destination_deeper_than_the_bound_is_refused() {
    let f = Fixture::new();
    write(&f.ctx().join("a"), "a", 0o644, 1);
    let deep = "/d".repeat(image_build::copy::MAX_DEPTH + 1) + "/";
    let e = f.copy(&spec(&["a"], &deep)).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::TooLarge { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    assert_eq!(fs::read_dir(f.root()).unwrap().count(), 0);
    // At the bound it is made.
    let ok = "/d".repeat(image_build::copy::MAX_DEPTH) + "/";
    f.copy(&spec(&["a"], &ok)).unwrap();
}
/// A glob matches names that are not UTF-8 (and names with a newline) and
/// copies them under their own bytes, as Docker does; none is lost.
#[test]
fn a_glob_copies_names_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let odd = OsStr::from_bytes(b"\xff\xfe.txt");
    fs::write(f.ctx().join(odd), "odd").unwrap();
    fs::write(f.ctx().join("new\nline.txt"), "nl").unwrap();
    fs::write(f.ctx().join("plain.txt"), "plain").unwrap();
    let r = f.copy(&spec(&["*.txt"], "/d/")).unwrap();
    assert_eq!(r.files, 3);
    assert_eq!(fs::read(f.root().join("d").join(odd)).unwrap(), b"odd");
    assert_eq!(fs::read(f.root().join("d/new\nline.txt")).unwrap(), b"nl");
    assert_eq!(fs::read(f.root().join("d/plain.txt")).unwrap(), b"plain");
    // The plan's digest tells the odd name from its lossy spelling.
    let f2 = Fixture::new();
    fs::write(f2.ctx().join("\u{fffd}\u{fffd}.txt"), "odd").unwrap();
    fs::write(f2.ctx().join("new\nline.txt"), "nl").unwrap();
    fs::write(f2.ctx().join("plain.txt"), "plain").unwrap();
    let s = spec(&["*.txt"], "/d/");
    assert_ne!(f.plan(&s).unwrap().digest, f2.plan(&s).unwrap().digest);
    // --parents must join such a name into the destination's path as
    // text: a typed refusal, never a renamed copy.
    let mut s = spec(&["*.txt"], "/p/");
    s.parents = true;
    let e = f.plan(&s).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::Unsupported { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

/// Hostile `ADD` archives (names with `..` or absolute, links out then
/// written through, hard links out, a link chain, a destination that is
/// itself a link out): whatever each does, nothing lands outside the
/// destination root, and a refusal is a typed unpack error.
#[test]
fn hostile_add_archives_stay_in_the_root() {
    use image_testsupport::tar::{archive, Entry as E};
    let pwn = |n: &str| E::file(n, "pwned");
    let cases = [
        ("dotdot", vec![pwn("../../sentinel")]),
        ("absolute", vec![pwn("/../../sentinel")]),
        (
            "link out then through",
            vec![E::symlink("out", "../../.."), pwn("out/sentinel")],
        ),
        (
            "absolute link then through",
            vec![E::symlink("out", "/"), pwn("out/../sentinel")],
        ),
        (
            "chain",
            vec![
                E::symlink("a", "b"),
                E::symlink("b", "c/../../.."),
                E::dir("c"),
                pwn("a/sentinel"),
            ],
        ),
        (
            "hard link out",
            vec![E::hardlink("h", "../../sentinel"), pwn("h")],
        ),
        (
            "hard link through a link",
            vec![
                E::symlink("up", "../.."),
                E::hardlink("h", "up/sentinel"),
                pwn("h"),
            ],
        ),
    ];
    for (name, entries) in &cases {
        for dest in ["/x/", "/via/"] {
            let f = Fixture::new();
            // The destination's own path goes through a link that points
            // out of the root: it resolves inside it.
            symlink("../..", f.root().join("via")).unwrap();
            fs::write(f.ctx().join("a.tar"), archive(entries)).unwrap();
            match f.copy(&add_spec(&["a.tar"], dest)) {
                Ok(_) => {}
                Err(e @ CopyError::Unpack { .. }) => {
                    eprintln!("{name} {dest}: {e}: {:?}", e.kind());
                }
                Err(e) => panic!("{name} {dest}: {e:?}"),
            }
            f.sentinel_intact();
        }
    }
}

/// A hostile base's `/etc/passwd` that is not a regular file (a FIFO, a
/// device node) is refused for `--chown` without being opened: opening
/// one has effects (a writer waiting on the FIFO goes on, a device acts),
/// and nothing is written.
#[test]
fn a_chown_database_that_is_not_regular_is_refused_unopened() {
    let f = Fixture::new();
    write(&f.ctx().join("a"), "a", 0o644, 1);
    fs::create_dir(f.root().join("etc")).unwrap();
    let fifo = FifoProbe::new(&f.root().join("etc/passwd"));
    let mut s = spec(&["a"], "/out");
    s.chown = Some("app".into());
    let e = f.copy(&s).unwrap_err();
    assert!(!fifo.was_opened(), "the FIFO was opened for reading");
    assert!(matches!(e, CopyError::Write { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!f.root().join("out").exists());
    f.sentinel_intact();
}

/// A hostile base for `--chown`: a 100 MB (sparse) `/etc/passwd` is
/// refused by its size before it is read whole, typed, with nothing
/// written; `/etc` a link to `/` resolves inside the root.
#[test]
fn chown_databases_are_bounded_and_read_in_the_root() {
    let f = Fixture::new();
    write(&f.ctx().join("a"), "a", 0o644, 1);
    fs::create_dir(f.root().join("etc")).unwrap();
    let big = fs::File::create(f.root().join("etc/passwd")).unwrap();
    big.set_len(100 << 20).unwrap();
    let mut s = spec(&["a"], "/out");
    s.chown = Some("app".into());
    let e = f.copy(&s).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CopyError::TooLarge { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    assert!(!f.root().join("out").exists());
    // /etc -> / : the root's own /passwd is read, not the host's.
    fs::remove_file(f.root().join("etc/passwd")).unwrap();
    fs::remove_dir(f.root().join("etc")).unwrap();
    symlink("/", f.root().join("etc")).unwrap();
    fs::write(f.root().join("passwd"), "app:x:4242:4343::/:/bin/sh\n").unwrap();
    f.copy(&s).unwrap();
    let t = tree(&f.root());
    assert_eq!((t["out"].uid, t["out"].gid), (4242, 4343));
    f.sentinel_intact();
}
