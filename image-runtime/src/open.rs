//! Opening a [`Runtime`]: its state directory and backend, then what
//! crashed processes left there is collected ([`Runtime::gc`]), so the
//! constructors sit above the whole lifecycle.

use std::path::Path;
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::ContainerError;
use crate::native::{NativeOptions, NativeRuntime};
use crate::oci_runtime::{OciRuntime, RuntimeKind};
use crate::runtime::Runtime;
use crate::snapshots::Snapshots;
use crate::state::StateDir;

impl Runtime {
    /// Opens (creating) the state directory `root` with `backend`, and
    /// cleans up what crashed processes left there (see [`Runtime::gc`]).
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub fn new(root: &Path, backend: impl Backend + 'static) -> Result<Runtime, ContainerError> {
        let root = std::path::absolute(root).map_err(ContainerError::state(root))?;
        let state = StateDir::open(&root)?;
        let rt = Runtime::from_parts(root, state, Arc::new(backend), None);
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
        let rt = Runtime::from_parts(
            self.root().to_owned(),
            self.state().clone(),
            self.shared_backend(),
            Some(snapshots),
        );
        rt.gc()?;
        Ok(rt)
    }
}
