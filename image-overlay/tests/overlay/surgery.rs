//! Image surgery: squash, export, rebase and mutate, each result checked
//! against an independent view (umoci's unpack of the original, GNU tar's
//! extraction of an export, skopeo's inspection of the store as a layout).

use std::process::Command;

use image_core::{Classify, Compression, ErrorKind};
use image_overlay::surgery::{
    export, mutate, rebase, squash, MergeLimits, Mutation, NewLayer as Added, SquashFrom,
    SquashOptions, SurgeryError, ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME,
};
use image_store::image::resolve_image;
use image_store::mutate::NewLayer;
use image_store::tags::normalize_name;
use image_store::OciDir;

use crate::common::{ready, snapshot, TarBuf};
use crate::umoci::{
    assert_same_image_tree, build_image, hardlink_groups, layer_from_tar, run, umoci_unpack,
};

/// A stack of layers with every kind of change a later layer makes to an
/// earlier one: deletes, opaque directories, a directory replaced by a
/// file, a whiteout then the path made again, overwritten hard-link
/// targets, symlinks, duplicates in one layer.
fn stack(store: &OciDir) -> Vec<NewLayer> {
    let l0 = TarBuf::new()
        .dir("etc/")
        .file("etc/motd", b"base motd\n")
        .dir("a/")
        .file("a/x", b"old x")
        .file("a/y", b"y")
        .dir("tmp/")
        .file("tmp/pass", b"hunter2")
        .dir("h/")
        .file("h/orig", b"shared by two names")
        .hardlink("h/link", "h/orig")
        .hardlink("h/link2", "h/link")
        .symlink("s", "a/x")
        .dir("opq/")
        .file("opq/old1", b"1")
        .dir("opq/sub/")
        .file("opq/sub/old2", b"2")
        .dir("gone/")
        .file("gone/f", b"f")
        .dir("dirfile/")
        .file("dirfile/child", b"c")
        .end();
    let l1 = TarBuf::new()
        .file("tmp/.wh.pass", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new")
        .file("h/orig", b"replaced; the links keep the old data")
        .file("a/x", b"new x")
        .file(".wh.gone", b"")
        .file("dup", b"first")
        .file("dup", b"second wins")
        .end();
    let l2 = TarBuf::new()
        .dir("gone/")
        .file("gone/g", b"made again")
        .file("s", b"a file where a link was")
        .file("a/.wh.y", b"")
        .dir("l2/")
        .file("l2/f", b"linked in l2")
        .hardlink("l2/g", "l2/f")
        .file(".wh.dirfile", b"")
        .file("dirfile", b"now a file")
        .end();
    let l3 = TarBuf::new()
        .file("etc/motd", b"top motd\n")
        .symlink("etc/link", "../a/x")
        .file("opq/sub2", b"s2")
        .end();
    [l0, l1, l2, l3]
        .iter()
        .map(|t| layer_from_tar(store, t, Compression::Gzip))
        .collect()
}

fn tools(names: &[&str]) -> bool {
    ready(names)
}

#[test]
fn squash_gives_the_same_root_filesystem_for_every_base() {
    if !tools(&["umoci"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let layers = stack(&store);
    let original = build_image(&store, &layers, "stack:1");
    let expected = umoci_unpack(&layout, "stack:1", &work.path().join("orig"));
    for (i, from) in [
        SquashFrom::All,
        SquashFrom::Layer(1),
        SquashFrom::Layer(2),
        SquashFrom::Layer(3),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("stack:squashed{i}");
        let report = squash(&store, "stack:1", &tag, &SquashOptions::new(from.clone()))
            .unwrap_or_else(|e| panic!("squash {from:?}: {e:?}"));
        let got = umoci_unpack(&layout, &tag, &work.path().join(format!("sq{i}")));
        assert_same_image_tree(&expected, &got, false);

        let kept = report.from;
        let image = resolve_image(&store, &tag, None).expect("resolve");
        assert_eq!(image.layers().len(), kept + 1, "{from:?}");
        assert_eq!(image.layers()[..kept], original.layers()[..kept]);
        assert_eq!(image.diff_ids()[..kept], original.diff_ids()[..kept]);
        let history = image.config.history();
        assert_eq!(history.len(), original.config.history().len() + 1);
        let marked: Vec<bool> = history.iter().map(|h| h.empty_layer).collect();
        let mut want = vec![false; kept];
        want.extend(vec![true; 4 - kept]);
        want.push(false);
        assert_eq!(marked, want, "{from:?}");
        assert_eq!(report.squashed, 4 - kept);
        // The original is untouched.
        let again = resolve_image(&store, "stack:1", None).expect("resolve");
        assert_eq!(again.manifest.digest(), original.manifest.digest());
    }
}

#[test]
fn squash_reports_the_bytes_it_freed() {
    let (_work, store) = image_testsupport::store::oci_dir();
    let big = vec![7u8; 200_000];
    let l0 = TarBuf::new().file("big", &big).file("keep", b"k").end();
    let l1 = TarBuf::new().file(".wh.big", b"").end();
    let layers = [
        layer_from_tar(&store, &l0, Compression::None),
        layer_from_tar(&store, &l1, Compression::None),
    ];
    build_image(&store, &layers, "waste:1");
    let r = squash(
        &store,
        "waste:1",
        "waste:2",
        &SquashOptions::new(SquashFrom::All),
    )
    .expect("squash");
    assert_eq!(r.before.uncompressed, (l0.len() + l1.len()) as u64);
    assert!(r.freed_uncompressed() >= 200_000, "{r:?}");
    assert_eq!(r.entries_before, 3);
    assert_eq!(r.entries_after, 1);
}

#[test]
fn squash_refuses_hostile_layers_with_typed_errors() {
    let (_work, store) = image_testsupport::store::oci_dir();
    let cases: [(&str, Vec<u8>); 3] = [
        ("dotdot", TarBuf::new().file("a/../../x", b"x").end()),
        (
            "dangling link",
            TarBuf::new().hardlink("b", "nothing").end(),
        ),
        (
            "link to a later entry",
            TarBuf::new().hardlink("b", "c").file("c", b"c").end(),
        ),
    ];
    for (name, tar) in cases {
        let layer = layer_from_tar(&store, &tar, Compression::Gzip);
        build_image(&store, &[layer], "hostile:1");
        let e = squash(
            &store,
            "hostile:1",
            "hostile:2",
            &SquashOptions::new(SquashFrom::All),
        )
        .expect_err(name);
        image_testsupport::chain::assert_said_once(&e);
        assert!(matches!(e, SurgeryError::Entry { .. }), "{name}: {e:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}");
        assert!(
            resolve_image(&store, "hostile:2", None).is_err(),
            "{name}: tagged"
        );
    }
    // The paths the merge remembers are bounded.
    let mut t = TarBuf::new();
    for i in 0..100 {
        t.file(&format!("d{i}/f"), b"");
    }
    let layer = layer_from_tar(&store, &t.end(), Compression::Gzip);
    build_image(&store, &[layer], "many:1");
    let mut options = SquashOptions::new(SquashFrom::All);
    options.limits = MergeLimits {
        max_paths: 50,
        ..MergeLimits::default()
    };
    let e = squash(&store, "many:1", "many:2", &options).expect_err("too many paths");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, SurgeryError::TooManyPaths { limit: 50 }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    // And so are the entries of all layers together.
    let mut options = SquashOptions::new(SquashFrom::All);
    options.limits = MergeLimits {
        max_entries: 60,
        ..MergeLimits::default()
    };
    let e = squash(&store, "many:1", "many:2", &options).expect_err("too many entries");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, SurgeryError::TooManyEntries { limit: 60 }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    assert!(resolve_image(&store, "many:2", None).is_err());
}

/// The merge is linear: a layer of many entries under one deep directory
/// and as many whiteouts above it squash in one pass each (a quadratic
/// merge would take minutes here).
#[test]
fn squash_of_many_entries_is_linear() {
    let (_work, store) = image_testsupport::store::oci_dir();
    // Under the 100 bytes of a ustar name (the test's tar writer has no PAX).
    let deep = vec!["d"; 40].join("/");
    let n = 40_000;
    let mut t0 = TarBuf::new();
    let mut t1 = TarBuf::new();
    for i in 0..n {
        t0.file(&format!("{deep}/f{i}"), b"");
        if i % 2 == 0 {
            t1.file(&format!("{deep}/.wh.f{i}"), b"");
        }
    }
    let layers = [
        layer_from_tar(&store, &t0.end(), Compression::Gzip),
        layer_from_tar(&store, &t1.end(), Compression::Gzip),
    ];
    build_image(&store, &layers, "wide:1");
    let r = squash(
        &store,
        "wide:1",
        "wide:2",
        &SquashOptions::new(SquashFrom::All),
    )
    .expect("squash");
    assert_eq!(r.entries_after, n / 2, "{r:?}");
}

#[test]
fn export_equals_gnu_tars_view_of_the_unpacked_image() {
    if !tools(&["umoci", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let layers = stack(&store);
    build_image(&store, &layers, "stack:1");
    let expected = umoci_unpack(&layout, "stack:1", &work.path().join("orig"));
    let tar_path = work.path().join("export.tar");
    let mut out = std::fs::File::create(&tar_path).expect("create");
    let r = export(&store, "stack:1", None, &mut out, MergeLimits::default()).expect("export");
    drop(out);
    assert!(r.entries_written < r.entries_read);
    let listing = run(Command::new("tar").arg("-tf").arg(&tar_path));
    assert!(
        !listing.contains(".wh."),
        "whiteouts in an export:\n{listing}"
    );
    // GNU tar's listing of the export is its listing of the unpacked tree
    // (which name of a hard link group carries the data is readdir's
    // choice there, so sizes and the h/- letter are left out here and
    // compared below through the extracted files).
    let ours = gnu_listing(Command::new("tar").arg("-tvf").arg(&tar_path));
    let theirs = gnu_listing(
        Command::new("sh")
            .arg("-c")
            .arg("tar -C \"$1\" --numeric-owner -cf - $(ls -A \"$1\") | tar -tvf -")
            .arg("sh")
            .arg(&expected),
    );
    assert_eq!(ours, theirs);
    // Extracted by GNU tar, the files are the unpacked ones (directory
    // mtimes aside: GNU tar sets a directory's time before a later layer's
    // entries land in it, and umoci restores it).
    let got = work.path().join("extracted");
    std::fs::create_dir(&got).expect("mkdir");
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&got)
        .arg("--numeric-owner"));
    let facts = |root: &std::path::Path| {
        let mut t = snapshot(root, false);
        for f in t.values_mut() {
            if f.kind == "dir" {
                f.mtime = 0;
            }
        }
        t
    };
    assert_eq!(facts(&expected), facts(&got));
    assert_eq!(hardlink_groups(&expected), hardlink_groups(&got));
}

#[test]
fn rebase_swaps_the_base_and_keeps_the_upper_layers() {
    if !tools(&["umoci", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    // `etc` has its own header in each base: a directory a layer only
    // implies gets umoci's clock as its mtime, which differs between two
    // unpacks a second boundary apart (the trees are compared below).
    let old_base = layer_from_tar(
        &store,
        &TarBuf::new()
            .dir("etc/")
            .file("etc/os-release", b"old\n")
            .file("old-only", b"o")
            .end(),
        Compression::Gzip,
    );
    let new_base = layer_from_tar(
        &store,
        &TarBuf::new()
            .dir("etc/")
            .file("etc/os-release", b"new\n")
            .file("new-only", b"n")
            .end(),
        Compression::Gzip,
    );
    let upper = layer_from_tar(
        &store,
        &TarBuf::new()
            .file("app", b"app")
            .file("etc/.wh.os-release", b"")
            .end(),
        Compression::Gzip,
    );
    build_image(&store, std::slice::from_ref(&old_base), "base:old");
    let new = build_image(&store, std::slice::from_ref(&new_base), "base:new");
    let image = build_image(&store, &[old_base.clone(), upper.clone()], "app:1");
    // The upper part's own config, set after the base: it must survive.
    let m = Mutation {
        env: vec!["APP=1".into()],
        ..Mutation::default()
    };
    let image_cfg = mutate(&store, "app:1", "app:2", &m, Added::None, None).expect("mutate");
    let rebased =
        rebase(&store, "app:2", "base:old", "base:new", "app:rebased", None).expect("rebase");
    let layers = rebased.manifest.layers();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].digest(), new.layers()[0].digest());
    assert_eq!(
        layers[1],
        image.layers()[1],
        "the upper layer is the same blob"
    );
    assert_eq!(
        rebased.config.diff_ids(),
        [new_base.diff_id.clone(), upper.diff_id.clone()]
    );
    let env = |c: &image_core::ImageConfig| c.file().config.clone().and_then(|r| r.env);
    assert_eq!(env(&rebased.config), env(&image_cfg.config));
    assert_eq!(rebased.config.history().len(), 2);
    let ann = rebased
        .manifest
        .inner()
        .annotations()
        .clone()
        .expect("annotations");
    assert_eq!(
        ann.get(ANNOTATION_BASE_NAME).map(String::as_str),
        Some(normalize_name("base:new").expect("name").as_str())
    );
    assert_eq!(
        ann.get(ANNOTATION_BASE_DIGEST).map(String::as_str),
        Some(new.manifest.digest().to_string().as_str())
    );
    // What it unpacks to is the new base plus the same upper layer.
    build_image(&store, &[new_base, upper], "expected:1");
    let want = umoci_unpack(&layout, "expected:1", &work.path().join("want"));
    let got = umoci_unpack(&layout, "app:rebased", &work.path().join("got"));
    assert_same_image_tree(&want, &got, false);
    assert!(!got.join("etc/os-release").exists());
    assert!(got.join("new-only").exists() && !got.join("old-only").exists());
    let name = normalize_name("app:rebased").expect("name");
    let inspected = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{name}", layout.display())));
    assert!(inspected.contains(&upper_digest(&image)), "{inspected}");

    // Not the base: refused, typed, nothing tagged.
    let e =
        rebase(&store, "app:2", "base:new", "base:old", "app:bad", None).expect_err("not a base");
    assert!(matches!(e, SurgeryError::NotABase { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(resolve_image(&store, "app:bad", None).is_err());
}

/// `tar -tv` lines, owner numeric, hard links and regular files alike
/// (type letter, size and link target dropped).
fn gnu_listing(cmd: &mut Command) -> std::collections::BTreeSet<String> {
    run(cmd.env("TZ", "UTC"))
        .lines()
        .map(|l| {
            let line = l.split_whitespace().collect::<Vec<_>>();
            let (perms, owner, date, time) = (line[0], line[1], line[3], line[4]);
            let name = line[5..].join(" ");
            let name = name
                .split(" link to ")
                .next()
                .unwrap_or_default()
                .to_owned();
            let perms = match perms.strip_prefix('h') {
                Some(rest) => format!("-{rest}"),
                None => perms.to_owned(),
            };
            let size = if perms.starts_with('-') { "?" } else { line[2] };
            format!("{perms} {owner} {size} {date} {time} {name}")
        })
        .collect()
}

fn upper_digest(image: &image_store::image::Image) -> String {
    image.layers()[1].digest().to_string()
}

#[test]
fn mutate_sets_config_fields_appends_and_removes() {
    if !tools(&["umoci", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let base = layer_from_tar(
        &store,
        &TarBuf::new()
            .dir("tmp/")
            .file("tmp/secret", b"s")
            .file("keep", b"k")
            .end(),
        Compression::Gzip,
    );
    let original = build_image(&store, &[base], "m:1");
    let m = Mutation {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: vec!["A=1".into(), "B=2".into()],
        user: Some("1000:1000".into()),
        working_dir: Some("/srv".into()),
        labels: vec![("team".into(), "infra".into())],
        exposed_ports: vec!["80".into(), "53/udp".into()],
        volumes: vec!["/data".into()],
        stop_signal: Some("SIGINT".into()),
        annotations: vec![("org.example.note".into(), "mutated".into())],
        created: Some("2024-01-02T03:04:05Z".into()),
        ..Mutation::default()
    };
    let made = mutate(&store, "m:1", "m:2", &m, Added::None, None).expect("mutate");
    let run_cfg = made.config.file().config.clone().expect("config");
    assert_eq!(run_cfg.entrypoint, m.entrypoint);
    assert_eq!(run_cfg.cmd, m.cmd);
    assert_eq!(run_cfg.env, Some(vec!["A=1".into(), "B=2".into()]));
    assert_eq!(run_cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(run_cfg.working_dir.as_deref(), Some("/srv"));
    assert_eq!(run_cfg.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        run_cfg
            .labels
            .expect("labels")
            .get("team")
            .map(String::as_str),
        Some("infra")
    );
    let ports: Vec<String> = run_cfg.exposed_ports.expect("ports").into_keys().collect();
    assert_eq!(ports, ["53/udp", "80/tcp"]);
    assert!(run_cfg.volumes.expect("volumes").contains_key("/data"));
    assert_eq!(
        made.config.file().created.as_deref(),
        Some("2024-01-02T03:04:05Z")
    );
    assert_eq!(
        made.manifest
            .inner()
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.example.note").cloned())
            .as_deref(),
        Some("mutated")
    );
    // Written canonically: the bytes are the canonical form of their value.
    let value: serde_json::Value = serde_json::from_slice(made.config.raw()).expect("json");
    assert_eq!(
        image_core::json::to_canonical_vec(&value).expect("canonical"),
        made.config.raw()
    );
    let value: serde_json::Value = serde_json::from_slice(made.manifest.raw()).expect("json");
    assert_eq!(
        image_core::json::to_canonical_vec(&value).expect("canonical"),
        made.manifest.raw()
    );
    // The old image is untouched.
    let old = resolve_image(&store, "m:1", None).expect("old");
    assert_eq!(old.manifest.digest(), original.manifest.digest());

    // A directory appended, a path removed.
    let dir = work.path().join("add");
    std::fs::create_dir_all(dir.join("opt")).expect("mkdir");
    std::fs::write(dir.join("opt/tool"), b"tool").expect("write");
    mutate(
        &store,
        "m:2",
        "m:3",
        &Mutation::default(),
        Added::Dir(&dir),
        None,
    )
    .expect("append");
    mutate(
        &store,
        "m:3",
        "m:4",
        &Mutation::default(),
        Added::Remove("/tmp/secret"),
        None,
    )
    .expect("remove");
    let img = resolve_image(&store, "m:4", None).expect("m:4");
    assert_eq!(img.layers().len(), 3);
    assert_eq!(img.config.history().len(), 3);
    let got = umoci_unpack(&layout, "m:4", &work.path().join("m4"));
    assert_eq!(std::fs::read(got.join("opt/tool")).expect("tool"), b"tool");
    assert!(!got.join("tmp/secret").exists());
    assert!(got.join("keep").exists() && got.join("tmp").is_dir());
    let name = normalize_name("m:4").expect("name");
    let inspected = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}:{name}", layout.display())));
    assert!(
        inspected.contains("SIGINT") && inspected.contains("80/tcp"),
        "{inspected}"
    );

    // Invalid values are refused before anything is written.
    for bad in [
        Mutation {
            env: vec!["NOEQUALS".into()],
            ..Mutation::default()
        },
        Mutation {
            exposed_ports: vec!["99999".into()],
            ..Mutation::default()
        },
        Mutation {
            volumes: vec!["relative".into()],
            ..Mutation::default()
        },
        Mutation {
            created: Some("yesterday".into()),
            ..Mutation::default()
        },
    ] {
        let e = mutate(&store, "m:1", "m:bad", &bad, Added::None, None).expect_err("invalid");
        image_testsupport::chain::assert_said_once(&e);
        assert!(matches!(e, SurgeryError::Invalid { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    let e = mutate(
        &store,
        "m:1",
        "m:bad",
        &Mutation::default(),
        Added::Remove("/"),
        None,
    )
    .expect_err("root");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, SurgeryError::Invalid { .. }), "{e:?}");
    assert!(resolve_image(&store, "m:bad", None).is_err());
}

/// `--append DIR` reads the directory without following a link inside it.
#[test]
fn mutate_append_does_not_follow_links_in_the_directory() {
    let (work, store) = image_testsupport::store::oci_dir();
    let layer = layer_from_tar(
        &store,
        &TarBuf::new().file("x", b"x").end(),
        Compression::Gzip,
    );
    build_image(&store, &[layer], "l:1");
    let dir = work.path().join("add");
    std::fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).expect("symlink");
    mutate(
        &store,
        "l:1",
        "l:2",
        &Mutation::default(),
        Added::Dir(&dir),
        None,
    )
    .expect("append");
    let tar_path = work.path().join("out.tar");
    let mut out = std::fs::File::create(&tar_path).expect("create");
    export(&store, "l:2", None, &mut out, MergeLimits::default()).expect("export");
    drop(out);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).expect("open"));
    let link = archive
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry"))
        .find(|e| e.path().expect("path").as_os_str() == "passwd")
        .expect("passwd entry");
    assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
    assert_eq!(link.size(), 0);
}

/// What a generated layer stack has made so far at each path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Dir,
    File,
    Link,
}

/// One generated layer: valid changes over `model` (parents made before
/// children, hard links to earlier files of the layer), applied to it.
fn random_layer(
    next: &mut dyn FnMut() -> u64,
    model: &mut std::collections::BTreeMap<String, Made>,
    layer: usize,
    cross: bool,
) -> Vec<u8> {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    let mut t = TarBuf::new();
    let mut files_here: Vec<String> = Vec::new();
    let mut touched: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let ops = 3 + next() % 8;
    // Parents made in this layer: never changed again in it.
    let mut touched_parents: Vec<String> = Vec::new();
    for op in 0..ops {
        // A path of depth 1 to 3 of the small name set.
        let depth = 1 + (next() % 3) as usize;
        let path: Vec<&str> = (0..depth).map(|_| NAMES[(next() % 4) as usize]).collect();
        let p = path.join("/");
        if touched
            .iter()
            .any(|t| p.starts_with(&format!("{t}/")) || t.starts_with(&format!("{p}/")) || *t == p)
        {
            continue; // one change per path (and below it) per layer
        }
        // Parents must be directories: make the missing ones, skip if a
        // parent is something else.
        let mut ok = true;
        for i in 1..depth {
            let parent = path[..i].join("/");
            match model.get(&parent) {
                Some(Made::Dir) => {}
                None => {
                    t.dir(&format!("{parent}/"));
                    model.insert(parent.clone(), Made::Dir);
                    touched_parents.push(parent);
                }
                Some(_) => {
                    ok = false;
                    break;
                }
            }
        }
        touched.extend(touched_parents.drain(..).map(|d| format!("{d}/")));
        if !ok {
            continue;
        }
        touched.insert(p.clone());
        let (parent, name) = match p.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n.to_owned()),
            None => (String::new(), p.clone()),
        };
        let below = |m: &mut std::collections::BTreeMap<String, Made>| {
            m.retain(|k, _| !k.starts_with(&format!("{p}/")));
        };
        match (next() % if cross { 8 } else { 7 }, model.get(&p).copied()) {
            // Delete what is there.
            (0 | 1, Some(_)) => {
                t.file(&format!("{parent}.wh.{name}"), b"");
                model.remove(&p);
                below(model);
            }
            // An opaque directory with a new file in it.
            (2, Some(Made::Dir)) => {
                t.dir(&format!("{p}/"));
                t.file(&format!("{p}/.wh..wh..opq"), b"");
                below(model);
                t.file(&format!("{p}/new{layer}"), b"after opaque");
                model.insert(format!("{p}/new{layer}"), Made::File);
            }
            // A directory (kept if there is one).
            (3, None | Some(Made::Dir)) => {
                t.dir(&format!("{p}/"));
                model.insert(p.clone(), Made::Dir);
            }
            // A symlink replacing a file or nothing.
            (4, None | Some(Made::File | Made::Link)) => {
                t.symlink(&p, &format!("target{op}"));
                model.insert(p.clone(), Made::Link);
            }
            // A hard link to a file of this layer.
            (5, None | Some(Made::File | Made::Link)) if !files_here.is_empty() => {
                let target = files_here[(next() % files_here.len() as u64) as usize].clone();
                if target != p {
                    t.hardlink(&p, &target);
                    model.insert(p.clone(), Made::File);
                }
            }
            // A hard link to a file an earlier layer made (left alone here).
            (6, None | Some(Made::File | Made::Link)) if cross => {
                let earlier: Vec<String> = model
                    .iter()
                    .filter(|(k, m)| {
                        **m != Made::Dir
                            && **k != p
                            && !files_here.contains(k)
                            && !touched.iter().any(|t| {
                                *k == t || k.starts_with(&format!("{}/", t.trim_end_matches('/')))
                            })
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if !earlier.is_empty() {
                    let target = earlier[(next() % earlier.len() as u64) as usize].clone();
                    touched.insert(target.clone());
                    t.hardlink(&p, &target);
                    model.insert(p.clone(), Made::File);
                }
            }
            // A file, replacing anything (a directory through its whiteout).
            (_, current) => {
                if current == Some(Made::Dir) {
                    t.file(&format!("{parent}.wh.{name}"), b"");
                    below(model);
                }
                let data = format!("{p} in layer {layer} op {op}");
                t.file(&p, data.as_bytes());
                model.insert(p.clone(), Made::File);
                files_here.push(p.clone());
            }
        }
    }
    t.end()
}

/// The tree's facts, directory mtimes aside (our unpack leaves a
/// directory the kernel's time when a later layer changes it without an
/// entry for it, so a flatten and a squash differ there by design).
fn facts(
    root: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, crate::common::Facts> {
    facts_dir_times_aside(root, false)
}

/// [`facts`], with sub-second mtimes when `nanos`.
fn facts_dir_times_aside(
    root: &std::path::Path,
    nanos: bool,
) -> std::collections::BTreeMap<std::path::PathBuf, crate::common::Facts> {
    let mut t = snapshot(root, nanos);
    for f in t.values_mut() {
        if f.kind == "dir" {
            f.mtime = 0;
            f.mtime_nsec = 0;
        }
    }
    t
}

/// Generated stacks: a squash from every position flattens to the tree the
/// original flattens to, and an export extracts to it too (our flatten
/// applies the layers one by one, so it is an independent view of the merge).
#[test]
fn squash_and_export_of_generated_stacks_keep_the_tree() {
    generated_stacks_keep_the_tree(0x005e_ed0f_5a5a, false);
}

/// The same with hard links to files of earlier layers in the stacks: a
/// squash from any layer and an export take them all, including links to
/// a base file a squashed layer removes.
#[test]
fn squash_and_export_of_generated_stacks_with_links_across_layers_keep_the_tree() {
    generated_stacks_keep_the_tree(0x11a4_c0de_7e57, true);
}

/// Runs 30 generated stacks: every squash and the export give the tree
/// and hard link groups flatten gives the original.
fn generated_stacks_keep_the_tree(seed: u64, cross: bool) {
    use image_overlay::flatten::flatten_image;
    use image_overlay::unpack::UnpackOptions;
    let (work, store) = image_testsupport::store::oci_dir();
    let mut next = image_testsupport::xorshift(seed);
    for round in 0..30 {
        let mut model = std::collections::BTreeMap::new();
        let count = 2 + (next() % 4) as usize;
        let layers: Vec<NewLayer> = (0..count)
            .map(|l| {
                layer_from_tar(
                    &store,
                    &random_layer(&mut next, &mut model, l, cross),
                    Compression::Gzip,
                )
            })
            .collect();
        let tag = format!("gen:{round}");
        let original = build_image(&store, &layers, &tag);
        let want = work.path().join(format!("want{round}"));
        flatten_image(&store, &original, &want, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: flatten: {e:?}"));
        for from in 0..count {
            let sq = format!("gen:{round}-{from}");
            squash(
                &store,
                &tag,
                &sq,
                &SquashOptions::new(SquashFrom::Layer(from)),
            )
            .unwrap_or_else(|e| panic!("round {round} from {from}: {e:?}"));
            let image = resolve_image(&store, &sq, None).expect("resolve");
            let got = work.path().join(format!("got{round}-{from}"));
            flatten_image(&store, &image, &got, &UnpackOptions::default()).expect("flatten");
            assert_eq!(
                facts(&want),
                facts(&got),
                "round {round}, squash from {from}"
            );
            assert_eq!(
                hardlink_groups(&want),
                hardlink_groups(&got),
                "round {round}"
            );
        }
        let mut tar = Vec::new();
        export(&store, &tag, None, &mut tar, MergeLimits::default()).expect("export");
        let got = work.path().join(format!("export{round}"));
        std::fs::create_dir(&got).expect("mkdir");
        image_overlay::unpack::unpack(&tar[..], &got, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: unpack of the export: {e:?}"));
        assert_eq!(facts(&want), facts(&got), "round {round}, export");
        assert_eq!(
            hardlink_groups(&want),
            hardlink_groups(&got),
            "round {round}, export"
        );
    }
}

/// GNU tar's PAX form of the tree at `dir` (sub-second mtimes kept).
fn gnu_pax_tar(dir: &std::path::Path) -> Vec<u8> {
    let file = dir.with_extension("tar");
    run(Command::new("tar")
        .arg("--format=posix")
        .arg("--numeric-owner")
        .arg("--sort=name")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&file)
        .arg("."));
    std::fs::read(&file).expect("read the tar")
}

/// Squash and export keep sub-second mtimes: the squashed image and the
/// exported tree are the original's to the nanosecond.
#[test]
fn squash_and_export_keep_sub_second_mtimes() {
    use image_overlay::flatten::flatten_image;
    use image_overlay::unpack::UnpackOptions;
    if !tools(&["tar"]) {
        return;
    }
    let (work, store) = image_testsupport::store::oci_dir();
    let set = |p: &std::path::Path, secs: i64, nsec: i64| crate::common::set_mtime(p, secs, nsec);
    let d0 = work.path().join("l0");
    std::fs::create_dir_all(d0.join("etc")).expect("mkdir");
    std::fs::write(d0.join("etc/a"), b"a").expect("write");
    std::fs::write(d0.join("etc/b"), b"b").expect("write");
    std::os::unix::fs::symlink("a", d0.join("etc/l")).expect("symlink");
    set(&d0.join("etc/a"), 1_700_000_000, 123_456_789);
    set(&d0.join("etc/b"), 1_600_000_000, 500_000_000);
    let d1 = work.path().join("l1");
    std::fs::create_dir_all(d1.join("etc")).expect("mkdir");
    std::fs::write(d1.join("etc/b"), b"b2").expect("write");
    std::fs::write(d1.join("top"), b"t").expect("write");
    set(&d1.join("etc/b"), 1_650_000_000, 1);
    set(&d1.join("top"), 1_700_000_001, 999_999_999);
    let layers = [
        layer_from_tar(&store, &gnu_pax_tar(&d0), Compression::Gzip),
        layer_from_tar(&store, &gnu_pax_tar(&d1), Compression::Gzip),
    ];
    let original = build_image(&store, &layers, "ns:1");
    let want = work.path().join("want");
    flatten_image(&store, &original, &want, &UnpackOptions::default()).expect("flatten");
    let md = std::fs::symlink_metadata(want.join("etc/a")).expect("lstat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 123_456_789));

    squash(&store, "ns:1", "ns:2", &SquashOptions::new(SquashFrom::All)).expect("squash");
    let squashed = resolve_image(&store, "ns:2", None).expect("resolve");
    let got = work.path().join("got");
    flatten_image(&store, &squashed, &got, &UnpackOptions::default()).expect("flatten");
    assert_eq!(
        facts_dir_times_aside(&want, true),
        facts_dir_times_aside(&got, true)
    );

    let mut tar = Vec::new();
    export(&store, "ns:1", None, &mut tar, MergeLimits::default()).expect("export");
    let exported = work.path().join("exported");
    std::fs::create_dir(&exported).expect("mkdir");
    let mut child = Command::new("tar")
        .arg("-xpf")
        .arg("-")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&exported)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &tar).expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        facts_dir_times_aside(&want, true),
        facts_dir_times_aside(&exported, true)
    );
}

/// Squash above a base, where a squashed layer removes the base file a
/// squashed link names (issue 15): the squashed layer carries the file's
/// bytes and metadata under the link's first surviving name, the group's
/// other names link to it, and where the base file keeps another name the
/// links link to that one; the squashed image unpacks (umoci, and our
/// flatten) to the original's tree and hard link groups.
#[test]
fn squash_above_a_base_carries_a_linked_base_file_a_squashed_layer_removes() {
    use image_overlay::flatten::flatten_image;
    use image_overlay::unpack::UnpackOptions;
    if !tools(&["umoci"]) {
        return;
    }
    let (work, store) = image_testsupport::store::oci_dir();
    let layout = work.path().join("layout");
    let base_file = |extra: &mut TarBuf| {
        let mut h = image_testsupport::tar::Raw::new("a", b'0');
        h.mode = 0o640;
        h.uid = 1000;
        h.gid = 1001;
        h.mtime = 1_234_567;
        h.size = 10;
        let mut t = TarBuf::new();
        t.raw(&h, b"base bytes");
        t.0.extend_from_slice(&extra.0);
        t.end()
    };
    // (name, base layer, layer with the links, layer removing `a`)
    type Case = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>);
    let cases: [Case; 4] = [
        // The case: `a` in the base, `b` linked to it, `a` removed.
        (
            "plain",
            base_file(&mut TarBuf::new()),
            TarBuf::new().hardlink("b", "a").end(),
            TarBuf::new().file(".wh.a", b"").end(),
        ),
        // A group of names: `c` links to `b`, `d` (in the layer that
        // removes `a`, after it) to `b` too.
        (
            "group",
            base_file(&mut TarBuf::new()),
            TarBuf::new()
                .dir("sub/")
                .hardlink("sub/b", "a")
                .hardlink("c", "sub/b")
                .end(),
            TarBuf::new()
                .file(".wh.a", b"")
                .hardlink("d", "sub/b")
                .end(),
        ),
        // The base file has another name that survives: the links stay
        // links to it (one inode, as in the original).
        (
            "kept",
            base_file(TarBuf::new().hardlink("keep", "a")),
            TarBuf::new().hardlink("b", "a").end(),
            TarBuf::new().file(".wh.a", b"").end(),
        ),
        // Links to two names of one base file, both names removed: the
        // links are still one inode (one carries the file, the other links
        // to it), as in the original.
        (
            "two-names",
            base_file(TarBuf::new().hardlink("e", "a")),
            TarBuf::new().hardlink("b", "a").hardlink("f", "e").end(),
            TarBuf::new().file(".wh.a", b"").file(".wh.e", b"").end(),
        ),
    ];
    for (name, l0, l1, l2) in cases {
        let layers: Vec<NewLayer> = [l0, l1, l2]
            .iter()
            .map(|t| layer_from_tar(&store, t, Compression::Gzip))
            .collect();
        let tag = format!("carry:{name}");
        let original = build_image(&store, &layers, &tag);
        let expected = umoci_unpack(&layout, &tag, &work.path().join(format!("{name}-orig")));
        let want = work.path().join(format!("{name}-want"));
        flatten_image(&store, &original, &want, &UnpackOptions::default()).expect("flatten");
        for from in [1, 2] {
            let sq = format!("carry:{name}-{from}");
            squash(
                &store,
                &tag,
                &sq,
                &SquashOptions::new(SquashFrom::Layer(from)),
            )
            .unwrap_or_else(|e| panic!("{name}: squash from {from}: {e:?}"));
            let got = umoci_unpack(&layout, &sq, &work.path().join(format!("{name}-sq{from}")));
            assert_same_image_tree(&expected, &got, false);
            let image = resolve_image(&store, &sq, None).expect("resolve");
            let flat = work.path().join(format!("{name}-flat{from}"));
            flatten_image(&store, &image, &flat, &UnpackOptions::default()).expect("flatten");
            assert_eq!(facts(&want), facts(&flat), "{name}: squash from {from}");
            assert_eq!(
                hardlink_groups(&want),
                hardlink_groups(&flat),
                "{name}: squash from {from}"
            );
        }
        let b = if name == "group" { "sub/b" } else { "b" };
        assert_eq!(
            std::fs::read(expected.join(b)).expect("read"),
            b"base bytes"
        );
    }
}

/// The base layers a squash reads to carry a removed base file count
/// against the squash's limits like the squashed layers: a base of more
/// entries than `max_entries` is refused, typed, not held in memory.
#[test]
fn carrying_from_a_base_is_bounded_by_the_merge_limits() {
    let (_work, store) = image_testsupport::store::oci_dir();
    let mut big = TarBuf::new();
    big.file("a", b"base bytes");
    for i in 0..64 {
        big.file(&format!("f{i}"), b"x");
    }
    let layers: Vec<NewLayer> = [
        big.end(),
        TarBuf::new().hardlink("b", "a").end(),
        TarBuf::new().file(".wh.a", b"").end(),
    ]
    .iter()
    .map(|t| layer_from_tar(&store, t, Compression::Gzip))
    .collect();
    build_image(&store, &layers, "bounded:1");
    let mut options = SquashOptions::new(SquashFrom::Layer(1));
    options.limits.max_entries = 32;
    let e = squash(&store, "bounded:1", "bounded:2", &options).expect_err("over the limit");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, SurgeryError::TooManyEntries { limit: 32 }),
        "{e:?}"
    );
    options.limits.max_entries = 1_000;
    options.limits.max_paths = 32;
    let e = squash(&store, "bounded:1", "bounded:2", &options).expect_err("over the limit");
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(e, SurgeryError::TooManyPaths { limit: 32 }),
        "{e:?}"
    );
    squash(
        &store,
        "bounded:1",
        "bounded:2",
        &SquashOptions::new(SquashFrom::Layer(1)),
    )
    .expect("within the default limits");
}

/// A layer that hard-links to a file of an earlier layer (as `ln` in a RUN
/// step makes): squash and export give the tree and link groups flatten
/// gives, whether the target survives, is overwritten or is removed above
/// the link, and through a chain of such links; above a base, a link to a
/// base file stays a link, and carries the base file's bytes where a
/// squashed layer above the link removes it.
#[test]
fn squash_and_export_take_hard_links_to_lower_layers() {
    use image_overlay::flatten::flatten_image;
    use image_overlay::unpack::UnpackOptions;
    let (work, store) = image_testsupport::store::oci_dir();
    let l0 = TarBuf::new()
        .dir("bin/")
        .file("bin/tool", b"the tool")
        .file("bin/old", b"overwritten above the link")
        .file("bin/gone", b"removed above the link")
        .file("bin/chain", b"linked twice")
        .symlink("bin/sym", "tool")
        .end();
    let l1 = TarBuf::new()
        .dir("usr/")
        .hardlink("usr/tool", "bin/tool")
        .hardlink("usr/old", "bin/old")
        .hardlink("usr/gone", "bin/gone")
        .hardlink("usr/chain", "bin/chain")
        .hardlink("usr/chain2", "usr/chain")
        .hardlink("usr/sym", "bin/sym")
        .end();
    let l2 = TarBuf::new()
        .file("bin/old", b"new old")
        .file("bin/.wh.gone", b"")
        .file("bin/.wh.chain", b"")
        .dir("opt/")
        .hardlink("opt/chain", "usr/chain2")
        .end();
    let l3 = TarBuf::new().file("usr/.wh.chain", b"").end();
    let layers: Vec<NewLayer> = [l0, l1, l2, l3]
        .iter()
        .map(|t| layer_from_tar(&store, t, Compression::Gzip))
        .collect();
    let original = build_image(&store, &layers, "links:1");
    let want = work.path().join("want");
    flatten_image(&store, &original, &want, &UnpackOptions::default()).expect("flatten");
    assert_eq!(
        std::fs::read(want.join("opt/chain")).expect("read"),
        b"linked twice"
    );
    for from in 0..layers.len() {
        let tag = format!("links:sq{from}");
        squash(
            &store,
            "links:1",
            &tag,
            &SquashOptions::new(SquashFrom::Layer(from)),
        )
        .unwrap_or_else(|e| panic!("squash from {from}: {e}"));
        let image = resolve_image(&store, &tag, None).expect("resolve");
        let got = work.path().join(format!("sq{from}"));
        flatten_image(&store, &image, &got, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("flatten of the squash from {from}: {e}"));
        assert_eq!(facts(&want), facts(&got), "squash from {from}");
        assert_eq!(
            hardlink_groups(&want),
            hardlink_groups(&got),
            "squash from {from}"
        );
    }
    let mut tar = Vec::new();
    export(&store, "links:1", None, &mut tar, MergeLimits::default()).expect("export");
    let got = work.path().join("export");
    std::fs::create_dir(&got).expect("mkdir");
    image_overlay::unpack::unpack(&tar[..], &got, &UnpackOptions::default()).expect("unpack");
    assert_eq!(facts(&want), facts(&got), "export");
    assert_eq!(hardlink_groups(&want), hardlink_groups(&got), "export");

    // A link to a path no lower layer has is still refused, typed.
    let l0 = layer_from_tar(
        &store,
        &TarBuf::new().file("a", b"a").end(),
        Compression::Gzip,
    );
    let l1 = layer_from_tar(
        &store,
        &TarBuf::new().hardlink("b", "nothing").end(),
        Compression::Gzip,
    );
    build_image(&store, &[l0, l1], "dangling:1");
    let e = squash(
        &store,
        "dangling:1",
        "dangling:2",
        &SquashOptions::new(SquashFrom::All),
    )
    .expect_err("dangling");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, SurgeryError::Entry { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
