//! The thread that performs every clone of the native backend.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that created a process exits,
//! not when the process does. Containers are started from arbitrary
//! threads (a tokio worker, a short-lived `std::thread`), so a clone made
//! on the caller's thread would get its container killed when that thread
//! ends. Every clone is therefore made on one long-lived thread owned by
//! this module: the containers' "death signal" then means "the process
//! that started us died", which is what the backend wants (no orphan
//! containers after a crash of the embedding program).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

fn sender() -> std::io::Result<Sender<Job>> {
    if let Some(s) = SPAWNER.get() {
        return s
            .lock()
            .map(|s| s.clone())
            .map_err(|_| std::io::Error::other("spawner lock poisoned"));
    }
    let (tx, rx) = channel::<Job>();
    std::thread::Builder::new()
        .name("image-runtime-spawner".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    // Another thread may have won the race: its spawner is the one kept
    // (ours ends when `tx` is dropped).
    let s = SPAWNER.get_or_init(|| Mutex::new(tx));
    s.lock()
        .map(|s| s.clone())
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))
}

/// Runs `f` on the spawner thread and returns its result.
///
/// # Errors
/// When the spawner thread cannot be started or has died.
pub(crate) fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> std::io::Result<R> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    sender()?
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))
}
