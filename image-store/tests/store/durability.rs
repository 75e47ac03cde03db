//! Deferred durability (`OciDir::deferring_sync`): a batch of ingests is
//! synced in one pass, and that pass always runs before a tag can reach
//! any of its blobs. A tapped seam logs every sync, rename and index
//! write in order, naming files by inode, so the tests check the crash
//! rule on the real order of the system calls.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use image_core::{Classify, ErrorKind};
use image_store::archive::{load, LoadOptions};
use image_store::fs::{FaultyFs, Fs, Op, RealFs, Target};
use image_store::gc::GcOptions;
use image_store::{Ingester, Manager, OciDir, Provider, TagError, TagStore};
use image_testsupport::tar::TarBuf;

use crate::common::{verify_all, write_image, Seen, Tap, TestImage};

/// One call of the seam, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// fsync of the file with this inode.
    SyncFile(Target, u64),
    /// fsync of a directory.
    SyncDir(Target, String),
    /// A rename to this path.
    Rename(Target, String),
    /// Anything done to `index.json` or its temporary file.
    Index,
}

/// The calls a test's store made, in order.
#[derive(Debug, Default)]
struct Recording {
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    fn seen(&self, c: Seen<'_>) {
        let call = match c {
            Seen::Opened(Target::Index, _) => Call::Index,
            Seen::SyncedFile(t, f) => Call::SyncFile(t, f.metadata().unwrap().ino()),
            Seen::SyncedDir(t, d) => Call::SyncDir(t, d.display().to_string()),
            Seen::Renamed(t, to) => Call::Rename(t, to.display().to_string()),
            _ => return,
        };
        self.calls.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// A store whose seam calls `rec` records, and the seam itself (for a
/// second handle on the same directory).
fn recording_store(inner: Arc<dyn Fs>) -> (tempfile::TempDir, OciDir, Arc<Recording>, Arc<dyn Fs>) {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recording::default());
    let seen = rec.clone();
    let tap = Arc::new(Tap {
        inner,
        on: move |c: Seen<'_>| seen.seen(c),
    });
    let store = OciDir::open_or_create_with(tmp.path().join("layout"), tap.clone()).unwrap();
    rec.take();
    (tmp, store, rec, tap)
}

/// The blobs of `image`, with the inodes of their files in `store`.
fn blob_inodes(store: &OciDir, image: &TestImage) -> Vec<u64> {
    let mut digests = image.layers.clone();
    digests.push(image.config.clone());
    digests.push(image_core::DescriptorExt::checked_digest(&image.manifest).unwrap());
    digests
        .iter()
        .map(|d| std::fs::metadata(store.blob_path(d)).unwrap().ino())
        .collect()
}

fn layers(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag} layer {i}").repeat(100 + i).into_bytes())
        .collect()
}

/// The crash rule, on the order of the calls: a deferring handle's commits
/// sync nothing (each blob is still verified and readable once its commit
/// returns), and the tag that makes them reachable is written only after
/// every one of their files, then their directory, was synced: one pass,
/// a sync per file and one for the directory, where an ordinary handle
/// syncs twice per blob.
#[test]
fn a_deferred_batch_is_synced_once_before_the_tag_reaches_it() {
    let (_t, store, rec, _) = recording_store(Arc::new(RealFs));
    let batch = store.deferring_sync();
    assert!(batch.defers_sync() && !store.defers_sync());
    let image = write_image(&batch, &layers(8, "deferred"), "deferred");
    let blobs = blob_inodes(&store, &image);
    verify_all(&store, &image.layers);
    let during = rec.take();
    assert!(
        during
            .iter()
            .all(|c| !matches!(c, Call::SyncFile(..) | Call::SyncDir(..))),
        "no sync while the batch is written: {during:?}"
    );
    assert_eq!(
        during
            .iter()
            .filter(|c| matches!(c, Call::Rename(Target::Blob, _)))
            .count(),
        blobs.len(),
        "each blob renamed into place at its commit: {during:?}"
    );

    batch
        .set_tag("example/deferred:1", &image.manifest)
        .unwrap();
    let calls = rec.take();
    let first_index = calls.iter().position(|c| *c == Call::Index).unwrap();
    let (before, _) = calls.split_at(first_index);
    let synced: Vec<u64> = before
        .iter()
        .filter_map(|c| match c {
            Call::SyncFile(Target::Blob, ino) => Some(*ino),
            _ => None,
        })
        .collect();
    let mut want = blobs.clone();
    want.sort_unstable();
    let mut got = synced.clone();
    got.sort_unstable();
    assert_eq!(
        got, want,
        "every blob synced once before the index: {calls:?}"
    );
    let dir_syncs: Vec<usize> = before
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::SyncDir(Target::Blob, _)))
        .map(|(i, _)| i)
        .collect();
    assert!(
        !dir_syncs.is_empty(),
        "the blobs' directory synced: {calls:?}"
    );
    let last_file = before
        .iter()
        .rposition(|c| matches!(c, Call::SyncFile(Target::Blob, _)))
        .unwrap();
    assert!(
        dir_syncs.iter().all(|&d| d > last_file),
        "directories after the files they name: {calls:?}"
    );
    assert!(
        dir_syncs.len() <= 2,
        "one sync per directory changed (sha256/, and blobs/ when made): {calls:?}"
    );
    assert_eq!(
        store.resolve_tag("example/deferred:1").unwrap().digest(),
        image.manifest.digest()
    );

    // The same batch through an ordinary handle: two syncs per blob.
    let plain = write_image(&store, &layers(8, "plain"), "plain");
    let syncs = rec
        .take()
        .iter()
        .filter(|c| {
            matches!(
                c,
                Call::SyncFile(Target::Blob, _) | Call::SyncDir(Target::Blob, _)
            )
        })
        .count();
    assert!(syncs >= 2 * blob_inodes(&store, &plain).len(), "{syncs}");
}

/// The pending blobs belong to the store, not to the handle: a tag set
/// through another handle of the store (an ordinary one, or a clone)
/// syncs them first too; a pass with nothing pending syncs nothing.
#[test]
fn a_tag_through_any_handle_syncs_what_a_deferring_handle_left() {
    let (_t, store, rec, _) = recording_store(Arc::new(RealFs));
    let image = write_image(&store.deferring_sync(), &layers(3, "other"), "other");
    let blobs = blob_inodes(&store, &image);
    rec.take();
    store
        .clone()
        .set_tag("example/other:1", &image.manifest)
        .unwrap();
    let calls = rec.take();
    let first_index = calls.iter().position(|c| *c == Call::Index).unwrap();
    for ino in &blobs {
        assert!(
            calls[..first_index].contains(&Call::SyncFile(Target::Blob, *ino)),
            "{ino} synced before the index: {calls:?}"
        );
    }
    store.sync_deferred().unwrap();
    store.set_tag("example/other:2", &image.manifest).unwrap();
    assert!(
        rec.take()
            .iter()
            .all(|c| !matches!(c, Call::SyncFile(Target::Blob, _))),
        "nothing left to sync"
    );
}

/// A blob already present (another writer renamed it, and may have
/// deferred its sync) is synced by the commit that finds it, before that
/// commit returns, on an ordinary handle.
#[test]
fn a_commit_finding_its_blob_present_syncs_it() {
    let (_t, store, rec, tap) = recording_store(Arc::new(RealFs));
    let data = b"present".repeat(1000);
    let digest = store.deferring_sync().write_blob(&data).unwrap();
    // Another process's view: a store of its own, knowing nothing pending.
    let other = OciDir::open_with(store.root(), tap).unwrap();
    rec.take();
    assert_eq!(other.write_blob(&data).unwrap(), digest);
    let ino = std::fs::metadata(store.blob_path(&digest)).unwrap().ino();
    assert!(
        rec.take().contains(&Call::SyncFile(Target::Blob, ino)),
        "the present blob synced"
    );
}

/// A commit finding its blob present syncs that blob and its directory,
/// and not the data it is about to discard: a repeated blob (a config
/// carried once per image, a layer pulled twice) costs no fsync of its
/// own ingest.
#[test]
fn a_commit_finding_its_blob_present_syncs_no_discarded_data() {
    let (_t, store, rec, _) = recording_store(Arc::new(RealFs));
    let data = b"repeated".repeat(1000);
    let digest = store.write_blob(&data).unwrap();
    rec.take();
    assert_eq!(store.write_blob(&data).unwrap(), digest);
    let ino = std::fs::metadata(store.blob_path(&digest)).unwrap().ino();
    let files: Vec<u64> = rec
        .take()
        .into_iter()
        .filter_map(|c| match c {
            Call::SyncFile(_, i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(files, vec![ino], "only the present blob synced");
}

/// A failed pass fails the tag with the sync's typed error and leaves
/// `index.json` as it was; what was not synced stays pending, and the
/// retry syncs it and tags.
#[test]
fn a_failed_sync_pass_sets_no_tag_and_is_retried() {
    let faulty = Arc::new(FaultyFs::new(Arc::new(RealFs)));
    let (_t, store, rec, _) = recording_store(faulty.clone());
    let image = write_image(&store.deferring_sync(), &layers(4, "fail"), "fail");
    let blobs = blob_inodes(&store, &image);
    faulty.arm(Op::SyncFile, Some(Target::Blob), 1, rustix::io::Errno::IO);
    rec.take();
    let e = store
        .set_tag("example/fail:1", &image.manifest)
        .expect_err("the sync failed");
    assert!(matches!(e, TagError::Content(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
    assert!(
        rec.take().iter().all(|c| *c != Call::Index),
        "no index write"
    );
    assert!(store.resolve_tag("example/fail:1").is_err());
    store.set_tag("example/fail:1", &image.manifest).unwrap();
    let calls = rec.take();
    for ino in &blobs {
        assert!(
            calls.contains(&Call::SyncFile(Target::Blob, *ino)),
            "{calls:?}"
        );
    }
}

/// Debris of a batch that never reached its tag (its process died, or it
/// gave up) is garbage at once: no tag names it and no lease holds it.
#[test]
fn an_untagged_deferred_batch_is_collected_at_once() {
    let (_t, store, _rec, _) = recording_store(Arc::new(RealFs));
    let image = write_image(&store.deferring_sync(), &layers(3, "debris"), "debris");
    assert!(store.exists(&image.config).unwrap());
    let report = store
        .gc(&GcOptions::default().grace(std::time::Duration::ZERO))
        .unwrap();
    assert_eq!(report.removed.len(), 5, "{report:?}");
    assert!(!store.exists(&image.config).unwrap());
    assert!(store.list().unwrap().is_empty());
}

/// A batch longer than the store keeps open is synced in parts: at most
/// `MAX_PENDING` files wait, and all are synced before the tag.
#[test]
fn a_long_batch_is_synced_in_bounded_parts() {
    let (_t, store, rec, _) = recording_store(Arc::new(RealFs));
    let batch = store.deferring_sync();
    let n = image_store::durability::MAX_PENDING + 10;
    for i in 0..n {
        batch.write_blob(format!("blob {i}").as_bytes()).unwrap();
    }
    let during = rec
        .take()
        .iter()
        .filter(|c| matches!(c, Call::SyncFile(Target::Blob, _)))
        .count();
    assert_eq!(
        during,
        image_store::durability::MAX_PENDING,
        "one part synced"
    );
    batch.sync_deferred().unwrap();
    let after = rec
        .take()
        .iter()
        .filter(|c| matches!(c, Call::SyncFile(Target::Blob, _)))
        .count();
    assert_eq!(after, 10);
}

/// A docker-save archive of `copies` images of one config and one layer,
/// the config entry written again for each image (as a naive writer does).
fn config_per_image(copies: usize) -> Vec<u8> {
    let layer = TarBuf::new().file("etc/x", b"x\n").end();
    let diff_id = image_core::Digest::sha256(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let name = format!(
        "{}.json",
        image_core::Digest::sha256(config.as_bytes()).hex()
    );
    let entry = format!(r#"{{"Config":"{name}","RepoTags":null,"Layers":["l/layer.tar"]}}"#);
    let manifest = format!("[{}]", vec![entry; copies].join(","));
    let mut tar = TarBuf::new();
    for _ in 0..copies {
        tar.file(&name, config.as_bytes());
    }
    tar.file("l/layer.tar", &layer)
        .file("manifest.json", manifest.as_bytes())
        .end()
}

/// A load syncs each distinct blob once: a config entry the archive
/// repeats once per image costs the syncs one copy costs (each copy was
/// committed again, and a commit of a present blob syncs it).
#[test]
fn a_load_syncs_a_config_repeated_per_image_once() {
    let syncs = |copies: usize| {
        let (_t, store, rec, _) = recording_store(Arc::new(RealFs));
        let report = load(
            &store,
            &config_per_image(copies)[..],
            &LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(report.images.len(), copies);
        rec.take()
            .iter()
            .filter(|c| matches!(c, Call::SyncFile(..) | Call::SyncDir(..)))
            .count()
    };
    let one = syncs(1);
    for copies in [2, 50] {
        assert_eq!(syncs(copies), one, "{copies} copies");
    }
}
