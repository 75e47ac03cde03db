//! [`Runtime`]: a state directory of containers and the backend that runs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::ContainerError;
use crate::model::ContainerRecord;
use crate::snapshots::Snapshots;
use crate::state::StateDir;

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
    /// A runtime of these parts, as they are: the public constructors
    /// (which also collect garbage) are in `open`.
    pub(crate) fn from_parts(
        root: PathBuf,
        state: StateDir,
        backend: Arc<dyn Backend>,
        snapshots: Option<Snapshots>,
    ) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                root,
                state,
                backend,
                snapshots,
            }),
        }
    }

    /// The backend, shared.
    pub(crate) fn shared_backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.inner.backend)
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

    /// Every container's record.
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        self.inner.state.list()
    }
}
