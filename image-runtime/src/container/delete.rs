//! `delete`: everything of a container goes: its process (killed, by the
//! backend that made it: a runtime with another backend refuses), the
//! backend's state, mounts under its directory, its cgroups, its writable
//! snapshot, the directory. The snapshot and the directory are removed only
//! once nothing is mounted under it, so a failed unmount can never turn
//! into deleting a mounted filesystem's files; the directory (with the
//! record naming the snapshot) stays until the snapshot is gone, so a
//! failed delete can be retried, by `gc` too.

use crate::container::handle::{Container, RunningContainer};
use crate::error::ContainerError;
use crate::runtime::Runtime;
use image_overlay::mount::SysMounter;

pub(crate) fn delete(runtime: &Runtime, id: &str) -> Result<(), ContainerError> {
    let dir = runtime.state().dir(id);
    let record = runtime.state().load(id).ok();
    // Another backend's process would outlive its state: refuse.
    let ours = runtime.backend().name();
    if let Some(r) = record.as_ref().filter(|r| r.backend != ours) {
        return Err(ContainerError::OtherBackend {
            id: id.to_owned(),
            backend: r.backend.clone(),
            ours: ours.to_owned(),
        });
    }
    // A detached container's monitor must not restart what goes now.
    if record.as_ref().is_some_and(|r| r.detached.is_some()) {
        let _ = crate::monitor::request_stop(&dir);
    }
    let snapshot = record.and_then(|r| r.snapshot);
    let mut first: Option<ContainerError> = None;
    let mut note = |r: Result<(), ContainerError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    note(runtime.backend().delete(id, true).map_err(Into::into));
    note(crate::rootfs::unmount_all(&SysMounter, &dir).map_err(Into::into));
    note(crate::cgroup::remove_container_cgroups(id).map_err(ContainerError::state("cgroup")));
    let still_mounted = crate::mountinfo::mounts_under(&dir)
        .map(|m| !m.is_empty())
        .unwrap_or(true);
    // The snapshot goes before the record naming it, and only once unmounted.
    let mut snapshot_kept = false;
    if let Some(sref) = snapshot {
        if still_mounted {
            snapshot_kept = true;
        } else if let Err(e) = crate::snapshots::remove(runtime.snapshots(), runtime.root(), &sref)
        {
            snapshot_kept = true;
            note(Err(e));
        }
    }
    if !still_mounted && !snapshot_kept {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                note(Err(ContainerError::state(&dir)(e)))
            }
            _ => {}
        }
    }
    first.map_or(Ok(()), Err)
}

impl Container {
    /// Deletes the container (see the module docs).
    ///
    /// # Errors
    /// The first failure; cleaning continues past it.
    pub fn delete(self) -> Result<(), ContainerError> {
        delete(&self.runtime, &self.record.id)
    }
}

impl RunningContainer {
    /// Kills the process if it runs, then deletes the container.
    ///
    /// # Errors
    /// As [`Container::delete`].
    pub fn delete(self) -> Result<(), ContainerError> {
        self.into_container().delete()
    }
}

impl Runtime {
    /// Deletes a container, running or not: its process killed, its
    /// backend state, mounts, cgroups and directory removed.
    ///
    /// # Errors
    /// [`ContainerError`]; cleaning continues past failures and the first
    /// is returned.
    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        crate::state::validate_id(id)?;
        delete(self, id)
    }
}
