//! `exec`: another process in a running container (`docker exec`), from
//! any process: the container's spec gives the process its user,
//! capabilities, rlimits, environment and working directory, which
//! [`ExecOptions`] override; the backend joins the container's namespaces
//! and cgroups ([`crate::Backend::exec`]: `setns` in the native backend,
//! `runc exec` / `crun exec` otherwise).

use std::time::{Duration, Instant};

use image_core::oci_spec::runtime::Process as SpecProcess;

use crate::backend::{BackendError, Process, Status, Stdio};
use crate::error::ContainerError;
use crate::model::ContainerStatus;
use crate::rootfs::RootDir;
use crate::runtime::Runtime;
use crate::spec::{self, process};
use crate::user;

/// What `exec` runs and how it differs from the container's own process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecOptions {
    /// The argv (required; looked up in the container's `PATH`).
    pub args: Vec<String>,
    /// `-e KEY=value`, replacing the container's entries by key.
    pub env: Vec<String>,
    /// `-w`: the working directory (absolute); default the container's.
    pub working_dir: Option<String>,
    /// `-u`: `name`, `uid`, `name:group`, `uid:gid`, resolved against the
    /// container's `/etc/passwd` and `/etc/group`; default the container's.
    pub user: Option<String>,
    /// `-t`: a terminal (native backend only).
    pub tty: bool,
}

impl ExecOptions {
    /// Runs `args` as the container's process would.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> ExecOptions {
        ExecOptions {
            args: args.into_iter().map(Into::into).collect(),
            ..ExecOptions::default()
        }
    }
}

fn invalid(option: &'static str, value: &str, reason: &str) -> ContainerError {
    spec::SpecError::InvalidOption {
        option,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
    .into()
}

/// How long `exec` waits for a container recorded as running to run in
/// its backend: `runc run` / `crun run` are spawned (and the record says
/// running) a moment before the runtime has made the container.
const READY_PATIENCE: Duration = Duration::from_secs(10);

impl Runtime {
    /// Waits (up to [`READY_PATIENCE`]) until the backend runs `id`.
    fn wait_running(&self, id: &str) -> Result<(), ContainerError> {
        let deadline = Instant::now() + READY_PATIENCE;
        loop {
            let e = match self.backend().state(id) {
                Ok(s) if s.status == Status::Running => return Ok(()),
                Ok(s) if s.status == Status::Stopped => {
                    return Err(ContainerError::WrongStatus {
                        id: id.to_owned(),
                        status: ContainerStatus::Stopped,
                        operation: "exec",
                    })
                }
                Ok(_) => ContainerError::WrongStatus {
                    id: id.to_owned(),
                    status: ContainerStatus::Created,
                    operation: "exec",
                },
                Err(e @ BackendError::NotFound { .. }) => e.into(),
                Err(e) => return Err(e.into()),
            };
            if Instant::now() >= deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `opts.args` in the running container `id` with `stdio`; wait
    /// on the returned process ([`Process::wait`]). Dropping it kills the
    /// exec'd process, never the container. A container whose runtime was
    /// only just started is waited for (a few seconds at most).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`]; [`ContainerError::WrongStatus`] when
    /// the container is not running (or its owner is gone);
    /// [`ContainerError::Spec`] (`NoCommand`, a relative working
    /// directory); [`ContainerError::User`]; [`ContainerError::Backend`]
    /// (`Unsupported` for a terminal with runc or crun).
    pub fn exec(
        &self,
        id: &str,
        opts: &ExecOptions,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, ContainerError> {
        crate::state::validate_id(id)?;
        let record = self.state().load(id)?;
        if record.status != ContainerStatus::Running || record.is_stale() {
            return Err(ContainerError::WrongStatus {
                id: id.to_owned(),
                status: if record.is_stale() {
                    ContainerStatus::Stopped
                } else {
                    record.status
                },
                operation: "exec",
            });
        }
        if opts.args.is_empty() {
            return Err(spec::SpecError::NoCommand.into());
        }
        self.wait_running(id)?;
        let container = self.load(id)?;
        let spec = container.spec()?;
        let mut p: SpecProcess = spec.process().clone().unwrap_or_default();
        p.set_args(Some(opts.args.clone()));
        let env = p.env().clone().unwrap_or_default();
        let mut env = process::merge_env(&env, &opts.env);
        if opts.tty && process::lookup(&env, "TERM").is_none() {
            env.push("TERM=xterm".to_owned());
        }
        p.set_env(Some(env));
        if let Some(wd) = &opts.working_dir {
            if !wd.starts_with('/') {
                return Err(invalid("working directory", wd, "it must be absolute"));
            }
            p.set_cwd(spec::clean_absolute(wd));
        }
        if let Some(u) = &opts.user {
            let root_path = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default();
            let root_path = if root_path.is_absolute() {
                root_path
            } else {
                record.bundle.join(root_path)
            };
            let root = RootDir::open(&root_path)?;
            let resolved = user::resolve(&root, u)?;
            let mut su = spec::process_user(&resolved, &[])?;
            su.set_umask(p.user().umask());
            p.set_user(su);
        }
        p.set_terminal(Some(opts.tty));
        let process = self
            .backend()
            .exec(id, &record.bundle, &p, stdio)
            .map_err(ContainerError::from)?;
        Ok(process)
    }
}
