//! Async wrappers of the runtime's long operations (feature `tokio`).
//!
//! Preparing an image, creating, committing and collecting garbage block
//! the calling thread on file I/O, mounts and the backend's processes (see
//! the [crate documentation](crate#blocking-and-privilege)). Each function
//! here runs one on tokio's blocking pool
//! ([`image_core::progress::spawn_blocking`]) with owned arguments (a
//! [`Runtime`] is cheap to clone). Where the operation takes a
//! [`Tracker`] (the image preparation's
//! [`ImageUnpackOptions`], a commit's [`PackOptions`](image_overlay::PackOptions)),
//! it goes with the call, and dropping the future sets its interrupt: the
//! operation stops at its next chunk or entry, leaves no snapshot of the
//! layer it was unpacking and makes no container. [`create`] and [`gc`]
//! have no tracker and are short; see each for what a dropped future means.
//!
//! Preparing and creating a container from an image made from a
//! directory, as root:
//!
//! ```
//! use image_core::Platform;
//! use image_overlay::{append_dir, ConfigChanges, ImageUnpackOptions};
//! use image_runtime::{nonblocking, Driver, NativeOptions, Runtime, Snapshots};
//! use image_store::OciDir;
//!
//! let tmp = tempfile::tempdir()?;
//! let store = OciDir::open_or_create(tmp.path().join("store"))?;
//! let dir = tmp.path().join("hello");
//! std::fs::create_dir(&dir)?;
//! std::fs::copy("/bin/busybox", dir.join("busybox"))?;
//! let host = Platform::host();
//! append_dir(&store, None, &dir, &host, &ConfigChanges::default(), "example.local/hello:1")?;
//!
//! let snapshots = Snapshots::open(&tmp.path().join("snapshots"), Driver::Copy)?;
//! let runtime = Runtime::native(&tmp.path().join("state"), NativeOptions::default())?
//!     .with_snapshots(snapshots)?;
//! let tokio = tokio::runtime::Builder::new_multi_thread().build()?;
//! let container = tokio.block_on(async {
//!     let builder = nonblocking::container_from_image_with(
//!         runtime.clone(),
//!         store.clone(),
//!         "example.local/hello:1".to_owned(),
//!         None,
//!         ImageUnpackOptions::default(),
//!     )
//!     .await?;
//!     nonblocking::create(builder.cmd(["/busybox", "true"])).await
//! })?;
//! assert_eq!(runtime.list()?.len(), 1);
//! container.delete()?;
//! assert!(tokio.block_on(nonblocking::gc(runtime.clone()))?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use image_core::progress::spawn_blocking;
use image_core::{Platform, Tracker};
use image_overlay::ImageUnpackOptions;
use image_store::Leases;

use crate::container::{CommitError, CommitOptions, Committed, Container, ContainerBuilder};
use crate::error::ContainerError;
use crate::image::ImageStore;
use crate::runtime::Runtime;

/// [`Runtime::container_from_image_with`] on the blocking pool: the image
/// `name` in `store` resolved (for `platform`, the host's when `None`) and
/// its layers unpacked into `runtime`'s snapshots, with `unpack`'s tracker.
///
/// # Errors
/// As `container_from_image_with`; of class
/// [`Cancelled`](image_core::ErrorKind::Cancelled) once the interrupt is
/// set.
pub async fn container_from_image_with<S>(
    runtime: Runtime,
    store: S,
    name: String,
    platform: Option<Platform>,
    unpack: ImageUnpackOptions,
) -> Result<ContainerBuilder, ContainerError>
where
    S: ImageStore + Send + 'static,
{
    spawn_blocking(unpack.unpack.tracker.clone(), move |_| {
        runtime.container_from_image_with(&store, &name, platform.as_ref(), &unpack)
    })
    .await
}

/// [`ContainerBuilder::create`] on the blocking pool. Creation is not
/// interrupted part way (it makes a bundle, a snapshot and the backend's
/// container, and undoes them itself on failure); when the future is
/// dropped while it runs, the container it made is deleted, since no one
/// can receive it. (Dropped after creation returned but before it was
/// polled again, the container stays created and [listed](Runtime::list)
/// until it is deleted.)
///
/// # Errors
/// As `create`.
pub async fn create(builder: ContainerBuilder) -> Result<Container, ContainerError> {
    spawn_blocking(Tracker::default(), move |tracker| {
        let container = builder.create()?;
        if tracker.interrupt().is_set() {
            // The result goes nowhere: leave nothing behind either. The
            // error is never seen (the future is gone); a failed delete
            // leaves the container created and listed, as a failed `rm`.
            let id = container.id().to_owned();
            container.delete()?;
            return Err(ContainerError::NotFound { id });
        }
        Ok(container)
    })
    .await
}

/// [`Container::commit`] on the blocking pool, with the tracker of
/// `options.pack` ([`CommitOptions::with_tracker`]); gives the container back with what the commit made
/// (after an error, [`Runtime::load`] finds it again by its ID).
///
/// # Errors
/// As `commit`; of class [`Cancelled`](image_core::ErrorKind::Cancelled)
/// once the interrupt is set (the blobs written so far are unreferenced,
/// their lease gone, for the store's gc).
pub async fn commit<S>(
    container: Container,
    store: S,
    options: CommitOptions,
) -> Result<(Committed, Container), CommitError>
where
    S: ImageStore + Leases + Send + 'static,
{
    spawn_blocking(options.pack.tracker.clone(), move |_| {
        container
            .commit(&store, &options)
            .map(|committed| (committed, container))
    })
    .await
}

/// [`Runtime::gc`] on the blocking pool. Not interrupted: when the future
/// is dropped the collection still runs to its end.
///
/// # Errors
/// As `gc`.
pub async fn gc(runtime: Runtime) -> Result<Vec<String>, ContainerError> {
    spawn_blocking(Tracker::default(), move |_| runtime.gc()).await
}
