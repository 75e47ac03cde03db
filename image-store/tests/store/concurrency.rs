//! Concurrency: 8 writer processes ingest overlapping blobs, tag, untag
//! and take leases while gc runs in a loop (grace period zero, so only the
//! lock, the tag-time closure check and the leases protect their work).
//! Afterwards fsck is clean and every blob reachable from a tag whose
//! write returned Ok, or held by a live lease, verifies.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_core::Digest;
use std::path::Path;

use image_store::fs::{Fs, RealFs, Root, Target};
use image_store::fsck::FsckOptions;
use image_store::{GcOptions, Ingester, OciDir, Provider, TagStore};

use crate::common::{bytes, child_guard, image_json, kill_group, scratch, spawn_self};

const CHILD_ENV: &str = "IMAGE_STORE_CONC_CHILD";
const WRITERS: usize = 8;
const ROUNDS: u64 = 12;

/// A writer process: runs only when started by `writers_and_gc_concurrently`.
#[test]
fn conc_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    child_guard(60);
    let w: u64 = std::env::var("WRITER").unwrap().parse().unwrap();
    let store = OciDir::open(&dir).unwrap();
    for i in 0..ROUNDS {
        // Two layers from a pool shared by every writer, one of its own.
        let layers: Vec<Vec<u8>> = vec![
            bytes((w + i) % 5, 8192),
            bytes(5 + (w * 7 + i) % 4, 20_000),
            bytes(1000 + w * 100 + i, 3000 + (i as usize) * 100),
        ];
        let descs: Vec<(Digest, u64)> = layers
            .iter()
            .map(|l| (Digest::sha256(l), l.len() as u64))
            .collect();
        let (config, manifest) = image_json(&descs, &format!("w{w}-{i}"));
        let m = Digest::sha256(&manifest);
        let mut all: Vec<Digest> = descs.iter().map(|(d, _)| d.clone()).collect();
        all.push(Digest::sha256(&config));
        all.push(m.clone());
        // Lease first, so gc keeps the blobs between commit and tag.
        let lease = format!("w{w}-{i}");
        store
            .create_lease(&lease, &all, Some(Duration::from_secs(600)))
            .unwrap();
        for (l, (d, size)) in layers.iter().zip(&descs) {
            let got = store
                .ingest_reader(&mut &l[..], Some(*size), Some(d))
                .unwrap();
            assert_eq!(&got, d);
        }
        store.write_blob(&config).unwrap();
        store.write_blob(&manifest).unwrap();
        let desc = image_core::manifest::descriptor(
            &image_core::MediaType::OciManifest,
            &m,
            manifest.len() as u64,
        );
        let tag = format!("conc:w{w}-{i}");
        store.set_tag(&tag, &desc).unwrap();
        println!("OK {tag} {m}");
        if i % 3 == 0 {
            store.set_tag("conc:shared", &desc).unwrap();
            println!("SHARED {m}");
        }
        if i % 4 == 2 {
            store.remove_tag(&tag).unwrap();
            println!("UNTAG {tag}");
        }
        if i % 2 == 0 {
            store.delete_lease(&lease).unwrap();
        } else {
            println!(
                "LEASE {lease} {}",
                all.iter()
                    .map(Digest::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        io::stdout().flush().unwrap();
    }
    println!("DONE");
}

#[test]
fn writers_and_gc_concurrently() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = scratch(1024);
    let dir = tmp.path().join("store");
    let store = OciDir::open_or_create(&dir).unwrap();
    let started = Instant::now();
    let mut children: Vec<_> = (0..WRITERS)
        .map(|w| {
            spawn_self(
                "concurrency::conc_child",
                &[
                    (CHILD_ENV, dir.display().to_string()),
                    ("WRITER", w.to_string()),
                ],
            )
        })
        .collect();

    // gc in a loop while they write.
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut runs, mut removed) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let r = store
                    .gc(&GcOptions::default().grace(Duration::ZERO))
                    .unwrap();
                runs += 1;
                removed += r.removed.len();
            }
            (runs, removed)
        })
    };

    let mut ok: HashMap<String, Digest> = HashMap::new();
    let mut untagged = HashSet::new();
    let mut shared = HashSet::new();
    let mut leased: Vec<Digest> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for (child, lines) in &mut children {
        let mut done = false;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match kind {
                "OK" => {
                    let (tag, d) = rest.split_once(' ').unwrap();
                    ok.insert(tag.to_owned(), d.parse().unwrap());
                }
                "SHARED" => {
                    shared.insert(rest.parse::<Digest>().unwrap());
                }
                "UNTAG" => {
                    untagged.insert(rest.to_owned());
                }
                "LEASE" => {
                    let (_, ds) = rest.split_once(' ').unwrap();
                    leased.extend(ds.split(',').map(|d| d.parse::<Digest>().unwrap()));
                }
                "DONE" => {
                    done = true;
                    break;
                }
                _ => {}
            }
        }
        let status = child.wait().unwrap();
        if !done || !status.success() {
            kill_group(child);
            panic!("a writer failed: {status:?}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (gc_runs, gc_removed) = gc.join().unwrap();

    assert_eq!(ok.len(), WRITERS * ROUNDS as usize);
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut verified = 0;
    for (tag, digest) in &ok {
        if untagged.contains(tag) {
            assert!(store.resolve_tag(tag).is_err(), "{tag} was removed");
            continue;
        }
        let d = store
            .resolve_tag(tag)
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(d.digest().to_string(), digest.to_string());
        image_store::refs::walk(&store, &d, &mut |b, present| {
            assert!(present, "{tag}: {b} missing");
            io::copy(&mut store.reader(b).unwrap(), &mut io::sink()).unwrap();
            verified += 1;
        })
        .unwrap();
    }
    let s = store.resolve_tag("conc:shared").unwrap();
    assert!(shared.contains(&s.digest().to_string().parse::<Digest>().unwrap()));
    for d in &leased {
        io::copy(
            &mut store
                .reader(d)
                .unwrap_or_else(|e| panic!("leased {d}: {e}")),
            &mut io::sink(),
        )
        .unwrap();
    }
    // With the writers gone, one more gc leaves exactly what is reachable.
    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(
        report.is_clean() && report.dangling.is_empty(),
        "{report:?}"
    );
    eprintln!(
        "concurrency: {WRITERS} writers x {ROUNDS} images in {:.1}s, {gc_runs} gc runs removed {gc_removed} blobs, {verified} blob reads verified, {} leased blobs verified",
        started.elapsed().as_secs_f64(),
        leased.len()
    );
}

/// A seam on which a writer arrives at an ingest directory just as gc,
/// having found no data file in it, starts removing it: before gc's first
/// removal under that directory goes through, the writer creates its data
/// file there and locks it (the window gc cannot close with a check).
#[derive(Debug)]
struct ArrivingWriter {
    dir: std::path::PathBuf,
    arrived: AtomicBool,
    held: std::sync::Mutex<Option<std::fs::File>>,
}

impl ArrivingWriter {
    fn arrive(&self, path: &std::path::Path) {
        let mut held = self.held.lock().unwrap();
        if path.starts_with(&self.dir) && !self.arrived.swap(true, Ordering::SeqCst) {
            let f = std::fs::File::create(self.dir.join("data")).unwrap();
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
            *held = Some(f);
        }
    }
}

impl Fs for ArrivingWriter {
    fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        RealFs.create_dir_all(t, r, p)
    }
    fn open_temp(&self, t: Target, r: &Root, p: &Path, trunc: bool) -> io::Result<std::fs::File> {
        RealFs.open_temp(t, r, p, trunc)
    }
    fn write(&self, t: Target, f: &mut std::fs::File, buf: &[u8]) -> io::Result<usize> {
        RealFs.write(t, f, buf)
    }
    fn set_len(&self, t: Target, f: &std::fs::File, len: u64) -> io::Result<()> {
        RealFs.set_len(t, f, len)
    }
    fn sync_file(&self, t: Target, f: &std::fs::File) -> io::Result<()> {
        RealFs.sync_file(t, f)
    }
    fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(t, r, from, to)
    }
    fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> io::Result<()> {
        RealFs.sync_dir(t, r, d)
    }
    fn remove_file(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.arrive(p);
        RealFs.remove_file(t, r, p)
    }
    fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.arrive(p);
        RealFs.remove_dir_all(t, r, p)
    }
    fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
        self.arrive(p);
        RealFs.remove_dir(t, r, p)
    }
}

/// gc removing an ingest directory it found without a data file never
/// takes the data file a writer made there since (the writer's next step,
/// its `ref` file, failed with ENOENT beside `gc --grace 0`).
#[test]
fn gc_leaves_a_data_file_made_after_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("arriving");
    OciDir::open_or_create(&root).unwrap();
    let dir = root.join("ingest").join("0".repeat(64));
    std::fs::create_dir_all(&dir).unwrap();
    let fs = Arc::new(ArrivingWriter {
        dir: dir.clone(),
        arrived: AtomicBool::new(false),
        held: std::sync::Mutex::new(None),
    });
    let store = OciDir::open_with(&root, fs.clone()).unwrap();
    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(
        fs.held.lock().unwrap().is_some(),
        "gc never removed anything there"
    );
    assert!(
        dir.join("data").is_file(),
        "gc removed the writer's data file"
    );
    // Once the writer is gone and the directory holds only its stale data,
    // gc removes it as before.
    fs.held.lock().unwrap().take();
    let report = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert_eq!(report.ingests_removed, 1, "{report:?}");
    assert!(!dir.exists());
}

/// Many writers of one blob at once (pulls sharing a base layer, adders
/// writing the same empty config): each finds the shared ingest locked or
/// just committed and renamed under it, and every write succeeds with the
/// one digest, whatever the interleaving.
#[test]
fn many_writers_of_one_blob_all_succeed() {
    let (_tmp, store) = crate::common::oci_dir();
    let store = Arc::new(store);
    let data = bytes(77, 4096);
    let want = Digest::sha256(&data);
    for round in 0..20 {
        let go = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (store, data, go) = (store.clone(), data.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    store.write_blob(&data)
                })
            })
            .collect();
        for h in handles {
            let got = h.join().expect("writer thread");
            assert_eq!(
                got.expect("write_blob").to_string(),
                want.to_string(),
                "round {round}"
            );
        }
        image_store::Manager::delete(&*store, &want).expect("delete for the next round");
    }
}
