//! Copying images between stores.

mod archive_fixtures;

use archive_fixtures::*;
use image_core::{Classify, Compression, Digest, ErrorKind};
use image_store::{copy_image, copy_tag, CopyError, Manager, MemoryStore, Provider, TagStore};

#[test]
fn copies_an_index_with_all_its_manifests_and_skips_present_blobs() {
    let (_d, src) = oci_dir();
    let shared = busybox_layer();
    let amd = make_image(
        &src,
        &[
            (shared.clone(), Compression::Gzip),
            (file_layer("etc/a", b"amd"), Compression::None),
        ],
        "amd64",
    );
    let arm = make_image(
        &src,
        &[
            (shared, Compression::Gzip),
            (file_layer("etc/a", b"arm"), Compression::Zstd),
        ],
        "arm64",
    );
    let index = make_index(&src, &[(&amd, "amd64"), (&arm, "arm64")]);
    src.set_tag("multi:1", &index).expect("tag");

    // OciDir -> MemoryStore -> OciDir.
    let mem = MemoryStore::new();
    let r = copy_tag(&src, "multi:1", &mem, None).expect("copy");
    // index + 2 manifests + 2 configs + 3 distinct layers
    assert_eq!((r.copied, r.skipped), (8, 0));
    assert_eq!(r.descriptor.digest(), index.digest());
    assert_eq!(mem.list().expect("list").len(), 8);

    let (_d2, dst) = oci_dir();
    copy_tag(
        &mem,
        "docker.io/library/multi:1",
        &dst,
        Some("other/name:2"),
    )
    .expect("copy");
    assert_eq!(
        dst.resolve_tag("other/name:2").expect("tag").digest(),
        index.digest()
    );

    // Again: every blob is present, nothing is written.
    let r = copy_image(&src, &dst, &index).expect("copy again");
    assert_eq!(r.copied, 0);
    assert_eq!(r.bytes, 0);
    assert_eq!(r.skipped, 8);

    // A destination with only the shared layer skips it.
    let partial = MemoryStore::new();
    let shared_digest = Digest::try_from(amd.layers[0].digest().as_ref()).expect("digest");
    let mut reader = src.reader(&shared_digest).expect("reader");
    image_store::Ingester::ingest_reader(&partial, &mut reader, None, None).expect("seed");
    let r = copy_image(&src, &partial, &amd.manifest).expect("copy");
    assert_eq!((r.copied, r.skipped), (3, 1));
}

#[test]
fn a_corrupt_source_blob_fails_the_copy_and_tags_nothing() {
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[(file_layer("etc/x", b"x"), Compression::Gzip)],
        "amd64",
    );
    src.set_tag("x:1", &img.manifest).expect("tag");
    let layer = Digest::try_from(img.layers[0].digest().as_ref()).expect("digest");
    assert!(src.corrupt(&layer, b"evil bytes"));
    let (_d, dst) = oci_dir();
    let err = copy_tag(&src, "x:1", &dst, None).expect_err("corrupt");
    assert!(
        matches!(err, CopyError::Content { ref digest, .. } if digest == &layer),
        "{err:?}"
    );
    assert!(
        matches!(
            err.kind(),
            ErrorKind::DigestMismatch | ErrorKind::SizeMismatch
        ),
        "{:?}",
        err.kind()
    );
    assert!(dst.tags().expect("tags").is_empty());
    assert!(!dst.exists(&layer).expect("exists"));
}

#[test]
fn only_manifests_and_indexes_are_images() {
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[(file_layer("etc/x", b"x"), Compression::None)],
        "amd64",
    );
    let err =
        copy_image(&src, &MemoryStore::new(), &img.layers[0]).expect_err("a layer is no image");
    assert!(matches!(err, CopyError::MediaType { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = copy_tag(&src, "nope:1", &MemoryStore::new(), None).expect_err("no such tag");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// A copy reads each manifest and index by its descriptor: a root whose
/// descriptor lies about the manifest's size (smaller or larger) is a size
/// mismatch before anything is copied, not a "too large" refusal or a
/// failure after the layers are in.
#[test]
fn a_document_whose_descriptor_lies_about_its_size_copies_nothing() {
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[(file_layer("etc/lie", b"lie"), Compression::Gzip)],
        "amd64",
    );
    for delta in [-1i64, 1] {
        let mut root = img.manifest.clone();
        root.set_size(root.size().checked_add_signed(delta).expect("size"));
        let dst = MemoryStore::new();
        let err = copy_image(&src, &dst, &root).expect_err("lying size");
        assert_eq!(err.kind(), ErrorKind::SizeMismatch, "{delta}: {err}");
        assert!(dst.list().expect("list").is_empty(), "{delta}");
    }
}
