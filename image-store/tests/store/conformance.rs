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
