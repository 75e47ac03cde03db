//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub use image_testsupport::process::{child_guard, kill_group, spawn_self};
pub use image_testsupport::scratch::scratch;
pub use image_testsupport::store::{bytes, oci_dir};
pub use image_testsupport::tools::have as have_tool;

use image_core::{Descriptor, Digest, MediaType};
use image_store::{ContentStore, Provider};

/// The pieces of an image written by [`write_image`].
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Descriptor,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

/// Builds the config and manifest JSON of an image whose layers are `layers`
/// (uncompressed tars, so diff ID = digest); returns (config bytes, manifest bytes).
pub fn image_json(layers: &[(Digest, u64)], tag: &str) -> (Vec<u8>, Vec<u8>) {
    let host = image_core::platform::Platform::host();
    let config = serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"test": tag}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": format!("test {tag}")})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256(&config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
    });
    (config, serde_json::to_vec(&manifest).unwrap())
}

/// Writes an image with the given layer contents; returns its parts.
pub fn write_image<S: ContentStore + ?Sized>(
    store: &S,
    layers: &[Vec<u8>],
    tag: &str,
) -> TestImage {
    let mut ls = Vec::new();
    for l in layers {
        let d = store.write_blob(l).unwrap();
        ls.push((d, l.len() as u64));
    }
    let (config, manifest) = image_json(&ls, tag);
    let config_digest = store.write_blob(&config).unwrap();
    let manifest_digest = store.write_blob(&manifest).unwrap();
    TestImage {
        manifest: image_core::manifest::descriptor(
            &MediaType::OciManifest,
            &manifest_digest,
            manifest.len() as u64,
        ),
        config: config_digest,
        layers: ls.into_iter().map(|(d, _)| d).collect(),
    }
}

/// Reads every blob of `digests` to the end, verified.
pub fn verify_all<P: Provider + ?Sized>(store: &P, digests: &[Digest]) {
    for d in digests {
        let mut r = store.reader(d).unwrap_or_else(|e| panic!("open {d}: {e}"));
        std::io::copy(&mut r, &mut std::io::sink()).unwrap_or_else(|e| panic!("verify {d}: {e}"));
    }
}
