//! The verbs on a detached container by ID, from any process and without
//! a runtime (no backend, no `gc`): what `imagectl logs`, `wait` and
//! `attach` use, and what the [`Runtime`](crate::Runtime) methods of the
//! same names call.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::ContainerError;
use crate::model::{ContainerRecord, ContainerStatus};
use crate::monitor::log::{self, LogEntry, LogFollower, LogQuery};

/// How often the blocking verbs look at a container's record.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// The record of `id` under the state directory `root`, as it is now
/// ([`ContainerRecord::observed`]).
pub(crate) fn observed(root: &Path, id: &str) -> Result<ContainerRecord, ContainerError> {
    Ok(crate::state::load(root, id)?.observed())
}

/// The exit code of `id` when it is not running (see [`Runtime::try_wait`](crate::Runtime::try_wait)).
///
/// # Errors
/// As [`crate::state::load`].
pub fn try_wait(root: &Path, id: &str) -> Result<Option<Option<i32>>, ContainerError> {
    let r = observed(root, id)?;
    Ok(match r.status {
        ContainerStatus::Running | ContainerStatus::Creating => None,
        ContainerStatus::Created if r.detached.as_ref().is_none_or(|d| d.exits == 0) => None,
        _ => Some(r.exit_code),
    })
}

/// Waits until the current run of `id` ends (see [`Runtime::wait`](crate::Runtime::wait)).
///
/// # Errors
/// As [`crate::state::load`]; [`ContainerError::Timeout`] on expiry.
pub fn wait(
    root: &Path,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Option<i32>, ContainerError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let first = observed(root, id)?;
    let exits = first.detached.as_ref().map_or(0, |d| d.exits);
    loop {
        let r = observed(root, id)?;
        let ended = r.detached.as_ref().is_some_and(|d| d.exits > exits)
            || matches!(
                r.status,
                ContainerStatus::Stopped | ContainerStatus::Unknown
            );
        if ended {
            // When restarted since, that run's exit is the one recorded last.
            return Ok(r.exit_code);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ContainerError::Timeout {
                id: id.to_owned(),
                operation: "wait",
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until container `id`'s run that followed `exits` recorded exits
/// ends; its exit code (`None`: unknown, or the container was removed).
///
/// # Errors
/// As [`crate::state::load`].
pub(crate) fn wait_after(root: &Path, id: &str, exits: u64) -> Result<Option<i32>, ContainerError> {
    until_ended(root, id, exits, || Ok(()))
}

/// Polls the record of `id` until its run that followed `exits` recorded
/// exits is over (then its exit code; `None` when removed since), calling
/// `between` after each read of the record and before its verdict (what
/// `between` reads was then written before the record said so).
fn until_ended(
    root: &Path,
    id: &str,
    exits: u64,
    mut between: impl FnMut() -> Result<(), ContainerError>,
) -> Result<Option<i32>, ContainerError> {
    loop {
        let r = observed(root, id);
        between()?;
        let r = match r {
            Ok(r) => r,
            // Removed after its run (auto-removed): the run is over.
            Err(ContainerError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if run_ended(&r, exits) {
            return Ok(r.exit_code);
        }
        std::thread::sleep(POLL);
    }
}

/// Whether the run of `r` that followed `exits` recorded exits is over.
fn run_ended(r: &ContainerRecord, exits: u64) -> bool {
    r.detached.as_ref().is_some_and(|d| d.exits > exits)
        || !matches!(
            r.status,
            ContainerStatus::Running | ContainerStatus::Creating
        )
}

/// The log entries of `id` and a follower continuing after them (see
/// [`Runtime::logs`](crate::Runtime::logs)).
///
/// # Errors
/// As [`crate::state::load`]; [`ContainerError::State`] when the log
/// cannot be read.
pub fn logs(
    root: &Path,
    id: &str,
    query: &LogQuery,
) -> Result<(Vec<LogEntry>, LogFollower), ContainerError> {
    let r = crate::state::load(root, id)?;
    let max_file = r.detached.map_or(1, |d| d.log.max_file);
    let dir = r.bundle;
    log::read_and_follow(&dir, query, max_file).map_err(ContainerError::state(&dir))
}

/// Follows `follower` of container `id`, calling `each` for every entry,
/// until the container's current run ends; returns its exit code.
///
/// # Errors
/// As [`wait`]; [`ContainerError::State`] when the log cannot be read.
pub fn follow(
    root: &Path,
    id: &str,
    mut follower: LogFollower,
    mut each: impl FnMut(&LogEntry),
) -> Result<Option<i32>, ContainerError> {
    let first = observed(root, id)?;
    let exits = first.detached.as_ref().map_or(0, |d| d.exits);
    let dir = first.bundle.clone();
    // The record is read before the log: what was logged before it said
    // stopped is then all read.
    until_ended(root, id, exits, || {
        for e in follower.poll().map_err(ContainerError::state(&dir))? {
            each(&e);
        }
        Ok(())
    })
}
