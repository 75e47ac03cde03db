//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub use image_testsupport::process::{child_guard, kill_group, spawn_self};
pub use image_testsupport::scratch::scratch;
pub use image_testsupport::store::{bytes, oci_dir};
pub use image_testsupport::tools::have as have_tool;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use image_core::{Descriptor, Digest, MediaType};
use image_store::fs::{Fs, Root, Target};
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

/// A seam call, as a [`Tap`] reports it once the inner seam made it.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A file was opened (`open_temp`) at this path.
    Opened(Target, &'a Path),
    /// This many bytes were offered to a write.
    Wrote(Target, usize),
    /// This file was fsynced.
    SyncedFile(Target, &'a File),
    /// Something was renamed to this path.
    Renamed(Target, &'a Path),
    /// This directory was fsynced.
    SyncedDir(Target, &'a Path),
}

/// A seam that passes every call to `inner` and reports the ones a test
/// watches ([`Seen`]) to `on` after they succeeded.
pub struct Tap<F> {
    pub inner: Arc<dyn Fs>,
    pub on: F,
}

impl<F> std::fmt::Debug for Tap<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("inner", &self.inner).finish()
    }
}

impl<F: Fn(Seen<'_>) + Send + Sync> Fs for Tap<F> {
    fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.inner.create_dir_all(t, r, p)
    }
    fn open_temp(&self, t: Target, r: &Root, p: &Path, truncate: bool) -> io::Result<File> {
        let f = self.inner.open_temp(t, r, p, truncate)?;
        (self.on)(Seen::Opened(t, p));
        Ok(f)
    }
    fn write(&self, t: Target, f: &mut File, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(t, f, b)?;
        (self.on)(Seen::Wrote(t, b.len()));
        Ok(n)
    }
    fn set_len(&self, t: Target, f: &File, l: u64) -> io::Result<()> {
        self.inner.set_len(t, f, l)
    }
    fn sync_file(&self, t: Target, f: &File) -> io::Result<()> {
        self.inner.sync_file(t, f)?;
        (self.on)(Seen::SyncedFile(t, f));
        Ok(())
    }
    fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(t, r, from, to)?;
        (self.on)(Seen::Renamed(t, to));
        Ok(())
    }
    fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> io::Result<()> {
        self.inner.sync_dir(t, r, d)?;
        (self.on)(Seen::SyncedDir(t, d));
        Ok(())
    }
    fn remove_file(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.inner.remove_file(t, r, p)
    }
    fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(t, r, p)
    }
    fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.inner.remove_dir(t, r, p)
    }
}
