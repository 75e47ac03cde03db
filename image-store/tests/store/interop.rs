//! Interop with the real peers: skopeo, umoci, oci-image-tool. Each test
//! skips loudly when a tool is missing, unless CI=true.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use image_core::{Digest, MediaType};
use image_store::fsck::FsckOptions;
use image_store::{resolve_image, Ingester, OciDir, TagStore};

use crate::common::{have_tool, image_json, verify_all};

const NAME: &str = "docker.io/library/busybox:latest";

/// A layer tar holding busybox-static as /bin/busybox and /bin/sh.
fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    b.append_data(&mut dir, "bin/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    l.set_mtime(0);
    b.append_link(&mut l, "bin/sh", "busybox").unwrap();
    b.into_inner().unwrap()
}

/// Writes the busybox image into `store` and tags it `NAME`.
fn write_busybox(store: &OciDir) -> Digest {
    let layer = busybox_layer();
    let d = store.write_blob(&layer).unwrap();
    let (config, manifest) = image_json(&[(d, layer.len() as u64)], "busybox");
    store.write_blob(&config).unwrap();
    let m = store.write_blob(&manifest).unwrap();
    store
        .set_tag(
            NAME,
            &image_core::manifest::descriptor(&MediaType::OciManifest, &m, manifest.len() as u64),
        )
        .unwrap();
    m
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo() -> Command {
    let mut c = Command::new("timeout");
    c.args(["120", "skopeo", "--insecure-policy"]);
    c
}

fn check_ours(dir: &Path, name: &str) -> Digest {
    let store = OciDir::open(dir).unwrap();
    let image = resolve_image(&store, name, None)
        .unwrap_or_else(|e| panic!("{name} in {}: {e}", dir.display()));
    let digests: Vec<Digest> = image.blobs().into_iter().map(|(d, _)| d).collect();
    verify_all(&store, &digests);
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(image.layers().len(), 1);
    image.id().clone()
}

#[test]
fn skopeo_reads_and_copies_ours_and_we_read_theirs() {
    if !have_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let store = OciDir::open_or_create(&ours).unwrap();
    write_busybox(&store);
    let our_id = check_ours(&ours, NAME);

    // skopeo inspects our layout...
    let inspect = run(skopeo().args(["inspect", &format!("oci:{}:{NAME}", ours.display())]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{inspect}");
    // ...copies it to another layout under the short name...
    let theirs = tmp.path().join("theirs");
    run(skopeo().args([
        "copy",
        &format!("oci:{}:{NAME}", ours.display()),
        &format!("oci:{}:latest", theirs.display()),
    ]));
    // ...and out to a docker archive, which it copies back into a layout.
    let archive = tmp.path().join("busybox.tar");
    run(skopeo().args([
        "copy",
        &format!("oci:{}:{NAME}", ours.display()),
        &format!("docker-archive:{}:busybox:latest", archive.display()),
    ]));
    let from_archive = tmp.path().join("from-archive");
    run(skopeo().args([
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:busybox:1.0", from_archive.display()),
    ]));

    // We read what skopeo wrote, under its short names and the normalised ones.
    assert_eq!(
        check_ours(&theirs, "latest"),
        our_id,
        "same config bytes through an OCI copy"
    );
    check_ours(&from_archive, "busybox:1.0");
    check_ours(&from_archive, "docker.io/library/busybox:1.0");
    // And we can add to a layout skopeo made, then gc it without losing its tags.
    let s = OciDir::open(&theirs).unwrap();
    write_busybox(&s);
    s.gc(&image_store::GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(s.tags().unwrap().len(), 2);
    check_ours(&theirs, "latest");
    let inspect = run(skopeo().args(["inspect", &format!("oci:{}:latest", theirs.display())]));
    assert!(inspect.contains("Layers"));
}

#[test]
fn umoci_unpacks_ours() {
    if !have_tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let store = OciDir::open_or_create(&ours).unwrap();
    write_busybox(&store);
    let bundle = tmp.path().join("bundle");
    run(Command::new("timeout").args([
        "120",
        "umoci",
        "unpack",
        "--image",
        &format!("{}:{NAME}", ours.display()),
        &bundle.display().to_string(),
    ]));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(bundle.join("config.json").is_file());
    // umoci leaves the layout valid for us.
    check_ours(&ours, NAME);
}

#[test]
fn oci_image_tool_validates_ours() {
    if !have_tool("oci-image-tool") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let store = OciDir::open_or_create(&ours).unwrap();
    write_busybox(&store);
    // Leftovers of our own machinery must not upset the validator.
    store.create_lease("l", &[], None).unwrap();
    drop(store.writer("pending").unwrap());
    let out = run(Command::new("timeout").args([
        "120",
        "oci-image-tool",
        "validate",
        "--type",
        "image",
        &ours.display().to_string(),
        "--ref",
        &format!("name={NAME}"),
    ]));
    assert!(!out.contains("invalid"), "{out}");
}
