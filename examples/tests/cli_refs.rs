//! Digest references through `imagectl`, end to end: an archive, an OCI
//! archive, `tag`, `append` and `copy` cannot make a name that holds a
//! digest, and `NAME@DIGEST` names the image with that content
//! (`inspect`, and `bundle`, which resolves as `run` and `create` do).
//! Run as root with busybox-static installed, or skipped loudly unless
//! CI=true.

mod common;

use std::io::Read;
use std::path::Path;

use common::{ready, Cleanup, Cli};

/// A busybox root filesystem whose `/etc/who` says `who`.
fn rootfs(dir: &Path, who: &str) {
    common::busybox_rootfs(dir, &["true"]);
    std::fs::write(dir.join("etc/who"), who).expect("write");
}

/// `imagectl append` of `rootfs` as `tag`; returns the manifest digest.
fn append(cli: &Cli, rootfs: &Path, tag: &str) -> String {
    let out = cli.ok(&[
        "append",
        "--rootfs",
        rootfs.to_str().expect("utf8"),
        "--tag",
        tag,
    ]);
    let first = out.lines().next().expect("output");
    first.split_whitespace().nth(1).expect("digest").to_owned()
}

/// Rewrites the file `name` of the tar archive `path` with `edit`.
fn rewrite(path: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read archive");
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut out = tar::Builder::new(Vec::new());
    let mut found = false;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("data");
        if entry.path().expect("path").to_str() == Some(name) {
            let mut v: serde_json::Value = serde_json::from_slice(&data).expect("json");
            edit(&mut v);
            data = serde_json::to_vec(&v).expect("json");
            header.set_size(data.len() as u64);
            header.set_cksum();
            found = true;
        }
        out.append(&header, &data[..]).expect("append");
    }
    assert!(found, "{name} not in {}", path.display());
    out.into_inner().expect("tar")
}

fn who(bundle: &Path) -> String {
    std::fs::read_to_string(bundle.join("rootfs/etc/who")).expect("read who")
}

#[test]
fn names_with_a_digest_are_refused_and_digests_resolve_by_content() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let tmp = cli.tmp.path();
    rootfs(&tmp.join("real"), "real");
    rootfs(&tmp.join("evil"), "evil");
    let digest = append(&cli, &tmp.join("real"), "test/bb:latest");
    append(&cli, &tmp.join("evil"), "evil:1");
    let pinned = format!("test/bb@{digest}");
    let images = cli.ok(&["images"]);

    // tag, append and copy refuse to make the name.
    for args in [
        vec!["tag", "evil:1", pinned.as_str()],
        vec![
            "append",
            "--rootfs",
            tmp.join("evil").to_str().expect("utf8"),
            "--tag",
            &pinned,
        ],
    ] {
        let err = cli.fails(&args);
        assert!(err.contains("cannot hold a digest"), "{args:?}: {err}");
    }
    let layout = format!("oci:{}:{pinned}", tmp.join("layout").display());
    let err = cli.fails(&["copy", "evil:1", &layout]);
    assert!(err.contains("cannot hold a digest"), "{err}");

    // A docker-save archive and an OCI archive naming other content so.
    let docker = tmp.join("evil-docker.tar");
    let oci = tmp.join("evil-oci.tar");
    cli.ok(&["save", "evil:1", "-o", docker.to_str().expect("utf8")]);
    cli.ok(&[
        "save",
        "--format",
        "oci",
        "evil:1",
        "-o",
        oci.to_str().expect("utf8"),
    ]);
    let poisoned_docker = rewrite(&docker, "manifest.json", |v| {
        v[0]["RepoTags"] = serde_json::json!([pinned]);
    });
    let poisoned_oci = rewrite(&oci, "index.json", |v| {
        v["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
            serde_json::json!(pinned);
    });
    for (file, bytes) in [("docker.tar", poisoned_docker), ("oci.tar", poisoned_oci)] {
        let path = tmp.join(file);
        std::fs::write(&path, bytes).expect("write");
        let err = cli.fails(&["load", path.to_str().expect("utf8")]);
        assert!(err.contains("cannot hold a digest"), "{file}: {err}");
    }
    assert_eq!(cli.ok(&["images"]), images, "nothing was tagged");

    // The digest names the real image: inspect, and bundle (resolved as
    // run and create resolve).
    let inspect: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", &pinned])).expect("json");
    assert_eq!(inspect["manifestDigest"], digest.as_str());
    let bundle = tmp.join("bundle");
    cli.ok(&[
        "bundle",
        &pinned,
        bundle.to_str().expect("utf8"),
        "/bin/true",
    ]);
    assert_eq!(who(&bundle), "real");
    // Another repository does not name it.
    let err = cli.fails(&["inspect", &format!("other/x@{digest}")]);
    assert!(err.contains("no image of repository"), "{err}");
}

/// The tags `imagectl images --json` lists.
fn listed(cli: &Cli) -> Vec<String> {
    let out: serde_json::Value =
        serde_json::from_str(&cli.ok(&["images", "--json"])).expect("json");
    let mut names: Vec<String> = out
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

/// `imagectl rmi NAME@DIGEST` removes the image by content, as `docker rmi
/// busybox@sha256:...` does: every tag of that repository pointing at the
/// digest goes; tags of other repositories and other images stay.
#[test]
fn rmi_by_digest_untags_the_repositorys_tags_of_that_image() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let (a, b) = (cli.tmp.path().join("a"), cli.tmp.path().join("b"));
    rootfs(&a, "a");
    rootfs(&b, "b");
    let digest = append(&cli, &a, "test/rm:1");
    cli.ok(&["tag", "test/rm:1", "test/rm:2"]);
    cli.ok(&["tag", "test/rm:1", "test/other:1"]);
    append(&cli, &b, "test/rm:3");
    let before = listed(&cli);

    let out = cli.ok(&["rmi", &format!("test/rm@{digest}")]);
    assert!(out.contains("Untagged: docker.io/test/rm:1"), "{out}");
    assert!(out.contains("Untagged: docker.io/test/rm:2"), "{out}");
    let after = listed(&cli);
    let gone: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
    assert_eq!(gone.len(), 2, "{before:?} -> {after:?}");
    assert!(gone
        .iter()
        .all(|n| n.contains("test/rm:1") || n.contains("test/rm:2")));
    // The other repository still names it; resolving by digest there works.
    cli.ok(&["inspect", &format!("test/other@{digest}")]);
    // Gone from this repository: a second rmi and an inspect find nothing.
    let err = cli.fails(&["rmi", &format!("test/rm@{digest}")]);
    assert!(err.contains("not found"), "{err}");
    cli.fails(&["inspect", &format!("test/rm@{digest}")]);
    // A digest no tag of the repository reaches removes nothing.
    let err = cli.fails(&["rmi", &format!("test/none@{digest}")]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(listed(&cli), after);
}
