//! Tags, image resolution, leases, gc and fsck.

use std::time::Duration;

use image_core::{Classify, Digest, ErrorKind};
use image_store::fsck::FsckOptions;
use image_store::gc::GcOptions;
use image_store::tags::{TagError, REF_NAME};
use image_store::{resolve_image, Ingester, Manager, MemoryStore, Provider, TagStore};

use crate::common::{bytes, oci_dir, verify_all, write_image};

#[test]
fn tag_resolve_untag() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(10, 5000), bytes(11, 7000)], "a");
    store.set_tag("busybox", &img.manifest).unwrap();
    let tags = store.tags().unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].name, "docker.io/library/busybox:latest");
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
    ] {
        assert_eq!(
            store.resolve_tag(name).unwrap().digest(),
            img.manifest.digest(),
            "{name}"
        );
    }
    let e = store.resolve_tag("other").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // The annotation is in index.json for peers.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(
        raw["manifests"][0]["annotations"][REF_NAME],
        "docker.io/library/busybox:latest"
    );

    // Re-tagging replaces; a second tag adds.
    let img2 = write_image(&store, &[bytes(12, 100)], "b");
    store.set_tag("busybox:latest", &img2.manifest).unwrap();
    store.set_tag("busybox:1.0", &img.manifest).unwrap();
    assert_eq!(store.tags().unwrap().len(), 2);
    assert_eq!(
        store.resolve_tag("busybox").unwrap().digest(),
        img2.manifest.digest()
    );

    // Image resolution.
    let image = resolve_image(&store, "busybox:1.0", None).unwrap();
    assert_eq!(image.id(), &img.config);
    assert_eq!(
        image.manifest_digest().to_string(),
        img.manifest.digest().to_string()
    );
    assert_eq!(image.layers().len(), 2);
    assert_eq!(image.diff_ids(), &img.layers[..]);
    assert_eq!(image.history().len(), 2);
    assert!(image.size_on_disk(&store).unwrap() > 12_000);

    assert!(store.remove_tag("busybox:1.0").unwrap());
    assert!(!store.remove_tag("busybox:1.0").unwrap());
    assert_eq!(store.tags().unwrap().len(), 1);
    let e = store.set_tag("Not A Name", &img.manifest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn peers_short_names_are_read() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(13, 100)], "short");
    // What skopeo (`oci:dir:latest`) and umoci (`busybox:1.0`) write.
    store
        .update_index(|m| {
            for name in ["latest", "busybox:1.0"] {
                let mut d = img.manifest.clone();
                d.set_annotations(Some([(REF_NAME.to_owned(), name.to_owned())].into()));
                m.push(d);
            }
            Ok(true)
        })
        .unwrap();
    assert!(store.resolve_tag("latest").is_ok());
    assert!(store.resolve_tag("busybox:1.0").is_ok());
    assert!(store.resolve_tag("docker.io/library/busybox:1.0").is_ok());
    assert!(resolve_image(&store, "latest", None).is_ok());
    // Tagging the normalised name replaces the short entry of the same image name.
    store
        .set_tag("docker.io/library/busybox:1.0", &img.manifest)
        .unwrap();
    let names: Vec<String> = store.tags().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["docker.io/library/busybox:1.0", "latest"]);
}

#[test]
fn tag_refuses_missing_blobs() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(14, 100)], "x");
    store.delete(&img.layers[0]).unwrap();
    let e = store.set_tag("x", &img.manifest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains(&img.layers[0].to_string()));
    assert!(store.tags().unwrap().is_empty());
}

#[test]
fn index_resolution_picks_platform() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(15, 100)], "multi");
    let other = write_image(&store, &[bytes(16, 100)], "other");
    let host = image_core::platform::Platform::host();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.manifest.digest().to_string(),
             "size": other.manifest.size(), "platform": {"os": "windows", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.manifest.digest().to_string(),
             "size": img.manifest.size(), "platform": {"os": host.os, "architecture": host.architecture}},
        ]
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let d = store.write_blob(&bytes).unwrap();
    let desc =
        image_core::manifest::descriptor(&image_core::MediaType::OciIndex, &d, bytes.len() as u64);
    store.set_tag("multi:1", &desc).unwrap();
    let image = resolve_image(&store, "multi:1", None).unwrap();
    assert_eq!(image.id(), &img.config);
    assert_eq!(image.indexes.len(), 1);
    let win: image_core::platform::Platform = "windows/arm64".parse().unwrap();
    assert_eq!(
        resolve_image(&store, "multi:1", Some(&win)).unwrap().id(),
        &other.config
    );
    let s390: image_core::platform::Platform = "linux/s390x".parse().unwrap();
    assert!(resolve_image(&store, "multi:1", Some(&s390)).is_err());
    // gc keeps both children of a tagged index.
    let report = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
}

#[test]
fn gc_sweeps_unreachable_keeps_leased_recent_and_referrers() {
    let (_tmp, store) = oci_dir();
    let kept = write_image(&store, &[bytes(20, 3000), bytes(21, 3000)], "kept");
    let garbage = write_image(&store, &[bytes(22, 4000), bytes(20, 3000)], "garbage");
    let leased = write_image(&store, &[bytes(23, 100)], "leased");
    store.set_tag("kept", &kept.manifest).unwrap();
    let leased_manifest: Digest = leased.manifest.digest().to_string().parse().unwrap();
    store
        .create_lease(
            "pull-1",
            &[leased_manifest],
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
    // A referrer (signature) of the kept image.
    let kept_digest = kept.manifest.digest().to_string();
    let sig_blob = store.write_blob(b"signature").unwrap();
    let empty = store.write_blob(b"{}").unwrap();
    let referrer = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/example.sig", "digest": sig_blob.to_string(), "size": 9}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": kept_digest, "size": kept.manifest.size()},
    });
    let referrer = store
        .write_blob(&serde_json::to_vec(&referrer).unwrap())
        .unwrap();

    // Within the grace period nothing goes.
    let report = store
        .gc(&GcOptions::default().grace(Duration::from_secs(600)))
        .unwrap();
    assert!(report.removed.is_empty());
    assert!(report.kept_recent >= 2, "{report:?}");

    let dry = store
        .gc(&GcOptions::default().grace(Duration::ZERO).dry_run(true))
        .unwrap();
    let report = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(dry.removed, report.removed);
    let removed: std::collections::HashSet<_> = report.removed.iter().cloned().collect();
    let garbage_manifest: Digest = garbage.manifest.digest().to_string().parse().unwrap();
    assert_eq!(
        removed,
        [
            garbage_manifest,
            garbage.config.clone(),
            garbage.layers[0].clone()
        ]
        .into_iter()
        .collect(),
        "shared layer bytes(20) stays"
    );
    assert!(report.freed_bytes > 4000);
    for d in kept.layers.iter().chain([
        &kept.config,
        &leased.config,
        &leased.layers[0],
        &referrer,
        &sig_blob,
    ]) {
        assert!(store.exists(d).unwrap(), "{d} must stay");
    }
    let fsck = store.fsck(&FsckOptions::default()).unwrap();
    assert!(fsck.is_clean(), "{fsck:?}");
    assert!(fsck.dangling.is_empty(), "{fsck:?}");

    // Deleting the lease, or letting it expire, frees its image.
    store
        .create_lease(
            "short",
            std::slice::from_ref(&leased.config),
            Some(Duration::ZERO),
        )
        .unwrap();
    assert!(store.delete_lease("pull-1").unwrap());
    let report = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(report.leases_expired, 1);
    assert!(!store.exists(&leased.config).unwrap());
    assert!(store.leases().unwrap().is_empty());
}

#[test]
fn gc_cleans_abandoned_ingests_not_active_ones() {
    let (_tmp, store) = oci_dir();
    {
        let mut w = store.writer("abandoned").unwrap();
        std::io::Write::write_all(&mut w, b"partial").unwrap();
    }
    let active = store.writer("active").unwrap();
    let report = store
        .gc(&GcOptions::default().ingest_max_age(Duration::ZERO))
        .unwrap();
    assert_eq!(report.ingests_removed, 1, "{report:?}");
    assert_eq!(report.ingest_bytes, 7);
    let refs: Vec<String> = store
        .ingests()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(refs, ["active"]);
    drop(active);
}

#[test]
fn fsck_reports_and_removes_corrupt_and_missing() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(30, 1000), bytes(31, 1000)], "f");
    store.set_tag("f", &img.manifest).unwrap();
    std::fs::write(store.blob_path(&img.layers[0]), b"rot").unwrap();
    std::fs::remove_file(store.blob_path(&img.layers[1])).unwrap();
    std::fs::write(store.root().join("blobs/sha256/not-a-digest"), b"?").unwrap();
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].digest, img.layers[0]);
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].digest, img.layers[1]);
    assert_eq!(report.missing[0].root, "docker.io/library/f:latest");
    assert_eq!(report.strays.len(), 1);
    let report = store
        .fsck(&FsckOptions::default().remove_corrupt(true))
        .unwrap();
    assert_eq!(report.removed, [img.layers[0].clone()]);
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.corrupt.is_empty() && report.strays.is_empty());
    assert_eq!(report.missing.len(), 2);
}

#[test]
fn generic_fsck_and_tags_on_memory_store() {
    let store = MemoryStore::new();
    let img = write_image(&store, &[bytes(40, 100)], "m");
    store.set_tag("m", &img.manifest).unwrap();
    assert_eq!(resolve_image(&store, "m", None).unwrap().id(), &img.config);
    let roots: Vec<_> = store
        .tags()
        .unwrap()
        .into_iter()
        .map(|t| t.descriptor)
        .collect();
    let report = image_store::fsck::fsck(&store, &roots, &[], &FsckOptions::default()).unwrap();
    assert!(
        report.is_clean() && report.dangling.is_empty(),
        "{report:?}"
    );
    verify_all(&store, &img.layers);
}

/// Counts the reads of a store.
struct CountingReads<'a> {
    inner: &'a MemoryStore,
    reads: std::sync::atomic::AtomicUsize,
}

impl Provider for CountingReads<'_> {
    fn reader(
        &self,
        digest: &Digest,
    ) -> image_store::content::Result<Box<dyn std::io::Read + Send>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.reader(digest)
    }
    fn try_info(
        &self,
        digest: &Digest,
    ) -> image_store::content::Result<Option<image_store::content::Info>> {
        self.inner.try_info(digest)
    }
}

impl Manager for CountingReads<'_> {
    fn list(&self) -> image_store::content::Result<Vec<image_store::content::Info>> {
        self.inner.list()
    }
    fn delete(&self, digest: &Digest) -> image_store::content::Result<()> {
        self.inner.delete(digest)
    }
    fn set_labels(
        &self,
        digest: &Digest,
        labels: image_store::content::Labels,
    ) -> image_store::content::Result<image_store::content::Info> {
        self.inner.set_labels(digest, labels)
    }
}

/// A digest named by many leases (one file each: a lease's own set has
/// each once) is read once by the mark, not once per lease: marking is
/// linear in the leases, whatever a hostile store lists.
#[test]
fn a_manifest_named_by_many_leases_is_read_once() {
    let store = MemoryStore::new();
    let img = write_image(&store, &[bytes(30, 100)], "many");
    let manifest: Digest = img.manifest.digest().to_string().parse().unwrap();
    let leased = vec![manifest; 1000];
    let counting = CountingReads {
        inner: &store,
        reads: Default::default(),
    };
    let marked = image_store::gc::reachable(&counting, &[], &leased).unwrap();
    assert_eq!(marked.len(), 3, "manifest, config, layer");
    let reads = counting.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reads <= 4, "{reads} reads for one leased manifest");
}

/// A name that is no reference is invalid input, not "not found", when no
/// tag is stored under it as it is; a stored odd name still resolves.
#[test]
fn an_invalid_name_is_invalid_input() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(12, 100)], "a");
    store.set_tag("busybox", &img.manifest).unwrap();
    for name in ["Bad Name", "library/UPPER", ""] {
        let e = store.resolve_tag(name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}: {e}");
        assert!(matches!(e, TagError::InvalidName { .. }), "{name:?}: {e:?}");
        let e = store.remove_tag(name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}: {e}");
    }
    assert_eq!(
        store.resolve_tag("other").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// The descriptor `d` with its size changed by `delta`.
fn resized(d: &image_core::Descriptor, delta: i64) -> image_core::Descriptor {
    let mut d = d.clone();
    d.set_size(d.size().checked_add_signed(delta).unwrap());
    d
}

/// Image resolution reads the manifest and the config by their
/// descriptors: a stored blob whose size is not the one its descriptor
/// declares (the tag's, or the manifest's config descriptor) is a size
/// mismatch, on both stores, not an image.
#[test]
fn resolution_refuses_a_document_whose_descriptor_lies_about_its_size() {
    let (_tmp, dir) = oci_dir();
    let mem = MemoryStore::new();
    let stores: [&dyn image_store::ContentStore; 2] = [&dir, &mem];
    for (i, store) in stores.into_iter().enumerate() {
        let img = write_image(store, &[bytes(50, 300)], "lie");
        for delta in [-1, 1] {
            let root = resized(&img.manifest, delta);
            let e = image_store::image::resolve_descriptor(store, "lie", &root, None)
                .expect_err("a manifest of another size than its descriptor's");
            assert_eq!(e.kind(), ErrorKind::SizeMismatch, "store {i}: {e}");
        }

        // A manifest whose config descriptor lies about the config's size.
        let config = store.read_blob_to_vec(&img.config, 1 << 20).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_slice(
            &store
                .read_descriptor_to_vec(&img.manifest, 1 << 20)
                .unwrap(),
        )
        .unwrap();
        manifest["config"]["size"] = serde_json::json!(config.len() + 1);
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let root = image_core::manifest::descriptor(
            &image_core::MediaType::OciManifest,
            &store.write_blob(&manifest).unwrap(),
            manifest.len() as u64,
        );
        let e = image_store::image::resolve_descriptor(store, "lie", &root, None)
            .expect_err("a config of another size than its descriptor's");
        assert_eq!(e.kind(), ErrorKind::SizeMismatch, "store {i}: {e}");

        // The true descriptor still resolves.
        let image = image_store::image::resolve_descriptor(store, "lie", &img.manifest, None)
            .expect("true descriptor");
        assert_eq!(image.id(), &img.config);
    }
}

/// gc marks what a manifest refers to even when the only descriptor of the
/// manifest lies about its size: reading documents by descriptor never
/// lets gc collect the layers of a manifest it keeps.
#[test]
fn gc_follows_a_manifest_whose_descriptor_lies_about_its_size() {
    let (_tmp, store) = oci_dir();
    let img = write_image(&store, &[bytes(51, 400), bytes(52, 500)], "kept");
    store.set_tag("kept", &resized(&img.manifest, 1)).unwrap();
    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    verify_all(&store, &img.layers);
    verify_all(&store, std::slice::from_ref(&img.config));
}
