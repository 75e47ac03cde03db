//! `start`: runs a created (or stopped) container's process.

use crate::backend::Stdio;
use crate::container::{Container, RunningContainer};
use crate::error::ContainerError;
use crate::state::{ContainerStatus, Owner};

impl Container {
    /// Starts the process with `stdio`. A stopped container is started
    /// again (its backend state is reset first).
    ///
    /// # Errors
    /// [`ContainerError::WrongStatus`] unless created or stopped;
    /// [`ContainerError::Backend`]; [`ContainerError::State`].
    pub fn start(mut self, stdio: Stdio) -> Result<RunningContainer, ContainerError> {
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
