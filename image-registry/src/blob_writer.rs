//! An ingest written on a blocking thread: the store's writes, its commit
//! (hash check, fsync, rename) and a layer sink's work happen off the
//! async executor, so a slow disk or a slow unpack holds back only its own
//! download (through a bounded channel), never the executor's other tasks.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use image_core::Digest;
use image_store::{ContentError, ContentWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sink::LayerFeed;

/// Chunks in flight between a download and its writer thread.
const CHUNKS: usize = 16;

/// Bytes gathered from smaller chunks before they go to the writer thread
/// as one. A slow link delivers a blob in many small reads; each chunk
/// handed over wakes the writer thread, and through the layer sink the
/// unpack's threads, so a one-pass pull through a 100 Mbit/s link spent
/// about a third more CPU time than over loopback.
const GATHER: usize = 256 * 1024;

/// Why a blob's writer stopped.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The store refused (truncate or commit; a digest or size mismatch).
    Content(ContentError),
    /// Writing into the ingest failed.
    Write(std::io::Error),
}

type Task = JoinHandle<Result<(), WriteError>>;

/// Writer threads whose handle was dropped before it was closed (the pull
/// stopped on another blob's error): the pull awaits them before it
/// returns, so their ingests are closed and their feeds dropped by then.
#[derive(Debug, Clone, Default)]
pub(crate) struct Orphans(Arc<Mutex<Vec<Task>>>);

impl Orphans {
    /// Waits for every orphaned writer to end.
    pub(crate) async fn wait(&self) {
        loop {
            let next = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match next {
                Some(task) => {
                    let _ = task.await;
                }
                None => break,
            }
        }
    }
}

enum Op {
    Data(Bytes),
    Truncate(u64),
    Commit { size: u64, digest: Digest },
}

/// The async end of an ingest written on a blocking thread.
pub(crate) struct BlobWriter {
    tx: Option<mpsc::Sender<Op>>,
    task: Option<Task>,
    /// Bytes in the ingest once what was sent and what is gathered are
    /// written.
    offset: u64,
    /// Small chunks gathered, not yet sent (at most [`GATHER`] bytes).
    gathered: BytesMut,
    orphans: Orphans,
}

impl BlobWriter {
    /// Moves `writer` (and `feed`, which gets the same bytes) onto a
    /// blocking thread.
    pub(crate) fn new(
        writer: Box<dyn ContentWriter>,
        feed: Option<Box<dyn LayerFeed>>,
        orphans: &Orphans,
    ) -> BlobWriter {
        let offset = writer.offset();
        let (tx, rx) = mpsc::channel(CHUNKS);
        let task = tokio::task::spawn_blocking(move || run(writer, feed, rx));
        BlobWriter {
            tx: Some(tx),
            task: Some(task),
            offset,
            gathered: BytesMut::new(),
            orphans: orphans.clone(),
        }
    }

    /// Bytes in the ingest once what was sent is written.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `chunk`: sent as it is when it is large, gathered with the
    /// next ones (up to [`GATHER`] bytes) when it is small.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        let len = chunk.len() as u64;
        if chunk.len() >= GATHER {
            self.send_gathered().await?;
            self.send(Op::Data(chunk)).await?;
        } else {
            if self.gathered.is_empty() {
                self.gathered.reserve(GATHER);
            }
            self.gathered.extend_from_slice(&chunk);
            if self.gathered.len() >= GATHER {
                self.send_gathered().await?;
            }
        }
        self.offset += len;
        Ok(())
    }

    /// Sends what was gathered.
    async fn send_gathered(&mut self) -> Result<(), WriteError> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let bytes = self.gathered.split().freeze();
        self.send(Op::Data(bytes)).await
    }

    /// Keeps the first `size` bytes (a feed that has seen more is dropped).
    pub(crate) async fn truncate(&mut self, size: u64) -> Result<(), WriteError> {
        self.send_gathered().await?;
        self.send(Op::Truncate(size)).await?;
        self.offset = size;
        Ok(())
    }

    /// Commits the blob against `size` and `digest`, then tells the feed.
    pub(crate) async fn commit(mut self, size: u64, digest: Digest) -> Result<(), WriteError> {
        self.send_gathered().await?;
        self.send(Op::Commit { size, digest }).await?;
        self.close_inner().await
    }

    /// Stops without committing: the ingest is kept (to resume), the feed
    /// dropped. Waits for the thread.
    pub(crate) async fn close(mut self) {
        // What arrived is kept for the resume.
        let _ = self.send_gathered().await;
        let _ = self.close_inner().await;
    }

    async fn send(&mut self, op: Op) -> Result<(), WriteError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(op).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The thread ended early: its error says why.
            self.close_inner().await.and(Err(gone()))
        }
    }

    async fn close_inner(&mut self) -> Result<(), WriteError> {
        self.tx = None;
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|_| Err(gone())),
            None => Err(gone()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            self.orphans
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
    }
}

fn gone() -> WriteError {
    WriteError::Write(std::io::Error::other("the blob's writer thread stopped"))
}

/// The blocking end: writes, truncates and commits in order; a closed
/// channel without a commit drops the writer (keeping the ingest) and the
/// feed.
fn run(
    mut writer: Box<dyn ContentWriter>,
    mut feed: Option<Box<dyn LayerFeed>>,
    mut rx: mpsc::Receiver<Op>,
) -> Result<(), WriteError> {
    while let Some(op) = rx.blocking_recv() {
        match op {
            Op::Data(bytes) => {
                writer.write_all(&bytes).map_err(WriteError::Write)?;
                if let Some(f) = feed.as_mut() {
                    if f.write(&bytes).is_err() {
                        feed = None;
                    }
                }
            }
            Op::Truncate(size) => {
                if size != writer.offset() {
                    feed = None;
                }
                writer.truncate(size).map_err(WriteError::Content)?;
            }
            Op::Commit { size, digest } => {
                let verified = writer
                    .commit_verified(size, &digest)
                    .map_err(WriteError::Content)?;
                if let Some(f) = feed {
                    f.verified(&verified);
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_store::{Ingester, MemoryStore, Provider};

    /// A feed that notes the size of each write it is given.
    struct Sizes(Arc<Mutex<Vec<usize>>>);

    impl LayerFeed for Sizes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push(bytes.len());
            Ok(())
        }

        fn verified(self: Box<Self>, _blob: &image_store::VerifiedBlob) {}
    }

    #[test]
    fn small_chunks_reach_the_writer_thread_gathered() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let store = MemoryStore::new();
        // 2,000 reads of 1,000 to 1,006 bytes, as a slow link gives them,
        // then one large chunk that goes as it is.
        let mut blob = Vec::new();
        let mut chunks: Vec<Bytes> = (0..2000usize)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1000 + i % 7]))
            .collect();
        chunks.push(Bytes::from(vec![7u8; GATHER * 2]));
        for c in &chunks {
            blob.extend_from_slice(c);
        }
        let digest = Digest::sha256(&blob);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let w = store.writer("pull-test").unwrap();
            let feed: Box<dyn LayerFeed> = Box::new(Sizes(sizes.clone()));
            let mut w = BlobWriter::new(w, Some(feed), &Orphans::default());
            for c in chunks.clone() {
                w.write(c).await.unwrap();
            }
            assert_eq!(w.offset(), blob.len() as u64);
            w.commit(blob.len() as u64, digest.clone()).await.unwrap();
        });
        let stored = store.read_blob_to_vec(&digest, u64::MAX).unwrap();
        assert!(stored == blob, "the blob is stored whole, in order");
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), blob.len());
        // About 2 MB of small chunks in pieces of at least GATHER bytes
        // (the last one before the large chunk may be shorter), then the
        // large chunk.
        assert!(
            sizes.len() <= 10,
            "{} writes for {} chunks",
            sizes.len(),
            chunks.len()
        );
        assert_eq!(*sizes.last().unwrap(), GATHER * 2);
    }
}
