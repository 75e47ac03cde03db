//! Held leases and stale ingests: every writer holds a lease from its first
//! blob until it has tagged, so gc with a grace period of zero is safe
//! beside concurrent loads, copies and appends; what a killed writer
//! leaves (its ingest, its lease) is stale at once, reported by fsck and
//! removed by gc; what a live writer holds is never removed.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_core::config::History;
use image_core::{Digest, MediaType, Platform};
use image_store::archive::{load, save_docker, save_oci, LoadOptions, SaveImage, SaveOptions};
use image_store::fsck::FsckOptions;
use image_store::image::resolve_image;
use image_store::mutate::{append, NewLayer};
use image_store::{copy_tag, GcOptions, Ingester, Leases, MemoryStore, OciDir, Provider, TagStore};

use crate::common::{bytes, child_guard, kill_group, oci_dir, scratch, spawn_self, write_image};

const CHILD_ENV: &str = "IMAGE_STORE_LEASE_CHILD";

/// An archive of one image of `layers` random layers, tagged `name`, in
/// the OCI or the docker-save format.
fn archive(seed: u64, layers: usize, layer_size: usize, name: &str, oci: bool) -> Vec<u8> {
    let src = MemoryStore::new();
    let data: Vec<Vec<u8>> = (0..layers)
        .map(|i| bytes(seed * 100 + i as u64, layer_size))
        .collect();
    let img = write_image(&src, &data, name);
    src.set_tag(name, &img.manifest).unwrap();
    let image = SaveImage::from_tag(&src, name).unwrap();
    let mut out = Vec::new();
    if oci {
        save_oci(&src, &[image], &mut out).unwrap();
    } else {
        save_docker(&src, &[image], &mut out, &SaveOptions::default()).unwrap();
    }
    out
}

/// Every blob of the image tagged `name` reads back verified.
fn verify_tag(store: &OciDir, name: &str) {
    let image = resolve_image(store, name, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut digests = vec![image.manifest_digest().clone(), image.id().clone()];
    digests.extend(
        image
            .layers()
            .iter()
            .map(|l| l.digest().to_string().parse::<Digest>().unwrap()),
    );
    crate::common::verify_all(store, &digests);
}

#[test]
fn the_lease_trait_protects_what_a_writer_touched_until_the_guard_drops() {
    fn check<S: Leases + Ingester + Provider>(store: &S) {
        let present = store.write_blob(b"present").unwrap();
        let absent = Digest::sha256(b"absent");
        let lease = store.begin_lease().unwrap();
        let leased = lease.protect(store);
        // Asking whether a blob exists adds it first, present or not.
        assert!(leased.exists(&present).unwrap());
        assert!(!leased.exists(&absent).unwrap());
        // A commit adds the digest of what was written.
        let mut w = leased.writer("leased-commit").unwrap();
        w.write_all(b"committed").unwrap();
        let committed = w.commit(None, None).unwrap();
        let held = store.leased_digests().unwrap();
        for d in [&present, &absent, &committed] {
            assert!(held.contains(d), "{d} not leased: {held:?}");
            assert!(lease.contains(d));
        }
        drop(lease);
        assert!(store.leased_digests().unwrap().is_empty());
    }
    check(&MemoryStore::new());
    let (_tmp, store) = oci_dir();
    check(&store);
    check(&Arc::new(store));
}

#[test]
fn gc_removes_ingests_no_writer_holds_at_once_and_never_a_held_one() {
    let (_tmp, store) = oci_dir();
    {
        let mut w = store.writer("dropped").unwrap();
        w.write_all(b"partial").unwrap();
    }
    let mut held = store.writer("held").unwrap();
    held.write_all(b"in progress").unwrap();
    let stale: Vec<String> = store
        .stale_ingests()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(stale, ["dropped"]);
    // The default options: no age limit to wait for.
    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.ingests_removed, 1, "{report:?}");
    assert_eq!(report.ingest_bytes, 7);
    let left: Vec<String> = store
        .ingests()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(left, ["held"]);
    // A gc beside the writer, many times: its ingest stays.
    for _ in 0..20 {
        store
            .gc(&GcOptions::default().grace(Duration::ZERO))
            .unwrap();
    }
    held.write_all(b" and done").unwrap();
    let d = held.commit(None, None).unwrap();
    assert_eq!(
        store.read_blob_to_vec(&d, 100).unwrap(),
        b"in progress and done"
    );
}

#[test]
fn a_failed_ingest_removes_its_ingest_and_reads_at_most_one_byte_too_many() {
    let (_tmp, store) = oci_dir();
    // A source longer than its descriptor: a size mismatch after
    // expected + 1 bytes, not after the whole source, and nothing left.
    struct Endless(u64);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(b'z');
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
    }
    let mut src = Endless(0);
    let want = Digest::sha256(b"zzzz");
    let e = store
        .ingest_reader(&mut src, Some(4), Some(&want))
        .unwrap_err();
    let msg = image_core::error::Chain(&e).to_string();
    assert!(msg.contains("size"), "{msg}");
    assert!(
        src.0 <= 2 << 20,
        "read {} bytes of an endless source",
        src.0
    );
    assert!(store.ingests().unwrap().is_empty());
    // A source that fails half-way.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("source broke"));
            }
            self.0 -= 1;
            buf.fill(b'x');
            Ok(buf.len())
        }
    }
    for expected in [None, Some(&want)] {
        let e = store
            .ingest_reader(&mut Failing(3), None, expected)
            .unwrap_err();
        assert!(matches!(e, image_store::ContentError::Read { .. }), "{e}");
        assert!(store.ingests().unwrap().is_empty(), "{expected:?}");
    }
}

/// A reader that gives `limit` bytes of `data`, then says PAUSE and waits
/// to be killed.
struct PauseAfter<'a> {
    data: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Read for PauseAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.limit {
            println!("PAUSE");
            io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(120));
            return Err(io::Error::other("not killed"));
        }
        let n = buf.len().min(self.limit - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A child: loads an archive until half of it, or holds a writer and a
/// lease, then pauses. Runs only when started by the tests below.
#[test]
fn lease_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    child_guard(60);
    let store = OciDir::open(&dir).unwrap();
    match std::env::var("LEASE_CHILD_DO").unwrap().as_str() {
        "load" => {
            let data = archive(7, 3, 300_000, "killed/load:1", false);
            let limit = data.len() / 2;
            let r = PauseAfter {
                data: &data,
                pos: 0,
                limit,
            };
            let _ = load(&store, r, &LoadOptions::default());
            panic!("the load finished");
        }
        "hold" => {
            let lease = store.begin_lease().unwrap();
            let leased = lease.protect(&store);
            let blob = leased.write_blob(b"committed, not yet tagged").unwrap();
            let mut w = leased.writer("held-by-child").unwrap();
            w.write_all(&bytes(9, 100_000)).unwrap();
            println!("BLOB {blob}");
            println!("PAUSE");
            io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(120));
            drop(w);
        }
        other => panic!("unknown child action {other}"),
    }
}

fn child(dir: &std::path::Path, action: &str) -> (std::process::Child, Vec<String>) {
    let (child, lines) = spawn_self(
        "leases::lease_child",
        &[
            (CHILD_ENV, dir.display().to_string()),
            ("LEASE_CHILD_DO", action.to_owned()),
        ],
    );
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        let pause = line == "PAUSE";
        seen.push(line);
        if pause {
            return (child, seen);
        }
    }
    panic!("the child never paused: {seen:?}");
}

#[test]
fn a_killed_load_leaves_a_stale_ingest_and_lease_that_fsck_reports_and_gc_removes_at_once() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (tmp, store) = oci_dir();
    let (mut c, _) = child(store.root(), "load");
    // While it lives, its ingest and lease are held: nothing is stale.
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.stale_ingests.is_empty(), "{report:?}");
    assert!(report.stale_leases.is_empty(), "{report:?}");
    assert_eq!(store.held_leases().unwrap().len(), 1);
    kill_group(&mut c);

    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert_eq!(report.stale_ingests.len(), 1, "{report:?}");
    assert!(report.stale_ingests[0].offset > 0, "{report:?}");
    assert_eq!(report.stale_leases.len(), 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");

    // The default options, at once: no age to wait for.
    let gc = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(gc.ingests_removed, 1, "{gc:?}");
    assert_eq!(gc.leases_stale, 1, "{gc:?}");
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.stale_ingests.is_empty(), "{report:?}");
    assert!(report.stale_leases.is_empty(), "{report:?}");
    assert!(store.ingests().unwrap().is_empty());
    assert!(store.held_leases().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .count(),
        0
    );
    drop(tmp);
}

#[test]
fn what_a_live_writer_holds_is_never_removed_and_is_stale_once_it_dies() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (_tmp, store) = oci_dir();
    let (mut c, lines) = child(store.root(), "hold");
    let blob: Digest = lines
        .iter()
        .find_map(|l| l.strip_prefix("BLOB "))
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..5 {
        let gc = store
            .gc(&GcOptions::default().grace(Duration::ZERO))
            .unwrap();
        assert!(gc.removed.is_empty(), "{gc:?}");
        assert_eq!(gc.ingests_removed, 0, "{gc:?}");
        assert_eq!(gc.leases_stale, 0, "{gc:?}");
    }
    assert!(store.exists(&blob).unwrap());
    assert_eq!(store.ingests().unwrap().len(), 1);
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(
        report.dangling.is_empty(),
        "leased, not dangling: {report:?}"
    );
    assert!(report.stale_ingests.is_empty() && report.stale_leases.is_empty());

    kill_group(&mut c);
    let gc = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(gc.removed, [blob], "{gc:?}");
    assert_eq!((gc.ingests_removed, gc.leases_stale), (1, 1), "{gc:?}");
}

/// Loads (both formats), copies and appends in threads while gc with a
/// grace period of zero runs in a loop: every writer succeeds, every tag
/// verifies, fsck is clean and nothing stale is left.
#[test]
fn writers_beside_gc_with_zero_grace_all_succeed() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    const LOADERS: u64 = 4;
    const ROUNDS: u64 = 6;
    let tmp = scratch(1024);
    let store = OciDir::open_or_create(tmp.path().join("store")).unwrap();
    let archives: Vec<Vec<u8>> = (0..LOADERS)
        .map(|i| archive(i, 3, 200_000, &format!("load/l{i}:1"), i % 2 == 0))
        .collect();
    let source = OciDir::open_or_create(tmp.path().join("source")).unwrap();
    let src_img = write_image(&source, &[bytes(50, 300_000), bytes(51, 100_000)], "src");
    source.set_tag("copy/src:1", &src_img.manifest).unwrap();

    let deadline = Instant::now() + Duration::from_secs(600);
    let stop = Arc::new(AtomicBool::new(false));
    let gc_runs = Arc::new(AtomicUsize::new(0));
    let gc_removed = Arc::new(AtomicUsize::new(0));
    let gc = {
        let (store, stop) = (store.clone(), stop.clone());
        let (runs, removed) = (gc_runs.clone(), gc_removed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = store
                    .gc(&GcOptions::default().grace(Duration::ZERO))
                    .expect("gc");
                runs.fetch_add(1, Ordering::Relaxed);
                removed.fetch_add(r.removed.len(), Ordering::Relaxed);
                assert!(Instant::now() < deadline, "gc loop past its time limit");
            }
        })
    };

    let mut writers = Vec::new();
    for (i, data) in archives.iter().enumerate() {
        let (store, data) = (store.clone(), data.clone());
        writers.push(std::thread::spawn(move || {
            let name = format!("docker.io/load/l{i}:1");
            for round in 0..ROUNDS {
                let report = load(&store, &data[..], &LoadOptions::default())
                    .unwrap_or_else(|e| panic!("load {i} round {round}: {e}"));
                assert_eq!(report.images[0].tags, std::slice::from_ref(&name));
                verify_tag(&store, &name);
                // Untag, so the next gc frees the blobs and the next load
                // writes them again.
                store.remove_tag(&name).unwrap();
            }
        }));
    }
    {
        let (store, source) = (store.clone(), source.clone());
        writers.push(std::thread::spawn(move || {
            for round in 0..ROUNDS {
                copy_tag(&source, "copy/src:1", &store, Some("copy/dst:1"))
                    .unwrap_or_else(|e| panic!("copy round {round}: {e}"));
                verify_tag(&store, "copy/dst:1");
                store.remove_tag("copy/dst:1").unwrap();
            }
        }));
    }
    {
        let store = store.clone();
        writers.push(std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let lease = store.begin_lease().unwrap();
                let leased = lease.protect(&store);
                let layer = bytes(900 + round, 150_000);
                let digest = leased.write_blob(&layer).unwrap();
                let new = NewLayer {
                    media_type: MediaType::OciLayer,
                    digest: digest.clone(),
                    size: layer.len() as u64,
                    diff_id: digest,
                    history: History::default(),
                };
                let out = append(
                    &leased,
                    None,
                    &Platform::new("linux", "amd64"),
                    &[new],
                    |_| {},
                )
                .unwrap_or_else(|e| panic!("append round {round}: {e}"));
                leased
                    .set_tag("append/a:1", &out.manifest.descriptor())
                    .unwrap_or_else(|e| panic!("append tag round {round}: {e}"));
                drop(lease);
                store.remove_tag("append/a:1").unwrap();
            }
        }));
    }
    let mut failed = Vec::new();
    for w in writers {
        if let Err(e) = w.join() {
            failed.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".into()),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    gc.join().expect("gc thread");
    assert!(failed.is_empty(), "writers failed beside gc: {failed:#?}");
    let runs = gc_runs.load(Ordering::Relaxed);
    assert!(runs > 0);

    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.stale_ingests.is_empty(), "{report:?}");
    assert!(report.stale_leases.is_empty(), "{report:?}");
    assert!(store.held_leases().unwrap().is_empty());
    // Everything was untagged: one more gc leaves an empty store.
    let last = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(store.list_is_empty(), "{last:?}");
    eprintln!(
        "{runs} gc runs removed {} blobs beside {} loads, {ROUNDS} copies and {ROUNDS} appends",
        gc_removed.load(Ordering::Relaxed) + last.removed.len(),
        LOADERS * ROUNDS
    );
}

trait ListIsEmpty {
    fn list_is_empty(&self) -> bool;
}

impl ListIsEmpty for OciDir {
    fn list_is_empty(&self) -> bool {
        image_store::Manager::list(self).unwrap().is_empty()
    }
}

#[test]
fn foreign_files_among_the_leases_do_not_stop_gc_or_fsck() {
    let (tmp, store) = oci_dir();
    let leases = store.root().join("leases");
    std::fs::create_dir_all(leases.join("dir.held")).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "sha256:not a digest\n").unwrap();
    std::os::unix::fs::symlink(&outside, leases.join("link.held")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", leases.join("zero.held")).unwrap();
    let gc = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(gc.leases_stale, 0, "{gc:?}");
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.stale_leases.is_empty(), "{report:?}");
    assert!(outside.exists());
}

#[test]
fn a_blob_asked_about_through_a_lease_survives_gc_until_the_guard_drops() {
    let (_tmp, store) = oci_dir();
    let present = store.write_blob(b"unreferenced, present").unwrap();
    let later = b"absent when asked, written afterwards";
    let later_digest = Digest::sha256(later);
    let lease = store.begin_lease().unwrap();
    let leased = lease.protect(&store);
    assert!(leased.exists(&present).unwrap());
    assert!(!leased.exists(&later_digest).unwrap());
    // Written by someone else after the check: protected all the same.
    store.write_blob(later).unwrap();
    for _ in 0..3 {
        let gc = store
            .gc(&GcOptions::default().grace(Duration::ZERO))
            .unwrap();
        assert!(gc.removed.is_empty(), "{gc:?}");
    }
    drop(lease);
    let gc = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(gc.removed.len(), 2, "{gc:?}");
    // A guard outliving nothing: a writer opened through a lease that was
    // released cannot commit an unprotected blob.
    let lease = store.begin_lease().unwrap();
    let mut w = lease.protect(&store).writer("after-release").unwrap();
    w.write_all(b"late").unwrap();
    lease.release().unwrap();
    let e = w.commit(None, None).unwrap_err();
    assert!(matches!(e, image_store::ContentError::Lease { .. }), "{e}");
    assert!(!store.exists(&Digest::sha256(b"late")).unwrap());
}

/// A seam that plays two things that happen to held lease files: a disk
/// filling up mid-write (one write cut short, the next failing), and a
/// scanner (fsck, `held_leases`) that locks each `*.held` file it finds
/// the moment it appears, as a concurrent fsck may.
#[derive(Debug, Default)]
struct LeaseFileFs {
    cut_next_write: AtomicBool,
    fail_next_write: AtomicBool,
    scan: AtomicBool,
    scanned: std::sync::Mutex<Vec<std::fs::File>>,
}

impl LeaseFileFs {
    fn scan(&self, path: &std::path::Path) {
        if !self.scan.load(Ordering::SeqCst) || path.extension().is_none_or(|e| e != "held") {
            return;
        }
        let f = std::fs::File::open(path).unwrap();
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            self.scanned.lock().unwrap().push(f);
        }
    }
}

impl image_store::fs::Fs for LeaseFileFs {
    fn create_dir_all(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        p: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.create_dir_all(t, r, p)
    }
    fn open_temp(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        p: &std::path::Path,
        truncate: bool,
    ) -> io::Result<std::fs::File> {
        let f = image_store::fs::RealFs.open_temp(t, r, p, truncate)?;
        self.scan(p);
        Ok(f)
    }
    fn write(
        &self,
        t: image_store::fs::Target,
        f: &mut std::fs::File,
        b: &[u8],
    ) -> io::Result<usize> {
        if t == image_store::fs::Target::Lease {
            if self.fail_next_write.swap(false, Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            if self.cut_next_write.swap(false, Ordering::SeqCst) {
                self.fail_next_write.store(true, Ordering::SeqCst);
                return image_store::fs::RealFs.write(t, f, &b[..b.len() / 2]);
            }
        }
        image_store::fs::RealFs.write(t, f, b)
    }
    fn set_len(&self, t: image_store::fs::Target, f: &std::fs::File, l: u64) -> io::Result<()> {
        image_store::fs::RealFs.set_len(t, f, l)
    }
    fn sync_file(&self, t: image_store::fs::Target, f: &std::fs::File) -> io::Result<()> {
        image_store::fs::RealFs.sync_file(t, f)
    }
    fn rename(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        a: &std::path::Path,
        b: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.rename(t, r, a, b)?;
        self.scan(b);
        Ok(())
    }
    fn sync_dir(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        d: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.sync_dir(t, r, d)
    }
    fn remove_file(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        p: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.remove_file(t, r, p)
    }
    fn remove_dir_all(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        p: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.remove_dir_all(t, r, p)
    }
    fn remove_dir(
        &self,
        t: image_store::fs::Target,
        r: &image_store::fs::Root,
        p: &std::path::Path,
    ) -> io::Result<()> {
        image_store::fs::RealFs.remove_dir(t, r, p)
    }
}

fn lease_file_store() -> (tempfile::TempDir, OciDir, Arc<LeaseFileFs>) {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(LeaseFileFs::default());
    let store = OciDir::open_or_create_with(tmp.path().join("layout"), fs.clone()).unwrap();
    (tmp, store, fs)
}

/// A write to a held lease cut short (the disk filled) fails that add; a
/// later add, after space was freed, still protects its blob: it is not
/// glued to the cut line, where gc would not read it.
#[test]
fn an_add_after_a_lease_write_cut_short_still_protects_its_blob() {
    let (_tmp, store, fs) = lease_file_store();
    let blob = store.write_blob(b"protected by the second add").unwrap();
    let lease = store.begin_lease().unwrap();
    fs.cut_next_write.store(true, Ordering::SeqCst);
    lease
        .add(&[Digest::sha256(b"first")])
        .expect_err("the cut write fails the add");
    lease.add(std::slice::from_ref(&blob)).unwrap();
    let gc = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{gc:?}");
    assert!(store.exists(&blob).unwrap());
}

/// A scanner that locks a held lease file for a moment (fsck does, to see
/// whether its holder lives) cannot make a new lease fail: the file is
/// locked by its holder before a scanner can find it.
#[test]
fn a_scanner_locking_lease_files_does_not_fail_a_new_lease() {
    let (_tmp, store, fs) = lease_file_store();
    fs.scan.store(true, Ordering::SeqCst);
    let lease = store.begin_lease().expect("begin_lease beside a scanner");
    assert!(
        fs.scanned.lock().unwrap().is_empty(),
        "a scanner got the lock"
    );
    let held = store.held_leases().unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].live, "{held:?}");
    drop(lease);
    assert!(store.held_leases().unwrap().is_empty());
}

/// What a writer killed in the middle of an atomic write leaves (the temp
/// file of `index.json`, of an explicit lease, of a new held lease) is
/// collected by the next gc at its default grace: every such write is
/// made under the index lock that gc holds, so a temp file gc finds has
/// no live writer.
#[test]
fn temp_files_of_a_killed_atomic_write_are_collected_at_once() {
    let (_tmp, store) = oci_dir();
    let root = store.root().to_path_buf();
    std::fs::create_dir_all(root.join("leases")).unwrap();
    let debris = [
        root.join(".index.json.tmp-4194304"),
        root.join("leases/.pull-1.json.tmp-4194304"),
        root.join("leases/.held-1-2-3.held.tmp-4194304"),
    ];
    for d in &debris {
        std::fs::write(d, b"cut short").unwrap();
    }
    // Not the store's: left alone, and no reason to stop gc.
    let foreign = root.join(".a-directory.tmp-1");
    std::fs::create_dir(&foreign).unwrap();
    store.gc(&GcOptions::default()).unwrap();
    for d in &debris {
        assert!(!d.exists(), "{} left", d.display());
    }
    assert!(foreign.is_dir());
}

/// More stale ingests than this process may have descriptors open: fsck
/// and gc look at (and lock) one at a time, so they list and remove them
/// all instead of failing with EMFILE.
#[test]
fn more_stale_ingests_than_open_descriptors_are_all_collected() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    if limit > 100_000 {
        eprintln!("SKIP: the descriptor limit {limit} is too high to exceed here");
        return;
    }
    let n = usize::try_from(limit).unwrap() + 16;
    let (_tmp, store) = oci_dir();
    let ingest = store.root().join("ingest");
    for i in 0..n {
        let dir = ingest.join(format!("{i:064x}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ref"), format!("r{i}")).unwrap();
        std::fs::write(dir.join("data"), b"x").unwrap();
    }
    let stale = store.stale_ingests().unwrap();
    assert_eq!(stale.len(), n);
    let gc = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(gc.ingests_removed, n, "{gc:?}");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
}

/// gc reads at most 64 MiB of a held lease: a writer cannot add past that
/// (its add fails, so it stops) instead of believing protected a blob gc
/// would not see.
#[test]
fn a_held_lease_refuses_digests_past_what_gc_reads() {
    let (_tmp, store) = oci_dir();
    let lease = store.begin_lease().unwrap();
    // 72 bytes a line: 64 MiB hold about 932,000.
    let many: Vec<Digest> = (0..940_000u64)
        .map(|i| Digest::from_hex(image_core::Algorithm::Sha256, &format!("{i:064x}")).unwrap())
        .collect();
    let result = lease.add(&many);
    let blob = store.write_blob(b"added last").unwrap();
    let last = lease.add(std::slice::from_ref(&blob));
    let gc = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    if result.is_ok() && last.is_ok() {
        assert!(
            gc.removed.is_empty(),
            "a blob added to the lease was swept: {gc:?}"
        );
    } else {
        let e = result.err().or(last.err()).unwrap();
        assert_eq!(
            image_core::Classify::kind(&e),
            image_core::ErrorKind::FailedPrecondition,
            "{e}"
        );
    }
}
