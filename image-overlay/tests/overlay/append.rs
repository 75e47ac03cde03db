//! `append_dir` and `append_source`: a new image from a base plus a
//! directory or a layer tarball, config changes applied, tagged; read back
//! by our flatten and by umoci.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind, Platform};
use image_overlay::append::{append_dir, append_source, AppendError, AppendSource, ConfigChanges};
use image_overlay::flatten::flatten_image;
use image_overlay::unpack::UnpackOptions;
use image_store::image::resolve_image;
use image_store::{Manager, OciDir, TagStore};

use crate::common::{make_tree, snapshot, TarBuf};
use crate::umoci::{assert_same_image_tree, tools, umoci_unpack};

fn platform() -> Platform {
    "linux/arm64/v8".parse().expect("platform")
}

fn paths(root: &Path) -> BTreeSet<PathBuf> {
    snapshot(root, false).into_keys().collect()
}

/// A base from one directory, then a second directory appended with config
/// changes: the image flattens to the union of both trees, its config
/// carries the changes over the base's, the platform's variant is kept,
/// and umoci unpacks the same tree as ours.
#[test]
fn append_dir_on_a_base_unpacks_to_the_base_plus_the_dir() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let base_dir = work.path().join("base");
    make_tree(&base_dir);
    let added = work.path().join("added");
    std::fs::create_dir_all(added.join("etc")).expect("mkdir");
    std::fs::write(added.join("etc/added.conf"), b"added\n").expect("write");
    std::fs::create_dir_all(added.join("opt/app")).expect("mkdir");
    std::fs::write(added.join("opt/app/run"), b"run\n").expect("write");

    let base_changes = ConfigChanges::new()
        .cmd(["/bin/sh"])
        .env("PATH=/bin")
        .env("KEEP=1")
        .user("1000:50");
    let base = append_dir(
        &store,
        None,
        &base_dir,
        &platform(),
        &base_changes,
        "t/base:1",
    )
    .expect("base");
    let changes = ConfigChanges::new()
        .entrypoint(["/opt/app/run"])
        .env("PATH=/opt/app:/bin")
        .working_dir("/opt/app")
        .created_by("test: added");
    let made = append_dir(
        &store,
        Some("t/base:1"),
        &added,
        &platform(),
        &changes,
        "t/app:1",
    )
    .expect("append");

    let image = resolve_image(&store, "t/app:1", None).expect("resolve");
    assert_eq!(image.manifest.digest(), made.manifest.digest());
    assert_eq!(image.layers().len(), 2);
    assert_eq!(&image.layers()[0], &base.manifest.layers()[0]);
    let file = image.config.file();
    assert_eq!(file.variant.as_deref(), Some("v8"));
    assert_eq!(file.architecture, "arm64");
    let run = file.config.clone().unwrap_or_default();
    assert_eq!(run.cmd, Some(vec!["/bin/sh".to_owned()]));
    assert_eq!(run.entrypoint, Some(vec!["/opt/app/run".to_owned()]));
    assert_eq!(
        run.env,
        Some(vec!["KEEP=1".to_owned(), "PATH=/opt/app:/bin".to_owned()])
    );
    assert_eq!(run.working_dir.as_deref(), Some("/opt/app"));
    assert_eq!(run.user.as_deref(), Some("1000:50"));
    let history = image.config.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].created_by.as_deref(), Some("test: added"));

    let ours = work.path().join("ours");
    flatten_image(&store, &image, &ours, &UnpackOptions::default()).expect("flatten");
    let expected: BTreeSet<PathBuf> = paths(&base_dir).union(&paths(&added)).cloned().collect();
    assert_eq!(paths(&ours), expected);
    assert_eq!(
        std::fs::read(ours.join("etc/added.conf")).expect("read"),
        b"added\n"
    );

    if tools() {
        let theirs = umoci_unpack(&layout, "t/app:1", &work.path().join("bundle"));
        assert_same_image_tree(&theirs, &ours, true);
    }
}

/// A layer tarball is stored as it is (its digest is the file's), its diff
/// ID computed; config changes alone add an empty-layer history entry.
#[test]
fn append_source_takes_a_tarball_or_config_changes_alone() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let tar = TarBuf::new().dir("srv").file("srv/hello", b"hi\n").end();
    let gz = crate::common::gzip(&tar);
    let made = append_source(
        &store,
        None,
        AppendSource::Tarball(&mut &gz[..]),
        &platform(),
        &ConfigChanges::new(),
        "t/tar:1",
    )
    .expect("append tarball");
    let layer = &made.manifest.layers()[0];
    assert_eq!(layer.size(), gz.len() as u64);
    assert_eq!(
        layer.digest().to_string(),
        image_core::Digest::sha256(&gz).to_string()
    );
    assert_eq!(made.config.diff_ids()[0], image_core::Digest::sha256(&tar));

    let made = append_source(
        &store,
        Some("t/tar:1"),
        AppendSource::ConfigOnly,
        &platform(),
        &ConfigChanges::new().cmd(["/srv/hello"]),
        "t/tar:2",
    )
    .expect("config only");
    assert_eq!(made.manifest.layers().len(), 1);
    let history = made.config.history();
    assert_eq!(history.len(), 2);
    assert!(history[1].empty_layer);
}

/// A refused tag, a missing base or a corrupt tarball fail with their
/// class, tag nothing, and (for the tag) write nothing at all.
#[test]
fn append_fails_typed_and_tags_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let dir = work.path().join("dir");
    make_tree(&dir);
    let changes = ConfigChanges::new();
    let digest_tag = format!("t/x@{}", image_core::Digest::sha256(b"x"));
    let e =
        append_dir(&store, None, &dir, &platform(), &changes, &digest_tag).expect_err("digest tag");
    assert!(matches!(e, AppendError::InvalidTag(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(store.list().expect("list").is_empty(), "nothing written");

    let e = append_dir(
        &store,
        Some("t/missing:1"),
        &dir,
        &platform(),
        &changes,
        "t/x:1",
    )
    .expect_err("missing base");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, AppendError::Base { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let tar = TarBuf::new().file("a", &[7u8; 2000]).end();
    let cut = &tar[..1024];
    let e = append_source(
        &store,
        None,
        AppendSource::Tarball(&mut &cut[..]),
        &platform(),
        &changes,
        "t/x:1",
    )
    .expect_err("truncated");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, AppendError::Layer(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(store.tags().expect("tags").is_empty(), "nothing tagged");
}
