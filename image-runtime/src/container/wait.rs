//! `wait`: a running container's exit status and captured output.

use std::time::Duration;

use crate::backend::{self, Exit};
use crate::container::handle::{Container, RunningContainer};
use crate::error::ContainerError;
use crate::model::ContainerStatus;

impl RunningContainer {
    /// Waits for the process to exit; records the container as stopped.
    ///
    /// # Errors
    /// [`ContainerError::Backend`] (for instance `RuntimeFailed` when the
    /// runtime could not start the process), [`ContainerError::State`].
    pub fn wait(&mut self) -> Result<Exit, ContainerError> {
        let r = self.process.wait();
        self.stopped(r.as_ref().ok().map(|e| e.status.code()))?;
        Ok(r?)
    }

    /// As [`RunningContainer::wait`], for at most `timeout`; on expiry the
    /// process is killed and `None` returned.
    ///
    /// # Errors
    /// As [`RunningContainer::wait`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, ContainerError> {
        let r = backend::wait_timeout(&mut *self.process, timeout);
        let code = match &r {
            Ok(Some(e)) => Some(e.status.code()),
            _ => None,
        };
        self.stopped(code)?;
        Ok(r?)
    }

    fn stopped(&mut self, code: Option<i32>) -> Result<(), ContainerError> {
        let rec = &mut self.container.record;
        rec.status = ContainerStatus::Stopped;
        rec.exit_code = code;
        self.container.runtime.state().save(rec)
    }

    /// Back to a [`Container`] handle, killing the process if it still runs.
    pub fn into_container(mut self) -> Container {
        if !matches!(self.process.try_wait(), Ok(Some(_))) {
            self.process.kill_now();
        }
        let mut c = self.container;
        if c.record.status == ContainerStatus::Running {
            c.record.status = ContainerStatus::Stopped;
            let _ = c.runtime.state().save(&c.record);
        }
        c
    }
}

impl Container {
    /// Starts the container with `stdio`, waits at most `timeout` and
    /// returns the container (stopped) with the exit (`None` on timeout,
    /// the process then killed). An
    /// [auto-removed](crate::ContainerBuilder::auto_remove) container is
    /// deleted when starting or waiting fails.
    ///
    /// # Errors
    /// As [`Container::start`] and [`RunningContainer::wait`].
    pub fn run(
        self,
        stdio: crate::backend::Stdio,
        timeout: Duration,
    ) -> Result<(Container, Option<Exit>), ContainerError> {
        let mut running = self.start(stdio)?;
        let exit = running.wait_timeout(timeout);
        let c = running.into_container();
        match exit {
            Ok(exit) => Ok((c, exit)),
            Err(e) if c.record.auto_remove => Err(e.with_cleanup(c.delete())),
            Err(e) => Err(e),
        }
    }
}
