//! `gc`: cleaning up after processes that crashed or were killed while
//! they managed containers: records of this runtime's backend whose owner
//! is gone while creating or running (or, auto-removed, in any status:
//! these with their anonymous volumes, as `docker run --rm` removes them),
//! and directories without a record older than a minute (their snapshots
//! go with them, see [`crate::Runtime::delete`]); then active snapshots labelled
//! with this runtime whose container directory is gone.

use std::time::{Duration, SystemTime};

use crate::error::ContainerError;
use crate::runtime::Runtime;

impl Runtime {
    /// Removes containers nobody manages any more (see
    /// [`ContainerRecord::is_stale`](crate::ContainerRecord::is_stale)) and
    /// half-created ones, with their mounts, cgroups and snapshots (an
    /// auto-removed one with its anonymous volumes too), and,
    /// when the runtime has [`Snapshots`](crate::Snapshots), active
    /// snapshots of its containers whose state is gone; returns their IDs.
    ///
    /// # Errors
    /// [`ContainerError::State`] when the state directory cannot be listed.
    pub fn gc(&self) -> Result<Vec<String>, ContainerError> {
        let runtime = self;
        let sd = runtime.state();
        let mut removed = Vec::new();
        for id in sd.ids()? {
            // An auto-removed (`--rm`) container's anonymous volumes go with
            // it, as its owner would have removed them.
            let mut with_volumes = false;
            let stale = match sd.load(&id) {
                // A reboot left it: recorded as stopped, kept.
                Ok(record)
                    if record.backend == runtime.backend().name()
                        && !record.auto_remove
                        && record.ran_before_reboot() =>
                {
                    let _ = crate::container::detach::reconcile(runtime, record);
                    false
                }
                // Another backend's containers wait for a runtime of theirs:
                // only it can kill their process (runc's outlives its owner).
                Ok(record) => {
                    with_volumes = record.auto_remove;
                    record.backend == runtime.backend().name() && record.is_stale()
                }
                Err(ContainerError::NotFound { .. }) => {
                    // Being created right now by another process, or left over.
                    std::fs::metadata(sd.dir(&id))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(60))
                }
                Err(_) => false,
            };
            let delete = if with_volumes {
                crate::container::volumes::delete_with_volumes
            } else {
                crate::container::delete::delete
            };
            if stale && crate::state::validate_id(&id).is_ok() && delete(runtime, &id).is_ok() {
                removed.push(id);
            }
        }
        let orphans = match runtime.snapshots() {
            Some(s) => crate::snapshots::remove_orphans(s, runtime.root(), sd),
            None => Vec::new(),
        };
        for id in orphans {
            if !removed.contains(&id) {
                removed.push(id);
            }
        }
        Ok(removed)
    }
}
