//! Archives against the real peers: skopeo 1.9 and podman 4.3. A missing
//! tool skips its test loudly (and fails it under CI=true). Podman runs
//! with a private root in a temporary directory (vfs driver), so the
//! machine's podman store is never touched; every child is bounded by
//! timeout(1).

mod archive_fixtures;

use std::path::Path;

use archive_fixtures::*;
use image_core::{Compression, Digest, Manifest};
use image_store::archive::{
    load, save_docker, save_oci, ArchiveFormat, DockerLayout, LoadOptions, RepoTagForm, SaveImage,
    SaveOptions,
};
use image_store::{OciDir, Provider, TagStore};
use serde_json::Value;

fn manifest_of(store: &OciDir, name: &str) -> Manifest {
    let d = store.resolve_tag(name).expect("tag");
    let digest = Digest::try_from(d.digest().as_ref()).expect("digest");
    Manifest::from_bytes(store.read_blob_to_vec(&digest, 1 << 20).expect("manifest"))
        .expect("parse")
}

fn busybox_image(store: &OciDir, name: &str) -> TestImage {
    let img = make_image(
        store,
        &[
            (busybox_layer(), Compression::Gzip),
            (file_layer("etc/hello", name.as_bytes()), Compression::None),
        ],
        "amd64",
    );
    store.set_tag(name, &img.manifest).expect("tag");
    img
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn diff_ids_str(img: &TestImage) -> Vec<String> {
    img.diff_ids().iter().map(ToString::to_string).collect()
}

/// podman with a private store under `dir`.
fn podman(dir: &Path, args: &[&str]) -> std::process::Output {
    let root = dir.join("root");
    let runroot = dir.join("run");
    let mut all = vec![
        "--root",
        root.to_str().expect("utf8"),
        "--runroot",
        runroot.to_str().expect("utf8"),
        "--storage-driver",
        "vfs",
        "--events-backend",
        "file",
    ];
    all.extend_from_slice(args);
    run(180, "podman", &all)
}

fn podman_names(dir: &Path) -> Vec<(String, String)> {
    let v = json_of(&podman(dir, &["images", "--format", "json"]));
    let mut out = Vec::new();
    for image in v.as_array().expect("array") {
        let id = image["Id"].as_str().unwrap_or_default().to_owned();
        for n in image["Names"].as_array().into_iter().flatten() {
            out.push((n.as_str().unwrap_or_default().to_owned(), id.clone()));
        }
    }
    out.sort();
    out
}

#[test]
fn skopeo_and_podman_read_our_docker_archives() {
    if !have("skopeo") || !have("podman") {
        return;
    }
    let (tmp, store) = oci_dir();
    let a = busybox_image(&store, "interop-a:v1");
    let b = busybox_image(&store, "quay.io/team/interop-b:v2");
    for (layout, form) in [
        (DockerLayout::Legacy, RepoTagForm::Normalized),
        (DockerLayout::Oci, RepoTagForm::Normalized),
        (DockerLayout::Legacy, RepoTagForm::Familiar),
    ] {
        let file = tmp.path().join(format!("{layout:?}-{form:?}.tar"));
        let f = std::fs::File::create(&file).expect("create");
        save_docker(
            &store,
            &[
                SaveImage::from_tag(&store, "interop-a:v1").expect("a"),
                SaveImage::from_tag(&store, "quay.io/team/interop-b:v2").expect("b"),
            ],
            std::io::BufWriter::new(f),
            &SaveOptions::default().layout(layout).repo_tags(form),
        )
        .expect("save");

        // skopeo reads each image of the archive by name.
        let arg = format!("docker-archive:{}:interop-a:v1", file.display());
        let v = json_of(&run(60, "skopeo", &["inspect", &arg]));
        assert_eq!(
            v["Layers"],
            serde_json::json!(diff_ids_str(&a)),
            "{layout:?}"
        );
        assert_eq!(v["Architecture"], "amd64");
        let arg = format!(
            "docker-archive:{}:quay.io/team/interop-b:v2",
            file.display()
        );
        let v = json_of(&run(60, "skopeo", &["inspect", "--config", &arg]));
        assert_eq!(v["rootfs"]["diff_ids"], serde_json::json!(diff_ids_str(&b)));

        // podman loads both under their normalised names, with our image IDs.
        let pdir = tempfile::tempdir().expect("tempdir");
        podman(pdir.path(), &["load", "-i", file.to_str().expect("utf8")]);
        let names = podman_names(pdir.path());
        // Podman 4.3 reads a short docker.io name (Docker's familiar form)
        // as localhost/...: the normalised form is what keeps the name.
        let a_name = match form {
            RepoTagForm::Familiar => "localhost/interop-a:v1",
            _ => "docker.io/library/interop-a:v1",
        };
        let expect = vec![
            (a_name.to_owned(), a.config.digest().hex().to_owned()),
            (
                "quay.io/team/interop-b:v2".to_owned(),
                b.config.digest().hex().to_owned(),
            ),
        ];
        assert_eq!(names, expect, "{layout:?}");
        podman(pdir.path(), &["rmi", "-a", "-f"]);
        assert!(podman_names(pdir.path()).is_empty());
    }
}

#[test]
fn skopeo_docker_archive_of_our_layout_imports_identically() {
    if !have("skopeo") {
        return;
    }
    let (tmp, store) = oci_dir();
    let img = busybox_image(&store, "skop:1");
    let out = tmp.path().join("skopeo.tar");
    let src = format!("oci:{}:docker.io/library/skop:1", store.root().display());
    let dst = format!("docker-archive:{}:skop:1", out.display());
    run(120, "skopeo", &["copy", "-q", &src, &dst]);

    let (_t2, fresh) = oci_dir();
    let report = load(
        &fresh,
        std::fs::File::open(&out).expect("open"),
        &LoadOptions::default(),
    )
    .expect("load skopeo's archive");
    assert_eq!(report.format, ArchiveFormat::DockerLegacy);
    assert_eq!(report.images[0].tags, ["docker.io/library/skop:1"]);
    let m = manifest_of(&fresh, "skop:1");
    assert_eq!(
        &m.config_digest(),
        img.config.digest(),
        "same config digest (image ID)"
    );
    assert_eq!(
        m.layer_digests(),
        img.diff_ids(),
        "layers are the uncompressed tars, named by diff ID"
    );
}

#[test]
fn skopeo_reads_our_oci_archive_and_we_read_its() {
    if !have("skopeo") {
        return;
    }
    let (tmp, store) = oci_dir();
    let img = busybox_image(&store, "ociarch:3");
    let file = tmp.path().join("ours.oci.tar");
    save_oci(
        &store,
        &[SaveImage::from_tag(&store, "ociarch:3").expect("image")],
        std::fs::File::create(&file).expect("create"),
    )
    .expect("save");
    let arg = format!("oci-archive:{}", file.display());
    let v = json_of(&run(60, "skopeo", &["inspect", &arg]));
    assert_eq!(v["Digest"], img.manifest.digest().to_string());
    let v = json_of(&run(60, "skopeo", &["inspect", "--config", &arg]));
    assert_eq!(
        v["rootfs"]["diff_ids"],
        serde_json::json!(diff_ids_str(&img))
    );

    // skopeo's own OCI archive (ref name: the bare tag) loads back.
    let theirs = tmp.path().join("theirs.oci.tar");
    let dst = format!("oci-archive:{}:three", theirs.display());
    run(120, "skopeo", &["copy", "-q", &arg, &dst]);
    let (_t2, fresh) = oci_dir();
    let report = load(
        &fresh,
        std::fs::File::open(&theirs).expect("open"),
        &LoadOptions::default().repository("ociarch"),
    )
    .expect("load");
    assert_eq!(report.format, ArchiveFormat::Oci);
    assert_eq!(report.images[0].tags, ["docker.io/library/ociarch:three"]);
    assert_eq!(
        &manifest_of(&fresh, "ociarch:three").config_digest(),
        img.config.digest()
    );

    // skopeo's docker-archive of our OCI archive loads too.
    let docker = tmp.path().join("theirs.docker.tar");
    let dst = format!("docker-archive:{}:ociarch:3", docker.display());
    run(120, "skopeo", &["copy", "-q", &arg, &dst]);
    let (_t3, fresh) = oci_dir();
    load(
        &fresh,
        std::fs::File::open(&docker).expect("open"),
        &LoadOptions::default(),
    )
    .expect("load");
    assert_eq!(
        manifest_of(&fresh, "ociarch:3").layer_digests(),
        img.diff_ids()
    );
}

#[test]
fn umoci_and_oci_image_tool_accept_our_oci_archive() {
    if !have("umoci") || !have("oci-image-tool") || !have("tar") {
        return;
    }
    let (tmp, store) = oci_dir();
    let img = busybox_image(&store, "unpackme:1");
    let file = tmp.path().join("ours.oci.tar");
    save_oci(
        &store,
        &[SaveImage::new(
            img.manifest.clone(),
            vec!["unpackme:1".into()],
        )],
        std::fs::File::create(&file).expect("create"),
    )
    .expect("save");
    let layout = tmp.path().join("extracted");
    std::fs::create_dir(&layout).expect("mkdir");
    run(
        60,
        "tar",
        &[
            "-xf",
            file.to_str().expect("utf8"),
            "-C",
            layout.to_str().expect("utf8"),
        ],
    );
    let name = "docker.io/library/unpackme:1";
    run(
        60,
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            &format!("name={name}"),
            layout.to_str().expect("utf8"),
        ],
    );
    let bundle = tmp.path().join("bundle");
    let image = format!("{}:{name}", layout.display());
    run(
        120,
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().expect("utf8")],
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).expect("link"),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/hello")).expect("hello"),
        b"unpackme:1"
    );
}
