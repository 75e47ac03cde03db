//! Crash test: a child process ingests and tags in a loop, reporting each
//! step through a file-system seam wrapper; the parent SIGKILLs it in a
//! chosen phase (>= 200 kills, >= 10 per phase), then checks that the
//! store passes fsck and that every tag whose write returned Ok resolves
//! and verifies.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image_core::Digest;
use image_store::fs::{RealFs, Target};
use image_store::fsck::FsckOptions;
use image_store::{Ingester, OciDir, Provider, TagStore};

use crate::common::{bytes, child_guard, image_json, kill_group, scratch, spawn_self, Seen, Tap};

const PHASES: [&str; 5] = [
    "temp-created",
    "mid-write",
    "synced",
    "renamed",
    "index-update",
];
const CHILD_ENV: &str = "IMAGE_STORE_CRASH_CHILD";

/// Reports phases and stops in the chosen one until killed.
#[derive(Debug)]
struct PhaseFs {
    pause: String,
    pause_at: usize,
    counts: Mutex<HashMap<&'static str, usize>>,
    _calls: AtomicUsize,
}

impl PhaseFs {
    fn reached(&self, phase: &'static str) {
        let n = {
            let mut c = self.counts.lock().unwrap();
            let e = c.entry(phase).or_insert(0);
            *e += 1;
            *e - 1
        };
        if phase == self.pause && n == self.pause_at {
            println!("PAUSE {phase}");
            io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

impl PhaseFs {
    /// The phase a seam call reaches, if any.
    fn seen(&self, call: Seen<'_>) {
        match call {
            Seen::Opened(Target::Blob, p) if p.ends_with("data") => self.reached("temp-created"),
            Seen::Wrote(Target::Blob, len) if len >= 1024 => self.reached("mid-write"),
            Seen::SyncedFile(Target::Blob, _) => self.reached("synced"),
            Seen::Renamed(Target::Blob, _) => self.reached("renamed"),
            Seen::SyncedFile(Target::Index, _) | Seen::Renamed(Target::Index, _) => {
                self.reached("index-update")
            }
            _ => {}
        }
    }
}

/// The child: runs only when started by `crash_kills_in_every_phase`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    child_guard(20);
    let pause = std::env::var("PAUSE_PHASE").unwrap();
    let pause_at: usize = std::env::var("PAUSE_AT").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let phases = PhaseFs {
        pause,
        pause_at,
        counts: Mutex::new(HashMap::new()),
        _calls: AtomicUsize::new(0),
    };
    let fs = Arc::new(Tap {
        inner: Arc::new(RealFs),
        on: move |call: Seen<'_>| phases.seen(call),
    });
    let store = OciDir::open_or_create_with(&dir, fs).unwrap();
    for i in 0u64.. {
        // Layers: one shared between children (dedup), one new.
        let shared = bytes(i % 3, 6 * 1024);
        let own = bytes(
            seed * 1000 + i + 10,
            4096 + (seed as usize * 977 + i as usize * 131) % 12_000,
        );
        let mut layers = Vec::new();
        for (n, l) in [shared, own].iter().enumerate() {
            let mut w = store.writer(&format!("crash-{seed}-{i}-{n}")).unwrap();
            let start = w.offset() as usize;
            for chunk in l[start..].chunks(2048) {
                w.write_all(chunk).unwrap();
            }
            let d = w
                .commit(Some(l.len() as u64), Some(&Digest::sha256(l)))
                .unwrap();
            layers.push((d, l.len() as u64));
        }
        let (config, manifest) = image_json(&layers, &format!("{seed}-{i}"));
        store.write_blob(&config).unwrap();
        let m = store.write_blob(&manifest).unwrap();
        let desc = image_core::manifest::descriptor(
            &image_core::MediaType::OciManifest,
            &m,
            manifest.len() as u64,
        );
        let tag = format!("crash:s{seed}-{i}");
        store.set_tag(&tag, &desc).unwrap();
        println!("OK {tag} {m}");
        io::stdout().flush().unwrap();
    }
}

fn check_store(store: &OciDir, ok: &HashMap<String, Digest>, context: &str) {
    let report = store.fsck(&FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{context}: fsck: {report:?}");
    for (tag, digest) in ok {
        let d = store
            .resolve_tag(tag)
            .unwrap_or_else(|e| panic!("{context}: tag {tag} lost: {e}"));
        assert_eq!(
            &d.digest().to_string(),
            &digest.to_string(),
            "{context}: {tag}"
        );
        image_store::refs::walk(store, &d, &mut |b, present| {
            assert!(present, "{context}: {tag}: {b} missing");
            let mut r = store.reader(b).unwrap();
            io::copy(&mut r, &mut io::sink())
                .unwrap_or_else(|e| panic!("{context}: {tag}: {b}: {e}"));
        })
        .unwrap();
    }
}

#[test]
fn crash_kills_in_every_phase() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = scratch(1024);
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut per_phase: HashMap<&str, usize> = HashMap::new();
    let mut store_dir = tmp.path().join("store-0");
    let mut ok: HashMap<String, Digest> = HashMap::new();
    let mut verified_tags = 0;
    let started = std::time::Instant::now();
    for k in 0..kills {
        // A fresh store every 50 kills keeps fsck cheap.
        if k % 50 == 0 {
            store_dir = tmp.path().join(format!("store-{k}"));
            OciDir::open_or_create(&store_dir).unwrap();
            ok.clear();
        }
        let phase = PHASES[k % PHASES.len()];
        let pause_at = (k / PHASES.len()) % 3;
        let (mut child, lines) = spawn_self(
            "crash::crash_child",
            &[
                (CHILD_ENV, store_dir.display().to_string()),
                ("PAUSE_PHASE", phase.to_owned()),
                ("PAUSE_AT", pause_at.to_string()),
                ("SEED", k.to_string()),
            ],
        );
        let mut paused = false;
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
            if let Some(rest) = line.strip_prefix("OK ") {
                let (tag, digest) = rest.split_once(' ').unwrap();
                ok.insert(tag.to_owned(), digest.parse().unwrap());
            } else if line.starts_with("PAUSE ") {
                paused = true;
                break;
            }
        }
        kill_group(&mut child);
        assert!(
            paused,
            "kill {k}: the child never reached {phase} #{pause_at}"
        );
        *per_phase.entry(phase).or_insert(0) += 1;
        let store = OciDir::open(&store_dir).unwrap();
        check_store(&store, &ok, &format!("kill {k} in {phase} #{pause_at}"));
        verified_tags += ok.len();
        if k % 10 == 9 {
            // Collect what the crashes left; tagged images must survive it.
            let report = store
                .gc(&image_store::GcOptions::default()
                    .grace(Duration::ZERO)
                    .ingest_max_age(Duration::ZERO))
                .unwrap();
            assert!(store.ingests().unwrap().is_empty(), "{report:?}");
            check_store(&store, &ok, &format!("gc after kill {k}"));
        }
    }
    eprintln!(
        "crash test: {kills} kills in {:.1}s, per phase {per_phase:?}, {verified_tags} tag checks",
        started.elapsed().as_secs_f64()
    );
    if kills >= 200 {
        for p in PHASES {
            assert!(
                per_phase.get(p).copied().unwrap_or(0) >= 10,
                "{p}: {per_phase:?}"
            );
        }
    }
}
