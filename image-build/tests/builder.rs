//! The builder API (`image_build::builder`): images from scratch or a base,
//! layers from files in memory, directories and tar streams, config and
//! history, commit and tags; read back by our store, skopeo, umoci and a
//! container of the runtime. A missing tool or privilege skips a test
//! loudly (fails under CI=true).

#[path = "../examples/busybox_image.rs"]
#[allow(dead_code)]
mod busybox_image;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use image_build::builder::{File, ImageBuilder};
use image_build::{BuilderError, Layer};
use image_core::config::History;
use image_core::{Classify, Compression, DescriptorExt, ErrorKind, MediaType, Platform};
use image_overlay::list::{list, EntryKind, ListOptions};
use image_store::gc::GcOptions;
use image_store::tags::normalize_name;
use image_store::{resolve_image, Ingester, Manager, OciDir, Provider, TagStore};
use image_testsupport::codec::compress;
use image_testsupport::process::run_checked;
use image_testsupport::tar::TarBuf;
use image_testsupport::tools::{have, root, BUSYBOX};

fn history(by: &str) -> History {
    History {
        created_by: Some(by.to_owned()),
        ..History::default()
    }
}

fn store() -> (tempfile::TempDir, OciDir) {
    image_testsupport::store::oci_dir()
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64")
}

/// The entries of a layer blob of the store, by path: (kind, mode, uid,
/// gid, mtime, link target, size).
type Listed = BTreeMap<String, (EntryKind, u32, u64, u64, i64, Option<String>, u64)>;

fn entries(store: &OciDir, layer: &Layer) -> Listed {
    let digest = layer.descriptor.checked_digest().expect("digest");
    let mut out = Listed::new();
    let report = list(
        store.reader(&digest).expect("blob"),
        &ListOptions::default(),
        |e| {
            let target = e
                .link_target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned());
            out.insert(
                e.path_lossy(),
                (e.kind, e.mode, e.uid, e.gid, e.mtime, target, e.size),
            );
        },
    )
    .expect("list");
    assert_eq!(report.diff_id, layer.diff_id, "diff ID of {digest}");
    assert_eq!(report.compression, Compression::Gzip);
    out
}

/// The files of the in-memory layer: owners, modes, mtimes, a symlink and
/// a hard link, an implied parent (`srv`) and a path given in a form to
/// clean.
fn files() -> Vec<File> {
    vec![
        File::regular("/etc/motd", b"hello\n".to_vec(), 0o644).mtime(1_600_000_000),
        File::dir("etc", 0o750).owner(0, 42).mtime(1_500_000_000),
        File::regular(
            "srv/app/./run.sh",
            b"#!/bin/sh\necho run\n".to_vec(),
            0o4755,
        )
        .owner(1000, 1001)
        .mtime(1_700_000_000),
        File::symlink("/etc/issue", "motd").mtime(1_600_000_001),
        File::hardlink("/srv/app/again.sh", "/srv/app/run.sh"),
    ]
}

fn a_dir(root: &Path) {
    std::fs::create_dir_all(root.join("opt/tool")).expect("mkdir");
    std::fs::write(root.join("opt/tool/data"), b"from a directory\n").expect("write");
}

fn tar_stream() -> Vec<u8> {
    TarBuf::new()
        .dir("var/")
        .file("var/from-tar", b"tar\n")
        .end()
}

/// A store with `example/built:1` and `example/built:latest`: scratch plus
/// files, an ENV step, a directory, a gzip tar and a zstd tar.
struct Built {
    _tmp: tempfile::TempDir,
    store: OciDir,
    layers: Vec<Layer>,
    built: image_build::builder::Built,
}

fn build() -> Built {
    let (tmp, store) = store();
    let dir = tmp.path().join("dir");
    a_dir(&dir);
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let mut layers = vec![b.add_files(&files(), history("files")).expect("files")];
    b.add_history(history("ENV GREETING=hi"));
    layers.push(b.add_dir(&dir, history("dir")).expect("dir"));
    let tar = tar_stream();
    let gz = compress(&tar, Compression::Gzip);
    layers.push(b.add_tar(&gz[..], history("tar.gz")).expect("gzip tar"));
    let zst = compress(&tar, Compression::Zstd);
    layers.push(b.add_tar(&zst[..], history("tar.zst")).expect("zstd tar"));
    assert_eq!(b.layers(), layers.as_slice());
    let c = b.config_mut();
    let run = c.config.get_or_insert_with(Default::default);
    run.env = Some(vec!["GREETING=hi".into()]);
    run.cmd = Some(vec!["/srv/app/run.sh".into()]);
    run.working_dir = Some("/srv/app".into());
    run.user = Some("1000:1001".into());
    run.labels = Some(BTreeMap::from([("org.example".into(), "yes".into())]));
    c.author = Some("builder test".into());
    let built = b
        .commit(&["example/built:1", "example/built"])
        .expect("commit");
    Built {
        _tmp: tmp,
        store,
        layers,
        built,
    }
}

#[test]
fn scratch_plus_files_dir_and_tars_reads_back_as_built() {
    let b = build();
    assert_eq!(
        b.built.tags,
        [
            "docker.io/example/built:1",
            "docker.io/example/built:latest"
        ]
    );
    let image = resolve_image(&b.store, "example/built:1", None).expect("resolve");
    assert_eq!(image.manifest.digest(), b.built.manifest.digest());
    assert_eq!(*image.manifest.media_type(), MediaType::OciManifest);
    let latest = resolve_image(&b.store, "example/built", None).expect("latest");
    assert_eq!(latest.id(), image.id());

    // Layers: what the builder returned, in order, with their diff IDs.
    let diff_ids: Vec<_> = b.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(image.diff_ids(), diff_ids.as_slice());
    let descriptors: Vec<_> = b.layers.iter().map(|l| l.descriptor.clone()).collect();
    assert_eq!(image.layers(), descriptors.as_slice());
    // The gzip and the zstd tar are the same tar: one diff ID, one blob.
    assert_eq!(b.layers[2], b.layers[3]);

    // History: one entry per step, empty_layer only for the ENV step.
    let pattern: Vec<(Option<&str>, bool)> = image
        .history()
        .iter()
        .map(|h| (h.created_by.as_deref(), h.empty_layer))
        .collect();
    assert_eq!(
        pattern,
        [
            (Some("files"), false),
            (Some("ENV GREETING=hi"), true),
            (Some("dir"), false),
            (Some("tar.gz"), false),
            (Some("tar.zst"), false),
        ]
    );
    let created = image.config.file().created.clone().expect("created");
    assert!(image
        .history()
        .iter()
        .all(|h| h.created.as_deref() == Some(&created)));

    // Config fields as set; platform from scratch.
    let file = image.config.file();
    assert_eq!(
        (file.os.as_str(), file.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(file.author.as_deref(), Some("builder test"));
    let run = file.config.clone().expect("run config");
    assert_eq!(run.cmd, Some(vec!["/srv/app/run.sh".to_string()]));
    assert_eq!(run.user.as_deref(), Some("1000:1001"));
    assert_eq!(
        run.labels
            .expect("labels")
            .get("org.example")
            .map(String::as_str),
        Some("yes")
    );

    // The in-memory layer: pack's order, parents implied, owners, modes,
    // mtimes, the symlink and the hard link as written.
    let listed = entries(&b.store, &b.layers[0]);
    let paths: Vec<&str> = listed.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/issue",
            "etc/motd",
            "srv/",
            "srv/app/",
            "srv/app/again.sh",
            "srv/app/run.sh"
        ]
    );
    let mut order = Vec::new();
    list(
        b.store
            .reader(&b.layers[0].descriptor.checked_digest().expect("digest"))
            .expect("blob"),
        &ListOptions::default(),
        |e| order.push(e.path_lossy()),
    )
    .expect("list");
    assert_eq!(order, paths, "entries in pack's order");
    use EntryKind::*;
    assert_eq!(
        listed["etc/"],
        (Directory, 0o750, 0, 42, 1_500_000_000, None, 0)
    );
    assert_eq!(
        listed["etc/motd"],
        (Regular, 0o644, 0, 0, 1_600_000_000, None, 6)
    );
    assert_eq!(
        listed["etc/issue"],
        (Symlink, 0o777, 0, 0, 1_600_000_001, Some("motd".into()), 0)
    );
    assert_eq!(listed["srv/"], (Directory, 0o755, 0, 0, 0, None, 0));
    // The link sorts first, so it carries the data; the file links to it.
    assert_eq!(
        listed["srv/app/again.sh"],
        (Regular, 0o4755, 1000, 1001, 1_700_000_000, None, 19)
    );
    assert_eq!(
        listed["srv/app/run.sh"],
        (
            HardLink,
            0o4755,
            1000,
            1001,
            1_700_000_000,
            Some("srv/app/again.sh".into()),
            0
        )
    );
    let dir = entries(&b.store, &b.layers[1]);
    assert!(dir.contains_key("opt/tool/data"), "{dir:?}");
    let tar = entries(&b.store, &b.layers[2]);
    assert_eq!(tar.keys().collect::<Vec<_>>(), ["var/", "var/from-tar"]);
    // The tar's bytes are kept: its diff ID is the plain stream's digest.
    let plain = image_core::Digest::sha256(&tar_stream());
    assert_eq!(b.layers[2].diff_id, plain);
}

#[test]
fn the_same_inputs_give_the_same_image() {
    let one = |store: &OciDir| {
        let mut b = ImageBuilder::scratch(store, &amd64()).expect("scratch");
        b.config_mut().created = Some("2000-01-01T00:00:00Z".into());
        let h = History {
            created: Some("2000-01-01T00:00:00Z".into()),
            ..history("files")
        };
        b.add_files(&files(), h).expect("files");
        b.commit(&["example/same:1"]).expect("commit")
    };
    let (_t1, s1) = store();
    let (_t2, s2) = store();
    let (a, b) = (one(&s1), one(&s2));
    assert_eq!(a.manifest.digest(), b.manifest.digest());
    assert_eq!(a.config.image_id(), b.config.image_id());
}

#[test]
fn an_image_on_a_base_keeps_its_layers_history_config_and_format() {
    let b = build();
    let mut on =
        ImageBuilder::from_image(&b.store, "example/built:1", Some(&amd64())).expect("base");
    assert_eq!(
        on.config().config.as_ref().and_then(|c| c.user.as_deref()),
        Some("1000:1001")
    );
    let top = on
        .add_files(
            &[File::regular("top", b"top\n".to_vec(), 0o600)],
            history("top"),
        )
        .expect("top");
    on.add_history(history("CMD"));
    let built = on.commit(&["example/on:1"]).expect("commit");
    let image = resolve_image(&b.store, "example/on:1", None).expect("resolve");
    assert_eq!(image.id(), built.config.image_id());
    let mut diff_ids: Vec<_> = b.layers.iter().map(|l| l.diff_id.clone()).collect();
    diff_ids.push(top.diff_id);
    assert_eq!(image.diff_ids(), diff_ids.as_slice());
    assert_eq!(image.history().len(), 7);
    assert!(image.history()[6].empty_layer);
    assert_eq!(*image.manifest.media_type(), MediaType::OciManifest);
    let run = image.config.file().config.clone().expect("run");
    assert_eq!(run.working_dir.as_deref(), Some("/srv/app"));

    let e = ImageBuilder::from_image(&b.store, "example/nope:1", None).expect_err("no base");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BuilderError::Base(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // add_layer reuses a layer already in the store, with no I/O; one
    // not in the store is refused at commit, typed.
    let mut again = ImageBuilder::from_resolved(&b.store, image).expect("resolved");
    again.add_layer(b.layers[1].clone(), history("again"));
    let reused = again.commit(&["example/again:1"]).expect("commit");
    assert_eq!(reused.manifest.layers().len(), 6);
    let mut missing = ImageBuilder::scratch(&b.store, &amd64()).expect("scratch");
    let mut bogus = b.layers[0].clone();
    let absent = image_core::Digest::sha256(b"absent");
    bogus.descriptor = image_core::manifest::descriptor(&MediaType::OciLayerGzip, &absent, 6);
    missing.add_layer(bogus, history("bogus"));
    let e = missing
        .commit(&["example/missing:1"])
        .expect_err("missing layer");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuilderError::MissingLayer { layer: 1, digest } if *digest == absent),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(b.store.resolve_tag("example/missing:1").is_err());
}

#[test]
fn a_bad_tag_is_refused_before_anything_is_written() {
    let (_tmp, store) = store();
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    b.add_files(&files(), history("files")).expect("files");
    let before = store.list().expect("list").len();
    let e = b
        .commit(&["example/ok:1", "Not A Tag!"])
        .expect_err("bad tag");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, BuilderError::InvalidTag { tag, .. } if tag == "Not A Tag!"),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // No config, no manifest, no tag (the layer is left to gc).
    assert_eq!(store.list().expect("list").len(), before);
    assert!(store.tags().expect("tags").is_empty());
}

#[test]
fn paths_that_climb_out_or_clash_are_refused_typed_and_write_nothing() {
    let (_tmp, store) = store();
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let ok = || File::regular("a", b"a".to_vec(), 0o644);
    let cases: Vec<(Vec<File>, &str)> = vec![
        (
            vec![File::regular("../etc/passwd", vec![], 0o644)],
            "escape",
        ),
        (vec![File::regular("a/../../x", vec![], 0o644)], "escape"),
        (vec![File::dir("/", 0o755)], "root"),
        (vec![File::dir("./a/..", 0o755)], "root"),
        (vec![ok(), File::hardlink("l", "../../etc/passwd")], "link"),
        (vec![ok(), File::hardlink("l", "missing")], "link"),
        (
            vec![ok(), File::symlink("s", "a"), File::hardlink("l", "s")],
            "link",
        ),
        (vec![ok(), File::regular("/a", vec![], 0o644)], "dup"),
        (vec![ok(), File::regular("a/b", vec![], 0o644)], "parent"),
    ];
    for (files, what) in cases {
        let e = b.add_files(&files, history("bad")).expect_err(what);
        image_testsupport::chain::assert_said_once(&e);
        let right = match what {
            "escape" | "root" => matches!(e, BuilderError::InvalidPath { .. }),
            "link" => matches!(e, BuilderError::HardlinkTarget { .. }),
            "dup" => matches!(e, BuilderError::DuplicatePath { .. }),
            _ => matches!(e, BuilderError::NotADirectory { .. }),
        };
        assert!(right, "{what}: {e:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}");
    }
    assert!(b.layers().is_empty());
    assert!(store.list().expect("list").is_empty(), "nothing written");
}

/// Generated paths of `..`, `.`, empty and plain components, absolute and
/// relative: each is either refused as `InvalidPath` or lands as its
/// cleaned form inside the root, never climbing out.
#[test]
fn generated_paths_land_inside_the_root_or_are_refused() {
    let (_tmp, store) = store();
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let parts = ["..", ".", "", "a", "b"];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut refused, mut landed) = (0, 0);
    for _ in 0..300 {
        let n = next() % 6 + 1;
        let mut path: Vec<&str> = (0..n).map(|_| parts[(next() % 5) as usize]).collect();
        if next() % 2 == 0 {
            path.insert(0, "");
        }
        let path = format!("{}x", path.join("/") + "/");
        match b.add_files(&[File::regular(&path, vec![], 0o644)], history(&path)) {
            Err(BuilderError::InvalidPath { .. }) => {
                assert!(image_core::path::clean_relative(&path).is_none(), "{path}");
                refused += 1;
            }
            Ok(layer) => {
                let want = image_core::path::clean_relative(&path).expect("cleans");
                let listed = entries(&store, &layer);
                assert!(listed.contains_key(&want), "{path}: {listed:?}");
                assert!(listed.keys().all(|p| !p.split('/').any(|c| c == "..")));
                landed += 1;
            }
            Err(e) => panic!("{path}: {e:?}"),
        }
    }
    assert!(
        refused > 10 && landed > 10,
        "{refused} refused, {landed} landed"
    );
}

#[test]
fn a_symlink_pointing_out_of_the_directory_is_packed_as_a_link() {
    let (tmp, store) = store();
    let dir = tmp.path().join("dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"secret\n").expect("write");
    std::os::unix::fs::symlink(&outside, dir.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("../outside/secret", dir.join("rel")).expect("symlink");
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let layer = b.add_dir(&dir, history("dir")).expect("dir");
    let listed = entries(&store, &layer);
    let out = outside.to_str().expect("utf-8").to_owned();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed["escape"].0, EntryKind::Symlink);
    assert_eq!(listed["escape"].5.as_deref(), Some(out.as_str()));
    assert_eq!(listed["rel"].5.as_deref(), Some("../outside/secret"));
}

#[test]
fn a_tar_that_would_not_unpack_leaves_no_blob() {
    let (_tmp, store) = store();
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let mut cut = tar_stream();
    cut.truncate(700);
    let e = b.add_tar(&cut[..], history("cut")).expect_err("truncated");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BuilderError::Tar { layer: 1, .. }), "{e:?}");
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
    let e = b.add_tar(&xz[..], history("xz")).expect_err("xz");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, BuilderError::UnsupportedCompression { format: "xz" }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(store.list().expect("list").is_empty());
    assert!(store.ingests().expect("ingests").is_empty());
}

/// gc with no grace beside a builder (its lease held) removes nothing the
/// builder added nor its base, even with the base's tag gone.
#[test]
fn gc_beside_a_builder_removes_nothing_it_added() {
    let b = build();
    let gc = GcOptions::default().grace(std::time::Duration::ZERO);
    let mut on = ImageBuilder::from_image(&b.store, "example/built:1", None).expect("base");
    for t in ["example/built:1", "example/built:latest"] {
        assert!(b.store.remove_tag(t).expect("untag"));
    }
    b.store.gc(&gc).expect("gc");
    // Content of its own (the base's layers are protected by the base).
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("new"), b"new in a dir\n").expect("write");
    let new = File::regular("new", b"new in memory\n".to_vec(), 0o644);
    let added = [
        on.add_files(&[new], history("files")).expect("files"),
        on.add_dir(tmp.path(), history("dir")).expect("dir"),
    ];
    let report = b.store.gc(&gc).expect("gc");
    for l in &added {
        let d = l.descriptor.checked_digest().expect("digest");
        assert!(
            b.store.exists(&d).expect("exists"),
            "gc removed {d}: {report:?}"
        );
    }
    let built = on.commit(&["example/after-gc:1"]).expect("commit");
    b.store.gc(&gc).expect("gc");
    let image = resolve_image(&b.store, "example/after-gc:1", None).expect("resolve");
    assert_eq!(image.id(), built.config.image_id());
    for (d, _) in image.blobs() {
        assert!(b.store.exists(&d).expect("exists"), "{d} missing");
    }
    let fsck = b.store.fsck(&Default::default()).expect("fsck");
    assert!(fsck.is_clean(), "{fsck:?}");
    // The builder's lease ended with the commit: the untagged base's
    // own layer-free leftovers are collectable again, the image is not.
    assert!(b.store.held_leases().expect("leases").is_empty());
}

#[test]
fn skopeo_and_umoci_read_the_built_image() {
    let b = build();
    let layout = b.store.root().to_owned();
    let name = normalize_name("example/built:1").expect("name");
    if have("skopeo") {
        let src = format!("oci:{}:{name}", layout.display());
        let out = run_checked(120, "skopeo", &["inspect", &src]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let layers: Vec<String> = v["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l.as_str().expect("str").to_owned())
            .collect();
        let ours: Vec<String> = b
            .layers
            .iter()
            .map(|l| l.descriptor.digest().to_string())
            .collect();
        assert_eq!(layers, ours);
        assert_eq!(v["Labels"]["org.example"], "yes");
        assert_eq!(v["Architecture"], "amd64");
    }
    if !(have("umoci") && root("umoci unpack keeps owners only as root")) {
        return;
    }
    let bundle = b._tmp.path().join("bundle");
    let image = format!("{}:{name}", layout.display());
    run_checked(
        120,
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().expect("utf-8")],
    );
    let rootfs = bundle.join("rootfs");
    let md = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).expect(p);
    assert_eq!(
        std::fs::read(rootfs.join("etc/motd")).expect("motd"),
        b"hello\n"
    );
    let (etc, motd, run) = (md("etc"), md("etc/motd"), md("srv/app/run.sh"));
    assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 0, 42));
    assert_eq!(motd.mtime(), 1_600_000_000);
    assert_eq!(
        (run.mode() & 0o7777, run.uid(), run.gid(), run.mtime()),
        (0o4755, 1000, 1001, 1_700_000_000)
    );
    assert_eq!(run.ino(), md("srv/app/again.sh").ino(), "hard link");
    assert_eq!(
        std::fs::read_link(rootfs.join("etc/issue")).expect("link"),
        Path::new("motd")
    );
    assert_eq!(md("srv").mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(rootfs.join("opt/tool/data")).expect("dir file"),
        b"from a directory\n"
    );
    assert_eq!(
        std::fs::read(rootfs.join("var/from-tar")).expect("tar"),
        b"tar\n"
    );
}

/// The busybox image of the example (made with add_files from
/// busybox-static) runs in a container of our runtime.
#[cfg(feature = "runtime")]
#[test]
fn busybox_image_built_with_add_files_runs() {
    use image_runtime::snapshots::{Driver, Snapshots};
    use image_runtime::{Runtime, RuntimeKind, Stdio};

    if !image_testsupport::tools::ready(&["runc"]) {
        return;
    }
    let (tmp, store) = store();
    let id = busybox_image::busybox_image(&store, "example/busybox:1", Path::new(BUSYBOX))
        .expect("busybox image");
    let image = resolve_image(&store, "example/busybox:1", None).expect("resolve");
    assert_eq!(image.id(), &id);
    let snapshots =
        Snapshots::open(&tmp.path().join("snapshots"), Driver::Copy).expect("snapshots");
    let rt = Runtime::oci(&tmp.path().join("state"), RuntimeKind::Runc)
        .expect("runtime")
        .with_snapshots(snapshots)
        .expect("with snapshots");
    let script = "echo hello from $(id -u); ls /bin/sh; stat -c %a /tmp; cat /etc/group";
    let c = rt
        .container_from_image(&store, "example/busybox:1")
        .expect("prepare")
        .cmd(["/bin/sh", "-c", script])
        .create()
        .expect("create");
    let (c, exit) = c
        .run(Stdio::capture(), std::time::Duration::from_secs(60))
        .expect("run");
    c.delete().expect("delete");
    let sn = rt.snapshots().expect("snapshots").snapshotter();
    for _ in 0..8 {
        for i in sn.list().unwrap_or_default() {
            let _ = sn.remove(&i.name);
        }
    }
    let exit = exit.expect("finished in time");
    let stdout = String::from_utf8_lossy(&exit.stdout);
    assert!(exit.status.success(), "{exit:?}");
    assert_eq!(stdout, "hello from 0\n/bin/sh\n1777\nroot:x:0:\n");
}

/// Hostile in-memory files: a path longer than PATH_MAX (one entry per
/// component would make a quadratic tree of implied parents, and no
/// unpack could make it) is refused typed before anything is written; a
/// few thousand files deep in one directory are checked in linear work
/// (each stops at its nearest known parent: the per-component walk of
/// every file's every ancestor took minutes here).
#[test]
fn deep_in_memory_paths_are_bounded_and_checked_linearly() {
    let (_tmp, store) = store();
    let mut b = ImageBuilder::scratch(&store, &amd64()).expect("scratch");
    let long = format!("{}f", "a/".repeat(5000));
    let e = b
        .add_files(&[File::regular(long, vec![], 0o644)], history("long"))
        .expect_err("a path beyond PATH_MAX");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, BuilderError::InvalidPath { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(store.list().expect("list").is_empty(), "nothing written");
    // 3000 files in a directory 1000 deep: 3 million ancestor look-ups of
    // up to 1000 components each before; 3000 after.
    let dir = "d/".repeat(1000);
    let files: Vec<File> = (0..3000)
        .map(|i| File::regular(format!("{dir}{i}"), vec![], 0o644))
        .collect();
    let layer = b.add_files(&files, history("deep")).expect("deep files");
    let listed = entries(&store, &layer);
    assert_eq!(listed.len(), 3000 + 1000);
}

/// `commit_under`: the image is written untagged and every blob it needs,
/// its base's included, is kept by the caller's lease after the builder's
/// ends: gc with no grace, the base's tags gone, removes none of them;
/// once the caller's lease ends they are collectable.
#[test]
fn commit_under_keeps_the_whole_image_under_the_callers_lease() {
    let b = build();
    let gc = GcOptions::default().grace(std::time::Duration::ZERO);
    let keep = image_store::Leases::begin_lease(&b.store).expect("lease");
    let mut on = ImageBuilder::from_image(&b.store, "example/built:1", None).expect("base");
    let new = File::regular("new", b"under a lease\n".to_vec(), 0o644);
    on.add_files(&[new], history("files")).expect("files");
    let built = on.commit_under(&keep).expect("commit");
    assert!(built.tags.is_empty());
    for t in ["example/built:1", "example/built:latest"] {
        assert!(b.store.remove_tag(t).expect("untag"));
    }
    b.store.gc(&gc).expect("gc");
    let image = image_store::image::resolve_descriptor(
        &b.store,
        "built",
        &built.manifest.descriptor(),
        None,
    )
    .expect("resolve");
    for (d, _) in image.blobs() {
        assert!(b.store.exists(&d).expect("exists"), "{d} missing");
    }
    keep.release().expect("release");
    b.store.gc(&gc).expect("gc");
    assert!(!b.store.exists(built.manifest.digest()).expect("exists"));
}

/// The builder's tracker sees a directory's layer as it is packed, and its
/// interrupt stops the next `add_dir` and `add_tar` with `Cancelled`: no
/// layer added, no blob kept, no ingest left.
#[test]
fn the_builders_tracker_reports_a_layer_and_its_interrupt_stops_the_next() {
    use image_core::progress::{Interrupt, Recorder};
    let (tmp, store) = store();
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("big"), vec![7u8; 1 << 20]).unwrap();
    let recorder = std::sync::Arc::new(Recorder::new());
    let interrupt = Interrupt::new();
    let mut b = ImageBuilder::scratch(&store, &amd64()).unwrap();
    b.with_tracker(
        image_core::Tracker::default()
            .with_progress(recorder.clone())
            .with_interrupt(interrupt.clone()),
    );
    b.add_dir(&dir, history("dir")).unwrap();
    let packed = &recorder.items()["layer"];
    assert!(packed.done > 0 && packed.finished, "{packed:?}");
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    let blobs = store.list().unwrap().len();

    interrupt.set();
    std::fs::write(dir.join("more"), b"more").unwrap();
    let e = b.add_dir(&dir, history("again")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e:?}");
    let tar = TarBuf::new().file("a", b"a").end();
    let e = b.add_tar(&tar[..], history("tar")).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e:?}");

    assert_eq!(b.layers().len(), 1);
    assert_eq!(store.list().unwrap().len(), blobs);
    assert!(store.ingests().unwrap().is_empty());
}
