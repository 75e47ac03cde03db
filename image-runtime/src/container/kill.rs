//! `kill`: a signal to a container's init process.

use crate::backend::Signal;
use crate::container::handle::RunningContainer;
use crate::error::ContainerError;
use crate::runtime::Runtime;

impl Runtime {
    /// Sends `signal` to a running container, from any process.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::Backend`].
    pub fn kill(&self, id: &str, signal: Signal) -> Result<(), ContainerError> {
        crate::state::validate_id(id)?;
        let record = self.state().load(id)?;
        self.backend().kill(&record.id, signal)?;
        Ok(())
    }
}

impl RunningContainer {
    /// Sends `signal` to the container's init process.
    ///
    /// # Errors
    /// [`ContainerError::Backend`].
    pub fn kill(&self, signal: Signal) -> Result<(), ContainerError> {
        self.container.runtime.backend().kill(self.id(), signal)?;
        Ok(())
    }
}
