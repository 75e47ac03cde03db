//! # image-runtime
//!
//! Containers from images, the way `docker run` makes them:
//!
//! - [`spec`]: an image config plus [`RunOptions`] become an OCI runtime
//!   [`Spec`](image_core::oci_spec::runtime::Spec): Entrypoint and Cmd with
//!   Docker's override rules, Env merged (PATH, HOSTNAME, HOME, TERM),
//!   WorkingDir, User resolved against the image's own `/etc/passwd` and
//!   `/etc/group` (read inside the root through `openat2(RESOLVE_IN_ROOT)`,
//!   see [`rootfs`]; failures are [`UserError`]), Docker's capabilities,
//!   masked and read-only paths, default mounts, namespaces, rlimits capped
//!   at the host's, and Docker's default seccomp profile
//!   ([`spec::seccomp`]; [`SeccompMode`] for `unconfined` or a profile of
//!   the caller's), which runc, crun and the native backend all apply.
//! - [`bundle`]: OCI bundles that runc and crun run unchanged.
//! - [`Backend`]: the process side (create, start, wait, kill, state,
//!   delete, exec), implemented by [`NativeRuntime`] (in process, the
//!   default of imagectl) and by [`OciRuntime`] driving runc or crun.
//!   `kill` takes this crate's [`Signal`]: any Linux signal a process can
//!   be sent, the real-time ones included, parsed from Docker's names
//!   (`TERM`, `SIGRTMIN+3`, `15`).
//!   Resource limits ([`Resources`]: memory, pids, CPUs), the network
//!   ([`NetworkMode`]), a terminal and an init are [`RunOptions`] written
//!   into the spec, so every backend gets the same one.
//! - [`volume`]: named volumes (`-v name:/path`) and anonymous ones for
//!   the image's `VOLUME` paths, in the state directory, filled from the
//!   image when new.
//! - [`Runtime`] / [`Container`]: the lifecycle, with state on disk (a
//!   directory per container) so another process can list and clean up,
//!   and [`Runtime::gc`] removing what crashed processes left.
//! - [`monitor`]: detached containers ([`Container::start_detached`],
//!   `docker run -d`) under a monitor process each, with a capped JSON
//!   log, restart policies, and [`Runtime::stop`] (or
//!   [`Runtime::stop_with`] a signal), [`Runtime::wait`],
//!   [`Runtime::logs`], [`Runtime::attach`] from any process. The one
//!   requirement: the program calls [`monitor::run_if_requested`] first
//!   thing in `main`.
//!
//! # Network
//! A container has no network of its own beyond loopback: `--net none`
//! (the default, a network namespace with `lo` up) or `--net host` (the
//! host's namespace). Port publishing (`docker run -p`) is out of scope:
//! it needs a bridge, veth pairs and NAT, which this crate does not make;
//! exposed ports ([`RunOptions::exposed_ports`], the image's `EXPOSE`)
//! are only recorded in the spec's annotations.
//!
//! The root filesystem is a [`Rootfs`]: a plain directory, or a list of
//! mounts as a snapshotter's `prepare` returns them (image-overlay's
//! [`Mount`](image_overlay::mount::Mount), performed through its
//! [`Mounter`](image_overlay::mount::Mounter)).
//!
//! ```
//! use image_runtime::spec::{self, RunOptions, SpecContext};
//! use image_runtime::spec::ResolvedUser;
//! use image_core::config::RunConfig;
//!
//! let config = RunConfig {
//!     entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
//!     cmd: Some(vec!["echo hi".into()]),
//!     env: Some(vec!["A=1".into()]),
//!     ..RunConfig::default()
//! };
//! let mut opts = RunOptions::new();
//! opts.cmd = Some(vec!["id".into()]);
//! let ctx = SpecContext {
//!     id: "4f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d".into(),
//!     root_path: "/var/lib/c/rootfs".into(),
//!     user: ResolvedUser::root(),
//!     etc_files: None,
//!     host_hard_limits: spec::host_hard_limits(),
//!     cgroups_path: None,
//!     swap_limit: false,
//! };
//! let spec = spec::generate(&config, &opts, &ctx)?;
//! let process = spec.process().as_ref().unwrap();
//! assert_eq!(process.args().as_ref().unwrap(), &["/bin/sh", "-c", "id"]);
//! assert_eq!(spec.hostname().as_deref(), Some("4f2a1c0d9e8b"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Blocking and privilege
//!
//! Every call blocks: on the filesystem, on the backend's processes, and
//! [`Container::run`]/[`RunningContainer::wait`] until the container exits
//! or the timeout passes. From async code run them on a blocking thread
//! (`tokio::task::spawn_blocking`), or enable the `tokio` feature and use
//! the `nonblocking` module: an image's preparation
//! ([`Runtime::container_from_image_with`]), create, commit and gc, with
//! progress and cancellation when the future is dropped. The image
//! preparation and a commit take a [`Tracker`](image_core::Tracker) in
//! their options. Spec generation ([`spec`]) and bundle
//! writing need no privilege; creating a container needs root
//! (`CAP_SYS_ADMIN`, for its namespaces and mounts): without it
//! [`ContainerBuilder::create`] and [`Runtime::container_from_image`] fail
//! with [`ContainerError::NeedsRoot`] (`PermissionDenied`) before anything
//! is made. [`Snapshots::open_default`] picks overlay and says when it is
//! unavailable rather than falling back to copy.
//!
//! Running a container (as root) on a directory of busybox-static:
//!
//! ```
//! use std::time::Duration;
//! use image_runtime::{NativeOptions, Rootfs, Runtime, Stdio};
//!
//! let tmp = tempfile::tempdir()?;
//! let rootfs = tmp.path().join("rootfs");
//! std::fs::create_dir_all(rootfs.join("bin"))?;
//! std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
//! std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
//!
//! let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default())?;
//! let container = rt
//!     .container(Rootfs::Directory(rootfs))
//!     .cmd(["/bin/sh", "-c", "echo hello from $$"])
//!     .memory(64 << 20)
//!     .create()?;
//! let (container, exit) = container.run(Stdio::capture(), Duration::from_secs(30))?;
//! let exit = exit.expect("finished in time");
//! assert!(exit.status.success());
//! assert_eq!(exit.stdout_str(), "hello from 1\n");
//! container.delete()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Containers from images in a store ([`Runtime::container_from_image`]): the image's layers
//! unpacked into image-overlay snapshots ([`snapshots`]: overlay, or copy
//! where overlay mounts are unavailable), a writable snapshot per
//! container on an init snapshot of mount points, removed on delete and by
//! [`Runtime::gc`] after a crash; [`Container::commit`] turns a container's changes
//! into a new image (`docker commit`).
//!
//! # Features
//! - `testing`: makes public the internals this crate's own tests and
//!   imagectl's leak checks look at (`cgroup`: a container's cgroup
//!   directories; `mountinfo`: what is mounted under a directory; `user`:
//!   the passwd and group parsers, for the fuzz target). Not a
//!   stable API; nothing else needs it.
//! - `tokio`: the `nonblocking` module (see
//!   [Blocking and privilege](#blocking-and-privilege)).
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod bundle;
#[cfg(feature = "testing")]
pub mod cgroup;
#[cfg(not(feature = "testing"))]
mod cgroup;
pub mod console;
mod container;
mod error;
mod etc_files;
mod gc;
mod image;
mod lookup;
pub mod model;
pub mod monitor;
#[cfg(feature = "testing")]
pub mod mountinfo;
#[cfg(not(feature = "testing"))]
mod mountinfo;
pub mod native;
#[cfg(feature = "tokio")]
pub mod nonblocking;
pub mod oci_runtime;
mod open;
pub mod rootfs;
pub mod rootless;
mod runtime;
mod signal;
pub mod snapshots;
pub mod spec;
pub mod state;
mod stdio;
mod sys;
#[cfg(feature = "testsuite")]
pub mod testsuite;
#[cfg(feature = "testing")]
pub mod user;
#[cfg(not(feature = "testing"))]
mod user;
pub mod volume;

pub use backend::{
    Backend, BackendError, BackendState, Exit, ExitStatus, Input, Output, Process, Signal,
    SignalError, Status, Stdio,
};
pub use container::{
    CommitError, CommitOptions, Committed, Container, ContainerBuilder, ExecOptions,
    RunningContainer,
};
pub use error::ContainerError;
pub use image::ImageStore;
pub use lookup::{LookupError, MAX_SEARCHED};
pub use model::{
    ContainerRecord, ContainerStatus, Detached, Driver, ImageRef, LogOptions, Owner, RestartPolicy,
    SnapshotRef,
};
pub use monitor::{DetachError, DetachOptions};
pub use native::{NativeOptions, NativeRuntime};
pub use oci_runtime::{OciRuntime, RuntimeKind};
pub use rootfs::Rootfs;
pub use runtime::Runtime;
pub use snapshots::Snapshots;
pub use spec::{NetworkMode, Resources, RunOptions, SeccompMode, Volume};
pub use user::UserError;

// The registry of image-runtime's public errors, for
// `image_core::error::classify`: it recognises each error type of this crate
// and, through image-overlay's registry, of every crate below.
image_core::classify_registry!(
    below: image_overlay::kind_of;
    crate::backend::BackendError,
    crate::signal::SignalError,
    crate::console::ConsoleError,
    crate::container::CommitError,
    crate::error::ContainerError,
    crate::lookup::LookupError,
    crate::cgroup::manager::CgroupError,
    crate::rootfs::RootfsError,
    crate::rootless::RootlessError,
    crate::spec::SpecError,
    crate::spec::seccomp::SeccompError,
    crate::native::SeccompCompileError,
    crate::user::UserError,
    crate::volume::VolumeError,
    crate::monitor::DetachError,
    crate::monitor::log::DetachOptionError,
    crate::monitor::attach::AttachError,
    crate::monitor::attach::DetachKeysError,
);
