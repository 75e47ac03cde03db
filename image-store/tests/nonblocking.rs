//! The async wrappers: results come back, progress is reported, and a
//! dropped future stops its operation, which leaves no tag and no ingest.

mod archive_fixtures;

use std::future::Future;
use std::io::Read;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use archive_fixtures::*;
use image_core::{Classify, Compression, ErrorKind, Interrupt, Recorder, Tracker};
use image_store::archive::{LoadOptions, SaveImage, SaveOptions};
use image_store::{nonblocking, Ingester, Manager, MemoryStore, OciDir, TagStore};

/// A tar stream holding one 1 TiB entry of zeros, produced as it is read,
/// that tells `dropped` when the load let go of it. Past [`SOURCE_LIMIT`]
/// bytes it fails instead (and says so when dropped): a load that was
/// not stopped does not fill the disk.
struct Endless {
    header: Vec<u8>,
    pos: usize,
    zeros: u64,
    dropped: mpsc::Sender<bool>,
}

const SOURCE_LIMIT: u64 = 256 << 20;

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.header.len() {
            let n = buf.len().min(self.header.len() - self.pos);
            buf[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if self.zeros >= SOURCE_LIMIT {
            return Err(std::io::Error::other("source exhausted"));
        }
        buf.fill(0);
        self.zeros += buf.len() as u64;
        Ok(buf.len())
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.zeros >= SOURCE_LIMIT);
    }
}

fn endless(dropped: mpsc::Sender<bool>) -> Endless {
    let mut h = tar::Header::new_gnu();
    h.set_path("blobs/sha256/big").expect("path");
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    Endless {
        header: h.as_bytes().to_vec(),
        pos: 0,
        zeros: 0,
        dropped,
    }
}

#[test]
fn dropping_a_load_future_stops_the_load_and_leaves_no_ingest() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let (_d, store) = oci_dir();
    let (tx, rx) = mpsc::channel();
    let interrupt = Interrupt::new();
    let rec = Arc::new(Recorder::new());
    let tracker = Tracker::new(rec.clone(), interrupt.clone());
    let options = LoadOptions::default().with_tracker(tracker);
    let load = nonblocking::load(store.clone(), endless(tx), options);
    // Run it until it has streamed some of the entry, then drop it.
    rt.block_on(async {
        let mut load = Box::pin(load);
        loop {
            let finished = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(load.as_mut().poll(cx).is_ready())
            })
            .await;
            assert!(!finished, "an endless load finished");
            if rec.items().values().any(|r| r.done > 0) {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    assert!(interrupt.is_set(), "dropping the future sets the interrupt");
    // The load lets go of its source once it has stopped (a generous bound:
    // it stops at its next chunk).
    let exhausted = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the load stopped");
    assert!(!exhausted, "the load read on to the end of its source");
    rt.shutdown_timeout(Duration::from_secs(60));
    assert!(store.ingests().expect("ingests").is_empty());
    assert!(store.tags().expect("tags").is_empty());
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn the_wrappers_return_what_the_blocking_calls_return() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let src = MemoryStore::new();
    let img = make_image(
        &src,
        &[(file_layer("etc/a", b"a"), Compression::Gzip)],
        "amd64",
    );
    src.set_tag("app:1", &img.manifest).expect("tag");
    let (_d, dst) = oci_dir();
    let report = rt
        .block_on(nonblocking::copy_tag(
            src.clone(),
            "app:1".into(),
            dst.clone(),
            None,
            Default::default(),
        ))
        .expect("copy");
    assert_eq!(report.copied, 3);
    let images = vec![SaveImage::from_tag(&dst, "app:1").expect("image")];
    let (saved, tar) = rt
        .block_on(nonblocking::save_docker(
            dst.clone(),
            images,
            Vec::new(),
            SaveOptions::default(),
        ))
        .expect("save");
    assert_eq!(saved.images, 1);
    let fresh = MemoryStore::new();
    let loaded = rt
        .block_on(nonblocking::load(
            fresh.clone(),
            std::io::Cursor::new(tar),
            LoadOptions::default(),
        ))
        .expect("load");
    assert_eq!(loaded.images.len(), 1);
    let gc = rt
        .block_on(nonblocking::gc(dst.clone(), Default::default()))
        .expect("gc");
    assert!(gc.removed.is_empty());
    // An error keeps its class through the wrapper.
    let e = rt
        .block_on(nonblocking::gc(
            OciDir::open(dst.root()).expect("open"),
            image_store::GcOptions::default().with_tracker(Tracker::default().with_interrupt({
                let i = Interrupt::new();
                i.set();
                i
            })),
        ))
        .expect_err("interrupted");
    assert_eq!(e.kind(), ErrorKind::Cancelled);
}
