//! Async wrappers of a build (feature `tokio`).
//!
//! [`Builder::build`] blocks the calling thread for the whole build: file
//! I/O, the RUN steps' containers (which need root), the stages' threads
//! (see the [crate documentation](crate#blocking-and-privilege)).
//! [`build`] runs it on tokio's blocking pool
//! ([`image_core::progress::spawn_blocking`]) with owned arguments (a store
//! such as [`OciDir`](image_store::OciDir) and a [`Runtime`] are cheap to
//! clone), so an orchestrator awaits it beside its other work. The
//! options' [`Tracker`](image_core::Tracker) goes with the call, and
//! dropping the future sets its interrupt: the build stops at its next
//! step, a running RUN's container is killed, and nothing is tagged.

use image_core::progress::spawn_blocking;
use image_runtime::Runtime;
use image_store::{ContentStore, Leases, TagStore};

use crate::build::{BuildError, BuildOptions, BuildResult, Builder, Observer};

/// [`Builder::build`] of `options` into `store`, with `runtime` (which must
/// have snapshots), on the blocking pool; `observer` is told each event
/// from the build's threads.
///
/// # Errors
/// As `build`; of class [`Cancelled`](image_core::ErrorKind::Cancelled)
/// once the interrupt is set (by the caller, or by dropping the future).
pub async fn build<S>(
    store: S,
    runtime: Runtime,
    options: BuildOptions,
    mut observer: Box<dyn Observer>,
) -> Result<BuildResult, BuildError>
where
    S: ContentStore + TagStore + Leases + Send + Sync + 'static,
{
    let tracker = options.tracker.clone().unwrap_or_default();
    let options = options.with_tracker(tracker.clone());
    spawn_blocking(tracker, move |_| {
        Builder::new(&store, &runtime).build(&options, &mut *observer)
    })
    .await
}
