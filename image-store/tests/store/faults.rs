//! ENOSPC and EIO injected at every step of an ingest, a tag update and a
//! lease update: the operation fails with a typed error, the store stays
//! valid, and a retry succeeds.

use std::io::Write;
use std::sync::Arc;

use image_core::{Classify, Digest, ErrorKind};
use image_store::fs::{FaultyFs, Op, RealFs, Target};
use image_store::fsck::FsckOptions;
use image_store::{ContentError, Ingester, OciDir, Provider, TagError, TagStore};

use crate::common::{bytes, verify_all, write_image};

fn faulty_store() -> (tempfile::TempDir, OciDir, Arc<FaultyFs>) {
    let tmp = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyFs::new(Arc::new(RealFs)));
    let store = OciDir::open_or_create_with(tmp.path().join("layout"), faulty.clone()).unwrap();
    (tmp, store, faulty)
}

/// Writes `data` in 4 KiB chunks under `reference`, resuming what is there.
fn ingest(store: &OciDir, reference: &str, data: &[u8]) -> Result<Digest, ContentError> {
    let mut w = store.writer(reference)?;
    let start = w.offset() as usize;
    for chunk in data[start..].chunks(4096) {
        w.write_all(chunk).map_err(|e| ContentError::Read {
            what: "test".into(),
            source: e,
        })?;
    }
    w.commit(Some(data.len() as u64), Some(&Digest::sha256(data)))
}

fn assert_store_valid(store: &OciDir) {
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

const ERRNOS: [rustix::io::Errno; 2] = [rustix::io::Errno::NOSPC, rustix::io::Errno::IO];

#[test]
fn ingest_fails_cleanly_at_every_step() {
    for errno in ERRNOS {
        for op in Op::ALL {
            for nth in [0, 2] {
                let (_tmp, store, faulty) = faulty_store();
                let data = bytes(op as u64 + 100, 20_000);
                let digest = Digest::sha256(&data);
                faulty.arm(op, Some(Target::Blob), nth, errno);
                let result = ingest(&store, "fault", &data);
                let hit = faulty.hits() > 0;
                faulty.disarm();
                match result {
                    Ok(d) => {
                        // Only a step after the blob was published may fail
                        // silently (cleaning the ingest directory), or the
                        // step was not reached.
                        assert!(
                            !hit || matches!(op, Op::RemoveFile | Op::RemoveDir),
                            "{op:?} {errno:?}: hit but Ok"
                        );
                        assert_eq!(d, digest);
                    }
                    Err(e) => {
                        assert!(hit, "{op:?}: error without a fault: {e}");
                        let io = match &e {
                            ContentError::Io { source, .. } | ContentError::Read { source, .. } => {
                                source
                            }
                            other => panic!("{op:?}: untyped error {other}"),
                        };
                        assert_eq!(io.raw_os_error(), Some(errno.raw_os_error()), "{op:?}: {e}");
                        assert_eq!(e.kind(), ErrorKind::Io, "{op:?}: {e}");
                        // Either no blob, or (a failed directory sync after
                        // the rename) the whole verified blob.
                        if store.exists(&digest).unwrap() {
                            assert_eq!(
                                op,
                                Op::SyncDir,
                                "{op:?}: blob visible after a failed ingest"
                            );
                            verify_all(&store, std::slice::from_ref(&digest));
                        }
                    }
                }
                assert_store_valid(&store);
                // The retry (resuming what the failed attempt left) succeeds.
                assert_eq!(
                    ingest(&store, "fault", &data).unwrap(),
                    digest,
                    "{op:?} retry"
                );
                verify_all(&store, &[digest]);
                assert_store_valid(&store);
                assert!(
                    store.ingests().unwrap().is_empty(),
                    "{op:?}: {:?}",
                    store.ingests()
                );
            }
        }
    }
}

#[test]
fn tag_update_fails_cleanly_at_every_step() {
    for errno in ERRNOS {
        for op in Op::ALL {
            let (_tmp, store, faulty) = faulty_store();
            let old = write_image(&store, &[bytes(1, 1000)], "old");
            store.set_tag("app:old", &old.manifest).unwrap();
            let before = std::fs::read(store.root().join("index.json")).unwrap();
            let new = write_image(&store, &[bytes(2, 1000)], "new");
            faulty.arm(op, Some(Target::Index), 0, errno);
            let result = store.set_tag("app:new", &new.manifest);
            let hit = faulty.hits() > 0;
            faulty.disarm();
            match result {
                Ok(()) => assert!(!hit, "{op:?}: hit but Ok"),
                Err(e) => {
                    assert!(hit);
                    assert!(matches!(e, TagError::Io { .. }), "{op:?}: {e}");
                    assert_eq!(e.kind(), ErrorKind::Io);
                    let after = std::fs::read(store.root().join("index.json")).unwrap();
                    if op == Op::SyncDir {
                        // Renamed, the directory sync failed: the new index is whole.
                        assert!(store.resolve_tag("app:new").is_ok());
                    } else {
                        assert_eq!(before, after, "{op:?}: index.json changed");
                    }
                }
            }
            assert!(store.resolve_tag("app:old").is_ok(), "{op:?}");
            store.set_tag("app:new", &new.manifest).unwrap();
            assert_eq!(store.tags().unwrap().len(), 2);
            assert_store_valid(&store);
            // No temp file is left behind.
            let temps: Vec<_> = std::fs::read_dir(store.root())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                .collect();
            assert!(temps.is_empty(), "{op:?}: {temps:?}");
        }
    }
}

#[test]
fn lease_update_fails_cleanly() {
    for op in [Op::CreateTemp, Op::Write, Op::SyncFile, Op::Rename] {
        let (_tmp, store, faulty) = faulty_store();
        let d = store.write_blob(b"leased").unwrap();
        store
            .create_lease("l", std::slice::from_ref(&d), None)
            .unwrap();
        faulty.arm(op, Some(Target::Lease), 0, rustix::io::Errno::NOSPC);
        let e = store
            .add_to_lease("l", &[Digest::sha256(b"x")])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        faulty.disarm();
        let leases = store.leases().unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].digests.len(), 1, "{op:?}: old lease intact");
    }
}

#[test]
fn failing_fs_fails_every_ingest_without_damage() {
    // A full disk: every write fails from the first one on.
    let (_tmp, store, faulty) = faulty_store();
    let kept = store.write_blob(b"before the disk filled").unwrap();
    faulty.sticky(Op::Write, None, 0, rustix::io::Errno::NOSPC);
    for i in 0..5 {
        assert!(store.write_blob(&bytes(i, 10_000)).is_err());
    }
    faulty.disarm();
    verify_all(&store, &[kept]);
    assert_store_valid(&store);
}

/// An ingest directory without data is stale at once, so a gc may remove
/// it between a writer's `mkdir` and its open of it (the open then fails
/// ENOENT, as injected here): the writer makes it again instead of failing.
#[test]
fn a_writer_whose_new_ingest_directory_vanishes_makes_it_again() {
    let (_tmp, store, faulty) = faulty_store();
    faulty.arm(
        Op::CreateDir,
        Some(Target::Blob),
        0,
        rustix::io::Errno::NOENT,
    );
    let digest = store.write_blob(b"written after all").unwrap();
    assert_eq!(faulty.hits(), 1, "the fault was not hit");
    verify_all(&store, &[digest]);
}
