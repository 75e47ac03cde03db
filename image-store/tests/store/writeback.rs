//! The early writeback of a large ingest starts the kernel's writes and
//! waits for nothing: the data file is made durable once, by the fsync of
//! the commit, not by an `fdatasync` every few MiB (each a journal commit
//! and a flush of the disk's cache). Seen from outside the process, with
//! strace on a child that ingests.

use std::io::Read;

use image_store::{Ingester, OciDir};

use crate::common::{have_tool, scratch};

const CHILD_ENV: &str = "WRITEBACK_CHILD_STORE";

/// The size ingested: several writeback steps (32 MiB each).
const SIZE: u64 = 200 << 20;

/// Bytes that are not all zeros, without end.
struct Pattern(u64);

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for b in buf.iter_mut() {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 56) as u8;
        }
        Ok(buf.len())
    }
}

/// The child: ingests [`SIZE`] bytes into the store named by [`CHILD_ENV`]
/// (nothing when run on its own).
#[test]
fn writeback_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = OciDir::open_or_create(&dir).expect("store");
    let mut src = Pattern(7).take(SIZE);
    let digest = store
        .ingest_reader(&mut src, Some(SIZE), None)
        .expect("ingest");
    println!("ingested {digest}");
}

#[test]
fn a_large_ingest_syncs_its_data_once_at_commit() {
    if std::env::var(CHILD_ENV).is_ok() || !have_tool("strace") {
        return;
    }
    let dir = scratch(SIZE / (1 << 20) + 64);
    let store = dir.path().join("store");
    let log = dir.path().join("strace.log");
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,syncfs,sync"])
        .arg("-o")
        .arg(&log)
        .arg(exe)
        .args([
            "--exact",
            "writeback::writeback_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &store)
        .output()
        .expect("run strace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ingested sha256:"),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).expect("strace log");
    // `-y` names the file of each descriptor: the ingest's data file is
    // `ingest/<hash>/data`.
    let syncs: Vec<&str> = calls
        .lines()
        .filter(|l| !l.contains("resumed>") && !l.contains("+++"))
        .collect();
    let waiting = syncs
        .iter()
        .filter(|l| {
            (l.contains("fdatasync(") && l.contains("/data>"))
                || l.contains("syncfs(")
                || l.contains(" sync(")
        })
        .count();
    assert_eq!(
        waiting, 0,
        "a waiting sync of the data before the commit's fsync: {syncs:#?}"
    );
    let data_fsyncs = syncs
        .iter()
        .filter(|l| l.contains(" fsync(") && l.contains("/ingest/") && l.contains("/data>"))
        .count();
    assert_eq!(data_fsyncs, 1, "the data file is synced once: {syncs:#?}");
}
