//! Generators of hostile input for the adversarial suite
//! (`examples/tests/adversarial.rs`) and the seeds of the store fuzz
//! targets: tar streams with anything in them ([`tar`]), gzip and zstd
//! (bombs included, made of zstd RLE blocks so 100 GiB cost 3 MB),
//! image configs, `docker save` tarballs, OCI archives and OCI layouts on
//! disk. Everything is made in memory or in the test's temporary
//! directory; nothing big is checked in.

#![allow(dead_code)]

pub mod awaiting;
pub mod tar;

use std::io::Write;
use std::path::Path;

use image_core::Digest;
use serde_json::{json, Value};

pub use self::tar::{Entry, Kind};

/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar`.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// `application/vnd.oci.image.layer.v1.tar+gzip`.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar+zstd`.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The annotation OCI layouts name their images with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub use image_testsupport::codec::gzip;

/// A gzip stream of `prefix` followed by `zeros` zero bytes, made without
/// holding the zeros in memory (1 GiB of zeros is about 1 MB of gzip).
pub fn gzip_bomb(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(prefix).expect("gzip");
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        enc.write_all(&chunk[..n as usize]).expect("gzip");
        left -= n;
    }
    enc.finish().expect("gzip")
}

/// A zstd frame of `prefix` (stored as raw blocks) followed by `zeros`
/// zero bytes as RLE blocks of 128 KiB (4 bytes each): 100 GiB of zeros
/// is 3.2 MB. No content size, no checksum.
pub fn zstd_bomb(prefix: &[u8], zeros: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut out = Vec::with_capacity(16 + prefix.len() + (zeros / BLOCK * 4) as usize);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: no content size, not single segment, no
    // checksum, no dictionary; a window descriptor of 2^(10+7) = 128 KiB.
    out.push(0x00);
    out.push(7 << 3);
    let mut blocks: Vec<(u8, u32, Option<&[u8]>)> = Vec::new();
    for c in prefix.chunks(BLOCK as usize) {
        blocks.push((0, c.len() as u32, Some(c)));
    }
    let full = zeros / BLOCK;
    let rest = (zeros % BLOCK) as u32;
    let total = blocks.len() as u64 + full + u64::from(rest > 0);
    let mut written = 0u64;
    let mut push = |out: &mut Vec<u8>, typ: u8, size: u32, data: Option<&[u8]>| {
        written += 1;
        let last = u32::from(written == total);
        let h = last | (u32::from(typ) << 1) | (size << 3);
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        match data {
            Some(d) => out.extend_from_slice(d),
            None => out.push(0),
        }
    };
    for (typ, size, data) in blocks {
        push(&mut out, typ, size, data);
    }
    for _ in 0..full {
        push(&mut out, 1, BLOCK as u32, None);
    }
    if rest > 0 {
        push(&mut out, 1, rest, None);
    }
    out
}

/// A layer as an archive carries it: the blob's bytes, its media type
/// and the diff ID a config declares for it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The bytes of the blob (compressed or not).
    pub blob: Vec<u8>,
    /// Its OCI media type.
    pub media_type: &'static str,
    /// The digest of the uncompressed tar (what a config lists).
    pub diff_id: Digest,
}

impl Layer {
    /// An uncompressed layer of `entries`.
    pub fn tar(entries: &[Entry]) -> Layer {
        let blob = tar::archive(entries);
        let diff_id = Digest::sha256(&blob);
        Layer {
            blob,
            media_type: OCI_LAYER,
            diff_id,
        }
    }

    /// A gzip layer of `entries`.
    pub fn gzip(entries: &[Entry]) -> Layer {
        let raw = tar::archive(entries);
        Layer {
            blob: gzip(&raw),
            media_type: OCI_LAYER_GZIP,
            diff_id: Digest::sha256(&raw),
        }
    }

    /// The blob's digest.
    pub fn digest(&self) -> Digest {
        Digest::sha256(&self.blob)
    }
}

/// A tar stream holding one regular file `name` of `size` bytes whose
/// content follows the returned header bytes (PAX `size`, so any size):
/// the prefix of a bomb.
pub fn big_file_header(name: &str, size: u64) -> Vec<u8> {
    let mut e = Entry::file(name, b"");
    e.claimed_size = Some(0);
    e.pax.push(("size".into(), size.to_string().into_bytes()));
    let mut out = Vec::new();
    tar::append(&mut out, &e);
    out
}

/// An image config: `run` is its `config` object (Env, User, Cmd, ...),
/// `layers` give the diff IDs.
pub fn config(run: Value, layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| json!({"created_by": "adversarial"})).collect::<Vec<_>>(),
    }))
    .expect("config json")
}

/// The host's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One image of a `docker save` tarball.
#[derive(Debug, Clone)]
pub struct SavedImage {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// `RepoTags`.
    pub repo_tags: Vec<String>,
}

/// A `docker save` tarball (the legacy layout: `manifest.json`,
/// `<id>.json`, `<id>/layer.tar`) of `images`, then `extra` entries.
pub fn docker_save(images: &[SavedImage], extra: &[Entry]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut manifest = Vec::new();
    for img in images {
        let config_name = format!("{}.json", Digest::sha256(&img.config).hex());
        entries.push(Entry::file(&config_name, &img.config));
        let mut layer_names = Vec::new();
        for l in &img.layers {
            let dir = l.digest().hex().to_owned();
            let name = format!("{dir}/layer.tar");
            if !entries.iter().any(|e: &Entry| e.name == name.as_bytes()) {
                entries.push(Entry::dir(format!("{dir}/")));
                entries.push(Entry::file(&name, &l.blob));
            }
            layer_names.push(name);
        }
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": img.repo_tags,
            "Layers": layer_names,
        }));
    }
    entries.push(Entry::file(
        "manifest.json",
        serde_json::to_vec(&manifest).expect("json"),
    ));
    entries.extend_from_slice(extra);
    tar::archive(&entries)
}

/// A descriptor.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// The blobs (config, layers, manifest) of one OCI image and the
/// manifest's descriptor.
pub fn oci_image(config: &[u8], layers: &[Layer]) -> (Vec<Vec<u8>>, Value) {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(l.media_type, &l.blob)).collect::<Vec<_>>(),
    }))
    .expect("json");
    let mut blobs = vec![config.to_vec()];
    blobs.extend(layers.iter().map(|l| l.blob.clone()));
    let desc = descriptor(OCI_MANIFEST, &manifest);
    blobs.push(manifest);
    (blobs, desc)
}

/// An index document listing `manifests` (descriptors).
pub fn index(manifests: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("json")
}

/// `descriptor` with a `ref.name` annotation.
pub fn named(mut descriptor: Value, name: &str) -> Value {
    descriptor["annotations"] = json!({ REF_NAME: name });
    descriptor
}

/// The entries of an OCI layout: `oci-layout`, `index.json` and
/// `blobs/sha256/<hex>` of each blob (duplicates written once).
pub fn layout_entries(blobs: &[Vec<u8>], index_json: &[u8]) -> Vec<Entry> {
    let mut entries = vec![
        Entry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        Entry::file("index.json", index_json),
        Entry::dir("blobs/"),
        Entry::dir("blobs/sha256/"),
    ];
    let mut seen = std::collections::HashSet::new();
    for b in blobs {
        let d = Digest::sha256(b);
        if seen.insert(d.clone()) {
            entries.push(Entry::file(format!("blobs/sha256/{}", d.hex()), b));
        }
    }
    entries
}

/// An OCI archive: a tar of [`layout_entries`], then `extra`.
pub fn oci_archive(blobs: &[Vec<u8>], index_json: &[u8], extra: &[Entry]) -> Vec<u8> {
    let mut entries = layout_entries(blobs, index_json);
    entries.extend_from_slice(extra);
    tar::archive(&entries)
}

/// Writes an OCI layout to `dir` (created): `oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`.
pub fn write_layout(dir: &Path, blobs: &[Vec<u8>], index_json: &[u8]) {
    let b = dir.join("blobs/sha256");
    std::fs::create_dir_all(&b).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    std::fs::write(dir.join("index.json"), index_json).expect("write");
    for blob in blobs {
        std::fs::write(b.join(Digest::sha256(blob).hex()), blob).expect("write");
    }
}

/// The layer of a busybox-static root filesystem: `/bin/busybox` and
/// `applets` linked to it, `etc/passwd` and `etc/group` with root and
/// nobody, and the `proc`, `sys`, `dev` and `tmp` mount points.
pub fn busybox_layer(applets: &[&str]) -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    let mut entries = vec![
        Entry::dir("bin/"),
        Entry::exe("bin/busybox", busybox),
        Entry::dir("etc/"),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        ),
        Entry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        Entry::dir("root/"),
    ];
    for d in ["proc/", "sys/", "dev/", "tmp/"] {
        entries.push(Entry::dir(d));
    }
    for a in applets {
        entries.push(Entry::symlink(format!("bin/{a}"), "busybox"));
    }
    Layer::tar(&entries)
}
