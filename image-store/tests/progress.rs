//! Progress and cancellation of the store's long operations (load, save,
//! copy, ingest, gc), and reads by descriptor.

mod archive_fixtures;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use archive_fixtures::*;
use image_core::manifest::descriptor;
use image_core::progress::ItemRecord;
use image_core::{
    Classify, Compression, Digest, ErrorKind, Interrupt, MediaType, Recorder, Tracker,
};
use image_store::archive::{load, save_docker, save_oci_with, LoadOptions, SaveImage, SaveOptions};
use image_store::{
    copy_tag_with, ContentError, CopyOptions, FsckOptions, GcOptions, Ingester, Manager,
    MemoryStore, OciDir, Provider, TagStore,
};

/// A recorder that stops its tracker once an item reaches `at` bytes.
fn stopping_at(at: u64) -> (Arc<Recorder>, Tracker) {
    let interrupt = Interrupt::new();
    let rec = Arc::new(Recorder::stopping_at(interrupt.clone(), at));
    (rec.clone(), Tracker::new(rec, interrupt))
}

/// A recorder that only records, and its tracker.
fn recording() -> (Arc<Recorder>, Tracker) {
    let rec = Arc::new(Recorder::new());
    (rec.clone(), Tracker::default().with_progress(rec))
}

/// The items a recorder saw, after checking every call came in order.
fn items(rec: &Recorder) -> BTreeMap<String, ItemRecord> {
    assert!(rec.violations().is_empty(), "{:?}", rec.violations());
    rec.items()
}

/// 3 MiB that do not compress.
fn big_file() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image with a small and a 3 MiB layer, saved as a docker archive.
fn archive() -> Vec<u8> {
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[
            (file_layer("etc/a", b"small"), Compression::Gzip),
            (file_layer("etc/big", &big_file()), Compression::None),
        ],
        "amd64",
    );
    src.set_tag("app:1", &img.manifest).expect("tag");
    let mut out = Vec::new();
    let image = SaveImage::from_tag(&src, "app:1").expect("image");
    save_docker(&src, &[image], &mut out, &SaveOptions::default()).expect("save");
    out
}

/// The store is valid after a stopped operation, and gc collects what it left.
fn assert_valid_then_collectable(store: &OciDir) {
    let report = store.fsck(&FsckOptions::default()).expect("fsck");
    assert!(report.is_clean(), "{report:?}");
    assert!(store.ingests().expect("ingests").is_empty());
    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .expect("gc");
    assert!(store.list().expect("list").is_empty());
    assert!(store.tags().expect("tags").is_empty());
}

#[test]
fn load_reports_every_blob_started_growing_and_finished_summing_to_the_blob_sizes() {
    let tar = archive();
    let (_d, store) = oci_dir();
    let (rec, tracker) = recording();
    let report = load(
        &store,
        &tar[..],
        &LoadOptions::default().with_tracker(tracker),
    )
    .expect("load");
    let items = items(&rec);
    assert_eq!(items.len(), report.blobs);
    for (item, r) in &items {
        assert!(r.finished, "{item}");
        assert_eq!(Some(r.done), r.total, "{item}");
    }
    assert_eq!(items.values().map(|r| r.done).sum::<u64>(), report.bytes);
    assert!(report.bytes > 3 << 20);
}

#[test]
fn a_load_stopped_mid_blob_is_cancelled_tags_nothing_and_leaves_no_ingest() {
    let tar = archive();
    let (_d, store) = oci_dir();
    let (rec, tracker) = stopping_at(1 << 20);
    let e = load(
        &store,
        &tar[..],
        &LoadOptions::default().with_tracker(tracker),
    )
    .expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    // It stopped inside the big layer, which was never finished.
    let items = items(&rec);
    let big = items.values().find(|r| r.done >= 1 << 20).expect("big");
    assert!(big.done < 3 << 20);
    assert!(!big.finished);
    assert_valid_then_collectable(&store);
}

#[test]
fn a_load_interrupted_before_it_starts_writes_nothing() {
    let tar = archive();
    let (_d, store) = oci_dir();
    let interrupt = Interrupt::new();
    interrupt.set();
    let options = LoadOptions::default().with_tracker(Tracker::default().with_interrupt(interrupt));
    let e = load(&store, &tar[..], &options).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(store.list().expect("list").is_empty());
    assert_valid_then_collectable(&store);
}

#[test]
fn copy_reports_each_blob_and_a_stopped_copy_tags_nothing() {
    let (_s, src) = oci_dir();
    let img = make_image(
        &src,
        &[(file_layer("etc/big", &big_file()), Compression::None)],
        "amd64",
    );
    src.set_tag("app:1", &img.manifest).expect("tag");

    let (_d, dst) = oci_dir();
    let (rec, tracker) = recording();
    let options = CopyOptions::default().with_tracker(tracker);
    let report = copy_tag_with(&src, "app:1", &dst, None, &options).expect("copy");
    let items = items(&rec);
    assert_eq!(items.len(), report.copied);
    assert_eq!(items.values().map(|r| r.done).sum::<u64>(), report.bytes);
    for (item, r) in &items {
        assert!(r.finished, "{item}");
        assert_eq!(Some(r.done), r.total, "{item}");
    }

    let (_d, dst) = oci_dir();
    let (_rec, tracker) = stopping_at(1 << 20);
    let options = CopyOptions::default().with_tracker(tracker);
    let e = copy_tag_with(&src, "app:1", &dst, None, &options).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_valid_then_collectable(&dst);
}

#[test]
fn an_ingest_whose_source_is_stopped_is_removed_not_committed() {
    let (_d, store) = oci_dir();
    let data = big_file();
    let digest = Digest::sha256(&data);
    let (_rec, tracker) = stopping_at(1 << 20);
    let mut r = tracker.reader("blob", Some(data.len() as u64), &data[..]);
    let e = store
        .ingest_reader(&mut r, Some(data.len() as u64), Some(&digest))
        .expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(!store.exists(&digest).expect("exists"));
    assert_valid_then_collectable(&store);
}

#[test]
fn save_is_stopped_at_the_next_write_and_reports_the_bytes_written() {
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[(file_layer("etc/big", &big_file()), Compression::None)],
        "amd64",
    );
    src.set_tag("app:1", &img.manifest).expect("tag");
    let image = || vec![SaveImage::from_tag(&src, "app:1").expect("image")];

    let (rec, tracker) = recording();
    let options = SaveOptions::default().with_tracker(tracker);
    let mut out = Vec::new();
    save_oci_with(&src, &image(), &mut out, &options).expect("save");
    let items = items(&rec);
    assert_eq!(items.keys().collect::<Vec<_>>(), ["archive"]);
    assert_eq!(items["archive"].done, out.len() as u64);
    assert!(items["archive"].finished);

    let (_rec, tracker) = stopping_at(1 << 20);
    let options = SaveOptions::default().with_tracker(tracker);
    let mut out = Vec::new();
    let e = save_docker(&src, &image(), &mut out, &options).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(out.len() < 3 << 20);
}

#[test]
fn gc_stops_between_blobs_and_the_next_gc_finishes() {
    let (_d, store) = oci_dir();
    for i in 0..5u8 {
        store.write_blob(&[i]).expect("blob");
    }
    let (rec, tracker) = stopping_at(1);
    let options = GcOptions::default()
        .grace(Duration::ZERO)
        .with_tracker(tracker);
    let e = store.gc(&options).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(items(&rec)["sweep"].total, Some(5));
    // One blob was looked at and removed before the flag was seen.
    assert_eq!(store.list().expect("list").len(), 4);
    assert_valid_then_collectable(&store);
}

#[test]
fn a_read_by_descriptor_checks_the_size_before_reading() {
    for store in [
        Box::new(MemoryStore::new()) as Box<dyn image_store::ContentStore>,
        Box::new(oci_dir().1),
    ] {
        let digest = store.write_blob(b"hello").expect("blob");
        let layer = MediaType::oci_layer(Compression::None);
        let mut out = Vec::new();
        store
            .reader_for(&descriptor(&layer, &digest, 5))
            .expect("open")
            .read_to_end(&mut out)
            .expect("read");
        assert_eq!(out, b"hello");
        for size in [4, 6] {
            let e = store
                .reader_for(&descriptor(&layer, &digest, size))
                .err()
                .expect("size checked");
            assert!(matches!(e, ContentError::DescriptorMismatch { .. }), "{e}");
            assert_eq!(e.kind(), ErrorKind::SizeMismatch);
        }
        let missing = Digest::sha256(b"absent");
        let e = store
            .reader_for(&descriptor(&layer, &missing, 6))
            .err()
            .expect("absent");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
