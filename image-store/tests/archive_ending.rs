//! Where an outer archive (docker-save or OCI) may end. `docker load`
//! reads it with Go's `archive/tar`, which ends a stream cleanly where a
//! header would start, with the end-of-archive marker, one zero block of
//! it or none, and also right after the last entry's data with none of its
//! padding; anywhere else (inside a header, data or padding) the stream is
//! cut short. Load follows it, plain and compressed.

mod archive_fixtures;

use archive_fixtures::*;
use image_core::{Classify, Compression, ErrorKind};
use image_store::archive::{
    load, save_docker, save_oci, ArchiveError, LoadOptions, SaveImage, SaveOptions,
};
use image_store::{MemoryStore, TagStore};

const KINDS: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

/// Offsets in a tar: where its last header starts, where the last entry's
/// data ends, and where its padding ends (the marker's start).
struct Tail {
    last_header: usize,
    data_end: usize,
    padded_end: usize,
}

fn tail_of(tar: &[u8]) -> Tail {
    let mut a = tar::Archive::new(tar);
    let mut last = None;
    for e in a.entries().expect("entries") {
        let e = e.expect("entry");
        last = Some((e.raw_header_position(), e.raw_file_position(), e.size()));
    }
    let (header, data, size) = last.expect("one entry at least");
    let data_end = usize::try_from(data + size).expect("small");
    Tail {
        last_header: usize::try_from(header).expect("small"),
        data_end,
        padded_end: data_end.div_ceil(512) * 512,
    }
}

/// Where the header of the entry `name` starts.
fn header_of(tar: &[u8], name: &str) -> usize {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().expect("entries") {
        let e = e.expect("entry");
        if e.path_bytes().as_ref() == name.as_bytes() {
            return usize::try_from(e.raw_header_position()).expect("small");
        }
    }
    panic!("no {name}")
}

/// A docker-save archive and an OCI archive of one image, each as saved
/// (with the two zero blocks).
fn archives() -> Vec<(&'static str, Vec<u8>)> {
    let store = MemoryStore::new();
    let img = make_image(
        &store,
        &[(file_layer("etc/data", &[7u8; 700]), Compression::Gzip)],
        "amd64",
    );
    let image = || SaveImage::new(img.manifest.clone(), vec!["end:1".into()]);
    let mut docker = Vec::new();
    save_docker(&store, &[image()], &mut docker, &SaveOptions::default()).expect("save");
    let mut oci = Vec::new();
    save_oci(&store, &[image()], &mut oci).expect("save");
    vec![("docker-save", docker), ("OCI", oci)]
}

fn load_as(tar: &[u8], c: Compression) -> (Result<(), ArchiveError>, MemoryStore) {
    let store = MemoryStore::new();
    let r = load(&store, &compress(tar, c)[..], &LoadOptions::default()).map(|r| {
        assert_eq!(r.images.len(), 1);
    });
    (r, store)
}

fn assert_loads(what: &str, tar: &[u8]) {
    for c in KINDS {
        let (r, store) = load_as(tar, c);
        r.unwrap_or_else(|e| panic!("{what}, {c:?}: {e:?}"));
        assert!(store.resolve_tag("end:1").is_ok(), "{what}, {c:?}: tagged");
    }
}

fn assert_truncated(what: &str, tar: &[u8]) {
    for c in KINDS {
        let (r, store) = load_as(tar, c);
        let e = r.expect_err("cut short");
        assert!(
            matches!(e, ArchiveError::Truncated { .. }),
            "{what}, {c:?}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(store.tags().expect("tags").is_empty(), "{what}, {c:?}");
    }
}

#[test]
fn the_whole_archive_loads() {
    for (what, tar) in archives() {
        assert_eq!(tail_of(&tar).padded_end + 1024, tar.len(), "{what}");
        assert_loads(what, &tar);
    }
}

#[test]
fn an_archive_without_end_marker_loads() {
    for (what, tar) in archives() {
        assert_loads(what, &tar[..tail_of(&tar).padded_end]);
    }
}

#[test]
fn an_archive_with_one_zero_block_loads() {
    for (what, tar) in archives() {
        assert_loads(what, &tar[..tail_of(&tar).padded_end + 512]);
    }
}

#[test]
fn an_archive_without_padding_after_the_last_data_loads() {
    for (what, tar) in archives() {
        let t = tail_of(&tar);
        assert_ne!(t.data_end, t.padded_end, "{what}: not vacuous");
        assert_loads(what, &tar[..t.data_end]);
    }
}

#[test]
fn a_cut_header_data_or_padding_is_truncated() {
    for (what, tar) in archives() {
        let t = tail_of(&tar);
        assert_truncated(what, &tar[..t.last_header + 100]);
        assert_truncated(what, &tar[..t.data_end - 1]);
        assert_truncated(what, &tar[..t.data_end + 1]);
    }
}

#[test]
fn an_archive_cut_at_an_entry_boundary_before_its_documents_is_not_loaded() {
    // A complete tar as far as it goes, but the document that lists the
    // images is missing: not a truncation (as for docker load), yet nothing
    // is tagged.
    for ((what, tar), doc) in archives().into_iter().zip(["manifest.json", "index.json"]) {
        let cut = header_of(&tar, doc);
        for c in KINDS {
            let (r, store) = load_as(&tar[..cut], c);
            let e = r.expect_err("incomplete archive");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}, {c:?}: {e:?}");
            assert!(store.tags().expect("tags").is_empty());
        }
    }
}

/// Every cut of both archives, plain (and compressed near each place the
/// stream may end): the load is never `Truncated` where Go's reader ends
/// cleanly (an entry boundary, the end of an entry's data, anything after
/// the first zero block) and always `Truncated` elsewhere.
#[test]
fn every_cut_of_an_archive() {
    for (what, tar) in archives() {
        let mut legal = std::collections::BTreeSet::new();
        let mut a = tar::Archive::new(&tar[..]);
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let header = usize::try_from(e.raw_header_position()).expect("small");
            let data_end = usize::try_from(e.raw_file_position() + e.size()).expect("small");
            legal.insert(header);
            legal.insert(data_end);
        }
        let zeros_from = tail_of(&tar).padded_end + 512;
        legal.insert(tail_of(&tar).padded_end);
        let is_legal = |cut: usize| cut >= zeros_from || legal.contains(&cut);
        let check = |cut: usize, c: Compression| {
            let (r, store) = load_as(&tar[..cut], c);
            let truncated = matches!(r, Err(ArchiveError::Truncated { .. }));
            assert_eq!(
                truncated,
                !is_legal(cut),
                "{what}, {c:?}, cut at {cut}: {:?}",
                r.err()
            );
            if r.is_err() {
                assert!(store.tags().expect("tags").is_empty());
            }
        };
        for cut in 0..=tar.len() {
            check(cut, Compression::None);
        }
        for &at in &legal {
            for cut in at.saturating_sub(1)..=(at + 1).min(tar.len()) {
                check(cut, Compression::Gzip);
                check(cut, Compression::Zstd);
            }
        }
    }
}
