//! A layer whose media type no reader here can handle (`+encrypted`) is
//! refused by every command that reads layers, with the same class and the
//! same message, before anything is unpacked: `run` (snapshot unpack),
//! `unpack --driver` (snapshot unpack), `unpack` (flatten) and `save`.

mod common;

use std::path::Path;

use common::{Cleanup, Cli};
use image_core::manifest::descriptor;
use image_core::MediaType;
use image_store::{Ingester, OciDir, TagStore};

const ENCRYPTED: &str = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";

fn files(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for n in names {
        std::fs::write(dir.join(n), n.as_bytes()).expect("write");
    }
}

/// A two-layer image `t/two:1` and a copy `t/enc:1` whose top layer's
/// media type says it is encrypted (its bytes are still a plain gzip tar).
fn encrypted_image(cli: &Cli) {
    let (a, b) = (cli.tmp.path().join("a"), cli.tmp.path().join("b"));
    files(&a, &["base"]);
    files(&b, &["top"]);
    cli.ok(&[
        "append",
        "--rootfs",
        a.to_str().unwrap(),
        "--tag",
        "t/one:1",
    ]);
    cli.ok(&[
        "append",
        "--base",
        "t/one:1",
        "--rootfs",
        b.to_str().unwrap(),
        "--tag",
        "t/two:1",
    ]);
    let store = OciDir::open(cli.store()).expect("open store");
    let image = image_store::resolve_image(&store, "t/two:1", None).expect("resolve");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(image.manifest.raw()).expect("manifest");
    assert_eq!(manifest["layers"].as_array().expect("layers").len(), 2);
    manifest["layers"][1]["mediaType"] = serde_json::json!(ENCRYPTED);
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let digest = store.write_blob(&manifest).expect("blob");
    let desc = descriptor(&MediaType::OciManifest, &digest, manifest.len() as u64);
    store.set_tag("t/enc:1", &desc).expect("tag");
}

#[test]
fn every_layer_reader_refuses_an_encrypted_layer_with_the_same_error() {
    if !common::ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    encrypted_image(&cli);
    let root = cli.tmp.path().join("root");
    let snaps = cli.tmp.path().join("snaps");
    let tar = cli.tmp.path().join("enc.tar");
    let cases: [(&str, Vec<&str>); 4] = [
        ("run", vec!["run", "--rm", "t/enc:1", "/top"]),
        (
            "unpack --driver",
            vec![
                "unpack",
                "--driver",
                "copy",
                "t/enc:1",
                snaps.to_str().unwrap(),
            ],
        ),
        ("unpack", vec!["unpack", "t/enc:1", root.to_str().unwrap()]),
        ("save", vec!["save", "-o", tar.to_str().unwrap(), "t/enc:1"]),
    ];
    let cause = format!("unknown media type {ENCRYPTED:?}");
    for (what, args) in &cases {
        let err = cli.fails(args);
        let line = err.trim_end();
        assert!(
            line.starts_with("imagectl: unsupported: "),
            "{what}: class: {line}"
        );
        assert!(line.ends_with(&cause), "{what}: message: {line}");
        assert_eq!(line.matches(&cause).count(), 1, "{what}: repeated: {line}");
    }
    // Refused before anything was unpacked or written.
    assert!(
        !root.exists() || std::fs::read_dir(&root).unwrap().next().is_none(),
        "unpack left {}",
        root.display()
    );
    assert!(!tar.exists(), "save left {}", tar.display());
    // The same image with its real media type goes through.
    cli.ok(&[
        "unpack",
        "t/two:1",
        cli.tmp.path().join("ok").to_str().unwrap(),
    ]);
}
