//! The content store conformance suite (`image_store::testsuite`) run
//! against each store of the crate, and what is particular to each.

use image_core::{Classify, ErrorKind};
use image_store::testsuite::content_store;
use image_store::{Ingester, Manager, MemoryStore, OciDir, Provider};

use crate::common::oci_dir;

#[test]
fn memory_store_conforms() {
    content_store(MemoryStore::new);
}

#[test]
fn oci_dir_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    content_store(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OciDir::open_or_create(tmp.path().join(i.to_string())).unwrap()
    });
}

#[test]
fn corrupt_blob_fails_verification() {
    let (_tmp, store) = oci_dir();
    let d = store.write_blob(b"precious bytes").unwrap();
    std::fs::write(store.blob_path(&d), b"precious bytez").unwrap();
    let e = store.read_blob_to_vec(&d, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");

    let mem = MemoryStore::new();
    let d = mem.write_blob(b"precious bytes").unwrap();
    assert!(mem.corrupt(&d, b"tampered"));
    let e = mem.read_blob_to_vec(&d, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
}

#[test]
fn oci_dir_layout_on_disk() {
    let (_tmp, store) = oci_dir();
    let root = store.root().to_path_buf();
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let d = image_store::Ingester::write_blob(&store, b"x").unwrap();
    assert!(root.join("blobs/sha256").join(d.hex()).is_file());
    // Nothing is left in ingest/ after a commit.
    let left: Vec<_> = std::fs::read_dir(root.join("ingest"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // Reopen.
    let again = image_store::OciDir::open(&root).unwrap();
    assert!(image_store::Provider::exists(&again, &d).unwrap());
    let e = image_store::OciDir::open(root.join("blobs")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn oci_dir_keeps_labels_across_opens_and_refuses_a_linked_labels_file() {
    use image_store::content::Labels;
    let (tmp, store) = oci_dir();
    let d = store.write_blob(b"labelled").unwrap();
    let labels: Labels = [("k".to_owned(), "v".to_owned())].into();
    store.set_labels(&d, labels.clone()).unwrap();
    let again = image_store::OciDir::open(store.root()).unwrap();
    assert_eq!(again.info(&d).unwrap().labels, labels);

    // A labels file that is a symlink (to a file outside) is not followed.
    let outside = tmp.path().join("outside.json");
    std::fs::write(&outside, br#"{"stolen":"yes"}"#).unwrap();
    let path = store.root().join("labels/sha256").join(d.hex());
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&outside, &path).unwrap();
    let e = again.info(&d).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
}

/// A provider whose streams are not what its `info` says: endless, or
/// shorter than the blob (a hostile or broken remote). Counts the bytes
/// it serves.
struct Lying {
    inner: MemoryStore,
    short: bool,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An endless stream of `x`, counting what it serves.
struct Endless(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(b'x');
        self.0
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }
}

impl Provider for Lying {
    fn reader(
        &self,
        _: &image_core::Digest,
    ) -> image_store::content::Result<Box<dyn std::io::Read + Send>> {
        if self.short {
            return Ok(Box::new(std::io::Cursor::new(b"short".to_vec())));
        }
        Ok(Box::new(Endless(self.served.clone())))
    }
    fn try_info(
        &self,
        digest: &image_core::Digest,
    ) -> image_store::content::Result<Option<image_store::content::Info>> {
        self.inner.try_info(digest)
    }
}

/// `read_descriptor_to_vec` reads at most one byte past the descriptor's
/// size whatever the provider streams: an endless stream ends as a size
/// mismatch after `size + 1` bytes served, a short one as a size mismatch
/// naming what it found.
#[test]
fn a_read_by_descriptor_is_bounded_by_the_descriptor() {
    use image_store::ContentError;
    let inner = MemoryStore::new();
    let data = vec![7u8; 100_000];
    let digest = inner.write_blob(&data).unwrap();
    let desc =
        image_core::manifest::descriptor(&image_core::MediaType::OciConfig, &digest, 100_000);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let endless = Lying {
        inner,
        short: false,
        served: served.clone(),
    };
    // (expected, found, truncated) of the size mismatch `e` must be.
    let mismatch = |e: image_store::ContentError| {
        assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e}");
        match e {
            ContentError::DescriptorMismatch {
                source:
                    image_core::digest::VerifyError::Size {
                        expected,
                        found,
                        truncated,
                        ..
                    },
            } => (expected, found, truncated),
            e => panic!("not a descriptor size mismatch: {e}"),
        }
    };
    let e = endless.read_descriptor_to_vec(&desc, 1 << 20).unwrap_err();
    assert_eq!(mismatch(e), (100_000, 100_001, true));
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 100_001);

    let short = Lying {
        short: true,
        ..endless
    };
    let e = short.read_descriptor_to_vec(&desc, 1 << 20).unwrap_err();
    assert_eq!(mismatch(e), (100_000, 5, false));
}
