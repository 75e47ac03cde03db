//! `delete`: everything of a container goes: its process (killed), the
//! backend's state, mounts under its directory, its cgroups, the directory.
//! The directory is removed only once nothing is mounted under it, so a
//! failed unmount can never turn into deleting a mounted filesystem's files.

use crate::container::{Container, RunningContainer};
use crate::error::ContainerError;
use crate::Runtime;

pub(crate) fn delete(runtime: &Runtime, id: &str) -> Result<(), ContainerError> {
    let dir = runtime.state().dir(id);
    let mut first: Option<ContainerError> = None;
    let mut note = |r: Result<(), ContainerError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    note(runtime.backend().delete(id, true).map_err(Into::into));
    note(crate::mount::unmount_all(&dir).map_err(Into::into));
    note(crate::cgroup::remove_container_cgroups(id).map_err(ContainerError::state("cgroup")));
    let still_mounted = crate::mountinfo::mounts_under(&dir)
        .map(|m| !m.is_empty())
        .unwrap_or(true);
    if !still_mounted {
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
