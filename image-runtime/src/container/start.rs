//! `start`: runs a created (or stopped) container's process.

use crate::backend::Stdio;
use crate::container::handle::{Container, RunningContainer};
use crate::error::ContainerError;
use crate::model::{ContainerStatus, Owner};

impl Container {
    /// Starts the process with `stdio`. A stopped container is started
    /// again (its backend state is reset first).
    ///
    /// When the start fails, the backend has undone its part (the process
    /// reaped, its cgroups removed) and the container is as it was, ready
    /// for another start or a delete (Docker keeps it too); an
    /// [auto-removed](crate::ContainerBuilder::auto_remove) one is deleted
    /// (unmounted, snapshot, state and cgroups removed).
    ///
    /// # Errors
    /// [`ContainerError::WrongStatus`] unless created or stopped;
    /// [`ContainerError::Backend`]; [`ContainerError::State`]; for an
    /// auto-removed container whose delete failed too,
    /// [`ContainerError::Cleanup`] holding both errors.
    pub fn start(self, stdio: Stdio) -> Result<RunningContainer, ContainerError> {
        let (runtime, id, auto_remove) = (
            self.runtime.clone(),
            self.record.id.clone(),
            self.record.auto_remove,
        );
        match self.start_inner(stdio) {
            Ok(running) => Ok(running),
            Err(e @ ContainerError::WrongStatus { .. }) => Err(e),
            Err(e) if auto_remove => {
                Err(e.with_cleanup(crate::container::delete::delete(&runtime, &id)))
            }
            Err(e) => Err(e),
        }
    }

    fn start_inner(mut self, stdio: Stdio) -> Result<RunningContainer, ContainerError> {
        match self.record.status {
            ContainerStatus::Created => {}
            ContainerStatus::Stopped => {
                self.runtime.backend().delete(self.id(), true)?;
                self.runtime
                    .backend()
                    .create(self.id(), &self.record.bundle)?;
            }
            status => {
                return Err(ContainerError::WrongStatus {
                    id: self.record.id.clone(),
                    status,
                    operation: "start",
                })
            }
        }
        let process = self
            .runtime
            .backend()
            .start(&self.record.id, &self.record.bundle, stdio)?;
        self.record.status = ContainerStatus::Running;
        self.record.owner = Owner::current();
        self.record.exit_code = None;
        let running = RunningContainer {
            container: self,
            process,
        };
        running
            .container
            .runtime
            .state()
            .save(&running.container.record)?;
        Ok(running)
    }
}
