//! Test images and archives for the archive, copy and interop tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use image_core::manifest::descriptor;
use image_core::oci_spec::image::{ImageIndexBuilder, MediaType as OciMediaType, PlatformBuilder};
use image_core::{Compression, Descriptor, Digest, ImageConfig, Index, MediaType};
use image_store::archive::{build_manifest, BlobStore};
use serde_json::json;

#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::codec::compress;
#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::process::run_checked as run;
#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::store::{oci_dir, ShortReads};
#[allow(unused_imports)] // each test binary uses a part
pub use image_testsupport::tools::have;

/// A file or link of a layer.
pub enum Node<'a> {
    Dir,
    File(&'a [u8], u32),
    Symlink(&'a str),
}

/// A deterministic tar of these entries.
pub fn tar_of(entries: &[(&str, Node<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, node) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).expect("dir");
            }
            Node::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).expect("file");
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).expect("symlink");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// A layer with busybox-static and a few applet links.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").unwrap_or_else(|_| b"#!/bin/false\n".to_vec());
    tar_of(&[
        ("bin", Node::Dir),
        ("bin/busybox", Node::File(&busybox, 0o755)),
        ("bin/sh", Node::Symlink("busybox")),
        ("bin/ls", Node::Symlink("busybox")),
        ("bin/echo", Node::Symlink("busybox")),
        ("bin/cat", Node::Symlink("busybox")),
    ])
}

/// A layer with one file.
pub fn file_layer(name: &str, content: &[u8]) -> Vec<u8> {
    tar_of(&[("etc", Node::Dir), (name, Node::File(content, 0o644))])
}

/// An image made in a test.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

impl TestImage {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.config.diff_ids().to_vec()
    }
}

/// A config for these uncompressed layers.
pub fn config_for(layers: &[Vec<u8>], arch: &str) -> ImageConfig {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::sha256(l).to_string())
        .collect();
    let history: Vec<_> = layers
        .iter()
        .enumerate()
        .map(
            |(i, _)| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {i}")}),
        )
        .collect();
    let v = json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    ImageConfig::from_bytes(image_core::json::to_canonical_vec(&v).expect("json")).expect("config")
}

/// Writes an image (config, layers compressed as asked, OCI manifest) into `store`.
pub fn make_image<S: BlobStore + ?Sized>(
    store: &S,
    layers: &[(Vec<u8>, Compression)],
    arch: &str,
) -> TestImage {
    let plain: Vec<Vec<u8>> = layers.iter().map(|(l, _)| l.clone()).collect();
    let config = config_for(&plain, arch);
    store.write_blob(config.raw()).expect("config");
    let descs: Vec<Descriptor> = layers
        .iter()
        .map(|(l, c)| {
            let blob = compress(l, *c);
            let d = store.write_blob(&blob).expect("layer");
            descriptor(&MediaType::oci_layer(*c), &d, blob.len() as u64)
        })
        .collect();
    let m = build_manifest(config.digest(), config.raw().len() as u64, descs.clone())
        .expect("manifest");
    store.write_blob(m.raw()).expect("manifest blob");
    TestImage {
        manifest: m.descriptor(),
        config,
        layers: descs,
    }
}

/// Writes an index of these manifests, with their platforms.
pub fn make_index<S: BlobStore + ?Sized>(store: &S, images: &[(&TestImage, &str)]) -> Descriptor {
    let manifests = images
        .iter()
        .map(|(img, arch)| {
            let mut d = img.manifest.clone();
            let p = PlatformBuilder::default()
                .os(image_core::oci_spec::image::Os::Linux)
                .architecture(image_core::oci_spec::image::Arch::from(*arch))
                .build()
                .expect("platform");
            d.set_platform(Some(p));
            d
        })
        .collect::<Vec<_>>();
    let inner = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(OciMediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("index");
    let index = Index::new(inner).expect("index");
    store.write_blob(index.raw()).expect("index blob");
    index.descriptor()
}

/// A tar archive of (path, bytes) files, in order, with the end marker.
pub fn archive_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<(&str, Node<'_>)> = files
        .iter()
        .map(|(p, d)| (*p, Node::File(d, 0o644)))
        .collect();
    tar_of(&entries)
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(path)
        .expect("open")
        .read_to_end(&mut v)
        .expect("read");
    v
}
