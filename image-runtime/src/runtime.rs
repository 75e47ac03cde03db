//! [`Runtime`]: a state directory of containers and the backend that runs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, Signal};
use crate::container::builder::ContainerBuilder;
use crate::error::ContainerError;
use crate::native::{NativeOptions, NativeRuntime};
use crate::oci_runtime::{OciRuntime, RuntimeKind};
use crate::rootfs::Rootfs;
use crate::snapshots::Snapshots;
use crate::state::{ContainerRecord, StateDir};
use crate::Container;

/// Containers kept under one state directory, run by one backend. Cheap to
/// clone (shared).
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    state: StateDir,
    backend: Arc<dyn Backend>,
    snapshots: Option<Snapshots>,
}

impl Runtime {
    /// Opens (creating) the state directory `root` with `backend`, and
    /// cleans up what crashed processes left there (see [`Runtime::gc`]).
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub fn new(root: &Path, backend: impl Backend + 'static) -> Result<Runtime, ContainerError> {
        let root = std::path::absolute(root).map_err(ContainerError::state(root))?;
        let state = StateDir::open(&root)?;
        let rt = Runtime {
            inner: Arc::new(Inner {
                root,
                state,
                backend: Arc::new(backend),
                snapshots: None,
            }),
        };
        rt.gc()?;
        Ok(rt)
    }

    /// A runtime backed by runc or crun, whose own state lives in
    /// `<root>/<runc|crun>`.
    ///
    /// # Errors
    /// [`ContainerError::Backend`] when the runtime is not installed,
    /// [`ContainerError::State`].
    pub fn oci(root: &Path, kind: RuntimeKind) -> Result<Runtime, ContainerError> {
        let backend = OciRuntime::new(kind, &root.join(kind.program()))?;
        Runtime::new(root, backend)
    }

    /// A runtime backed by the native backend, whose own state lives in
    /// `<root>/native`.
    ///
    /// # Errors
    /// [`ContainerError::Backend`], [`ContainerError::State`].
    pub fn native(root: &Path, options: NativeOptions) -> Result<Runtime, ContainerError> {
        let backend = NativeRuntime::with_options(&root.join("native"), options)?;
        Runtime::new(root, backend)
    }

    /// This runtime making containers from images on `snapshots` (see
    /// [`Runtime::container_from_image`]); then cleans up after crashed
    /// processes again, now including active snapshots whose container is
    /// gone (see [`Runtime::gc`]).
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub fn with_snapshots(self, snapshots: Snapshots) -> Result<Runtime, ContainerError> {
        let rt = Runtime {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                state: self.inner.state.clone(),
                backend: Arc::clone(&self.inner.backend),
                snapshots: Some(snapshots),
            }),
        };
        rt.gc()?;
        Ok(rt)
    }

    /// The snapshots containers from images are made on, if set.
    pub fn snapshots(&self) -> Option<&Snapshots> {
        self.inner.snapshots.as_ref()
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    pub(crate) fn state(&self) -> &StateDir {
        &self.inner.state
    }

    /// Starts building a container on `rootfs`.
    pub fn container(&self, rootfs: Rootfs) -> ContainerBuilder {
        ContainerBuilder::new(self.clone(), rootfs)
    }

    /// Every container's record.
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        self.inner.state.list()
    }

    /// A handle on an existing container (to start, inspect or delete it).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`].
    pub fn load(&self, id: &str) -> Result<Container, ContainerError> {
        crate::state::validate_id(id)?;
        let record = self.inner.state.load(id)?;
        Ok(Container::from_record(self.clone(), record))
    }

    /// Sends `signal` to a running container, from any process.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::Backend`].
    pub fn kill(&self, id: &str, signal: Signal) -> Result<(), ContainerError> {
        crate::container::kill::kill(self, id, signal)
    }

    /// Deletes a container, running or not: its process killed, its
    /// backend state, mounts, cgroups and directory removed.
    ///
    /// # Errors
    /// [`ContainerError`]; cleaning continues past failures and the first
    /// is returned.
    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        crate::state::validate_id(id)?;
        crate::container::delete::delete(self, id)
    }

    /// Removes containers nobody manages any more (see
    /// [`ContainerRecord::is_stale`]) and half-created ones, with their
    /// mounts, cgroups and snapshots, and, when the runtime has
    /// [`Snapshots`], active snapshots of its containers whose state is
    /// gone; returns their IDs.
    ///
    /// # Errors
    /// [`ContainerError::State`] when the state directory cannot be listed.
    pub fn gc(&self) -> Result<Vec<String>, ContainerError> {
        crate::gc::gc(self)
    }
}
