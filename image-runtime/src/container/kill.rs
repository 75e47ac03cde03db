//! `kill`: a signal to a container's init process.

use crate::backend::Signal;
use crate::container::handle::RunningContainer;
use crate::error::ContainerError;
use crate::Runtime;

pub(crate) fn kill(runtime: &Runtime, id: &str, signal: Signal) -> Result<(), ContainerError> {
    crate::state::validate_id(id)?;
    let record = runtime.state().load(id)?;
    runtime.backend().kill(&record.id, signal)?;
    Ok(())
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
