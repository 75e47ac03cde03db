//! Progress reporting and cancellation for long operations.
//!
//! Every long operation of the family (ingest, copy, load, save, unpack,
//! pack, gc) takes a [`Tracker`] in its options, as gitoxide passes a
//! `progress` and a `should_interrupt` flag: the operation reports each
//! *item* it works on (a blob, a layer, an archive entry) to the tracker's
//! [`Progress`] (started with its size when known, bytes done so far,
//! finished), and checks the tracker's [`Interrupt`] between chunks. Once
//! the flag is set the operation stops at the next check with an error of
//! class [`ErrorKind::Cancelled`], leaving nothing half-written (each
//! operation's docs say how it cleans up).
//!
//! The default tracker reports to [`NoProgress`] and is never interrupted.
//!
//! ```
//! use std::io::Read;
//! use std::sync::{Arc, Mutex};
//! use image_core::progress::{Interrupt, Progress, Tracker};
//!
//! #[derive(Default)]
//! struct Last(Mutex<u64>);
//! impl Progress for Last {
//!     fn item_progress(&self, _item: &str, done: u64) {
//!         *self.0.lock().unwrap() = done;
//!     }
//! }
//!
//! let last = Arc::new(Last::default());
//! let interrupt = Interrupt::new();
//! let tracker = Tracker::new(last.clone(), interrupt.clone());
//! let mut r = tracker.reader("blob", Some(5), &b"hello"[..]);
//! let mut out = Vec::new();
//! r.read_to_end(&mut out)?;
//! assert_eq!(*last.0.lock().unwrap(), 5);
//!
//! interrupt.set();
//! let err = tracker.reader("blob", None, &b"more"[..]).read(&mut [0; 4]).unwrap_err();
//! assert_eq!(image_core::Classify::kind(&err), image_core::ErrorKind::Cancelled);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Classify, ErrorKind};

/// Receives the progress of a long operation. Every method has a no-op
/// default, so an implementation overrides only what it shows.
///
/// An *item* is named by a string unique within the operation (a digest,
/// an archive entry's path). Calls for one item come from one thread, in
/// order: [`item_started`](Progress::item_started), then
/// [`item_progress`](Progress::item_progress) with a growing count, then
/// [`item_finished`](Progress::item_finished) when it completed (not when
/// it failed). Different items may be reported from different threads at
/// once.
pub trait Progress: Send + Sync {
    /// Work on `item` begins; `total` is its size in bytes when known.
    fn item_started(&self, item: &str, total: Option<u64>) {
        let _ = (item, total);
    }

    /// `done` bytes of `item` are done (a running total, never smaller
    /// than the one reported before for this item).
    fn item_progress(&self, item: &str, done: u64) {
        let _ = (item, done);
    }

    /// `item` is complete.
    fn item_finished(&self, item: &str) {
        let _ = item;
    }
}

/// The progress that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl<P: Progress + ?Sized> Progress for Arc<P> {
    fn item_started(&self, item: &str, total: Option<u64>) {
        (**self).item_started(item, total);
    }
    fn item_progress(&self, item: &str, done: u64) {
        (**self).item_progress(item, done);
    }
    fn item_finished(&self, item: &str) {
        (**self).item_finished(item);
    }
}

/// One item as a [`Recorder`] saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ItemRecord {
    /// The total given when it started.
    pub total: Option<u64>,
    /// The last count reported.
    pub done: u64,
    /// Whether it was reported finished.
    pub finished: bool,
}

/// A [`Progress`] that records what it is told, checking the order of the
/// calls (an item starts once, before it progresses or finishes; its
/// count never goes back), and that can set an [`Interrupt`] once an item
/// reaches a count: for tests and for a caller that wants a summary.
#[derive(Debug, Default)]
pub struct Recorder {
    state: std::sync::Mutex<RecorderState>,
    stop: Option<(Interrupt, u64)>,
}

#[derive(Debug, Default)]
struct RecorderState {
    items: std::collections::BTreeMap<String, ItemRecord>,
    violations: Vec<String>,
}

impl Recorder {
    /// A recorder that only records.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A recorder that sets `interrupt` once any item has reached `at`.
    pub fn stopping_at(interrupt: Interrupt, at: u64) -> Recorder {
        Recorder {
            stop: Some((interrupt, at)),
            ..Recorder::default()
        }
    }

    /// The items seen, by name.
    pub fn items(&self) -> std::collections::BTreeMap<String, ItemRecord> {
        self.lock().items.clone()
    }

    /// The calls made out of order ("x progressed before it started",
    /// "x went back from 5 to 3"); empty when every call was in order.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A panic elsewhere while holding it leaves the records usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress for Recorder {
    fn item_started(&self, item: &str, total: Option<u64>) {
        let mut s = self.lock();
        let record = ItemRecord {
            total,
            ..ItemRecord::default()
        };
        if s.items.insert(item.to_owned(), record).is_some() {
            s.violations.push(format!("{item} started twice"));
        }
    }

    fn item_progress(&self, item: &str, done: u64) {
        let mut s = self.lock();
        let s = &mut *s;
        match s.items.get_mut(item) {
            None => s
                .violations
                .push(format!("{item} progressed before it started")),
            Some(r) if done < r.done => s
                .violations
                .push(format!("{item} went back from {} to {done}", r.done)),
            Some(r) => r.done = done,
        }
        if let Some((interrupt, at)) = &self.stop {
            if done >= *at {
                interrupt.set();
            }
        }
    }

    fn item_finished(&self, item: &str) {
        let mut s = self.lock();
        let s = &mut *s;
        match s.items.get_mut(item) {
            None => s
                .violations
                .push(format!("{item} finished before it started")),
            Some(r) => r.finished = true,
        }
    }
}

/// A cancellation flag shared between an operation and whoever may stop
/// it (a signal handler, a UI, a dropped future). Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// A flag that is not set.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Uses an existing flag (for instance one a signal handler sets).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Interrupt {
        Interrupt(flag)
    }

    /// The shared flag.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.0
    }

    /// Asks every operation watching this flag to stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once the flag is set.
    ///
    /// # Errors
    /// [`Cancelled`] when the flag is set.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_set() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The operation stopped because its [`Interrupt`] was set.
///
/// Travelling inside an [`io::Error`] (from a [`Tracked`] reader or
/// writer) it keeps its class: [`Classify`] for `io::Error` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Classify for Cancelled {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Cancelled
    }
}

impl From<Cancelled> for io::Error {
    fn from(c: Cancelled) -> io::Error {
        io::Error::other(c)
    }
}

/// Whether `err` is (or carries) a [`Cancelled`].
pub fn is_cancelled(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Cancelled>())
}

/// What a long operation reports to and is stopped by: a [`Progress`] and
/// an [`Interrupt`]. Cheap to clone; the default reports nothing and is
/// never interrupted.
#[derive(Clone, Default)]
pub struct Tracker {
    progress: Option<Arc<dyn Progress>>,
    interrupt: Interrupt,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("progress", &self.progress.as_ref().map(|_| "..."))
            .field("interrupt", &self.interrupt.is_set())
            .finish()
    }
}

/// Two trackers are equal when they report to the same progress object
/// and watch the same flag.
impl PartialEq for Tracker {
    fn eq(&self, other: &Tracker) -> bool {
        let same_progress = match (&self.progress, &other.progress) {
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            (None, None) => true,
            _ => false,
        };
        same_progress && Arc::ptr_eq(&self.interrupt.0, &other.interrupt.0)
    }
}

impl Eq for Tracker {}

impl Tracker {
    /// A tracker reporting to `progress` and stopped by `interrupt`.
    pub fn new(progress: Arc<dyn Progress>, interrupt: Interrupt) -> Tracker {
        Tracker {
            progress: Some(progress),
            interrupt,
        }
    }

    /// This tracker reporting to `progress` instead.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Tracker {
        self.progress = Some(progress);
        self
    }

    /// This tracker stopped by `interrupt` instead.
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Tracker {
        self.interrupt = interrupt;
        self
    }

    /// The progress reported to.
    pub fn progress(&self) -> &dyn Progress {
        match &self.progress {
            Some(p) => &**p,
            None => &NoProgress,
        }
    }

    /// The cancellation flag.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// `Err(Cancelled)` once the flag is set: the check an operation makes
    /// between items and between chunks.
    ///
    /// # Errors
    /// [`Cancelled`] when the flag is set.
    pub fn check(&self) -> Result<(), Cancelled> {
        self.interrupt.check()
    }

    /// Wraps `inner` so that each read checks the flag first (failing with
    /// an `io::Error` carrying [`Cancelled`]) and reports the bytes read as
    /// the progress of `item`, started now and finished at the end of
    /// `inner`.
    pub fn reader<R: Read>(&self, item: &str, total: Option<u64>, inner: R) -> Tracked<R> {
        Tracked::new(self, Some(item), total, inner)
    }

    /// Wraps `inner` so that each write checks the flag first and reports
    /// the bytes written as the progress of `item`, started now and
    /// finished by [`Tracked::finish`].
    pub fn writer<W: Write>(&self, item: &str, total: Option<u64>, inner: W) -> Tracked<W> {
        Tracked::new(self, Some(item), total, inner)
    }

    /// Wraps a reader or writer so that each call checks the flag first,
    /// reporting no progress (for a second pass over bytes already shown).
    pub fn checked<T>(&self, inner: T) -> Tracked<T> {
        Tracked::new(self, None, None, inner)
    }
}

/// A reader or writer that reports its bytes to a [`Tracker`] and stops
/// once its interrupt is set (see [`Tracker::reader`], [`Tracker::writer`],
/// [`Tracker::checked`]).
pub struct Tracked<T> {
    tracker: Tracker,
    item: Option<String>,
    done: u64,
    finished: bool,
    inner: T,
}

impl<T> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("item", &self.item)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Tracked<T> {
    fn new(tracker: &Tracker, item: Option<&str>, total: Option<u64>, inner: T) -> Tracked<T> {
        if let Some(item) = item {
            tracker.progress().item_started(item, total);
        }
        Tracked {
            tracker: tracker.clone(),
            item: item.map(str::to_owned),
            done: 0,
            finished: false,
            inner,
        }
    }

    /// Bytes moved so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Reports the item finished (once) and returns the inner value.
    pub fn finish(mut self) -> T {
        self.report_finished();
        self.inner
    }

    fn report_finished(&mut self) {
        if let (Some(item), false) = (&self.item, self.finished) {
            self.finished = true;
            self.tracker.progress().item_finished(item);
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        if let (Some(item), true) = (&self.item, n > 0) {
            self.tracker.progress().item_progress(item, self.done);
        }
    }
}

impl<T: Read> Read for Tracked<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tracker.check()?;
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.report_finished();
        }
        self.advance(n);
        Ok(n)
    }
}

impl<T: Write> Write for Tracked<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tracker.check()?;
        let n = self.inner.write(buf)?;
        self.advance(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs the blocking `f` on tokio's blocking pool and waits for it
/// without blocking the async caller (feature `tokio`).
///
/// `f` receives `tracker` (pass it in the operation's options). Dropping
/// the returned future before `f` returns sets the tracker's interrupt, so
/// the operation stops at its next check and cleans up as it does on any
/// cancellation; its result is then discarded. A panic in `f` is resumed
/// in the caller.
///
/// # Panics
/// Outside a tokio runtime; when the runtime shuts down while `f` runs.
#[cfg(feature = "tokio")]
pub async fn spawn_blocking<T, F>(tracker: Tracker, f: F) -> T
where
    F: FnOnce(Tracker) -> T + Send + 'static,
    T: Send + 'static,
{
    /// Sets the interrupt when dropped armed: the future went away first.
    struct StopOnDrop(Option<Interrupt>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            if let Some(i) = self.0.take() {
                i.set();
            }
        }
    }
    let mut guard = StopOnDrop(Some(tracker.interrupt().clone()));
    let joined = tokio::task::spawn_blocking(move || f(tracker)).await;
    guard.0 = None;
    match joined {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the blocking task did not finish: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte at a time.
    struct Slow<'a>(&'a [u8]);
    impl Read for Slow<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_reader_reports_start_running_totals_and_finish() {
        let rec = Arc::new(Recorder::new());
        let tracker = Tracker::default().with_progress(rec.clone());
        let mut out = Vec::new();
        let mut r = tracker.reader("b", Some(3), Slow(b"abc"));
        r.read_exact(&mut [0u8; 2]).expect("two bytes");
        let b = &rec.items()["b"];
        assert_eq!((b.total, b.done, b.finished), (Some(3), 2, false));
        r.read_to_end(&mut out).expect("reads");
        assert_eq!(out, b"c");
        let b = &rec.items()["b"];
        assert_eq!((b.done, b.finished), (3, true));
        assert!(rec.violations().is_empty());
    }

    #[test]
    fn a_set_flag_stops_a_reader_and_a_writer_with_cancelled() {
        let interrupt = Interrupt::new();
        let tracker = Tracker::default().with_interrupt(interrupt.clone());
        let mut r = tracker.reader("b", None, Slow(b"abc"));
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).expect("first byte"), 1);
        interrupt.set();
        let e = r.read(&mut buf).expect_err("stopped");
        assert!(is_cancelled(&e));
        assert_eq!(Classify::kind(&e), ErrorKind::Cancelled);
        let mut w = tracker.writer("w", None, Vec::new());
        let e = w.write_all(b"x").expect_err("stopped");
        assert_eq!(Classify::kind(&e), ErrorKind::Cancelled);
        assert!(w.finish().is_empty());
    }

    #[test]
    fn a_recorder_flags_calls_out_of_order_and_stops_at_its_count() {
        let interrupt = Interrupt::new();
        let rec = Recorder::stopping_at(interrupt.clone(), 10);
        rec.item_progress("x", 1);
        rec.item_started("y", None);
        rec.item_progress("y", 5);
        rec.item_progress("y", 4);
        rec.item_started("y", None);
        rec.item_finished("z");
        assert_eq!(rec.violations().len(), 4, "{:?}", rec.violations());
        assert!(!interrupt.is_set());
        rec.item_progress("y", 10);
        assert!(interrupt.is_set());
    }

    #[test]
    fn the_default_tracker_reports_nothing_and_runs_to_the_end() {
        let tracker = Tracker::default();
        assert!(tracker.check().is_ok());
        let mut out = Vec::new();
        tracker
            .reader("b", None, &b"abc"[..])
            .read_to_end(&mut out)
            .expect("reads");
        assert_eq!(out, b"abc");
    }
}
