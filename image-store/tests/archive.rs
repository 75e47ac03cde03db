//! Archive import and export without peers: round trips, both docker-save
//! layouts, OCI archives, several images, and bad input.

mod archive_fixtures;

use archive_fixtures::*;
use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::{Classify, Compression, Digest, ErrorKind, Manifest, MediaType};
use image_store::archive::{
    load, save_docker, save_oci, ArchiveError, ArchiveFormat, DockerLayout, LoadOptions,
    RepoTagForm, SaveImage, SaveOptions,
};
use image_store::{MemoryStore, OciDir, Provider, TagStore};
use serde_json::json;

fn manifest_of(store: &OciDir, name: &str) -> Manifest {
    let d = store.resolve_tag(name).expect("tag");
    Manifest::from_bytes(
        store
            .read_blob_to_vec(
                &Digest::try_from(d.digest().as_ref()).expect("digest"),
                1 << 20,
            )
            .expect("manifest"),
    )
    .expect("parse")
}

fn assert_untouched(store: &OciDir) {
    assert!(
        store.tags().expect("tags").is_empty(),
        "a failed import must tag nothing"
    );
}

#[test]
fn docker_legacy_round_trip_with_compressed_layers() {
    let (_d, src) = oci_dir();
    let img = make_image(
        &src,
        &[
            (busybox_layer(), Compression::Gzip),
            (file_layer("etc/hello", b"hello\n"), Compression::Zstd),
            (file_layer("etc/plain", b"plain\n"), Compression::None),
        ],
        "amd64",
    );
    src.set_tag("busybox:test", &img.manifest).expect("tag");

    let mut tarball = Vec::new();
    let report = save_docker(
        &src,
        &[SaveImage::from_tag(&src, "busybox:test").expect("image")],
        &mut tarball,
        &SaveOptions::default(),
    )
    .expect("save");
    assert_eq!(report.images, 1);

    // The archive has the old layout, familiar names, uncompressed layers.
    let mut a = tar::Archive::new(&tarball[..]);
    let names: Vec<String> = a
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert!(names.contains(&format!("{}.json", img.config.digest().hex())));
    assert!(names.iter().filter(|n| n.ends_with("/layer.tar")).count() == 3);
    assert!(names.contains(&"repositories".to_string()));
    let mut a = tar::Archive::new(&tarball[..]);
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_str() == Some("manifest.json") {
            let v: serde_json::Value = serde_json::from_reader(&mut e).expect("json");
            assert_eq!(v[0]["RepoTags"], json!(["docker.io/library/busybox:test"]));
        }
    }

    let (_d2, dst) = oci_dir();
    let loaded = load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(loaded.format, ArchiveFormat::DockerLegacy);
    assert_eq!(loaded.images.len(), 1);
    assert_eq!(loaded.images[0].tags, ["docker.io/library/busybox:test"]);
    assert_eq!(loaded.images[0].config.as_ref(), Some(img.config.digest()));
    let m = manifest_of(&dst, "busybox:test");
    assert_eq!(&m.config_digest(), img.config.digest());
    assert_eq!(
        m.layer_digests(),
        img.diff_ids(),
        "docker-save layers are the uncompressed tars"
    );
    for l in m.layers() {
        assert_eq!(descriptor_media_type(l), MediaType::OciLayer);
    }
}

#[test]
fn docker_oci_layout_round_trip() {
    let (_d, src) = oci_dir();
    let img = make_image(
        &src,
        &[
            (busybox_layer(), Compression::None),
            (file_layer("etc/a", b"a"), Compression::Gzip),
        ],
        "amd64",
    );
    src.set_tag("example.com/team/app:v1", &img.manifest)
        .expect("tag");
    let mut tarball = Vec::new();
    save_docker(
        &src,
        &[SaveImage::from_tag(&src, "example.com/team/app:v1").expect("image")],
        &mut tarball,
        &SaveOptions::default().layout(DockerLayout::Oci),
    )
    .expect("save");
    let (_d2, dst) = oci_dir();
    let loaded = load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(loaded.format, ArchiveFormat::DockerOci);
    assert_eq!(loaded.images[0].tags, ["example.com/team/app:v1"]);
    let m = manifest_of(&dst, "example.com/team/app:v1");
    assert_eq!(m.layer_digests(), img.diff_ids());
}

/// The Docker 25+ layout, built by hand (no peer here writes it), with
/// manifest.json first and the blobs after it.
#[test]
fn hand_built_docker25_archive_imports_and_keeps_its_manifest() {
    let l1 = busybox_layer();
    let l2 = file_layer("etc/motd", b"hi\n");
    let config = config_for(&[l1.clone(), l2.clone()], "amd64");
    let d1 = Digest::sha256(&l1);
    let d2 = Digest::sha256(&l2);
    let layers = vec![
        descriptor(&MediaType::OciLayer, &d1, l1.len() as u64),
        descriptor(&MediaType::OciLayer, &d2, l2.len() as u64),
    ];
    let manifest =
        image_store::archive::build_manifest(config.digest(), config.raw().len() as u64, layers)
            .expect("manifest");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest().to_string(),
            "size": manifest.raw().len(),
            "annotations": {
                "io.containerd.image.name": "docker.io/library/hand:25",
                "org.opencontainers.image.ref.name": "25"
            }
        }]
    });
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let manifest_json = json!([{
        "Config": blob(config.digest()),
        "RepoTags": ["hand:25"],
        "Layers": [blob(&d1), blob(&d2)],
    }]);
    let mj = serde_json::to_vec(&manifest_json).expect("json");
    let ij = serde_json::to_vec(&index).expect("json");
    let (cp, p1, p2, pm) = (
        blob(config.digest()),
        blob(&d1),
        blob(&d2),
        blob(manifest.digest()),
    );
    let tarball = tar_of(&[
        ("manifest.json", Node::File(&mj, 0o644)),
        ("blobs", Node::Dir),
        ("blobs/sha256", Node::Dir),
        (&p1, Node::File(&l1, 0o644)),
        (&p2, Node::File(&l2, 0o644)),
        (&cp, Node::File(config.raw(), 0o644)),
        (&pm, Node::File(manifest.raw(), 0o644)),
        ("index.json", Node::File(&ij, 0o644)),
        (
            "oci-layout",
            Node::File(br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644),
        ),
        ("repositories", Node::File(br#"{"hand":{"25":"x"}}"#, 0o644)),
    ]);
    let (_d, dst) = oci_dir();
    let loaded = load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(loaded.format, ArchiveFormat::DockerOci);
    assert_eq!(
        &loaded.images[0].descriptor,
        &manifest.descriptor(),
        "the archive's own manifest is kept"
    );
    assert_eq!(
        dst.resolve_tag("hand:25").expect("tag").digest(),
        manifest.descriptor().digest()
    );
}

/// The old layout with manifest.json first and skopeo-style symlinked layer dirs.
#[test]
fn legacy_layout_with_symlinks_and_manifest_first() {
    let l1 = busybox_layer();
    let config = config_for(std::slice::from_ref(&l1), "amd64");
    let d1 = Digest::sha256(&l1);
    let mj = serde_json::to_vec(&json!([{
        "Config": format!("{}.json", config.digest().hex()),
        "RepoTags": ["linked:1"],
        "Layers": ["v1id/layer.tar"],
    }]))
    .expect("json");
    let real = format!("{}/layer.tar", d1.hex());
    let link_target = format!("../{}/layer.tar", d1.hex());
    let cfg = format!("{}.json", config.digest().hex());
    let tarball = tar_of(&[
        ("manifest.json", Node::File(&mj, 0o644)),
        (&real, Node::File(&l1, 0o644)),
        ("v1id", Node::Dir),
        ("v1id/VERSION", Node::File(b"1.0", 0o644)),
        ("v1id/json", Node::File(b"{}", 0o644)),
        ("v1id/layer.tar", Node::Symlink(&link_target)),
        (&cfg, Node::File(config.raw(), 0o644)),
    ]);
    let (_d, dst) = oci_dir();
    load(
        &dst,
        ShortReads {
            data: &tarball,
            n: 1,
        },
        &LoadOptions::default(),
    )
    .expect("load");
    assert_eq!(manifest_of(&dst, "linked:1").layer_digests(), vec![d1]);
}

#[test]
fn several_images_in_one_archive_share_layers() {
    let (_d, src) = oci_dir();
    let base = busybox_layer();
    let a = make_image(
        &src,
        &[
            (base.clone(), Compression::Gzip),
            (file_layer("etc/a", b"a"), Compression::Gzip),
        ],
        "amd64",
    );
    let b = make_image(
        &src,
        &[
            (base, Compression::Gzip),
            (file_layer("etc/b", b"b"), Compression::None),
        ],
        "amd64",
    );
    let images = [
        SaveImage::new(a.manifest.clone(), vec!["a:1".into(), "a:latest".into()]),
        SaveImage::new(b.manifest.clone(), vec!["b:1".into()]),
    ];
    for (layout, form) in [
        (DockerLayout::Legacy, RepoTagForm::Familiar),
        (DockerLayout::Oci, RepoTagForm::Normalized),
    ] {
        let mut tarball = Vec::new();
        let options = SaveOptions::default().layout(layout).repo_tags(form);
        let report = save_docker(&src, &images, &mut tarball, &options).expect("save");
        assert_eq!(report.images, 2);
        let (_d2, dst) = oci_dir();
        let loaded = load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
        assert_eq!(loaded.images.len(), 2);
        let tags: Vec<String> = dst
            .tags()
            .expect("tags")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            tags,
            [
                "docker.io/library/a:1",
                "docker.io/library/a:latest",
                "docker.io/library/b:1"
            ]
        );
        assert_eq!(manifest_of(&dst, "a:1").layer_digests(), a.diff_ids());
        assert_eq!(manifest_of(&dst, "b:1").layer_digests(), b.diff_ids());
    }
}

/// An index of an amd64 (busybox, gzip) and an arm64 (zstd) image in
/// `src`, tagged `multi:1`.
fn two_platform_index(src: &OciDir) -> (TestImage, TestImage, image_core::Descriptor) {
    let amd = make_image(src, &[(busybox_layer(), Compression::Gzip)], "amd64");
    let arm = make_image(
        src,
        &[(file_layer("etc/arch", b"arm64"), Compression::Zstd)],
        "arm64",
    );
    let index = make_index(src, &[(&amd, "amd64"), (&arm, "arm64")]);
    src.set_tag("multi:1", &index).expect("tag");
    (amd, arm, index)
}

#[test]
fn oci_archive_round_trip_of_an_index() {
    let (_d, src) = oci_dir();
    let (amd, arm, index) = two_platform_index(&src);
    let mut tarball = Vec::new();
    let report = save_oci(
        &src,
        &[SaveImage::from_tag(&src, "multi:1").expect("image")],
        &mut tarball,
    )
    .expect("save");
    assert_eq!(report.images, 1);
    // 1 index + 2 manifests + 2 configs + 2 layers
    assert_eq!(report.files, 7 + 2);

    let dst = MemoryStore::new();
    let loaded = load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(loaded.format, ArchiveFormat::Oci);
    assert_eq!(loaded.images[0].descriptor.digest(), index.digest());
    assert_eq!(
        dst.resolve_tag("multi:1").expect("tag").digest(),
        index.digest()
    );
    for d in [&amd.layers[0], &arm.layers[0]] {
        assert!(dst
            .exists(&Digest::try_from(d.digest().as_ref()).expect("digest"))
            .expect("exists"));
    }

    // A docker-save of the index picks one platform.
    let mut docker = Vec::new();
    save_docker(
        &src,
        &[SaveImage::from_tag(&src, "multi:1").expect("image")],
        &mut docker,
        &SaveOptions::default().platform("linux/arm64".parse().expect("platform")),
    )
    .expect("save docker");
    let (_d3, dst3) = oci_dir();
    load(&dst3, &docker[..], &LoadOptions::default()).expect("load");
    assert_eq!(
        manifest_of(&dst3, "multi:1").layer_digests(),
        arm.diff_ids()
    );
    let err = save_docker(
        &src,
        &[SaveImage::from_tag(&src, "multi:1").expect("image")],
        &mut Vec::new(),
        &SaveOptions::default().platform("linux/s390x".parse().expect("platform")),
    )
    .expect_err("no such platform");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::NoPlatform { .. }), "{err}");
}

#[test]
fn oci_archive_bare_tags_take_the_repository_option() {
    let (_d, src) = oci_dir();
    let img = make_image(&src, &[(busybox_layer(), Compression::Gzip)], "amd64");
    let cfg = img.config.digest();
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut files: Vec<(String, Vec<u8>)> = vec![(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mdig = Digest::try_from(img.manifest.digest().as_ref()).expect("digest");
    for d in [
        cfg.clone(),
        Digest::try_from(img.layers[0].digest().as_ref()).expect("d"),
        mdig.clone(),
    ] {
        files.push((blob(&d), src.read_blob_to_vec(&d, 1 << 30).expect("blob")));
    }
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": mdig.to_string(), "size": img.manifest.size(),
        "annotations": {"org.opencontainers.image.ref.name": "stable"}}]});
    files.push((
        "index.json".into(),
        serde_json::to_vec(&index).expect("json"),
    ));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let tarball = archive_of(&refs);
    let dst = MemoryStore::new();
    let loaded = load(
        &dst,
        &tarball[..],
        &LoadOptions::default().repository("quay.io/x/y"),
    )
    .expect("load");
    assert_eq!(loaded.images[0].tags, ["quay.io/x/y:stable"]);
}

// ---------------------------------------------------------------- bad input

fn good_legacy_archive() -> (Vec<u8>, Vec<u8>, image_core::ImageConfig) {
    let layer = file_layer("etc/data", &vec![7u8; 5000]);
    let config = config_for(std::slice::from_ref(&layer), "amd64");
    let mj = serde_json::to_vec(&json!([{
        "Config": format!("{}.json", config.digest().hex()),
        "RepoTags": ["bad:1"],
        "Layers": ["l/layer.tar"],
    }]))
    .expect("json");
    let cfg = format!("{}.json", config.digest().hex());
    let tarball = archive_of(&[
        ("l/layer.tar", &layer),
        (&cfg, config.raw()),
        ("manifest.json", &mj),
    ]);
    (tarball, layer, config)
}

#[test]
fn truncated_archives_are_typed_errors_and_tag_nothing() {
    let (tarball, _, _) = good_legacy_archive();
    {
        let (_d, dst) = oci_dir();
        load(&dst, &tarball[..], &LoadOptions::default()).expect("the whole archive loads");
    }
    // Mid-header, mid-layer data, inside the next header. (Ending at an
    // entry boundary is a complete tar, as for docker load: see
    // tests/archive_ending.rs.)
    let after_header = 512 + 5000usize.div_ceil(512) * 512 + 512;
    for cut in [100usize, 512 + 3000, after_header - 200, after_header + 10] {
        let (_d, dst) = oci_dir();
        let err = load(&dst, &tarball[..cut], &LoadOptions::default()).expect_err("truncated");
        image_testsupport::chain::assert_said_once(&err);
        assert!(
            matches!(err, ArchiveError::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_untouched(&dst);
        let ingests = image_store::Ingester::ingests(&dst).expect("ingests");
        assert!(ingests.is_empty(), "no ingest left behind: {ingests:?}");
    }
}

#[test]
fn layers_not_matching_their_diff_ids_are_rejected() {
    let layer = file_layer("etc/data", b"real");
    let other = file_layer("etc/data", b"fake");
    let config = config_for(&[other], "amd64");
    let cfg = format!("{}.json", config.digest().hex());
    let mj = serde_json::to_vec(
        &json!([{"Config": cfg, "RepoTags": ["bad:1"], "Layers": ["l/layer.tar"]}]),
    )
    .expect("json");
    for compressed in [false, true] {
        let layer_bytes = if compressed {
            compress(&layer, Compression::Gzip)
        } else {
            layer.clone()
        };
        let tarball = archive_of(&[
            ("l/layer.tar", &layer_bytes),
            (&cfg, config.raw()),
            ("manifest.json", &mj),
        ]);
        let (_d, dst) = oci_dir();
        let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("mismatch");
        image_testsupport::chain::assert_said_once(&err);
        match &err {
            ArchiveError::LayerMismatch {
                path,
                expected,
                found,
                ..
            } => {
                assert_eq!(path, "l/layer.tar");
                assert_eq!(expected, &config.diff_ids()[0]);
                assert_eq!(found, &Digest::sha256(&layer));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert_untouched(&dst);
    }
}

#[test]
fn blobs_not_matching_their_names_are_rejected() {
    let name = format!("blobs/sha256/{}", Digest::sha256(b"something else").hex());
    let tarball = archive_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        (&name, b"content"),
        ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
    ]);
    let (_d, dst) = oci_dir();
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("mismatch");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::BlobMismatch { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::DigestMismatch);
    assert!(image_store::Manager::list(&dst).expect("list").is_empty());
}

fn oci_archive_pointing_at(blob: &[u8], media_type: &str) -> Vec<u8> {
    let d = Digest::sha256(blob);
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": d.to_string(), "size": blob.len(),
        "annotations": {"org.opencontainers.image.ref.name": "x:1"}}]}))
    .expect("json");
    let path = format!("blobs/sha256/{}", d.hex());
    archive_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        (&path, blob),
        ("index.json", &index),
    ])
}

#[test]
fn unknown_media_types_are_unsupported() {
    let tarball = oci_archive_pointing_at(b"{}", "application/x-unknown");
    let (_d, dst) = oci_dir();
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("unknown");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::MediaType { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_untouched(&dst);
}

#[test]
fn json_that_is_not_a_manifest_is_rejected() {
    // An index entry whose blob is JSON but no manifest.
    let tarball = oci_archive_pointing_at(
        br#"{"hello":"world","layers":7}"#,
        "application/vnd.oci.image.manifest.v1+json",
    );
    let (_d, dst) = oci_dir();
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("not a manifest");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::Parse { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_untouched(&dst);

    // manifest.json that is not docker-save's array.
    let tarball = archive_of(&[("manifest.json", br#"{"schemaVersion":2}"#)]);
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("not an array");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::Json { .. }), "{err:?}");

    // A "config" that is a manifest.
    let layer = file_layer("etc/x", b"x");
    let fake = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
    let cfg = format!("{}.json", Digest::sha256(fake).hex());
    let mj = serde_json::to_vec(
        &json!([{"Config": cfg, "RepoTags": ["bad:1"], "Layers": ["l/layer.tar"]}]),
    )
    .expect("json");
    let tarball = archive_of(&[
        ("l/layer.tar", &layer),
        (&cfg, fake),
        ("manifest.json", &mj),
    ]);
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("not a config");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::Parse { .. }), "{err:?}");
    assert_untouched(&dst);
}

#[test]
fn missing_files_and_non_archives_are_rejected() {
    let (_d, dst) = oci_dir();
    let err = load(
        &dst,
        &archive_of(&[("hello.txt", b"hi")])[..],
        &LoadOptions::default(),
    )
    .expect_err("not an archive");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::NotAnArchive), "{err:?}");
    let err = load(
        &dst,
        &b"this is not a tar file at all"[..],
        &LoadOptions::default(),
    )
    .expect_err("garbage");
    image_testsupport::chain::assert_said_once(&err);
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");

    let (_, layer, config) = good_legacy_archive();
    let cfg = format!("{}.json", config.digest().hex());
    let mj = serde_json::to_vec(
        &json!([{"Config": cfg, "RepoTags": ["bad:1"], "Layers": ["missing/layer.tar"]}]),
    )
    .expect("json");
    let tarball = archive_of(&[
        ("l/layer.tar", &layer),
        (&cfg, config.raw()),
        ("manifest.json", &mj),
    ]);
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("missing");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(&err, ArchiveError::MissingEntry { path, .. } if path == "missing/layer.tar"),
        "{err:?}"
    );

    let mj = serde_json::to_vec(&json!([{"Config": cfg, "RepoTags": ["bad:1"], "Layers": []}]))
        .expect("json");
    let tarball = archive_of(&[(&cfg, config.raw()), ("manifest.json", &mj)]);
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("count");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(
            err,
            ArchiveError::LayerCount {
                layers: 0,
                diff_ids: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let mj =
        serde_json::to_vec(&json!([{"Config": "../../etc/passwd", "RepoTags": [], "Layers": []}]))
            .expect("json");
    let tarball = archive_of(&[("manifest.json", &mj)]);
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("unsafe");
    image_testsupport::chain::assert_said_once(&err);
    assert_eq!(err.kind(), ErrorKind::Unsafe, "{err:?}");
    assert_untouched(&dst);
}

#[test]
fn a_bad_second_image_tags_neither() {
    let (tarball_ok, layer, config) = good_legacy_archive();
    drop(tarball_ok);
    let cfg = format!("{}.json", config.digest().hex());
    let mj = serde_json::to_vec(&json!([
        {"Config": cfg, "RepoTags": ["good:1"], "Layers": ["l/layer.tar"]},
        {"Config": cfg, "RepoTags": ["bad:1"], "Layers": ["nope/layer.tar"]},
    ]))
    .expect("json");
    let tarball = archive_of(&[
        ("l/layer.tar", &layer),
        (&cfg, config.raw()),
        ("manifest.json", &mj),
    ]);
    let (_d, dst) = oci_dir();
    load(&dst, &tarball[..], &LoadOptions::default()).expect_err("second image is bad");
    assert_untouched(&dst);
}

#[test]
fn export_detects_a_corrupt_layer() {
    let store = MemoryStore::new();
    let img = make_image(
        &store,
        &[(file_layer("etc/x", b"x"), Compression::Gzip)],
        "amd64",
    );
    let d = Digest::try_from(img.layers[0].digest().as_ref()).expect("digest");
    assert!(store.corrupt(&d, b"garbage that is not gzip"));
    let err = save_docker(
        &store,
        &[SaveImage::new(img.manifest.clone(), vec!["x:1".into()])],
        &mut Vec::new(),
        &SaveOptions::default(),
    )
    .expect_err("corrupt");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(
            err.kind(),
            ErrorKind::DigestMismatch | ErrorKind::SizeMismatch | ErrorKind::InvalidInput
        ),
        "{err:?}"
    );
    let err = save_oci(
        &store,
        &[SaveImage::new(img.manifest, vec!["x:1".into()])],
        &mut Vec::new(),
    )
    .expect_err("corrupt");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(
            err.kind(),
            ErrorKind::DigestMismatch | ErrorKind::SizeMismatch
        ),
        "{err:?}"
    );
}

#[test]
fn loading_twice_skips_present_blobs_and_still_detects_truncation() {
    let store = MemoryStore::new();
    let img = make_image(&store, &[(busybox_layer(), Compression::Gzip)], "amd64");
    let mut tarball = Vec::new();
    save_oci(
        &store,
        &[SaveImage::new(img.manifest.clone(), vec!["twice:1".into()])],
        &mut tarball,
    )
    .expect("save");
    let (_d, dst) = oci_dir();
    let first = load(&dst, &tarball[..], &LoadOptions::default()).expect("first");
    let second = load(&dst, &tarball[..], &LoadOptions::default()).expect("second");
    assert_eq!(first.images, second.images);
    // A stream cut inside a blob the store already has is still truncated.
    let err =
        load(&dst, &tarball[..tarball.len() / 2], &LoadOptions::default()).expect_err("truncated");
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{err:?}");
}

/// An OCI archive read in place gives what `load` gives: the same tags
/// and blobs, each verified; a symlinked blob is followed within the
/// archive; a corrupt blob fails its read, typed.
#[test]
fn an_oci_archive_read_in_place_serves_what_load_stores() {
    use image_store::archive::OciArchive;
    let (_d, src) = oci_dir();
    let (amd, _, index) = two_platform_index(&src);
    let mut tarball = Vec::new();
    save_oci(
        &src,
        &[SaveImage::from_tag(&src, "multi:1").expect("image")],
        &mut tarball,
    )
    .expect("save");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.tar");
    std::fs::write(&path, &tarball).expect("write");

    let archive = OciArchive::open(&path).expect("open");
    let loaded = MemoryStore::new();
    load(&loaded, &tarball[..], &LoadOptions::default()).expect("load");
    let tags = |t: Vec<image_store::Tagged>| {
        let mut t: Vec<_> = t.into_iter().map(|t| (t.name, t.descriptor)).collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    assert_eq!(tags(archive.tags().expect("tags")).len(), 1);
    assert_eq!(
        image_store::resolve_reference(&archive, "multi:1")
            .expect("resolve")
            .digest(),
        index.digest()
    );
    use image_store::Manager;
    let blobs: Vec<Digest> = loaded
        .list()
        .expect("list")
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(blobs.len(), 7);
    for d in &blobs {
        assert_eq!(
            archive.read_blob_to_vec(d, 1 << 30).expect("archive blob"),
            loaded.read_blob_to_vec(d, 1 << 30).expect("loaded blob"),
        );
    }
    assert!(archive.set_tag("x:1", &index).is_err());

    // A blob reached through a symlink; one with a flipped byte.
    let layer = amd.layers[0].clone();
    let hex = layer
        .digest()
        .as_ref()
        .rsplit(':')
        .next()
        .expect("hex")
        .to_owned();
    let bytes = src
        .read_blob_to_vec(
            &Digest::try_from(layer.digest().as_ref()).expect("digest"),
            1 << 30,
        )
        .expect("layer");
    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    let other = Digest::sha256(b"other");
    let linked = tar_of(&[
        (
            "oci-layout",
            Node::File(br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644),
        ),
        (
            "index.json",
            Node::File(br#"{"schemaVersion":2,"manifests":[]}"#, 0o644),
        ),
        ("data/layer", Node::File(&bytes, 0o644)),
        (
            &format!("blobs/sha256/{hex}"),
            Node::Symlink("../../data/layer"),
        ),
        (
            &format!("blobs/sha256/{}", other.hex()),
            Node::File(&flipped, 0o644),
        ),
    ]);
    std::fs::write(&path, &linked).expect("write");
    let archive = OciArchive::open(&path).expect("open");
    let d = Digest::try_from(layer.digest().as_ref()).expect("digest");
    assert_eq!(
        archive.read_blob_to_vec(&d, 1 << 30).expect("linked"),
        bytes
    );
    let e = archive
        .read_blob_to_vec(&other, 1 << 30)
        .expect_err("corrupt");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
}

/// Hostile archives opened in place: an entry climbing out of the
/// archive, a missing layout, and every cut of a good archive give typed
/// errors or (cut past the last entry) the archive's blobs, verified.
#[test]
fn hostile_or_cut_archives_opened_in_place_give_typed_errors() {
    use image_store::archive::OciArchive;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.tar");
    let open = |bytes: &[u8]| {
        std::fs::write(&path, bytes).expect("write");
        OciArchive::open(&path)
    };
    // tar-rs refuses to write `..`: the name goes into the header by hand.
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_old_mut().name[..16].copy_from_slice(b"../../etc/passwd");
    h.set_cksum();
    let mut climbing = h.as_bytes().to_vec();
    climbing.extend_from_slice(&[b'x'; 512]);
    climbing.extend_from_slice(&[0; 1024]);
    let e = open(&climbing).expect_err("climbing");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
    let e = open(&tar_of(&[("index.json", Node::File(b"{}", 0o644))])).expect_err("no layout");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ArchiveError::NotAnArchive), "{e}");
    let e = open(&[]).expect_err("empty");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ArchiveError::NotAnArchive), "{e}");

    let blob = b"some layer bytes".repeat(100);
    let good = oci_archive_pointing_at(&blob, "application/vnd.oci.image.manifest.v1+json");
    let d = Digest::sha256(&blob);
    for cut in (0..good.len()).step_by(97).chain([good.len()]) {
        match open(&good[..cut]) {
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Io
                ),
                "cut at {cut}: {e:?}"
            ),
            Ok(a) => assert_eq!(a.read_blob_to_vec(&d, 1 << 20).expect("blob"), blob),
        }
    }
}
