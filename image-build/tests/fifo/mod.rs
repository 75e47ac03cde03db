//! A FIFO that tells whether it was opened for reading: a writer's open
//! blocks until a reader opens it, so a writer thread that got through
//! is a reader's open seen. The tests of files that must be refused
//! without being opened (a FIFO or a device node in a hostile context or
//! base image) use it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A FIFO at a path and a writer blocked in its open.
pub struct FifoProbe {
    path: PathBuf,
    opened: mpsc::Receiver<()>,
    writer: Option<JoinHandle<std::io::Result<std::fs::File>>>,
}

impl FifoProbe {
    /// Makes a FIFO at `path` and starts a writer opening it.
    pub fn new(path: &Path) -> FifoProbe {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo(1)");
        assert!(made.success(), "mkfifo {}", path.display());
        let (tx, opened) = mpsc::channel();
        let (task_tx, task) = mpsc::channel();
        let writer = {
            let path = path.to_owned();
            std::thread::spawn(move || {
                let _ = task_tx.send(std::fs::read_link("/proc/thread-self"));
                let w = std::fs::OpenOptions::new().write(true).open(&path);
                let _ = tx.send(());
                w
            })
        };
        // Blocked in its open (asleep: nothing else it does sleeps) before
        // anything is tried, so that a reader's open cannot come first
        // and go unseen.
        let task =
            PathBuf::from("/proc").join(task.recv().expect("thread").expect("/proc/thread-self"));
        let asleep = || {
            std::fs::read_to_string(task.join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('S'))
                })
                .unwrap_or(false)
        };
        for _ in 0..400 {
            if asleep() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(asleep(), "the writer is not waiting in its open");
        FifoProbe {
            path: path.to_owned(),
            opened,
            writer: Some(writer),
        }
    }

    /// Whether a reader opened the FIFO (waiting half a second for the
    /// writer to say so); the writer is let go either way.
    pub fn was_opened(mut self) -> bool {
        let opened = self.opened.recv_timeout(Duration::from_millis(500)).is_ok();
        self.release();
        opened
    }

    fn release(&mut self) {
        if let Some(writer) = self.writer.take() {
            let reader = rustix::fs::open(
                &self.path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
                rustix::fs::Mode::empty(),
            );
            let _ = writer.join();
            drop(reader);
        }
    }
}

impl Drop for FifoProbe {
    fn drop(&mut self) {
        self.release();
    }
}
