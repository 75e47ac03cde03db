//! [`Container`] (created or stopped) and [`RunningContainer`] (its
//! process started); the verbs live in their own modules.

use std::path::Path;

use image_core::oci_spec::runtime::Spec;

use crate::backend::Process;
use crate::error::ContainerError;
use crate::model::{ContainerRecord, ContainerStatus};
use crate::rootfs::Rootfs;
use crate::runtime::Runtime;

/// A container that exists on disk and is not running (created or stopped).
#[derive(Debug)]
pub struct Container {
    pub(crate) runtime: Runtime,
    pub(crate) record: ContainerRecord,
}

impl Container {
    pub(crate) fn from_record(runtime: Runtime, record: ContainerRecord) -> Container {
        Container { runtime, record }
    }

    /// Its ID.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Its record (as last saved).
    pub fn record(&self) -> &ContainerRecord {
        &self.record
    }

    /// Its status.
    pub fn status(&self) -> ContainerStatus {
        self.record.status
    }

    /// The bundle directory (`config.json`; `rootfs/` for mounted roots).
    pub fn bundle(&self) -> &Path {
        &self.record.bundle
    }

    /// The writable upper directory of an overlay root filesystem
    /// (`upperdir=` of a [`Rootfs::Mounts`] overlay mount): where the
    /// container's changes land, whiteouts included; what a commit packs.
    pub fn upper_dir(&self) -> Option<std::path::PathBuf> {
        let Rootfs::Mounts(mounts) = &self.record.rootfs else {
            return None;
        };
        mounts
            .iter()
            .filter(|m| m.fs_type == "overlay")
            .find_map(|m| m.option("upperdir"))
            .map(std::path::PathBuf::from)
    }

    /// The runtime spec, as written in the bundle.
    ///
    /// # Errors
    /// [`ContainerError::RuntimeSpec`].
    pub fn spec(&self) -> Result<Spec, ContainerError> {
        let path = self.bundle().join("config.json");
        Spec::load(&path).map_err(|source| ContainerError::RuntimeSpec { path, source })
    }
}

/// A container whose process was started by this process. Dropping it
/// without waiting kills the process (the container stays, stopped).
#[derive(Debug)]
pub struct RunningContainer {
    pub(crate) container: Container,
    pub(crate) process: Box<dyn Process>,
}

impl RunningContainer {
    /// Its ID.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// The host PID of its init process, once the backend knows it.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The container (for its bundle, spec, record).
    pub fn container(&self) -> &Container {
        &self.container
    }
}

impl Runtime {
    /// A handle on an existing container (to start, inspect or delete it).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`].
    pub fn load(&self, id: &str) -> Result<Container, ContainerError> {
        crate::state::validate_id(id)?;
        let record = self.state().load(id)?;
        Ok(Container::from_record(self.clone(), record))
    }
}
