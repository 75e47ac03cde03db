//! `gc`: cleaning up after processes that crashed or were killed while
//! they managed containers: records whose owner is gone while creating or
//! running, and directories without a record older than a minute (their
//! snapshots go with them, see [`crate::delete`]); then active snapshots
//! labelled with this runtime whose container directory is gone.

use std::time::{Duration, SystemTime};

use crate::error::ContainerError;
use crate::Runtime;

pub(crate) fn gc(runtime: &Runtime) -> Result<Vec<String>, ContainerError> {
    let sd = runtime.state();
    let mut removed = Vec::new();
    for id in sd.ids()? {
        let stale = match sd.load(&id) {
            Ok(record) => record.is_stale(),
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
        if stale
            && crate::state::validate_id(&id).is_ok()
            && crate::delete::delete(runtime, &id).is_ok()
        {
            removed.push(id);
        }
    }
    for id in crate::snapshots::remove_orphans(runtime) {
        if !removed.contains(&id) {
            removed.push(id);
        }
    }
    Ok(removed)
}
