//! The process side of a container, behind the [`Backend`] trait.
//!
//! Lifecycle: [`Backend::create`] takes a bundle (a `config.json` whose
//! `root.path` names a ready root filesystem) and registers the container;
//! [`Backend::start`] runs its process with the given [`Stdio`] and hands
//! back a [`Process`] to wait on; [`Backend::kill`] signals it (from any
//! process: by ID); [`Backend::state`] reports it; [`Backend::delete`]
//! forgets it and releases what the backend made (cgroups, its own state).
//! Mounting the root filesystem and writing the bundle are the caller's
//! job ([`crate::ContainerBuilder`]), so every backend runs exactly the same spec.
//!
//! [`crate::oci_runtime::OciRuntime`] drives runc or crun; a native
//! in-process executor implements the same trait.

use std::path::Path;
use std::time::Duration;

use image_core::{Classify, ErrorKind};

use crate::rootfs::RootfsError;

pub use crate::signal::{Signal, SignalError};

pub use crate::stdio::{Input, Output, Stdio};

/// How a container's process ended: its exit code, or 128 + the signal
/// that killed it (as runc, crun and Docker report it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(pub i32);

impl ExitStatus {
    /// The exit code (128 + signal for a killed process).
    pub fn code(self) -> i32 {
        self.0
    }

    /// True for exit code 0.
    pub fn success(self) -> bool {
        self.0 == 0
    }

    /// The signal that killed the process, when the code says so.
    pub fn signal(self) -> Option<i32> {
        (129..=128 + 64).contains(&self.0).then(|| self.0 - 128)
    }
}

/// An exited process: its status and whatever was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit status.
    pub status: ExitStatus,
    /// Captured stdout (empty unless [`Output::Capture`]).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless [`Output::Capture`]).
    pub stderr: Vec<u8>,
}

impl Exit {
    /// Captured stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Captured stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A container's status as a backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Set up, process not started.
    Created,
    /// The process runs.
    Running,
    /// The process is frozen.
    Paused,
    /// The process has exited.
    Stopped,
}

/// What [`Backend::state`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    /// The status.
    pub status: Status,
    /// The host PID of the container's init process, when it has one.
    pub pid: Option<u32>,
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The runtime program (runc, crun, unshare) is not installed.
    #[error("container runtime {program} not found")]
    RuntimeNotFound {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime ran and failed; `message` is what it said.
    #[error("{runtime} {operation} {id} failed: {message}")]
    RuntimeFailed {
        /// runc, crun.
        runtime: String,
        /// The operation (`run`, `kill`, `delete`, `state`).
        operation: &'static str,
        /// The container.
        id: String,
        /// Its error output.
        message: String,
    },
    /// The runtime lacked the privilege for namespaces, mounts or cgroups.
    #[error("{runtime} {operation} {id}: permission denied for namespaces, mounts or cgroups: {message}")]
    PermissionDenied {
        /// runc, crun.
        runtime: String,
        /// The operation.
        operation: &'static str,
        /// The container.
        id: String,
        /// What the runtime said.
        message: String,
    },
    /// The spec asks for something this backend does not do (a terminal
    /// for an exec under runc and crun).
    #[error("{backend} cannot run container {id}: {what} is not supported")]
    Unsupported {
        /// The backend's name.
        backend: String,
        /// The container.
        id: String,
        /// What.
        what: &'static str,
    },
    /// The spec's seccomp profile cannot be compiled or installed by this
    /// backend.
    #[error("{backend} cannot confine container {id} with its seccomp profile")]
    Seccomp {
        /// The backend's name.
        backend: String,
        /// The container.
        id: String,
        /// Why.
        source: crate::native::SeccompCompileError,
    },
    /// The backend does not know this container.
    #[error("container {id} does not exist in the backend")]
    NotFound {
        /// The container.
        id: String,
    },
    /// A runtime command did not finish in time and was killed.
    #[error("{runtime} {operation} {id} timed out after {timeout:?}")]
    Timeout {
        /// runc, crun.
        runtime: String,
        /// The operation.
        operation: &'static str,
        /// The container.
        id: String,
        /// The limit.
        timeout: Duration,
    },
    /// A resource limit (memory, pids, cpu) was asked for and cannot be
    /// enforced here (no cgroup hierarchy with its controller).
    #[error("container {id}: {limit} limit cannot be enforced: {reason}")]
    LimitUnavailable {
        /// The container.
        id: String,
        /// `memory`, `pids`, `cpu`.
        limit: &'static str,
        /// Why.
        reason: String,
    },
    /// A resource limit cannot be enforced for a reason its source
    /// types (the cgroup manager's `NotDelegated`: the cgroups here are not
    /// delegated to this unprivileged user). The class is the source's.
    #[error("container {id}: setting its limits")]
    Limit {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: crate::cgroup::manager::CgroupError,
    },
    /// The container's root filesystem cannot be used as its spec asks,
    /// found before anything is mounted: a proc or sysfs mount point
    /// reached through a symlink ([`RootfsError::Symlink`], classified
    /// [`ErrorKind::Unsafe`]), as runc and crun refuse it. The class is the
    /// source's.
    #[error("{backend} cannot start container {id}: {what}")]
    Rootfs {
        /// The backend's name.
        backend: String,
        /// The container.
        id: String,
        /// What the root filesystem failed (`proc must be mounted on an
        /// ordinary directory`).
        what: String,
        /// The typed cause.
        #[source]
        source: Box<RootfsError>,
    },
    /// A bundle's `config.json` could not be read as a runtime spec.
    #[error("reading the runtime spec {path}")]
    RuntimeSpec {
        /// The file.
        path: std::path::PathBuf,
        /// The cause (I/O, or not a spec).
        #[source]
        source: image_core::oci_spec::OciSpecError,
    },
    /// A document the backend writes, hands on or reads back (its state, a
    /// process) could not be turned into JSON or read from it.
    #[error("{what}")]
    Json {
        /// What was being done (`serialising the process of exec x`,
        /// `parsing the native state /run/x.json`).
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The container's process could not be placed in its cgroups.
    #[error("joining container {id} to its cgroups")]
    Cgroup {
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: crate::cgroup::manager::CgroupError,
    },
    /// Any other I/O failure (spawning, waiting, reading state).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A process ID read from a container's state that names no single
    /// process (0, or above `i32::MAX`, which kill(2) would take as a
    /// process group): the state is corrupt, nothing is signalled.
    #[error("process ID {pid} in the container's state is out of range")]
    InvalidPid {
        /// The number read.
        pid: u32,
    },
    /// runc or crun gave no terminal over the console socket to a
    /// container whose spec asks for one.
    #[error("{runtime} create {id}: getting the container's terminal")]
    Console {
        /// runc, crun.
        runtime: String,
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: crate::console::ConsoleError,
    },
}

impl BackendError {
    /// The error of container `id` whose cgroups could not be set up
    /// (before anything ran).
    pub(crate) fn of_cgroup(id: &str, e: crate::cgroup::manager::CgroupError) -> BackendError {
        use crate::cgroup::manager::CgroupError;
        match e {
            CgroupError::Unavailable { limit, reason } => BackendError::LimitUnavailable {
                id: id.into(),
                limit,
                reason,
            },
            CgroupError::Io { path, source } => BackendError::Io {
                context: format!("cgroup {}", path.display()),
                source,
            },
            source => BackendError::Limit {
                id: id.into(),
                source,
            },
        }
    }
}

impl Classify for BackendError {
    fn kind(&self) -> ErrorKind {
        match self {
            BackendError::RuntimeNotFound { .. } | BackendError::NotFound { .. } => {
                ErrorKind::NotFound
            }
            BackendError::RuntimeFailed { .. } | BackendError::Timeout { .. } => ErrorKind::Io,
            BackendError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            BackendError::Unsupported { .. } | BackendError::LimitUnavailable { .. } => {
                ErrorKind::Unsupported
            }
            BackendError::Io { source, .. } => ErrorKind::from_io(source),
            BackendError::Rootfs { source, .. } => source.kind(),
            BackendError::RuntimeSpec { source, .. } => oci_spec_kind(source),
            BackendError::Json { .. } | BackendError::InvalidPid { .. } => ErrorKind::InvalidInput,
            BackendError::Cgroup { source, .. } | BackendError::Limit { source, .. } => {
                source.kind()
            }
            BackendError::Seccomp { source, .. } => source.kind(),
            BackendError::Console { source, .. } => source.kind(),
        }
    }
}

/// A started container process.
pub trait Process: Send + std::fmt::Debug {
    /// The host PID of the container's init, once known.
    fn pid(&self) -> Option<u32>;

    /// The exit status if the process has exited, without blocking.
    ///
    /// # Errors
    /// [`BackendError::Io`].
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, BackendError>;

    /// Waits for the exit and for captured output.
    ///
    /// # Errors
    /// [`BackendError::RuntimeFailed`] when the runtime failed to start
    /// the process, [`BackendError::Io`].
    fn wait(&mut self) -> Result<Exit, BackendError>;

    /// Kills the process and everything it started, then reaps it
    /// (best effort; used on drop and on timeouts).
    fn kill_now(&mut self);

    /// Waits at most `timeout`; on expiry kills the process (see
    /// [`Process::kill_now`]) and returns `None`. The default polls
    /// [`Process::try_wait`] ([`poll_wait`]); a backend that can sleep
    /// until the exit (the native one, on a pidfd) does so instead.
    ///
    /// # Errors
    /// As [`Process::wait`].
    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, BackendError> {
        poll_wait(self, timeout)
    }
}

/// Waits at most `timeout`; on expiry kills the process (see
/// [`Process::kill_now`]) and returns `None`: [`Process::wait_timeout`].
///
/// # Errors
/// As [`Process::wait`].
pub fn wait_timeout(p: &mut dyn Process, timeout: Duration) -> Result<Option<Exit>, BackendError> {
    p.wait_timeout(timeout)
}

/// [`Process::wait_timeout`] by polling [`Process::try_wait`] every 10 ms.
///
/// # Errors
/// As [`Process::wait`].
pub fn poll_wait<P: Process + ?Sized>(
    p: &mut P,
    timeout: Duration,
) -> Result<Option<Exit>, BackendError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if p.try_wait()?.is_some() {
            return p.wait().map(Some);
        }
        if std::time::Instant::now() >= deadline {
            p.kill_now();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs containers from bundles. See the module docs for the lifecycle.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name (`runc`, `crun`, `native`), recorded with each container.
    fn name(&self) -> &str;

    /// Registers the container `id` whose bundle is `bundle`.
    ///
    /// # Errors
    /// [`BackendError`].
    fn create(&self, id: &str, bundle: &Path) -> Result<(), BackendError>;

    /// Starts its process.
    ///
    /// # Errors
    /// [`BackendError`].
    fn start(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError>;

    /// Sends `signal` to the container's init.
    ///
    /// # Errors
    /// [`BackendError::NotFound`], [`BackendError::RuntimeFailed`].
    fn kill(&self, id: &str, signal: Signal) -> Result<(), BackendError>;

    /// The container's state.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] when the backend does not know it.
    fn state(&self, id: &str) -> Result<BackendState, BackendError>;

    /// Forgets the container (killing it first when `force`), releasing
    /// what the backend made for it. Deleting an unknown container succeeds.
    ///
    /// # Errors
    /// [`BackendError`].
    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError>;

    /// Runs another process in the running container `id` (`docker exec`):
    /// its namespaces and cgroups, `process`'s user, capabilities, cwd,
    /// env and args. The default refuses with [`BackendError::Unsupported`].
    ///
    /// # Errors
    /// [`BackendError`].
    fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process: &image_core::oci_spec::runtime::Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        let _ = (bundle, process, stdio);
        Err(BackendError::Unsupported {
            backend: self.name().to_owned(),
            id: id.to_owned(),
            what: "exec",
        })
    }
}

// The same forwarding for every pointer to a backend, so any `Arc` or
// `Box` of one is one too.
macro_rules! forward_backend {
    ($($ptr:ident)::+) => {
        impl<B: Backend + ?Sized> Backend for $($ptr)::+<B> {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn create(&self, id: &str, bundle: &Path) -> Result<(), BackendError> {
                (**self).create(id, bundle)
            }
            fn start(
                &self,
                id: &str,
                bundle: &Path,
                stdio: Stdio,
            ) -> Result<Box<dyn Process>, BackendError> {
                (**self).start(id, bundle, stdio)
            }
            fn kill(&self, id: &str, signal: Signal) -> Result<(), BackendError> {
                (**self).kill(id, signal)
            }
            fn state(&self, id: &str) -> Result<BackendState, BackendError> {
                (**self).state(id)
            }
            fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
                (**self).delete(id, force)
            }
            fn exec(
                &self,
                id: &str,
                bundle: &Path,
                process: &image_core::oci_spec::runtime::Process,
                stdio: Stdio,
            ) -> Result<Box<dyn Process>, BackendError> {
                (**self).exec(id, bundle, process, stdio)
            }
        }
    };
}

forward_backend!(std::sync::Arc);
forward_backend!(Box);

/// The class of an oci-spec failure: its I/O error's, or invalid input (a
/// document that is not a spec, a builder missing a field).
pub(crate) fn oci_spec_kind(e: &image_core::oci_spec::OciSpecError) -> ErrorKind {
    match e {
        image_core::oci_spec::OciSpecError::Io(io) => ErrorKind::from_io(io),
        _ => ErrorKind::InvalidInput,
    }
}
