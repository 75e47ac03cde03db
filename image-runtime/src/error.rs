//! The error of the container lifecycle ([`crate::Runtime`],
//! [`crate::Container`]): each variant wraps the error of the step that
//! failed, so its context (path, user, program) is kept.

use std::path::PathBuf;

use image_core::error::unless_named;
use image_core::{Classify, ErrorKind};
use image_overlay::image_unpack::ImageUnpackError;
use image_overlay::snapshot::SnapshotError;
use image_store::image::ImageError;

use crate::backend::BackendError;
use crate::lookup::LookupError;
use crate::model::ContainerStatus;
use crate::rootfs::RootfsError;
use crate::spec::SpecError;
use crate::user::UserError;

/// Errors of creating, starting, waiting for, killing and deleting containers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The config and options do not make a spec (no command, bad option).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The user is not in the image's passwd / group files.
    #[error(transparent)]
    User(#[from] UserError),
    /// The program is not found or not executable in the root filesystem.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The root filesystem could not be opened, mounted or unmounted.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// A volume could not be made, filled from the image or removed.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// The backend failed (runtime missing, runtime failed, no permission).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The container's state on disk could not be read or written.
    #[error("container state {path}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document the runtime writes or reads back (a container's record,
    /// a bundle's `config.json`) could not be turned into JSON or read
    /// from it.
    #[error("{what}")]
    Json {
        /// What was being done (`parsing the container record /x/container.json`).
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A bundle's `config.json` or `/etc` files could not be written into
    /// its directory; a symlink where they go (`etc`) is refused, never
    /// followed (`ELOOP`, classified [`ErrorKind::Unsafe`]).
    #[error("writing bundle {path}")]
    Bundle {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bundle's `config.json` could not be read as a runtime spec.
    #[error("reading the runtime spec {path}")]
    RuntimeSpec {
        /// The file.
        path: PathBuf,
        /// The cause (I/O, or not a spec).
        #[source]
        source: image_core::oci_spec::OciSpecError,
    },
    /// The image could not be flattened into a bundle's root filesystem
    /// (a layer missing, corrupt or hostile); the class is the source's.
    #[error("flattening the image into {path}")]
    Flatten {
        /// The root filesystem directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<image_overlay::FlattenError>,
    },
    /// No container has this ID.
    #[error("no such container: {id}")]
    NotFound {
        /// The ID.
        id: String,
    },
    /// A container with this ID exists already.
    #[error("container {id} already exists")]
    AlreadyExists {
        /// The ID.
        id: String,
    },
    /// The ID has characters other than `[A-Za-z0-9_.-]` or is empty.
    #[error("invalid container ID {id:?}")]
    InvalidId {
        /// The ID.
        id: String,
    },
    /// The container is not in a state that allows the operation.
    #[error("cannot {operation} container {id}: it is {status:?}")]
    WrongStatus {
        /// The ID.
        id: String,
        /// Its status.
        status: ContainerStatus,
        /// The operation.
        operation: &'static str,
    },
    /// A wait for a container (`stop`, `wait`) ran out of time.
    #[error("container {id}: {operation} timed out")]
    Timeout {
        /// The ID.
        id: String,
        /// `stop`, `wait`.
        operation: &'static str,
    },
    /// No image has this name in the store.
    #[error("no such image: {name}")]
    NoSuchImage {
        /// The name asked for.
        name: String,
    },
    /// The image could not be resolved (blobs missing or corrupt, no
    /// manifest for the platform).
    #[error("resolving the image{}", unless_named(.name, &**.source))]
    Image {
        /// The name asked for.
        name: String,
        /// The cause.
        source: Box<ImageError>,
    },
    /// The image's layers could not be unpacked into snapshots.
    #[error("unpacking image {name}")]
    Unpack {
        /// The image's name.
        name: String,
        /// The cause.
        source: Box<ImageUnpackError>,
    },
    /// A snapshot operation failed.
    #[error("snapshot {key}")]
    Snapshot {
        /// The key or name of the snapshot.
        key: String,
        /// The cause.
        source: SnapshotError,
    },
    /// A container from an image needs snapshots, and the runtime has none
    /// (see [`crate::Runtime::with_snapshots`]).
    #[error("the runtime has no snapshotter to make containers from images")]
    NoSnapshots,
    /// The container was made by another backend than this runtime's:
    /// only a runtime with that backend can stop and remove its process.
    #[error("container {id} belongs to the {backend} backend, not {ours}")]
    OtherBackend {
        /// The container.
        id: String,
        /// The backend that made it.
        backend: String,
        /// This runtime's backend.
        ours: String,
    },
    /// The operation needs privilege this process lacks: a container's
    /// namespaces and mounts need `CAP_SYS_ADMIN` (root has it). Refused
    /// before anything is created.
    #[error("{operation} needs root (CAP_SYS_ADMIN), which this process lacks")]
    NeedsRoot {
        /// What was asked for.
        operation: &'static str,
    },
    /// An operation failed and so did the cleanup after it; both are kept.
    #[error("{error} (and cleaning up failed: {cleanup})")]
    Cleanup {
        /// The original failure.
        error: Box<ContainerError>,
        /// The cleanup failure.
        cleanup: Box<ContainerError>,
    },
}

impl Classify for ContainerError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::Spec(e) => e.kind(),
            ContainerError::User(e) => e.kind(),
            ContainerError::Lookup(e) => e.kind(),
            ContainerError::Rootfs(e) => e.kind(),
            ContainerError::Backend(e) => e.kind(),
            ContainerError::Volume(e) => e.kind(),
            ContainerError::State { source, .. } => ErrorKind::from_io(source),
            ContainerError::Json { .. } => ErrorKind::InvalidInput,
            ContainerError::Bundle { source, .. } => match source.raw_os_error() {
                Some(libc::ELOOP) => ErrorKind::Unsafe,
                _ => ErrorKind::from_io(source),
            },
            ContainerError::RuntimeSpec { source, .. } => crate::backend::oci_spec_kind(source),
            ContainerError::Flatten { source, .. } => source.kind(),
            ContainerError::NotFound { .. } => ErrorKind::NotFound,
            ContainerError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ContainerError::InvalidId { .. } => ErrorKind::InvalidInput,
            ContainerError::WrongStatus { .. } => ErrorKind::FailedPrecondition,
            ContainerError::Timeout { .. } => ErrorKind::Unavailable,
            ContainerError::NoSuchImage { .. } => ErrorKind::NotFound,
            ContainerError::Image { source, .. } => source.kind(),
            ContainerError::Unpack { source, .. } => source.kind(),
            ContainerError::Snapshot { source, .. } => source.kind(),
            ContainerError::NoSnapshots => ErrorKind::FailedPrecondition,
            ContainerError::OtherBackend { .. } => ErrorKind::FailedPrecondition,
            ContainerError::NeedsRoot { .. } => ErrorKind::PermissionDenied,
            ContainerError::Cleanup { error, .. } => error.kind(),
        }
    }
}

impl ContainerError {
    pub(crate) fn state(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ContainerError {
        let path = path.into();
        move |source| ContainerError::State { path, source }
    }

    /// A fresh [`random_id`](crate::model::random_id), its read failure as
    /// [`ContainerError::State`] naming `/dev/urandom`.
    pub(crate) fn random_id() -> Result<String, ContainerError> {
        crate::model::random_id().map_err(ContainerError::state("/dev/urandom"))
    }

    /// Keeps `cleanup`'s failure next to `self`.
    pub(crate) fn with_cleanup(self, cleanup: Result<(), ContainerError>) -> ContainerError {
        match cleanup {
            Ok(()) => self,
            Err(c) => ContainerError::Cleanup {
                error: Box::new(self),
                cleanup: Box::new(c),
            },
        }
    }
}
