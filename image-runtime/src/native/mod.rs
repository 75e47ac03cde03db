//! [`NativeRuntime`]: a [`Backend`] that runs a bundle's spec itself, in
//! process, without runc or crun.
//!
//! # How a container starts
//! Everything is prepared in the caller before any process exists: the
//! spec is read, the container's cgroups made and limited
//! (`cgroup`), the stdio descriptors and pumps set up, the list of mount
//! operations, device nodes, masked and read-only paths, credentials,
//! capability sets, rlimits, argv, envp and the candidate program paths
//! built as C data. Then one raw `clone` (made on a dedicated thread, see
//! below) creates the child in new mount, pid, uts, ipc and network
//! namespaces (and a user namespace when the spec has one). The parent
//! writes the uid/gid maps and releases it over a pipe to set up its
//! mounts, meanwhile puts it into the cgroups (the first `cgroup.procs`
//! write and the old root's `MNT_DETACH` each wait for an RCU grace
//! period, which then overlap), and only then releases it again to set its
//! limits and credentials and `execve`. Between clone and `execve` the child does
//! raw system calls only (see the crate's `sys` module): no allocation, no locks, so
//! starting containers from a multi-threaded host (a tokio runtime, a
//! thread pool) is safe; a failure comes back as a fixed (step, errno)
//! record on a close-on-exec pipe and becomes a typed [`BackendError`].
//!
//! In the child: `PR_SET_PDEATHSIG(SIGKILL)`; every mount private; the root
//! bound on itself; the spec's mounts (proc, a tmpfs `/dev` with `null`,
//! `zero`, `full`, `random`, `urandom`, `tty` made by `mknod` — bound from
//! the host's in a user namespace — and the usual symlinks, devpts with
//! `newinstance`, shm, mqueue, sysfs read-only, `/sys/fs/cgroup` as runc
//! makes it on v1, the `/etc` files and volumes as binds); masked paths
//! (`/dev/null` over files, a read-only tmpfs over directories); read-only
//! paths; `pivot_root` and the old root detached; the hostname; loopback up
//! in a new network namespace; rlimits; a new session (with a terminal:
//! the slave as controlling terminal); the bounding set, groups, gid, uid,
//! capability sets (ambient cleared); `no_new_privs` when asked; every
//! descriptor but 0-2 closed; the working directory; the seccomp filter
//! (earlier without `no_new_privs`, see below); `execve`. Mount
//! targets are resolved with `openat2(RESOLVE_IN_ROOT)` so no symlink in
//! the image can aim a mount outside the root.
//!
//! # Why a spawner thread
//! `PR_SET_PDEATHSIG` fires when the creating *thread* exits. All clones
//! happen on one long-lived thread, so a container dies with the process
//! that started it and never with a short-lived worker thread.
//!
//! # Security
//! - **CVE-2019-5736** (runc: the host's runtime binary overwritten through
//!   `/proc/self/exe` of a process the container could reach): there is no
//!   runtime binary re-executed into the container. The child is a clone
//!   of the caller that calls `execve` on the *container's* program
//!   directly, so from the container's first instruction `/proc/<pid>/exe`
//!   is the container's own binary; no process of ours is ever visible or
//!   ptrace-able inside the container before that (the child runs our code
//!   only before `execve`, while it still is our clone with its
//!   descriptors closed and no container process exists). `exec` into a
//!   running container follows the same path (a helper joins the
//!   namespaces and clones the process, which `execve`s at once). Tested:
//!   `/proc/1/exe` inside points to the container's binary, and opening it
//!   for writing from inside cannot touch the host's files.
//! - **CVE-2024-21626** (runc: a leaked descriptor of a host directory used
//!   as the working directory): before `chdir` the child closes every
//!   descriptor except 0-2 and its close-on-exec error pipe, then checks
//!   with `getcwd(2)` that the working directory is reachable from the new
//!   root (the kernel reports `(unreachable)` otherwise).
//! - Inherited descriptors: the caller's descriptors, close-on-exec or not,
//!   are closed in the child (`close_range`); tested with a descriptor
//!   opened without `O_CLOEXEC`.
//! - **Seccomp: Docker's default profile** (`crate::spec::seccomp`),
//!   written by spec generation into `linux.seccomp` unless the caller
//!   says `unconfined` or gives a profile, and honoured here: compiled to
//!   BPF before the clone with `seccompiler` (pure Rust, no libseccomp; see
//!   [`compile_seccomp`] for how several actions become a stack of
//!   programs), installed by the child with `seccomp(2)`. With
//!   `no_new_privs` the filter is the last step before `execve` (after the
//!   capabilities are dropped and `no_new_privs` set, and before an init is
//!   forked, which it confines too); without, it goes in before the
//!   credentials change, as runc does, because installing a filter needs
//!   `CAP_SYS_ADMIN` or `no_new_privs`, so the profile must then allow the
//!   setup's last calls (`setgroups`, `setresuid`, `capset`, `prctl`,
//!   `close_range`, `chdir`, `getcwd`, `execve`; Docker's does). A process
//!   joining the container ([`Backend::exec`]) gets the same filter. What
//!   `seccompiler` cannot express (`SCMP_ACT_NOTIFY`, filter flags, an
//!   architecture other than x86_64) is refused at create with
//!   [`BackendError::Seccomp`]; a system call made through another ABI
//!   (`int 0x80`) kills the process where libseccomp would filter it by
//!   the profile's sub-architectures. Every other field the native backend
//!   does not implement (AppArmor and SELinux labels, sysctls, hooks,
//!   device nodes, limits other than memory, pids and CPU, ...) is refused
//!   with [`BackendError::Unsupported`], named in the error.
//!
//! # Processes
//! [`Process::wait`] reaps with `waitpid` (exit code, or 128 + signal);
//! stdout and stderr are captured or streamed through pipes, stdin fed when
//! asked; with `process.terminal` a pty is opened in the caller and its
//! slave becomes the child's controlling terminal. With
//! [`NativeOptions::init`] (or the annotation [`ANNOTATION_INIT`] =
//! `true`), pid 1 is a tiny reaper forked inside the container that
//! forwards every signal to the program and reaps zombies. Another process
//! can join a running container with [`Backend::exec`] (`setns` into
//! its namespaces, descriptors opened before the clone).
//!
//! # State
//! `<state_root>/<id>.json` records the bundle, the init's pid and start
//! time (so [`Backend::kill`] and [`Backend::state`] work from another
//! process and never signal a recycled pid) and the cgroups made, which
//! [`Backend::delete`] removes.

mod io;
mod plan;
mod seccomp;
mod spawner;
mod syscalls;
pub(crate) mod tty;

pub use self::seccomp::{compile as compile_seccomp, SeccompCompileError};

pub(crate) use self::io::drive_master;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image_core::oci_spec::runtime::{LinuxIdMapping, Process as SpecProcess, Spec};
use image_store::fs::{self, Root};

use crate::backend::{
    Backend, BackendError, BackendState, Exit, ExitStatus, Process, Signal, Status,
};
use crate::stdio::Stdio;
use crate::sys::{self, step, CVec, ChildPlan};

use self::plan::PlanError;
use crate::cgroup::manager::{self as cgroup, CgroupDir, Limits};

pub use crate::spec::ANNOTATION_INIT;

pub(crate) const NAME: &str = "native";

/// Knobs of the native backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NativeOptions {
    /// Run a reaper as pid 1 in every container (`--init`).
    pub init: bool,
    /// Relative path under the caller's own cgroup (in every hierarchy)
    /// where containers' cgroups are made; created if missing and left in
    /// place (it may be shared).
    pub cgroup_subpath: PathBuf,
}

impl Default for NativeOptions {
    fn default() -> NativeOptions {
        NativeOptions {
            init: false,
            cgroup_subpath: PathBuf::new(),
        }
    }
}

/// The native backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    state_root: PathBuf,
    options: NativeOptions,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct State {
    bundle: PathBuf,
    pid: Option<u32>,
    start_time: Option<u64>,
    #[serde(default)]
    cgroups: Vec<CgroupDir>,
    #[serde(default)]
    userns: bool,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

/// The store's file system with the two `fsync`s of an atomic write left
/// out, for the state files: they describe processes, which a crash of the
/// host ends anyway (the next command finds them gone), so they need the
/// write's atomicity (rename, no symlink followed) but not its durability,
/// and each `fsync` costs a start milliseconds on a busy disk.
#[derive(Debug)]
struct Volatile;

impl fs::Fs for Volatile {
    fn create_dir_all(&self, t: fs::Target, root: &Root, path: &Path) -> std::io::Result<()> {
        fs::RealFs.create_dir_all(t, root, path)
    }
    fn open_temp(
        &self,
        t: fs::Target,
        root: &Root,
        path: &Path,
        truncate: bool,
    ) -> std::io::Result<std::fs::File> {
        fs::RealFs.open_temp(t, root, path, truncate)
    }
    fn write(&self, t: fs::Target, file: &mut std::fs::File, buf: &[u8]) -> std::io::Result<usize> {
        fs::RealFs.write(t, file, buf)
    }
    fn set_len(&self, t: fs::Target, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        fs::RealFs.set_len(t, file, len)
    }
    fn sync_file(&self, _: fs::Target, _: &std::fs::File) -> std::io::Result<()> {
        Ok(())
    }
    fn rename(&self, t: fs::Target, root: &Root, from: &Path, to: &Path) -> std::io::Result<()> {
        fs::RealFs.rename(t, root, from, to)
    }
    fn sync_dir(&self, _: fs::Target, _: &Root, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn remove_file(&self, t: fs::Target, root: &Root, path: &Path) -> std::io::Result<()> {
        fs::RealFs.remove_file(t, root, path)
    }
    fn remove_dir_all(&self, t: fs::Target, root: &Root, path: &Path) -> std::io::Result<()> {
        fs::RealFs.remove_dir_all(t, root, path)
    }
    fn remove_dir(&self, t: fs::Target, root: &Root, path: &Path) -> std::io::Result<()> {
        fs::RealFs.remove_dir(t, root, path)
    }
}

/// Whether the container's process `pid` started at `start_time` still
/// runs: not a zombie, unless a leader whose other threads run on.
fn alive(pid: u32, start_time: Option<u64>) -> bool {
    start_time.is_some_and(|t| crate::model::running(pid, t))
}

/// `pid` (read from a state) as one process to signal: 1 to `i32::MAX`.
/// 0 and a larger number (negative as kill(2)'s) would signal a process
/// group, or every process, and are refused.
fn pid_of(pid: u32) -> Result<rustix::process::Pid, BackendError> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(BackendError::InvalidPid { pid })
}

impl NativeRuntime {
    /// A native backend keeping its state under `state_root` (created).
    ///
    /// # Errors
    /// [`BackendError::Io`].
    pub fn new(state_root: &Path) -> Result<NativeRuntime, BackendError> {
        NativeRuntime::with_options(state_root, NativeOptions::default())
    }

    /// As [`NativeRuntime::new`] with options.
    ///
    /// # Errors
    /// [`BackendError::Io`].
    pub fn with_options(
        state_root: &Path,
        options: NativeOptions,
    ) -> Result<NativeRuntime, BackendError> {
        std::fs::create_dir_all(state_root).map_err(io_err(format!(
            "creating native state directory {}",
            state_root.display()
        )))?;
        Ok(NativeRuntime {
            state_root: state_root.to_owned(),
            options,
        })
    }

    /// The options.
    pub fn options(&self) -> &NativeOptions {
        &self.options
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.state_root.join(format!("{id}.json"))
    }

    fn load(&self, id: &str) -> Result<State, BackendError> {
        let p = self.state_path(id);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| BackendError::Json {
                what: format!("parsing the native state {}", p.display()),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BackendError::NotFound { id: id.into() })
            }
            Err(e) => Err(io_err(format!("native state {}", p.display()))(e)),
        }
    }

    fn save(&self, id: &str, st: &State) -> Result<(), BackendError> {
        let p = self.state_path(id);
        let json = serde_json::to_vec(st).map_err(|source| BackendError::Json {
            what: format!("serialising the native state of container {id}"),
            source,
        })?;
        Root::open(&self.state_root)
            .and_then(|root| fs::write_file_atomic(&Volatile, &root, fs::Target::Layout, &p, &json))
            .map_err(io_err(format!("native state {}", p.display())))
    }

    /// Sends SIGTERM, waits up to `timeout` for the container to end, then
    /// SIGKILL (`docker stop`). Without an init, a program that does not
    /// handle SIGTERM ignores it as pid 1 and is killed after `timeout`.
    ///
    /// # Errors
    /// [`BackendError::NotFound`], [`BackendError::Io`].
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), BackendError> {
        let st = self.load(id)?;
        let Some(pid) = st.pid.filter(|p| alive(*p, st.start_time)) else {
            return Ok(());
        };
        let _ = rustix::process::kill_process(pid_of(pid)?, rustix::process::Signal::TERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !alive(pid, st.start_time) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(pid, st.start_time) {
            let _ = rustix::process::kill_process(pid_of(pid)?, rustix::process::Signal::KILL);
        }
        Ok(())
    }

    fn failure(&self, id: &str, operation: &'static str, e: PlanError) -> BackendError {
        match e {
            PlanError::Unsupported(what) => BackendError::Unsupported {
                backend: NAME.into(),
                id: id.into(),
                what,
            },
            PlanError::Invalid(message) => BackendError::RuntimeFailed {
                runtime: NAME.into(),
                operation,
                id: id.into(),
                message,
            },
            PlanError::Rootfs { what, source } => BackendError::Rootfs {
                backend: NAME.into(),
                id: id.into(),
                what,
                source,
            },
        }
    }

    fn read_spec(&self, bundle: &Path) -> Result<Spec, BackendError> {
        let path = bundle.join("config.json");
        Spec::load(&path).map_err(|source| BackendError::RuntimeSpec { path, source })
    }

    /// Namespace flags of the spec, refusing every field the native
    /// backend does not implement.
    fn namespaces(&self, spec: &Spec) -> Result<libc::c_int, PlanError> {
        plan::unsupported(spec)?;
        plan::namespaces(spec)
    }

    /// The BPF programs of the spec's `linux.seccomp` (none without one).
    fn seccomp(&self, id: &str, spec: &Spec) -> Result<Vec<Vec<libc::sock_filter>>, BackendError> {
        let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(Vec::new());
        };
        let programs = seccomp::compile(s).map_err(|source| BackendError::Seccomp {
            backend: NAME.into(),
            id: id.into(),
            source,
        })?;
        Ok(programs
            .iter()
            .map(|p| {
                p.iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect()
            })
            .collect())
    }

    fn wants_init(&self, spec: &Spec) -> bool {
        self.options.init
            || spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_INIT))
                .is_some_and(|v| v == "true")
    }
}

/// The process part of a plan (credentials, capabilities, program).
struct ProcessPlan {
    caps: Option<sys::Caps>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    umask: u32,
    no_new_privs: bool,
    cwd: CString,
    programs: Vec<CString>,
    argv: CVec,
    envp: CVec,
    rlimits: Vec<(libc::c_int, u64, u64)>,
    tty: Option<(u16, u16)>,
    arg0: String,
    /// The container's seccomp programs (set by the caller from the spec).
    seccomp: Vec<Vec<libc::sock_filter>>,
}

fn process_plan(process: Option<&SpecProcess>) -> Result<ProcessPlan, PlanError> {
    let process = process.ok_or_else(|| PlanError::Invalid("no process".into()))?;
    plan::process_unsupported(process)?;
    let args = process.args().as_deref().unwrap_or(&[]);
    let arg0 = args.first().cloned().unwrap_or_default();
    if args.is_empty() {
        return Err(PlanError::Invalid("no process.args".into()));
    }
    let env = process.env().as_deref().unwrap_or(&[]);
    let programs = plan::programs(&arg0, env)?;
    let (uid, gid, groups) = plan::credentials(process)?;
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(PlanError::Invalid(format!("relative cwd {cwd:?}")));
    }
    let tty = terminal_size(process);
    Ok(ProcessPlan {
        caps: plan::caps(process),
        uid,
        gid,
        groups,
        umask: process.user().umask().unwrap_or(0o022),
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        cwd: CString::new(
            crate::spec::clean_absolute(&cwd.to_string_lossy())
                .as_os_str()
                .as_encoded_bytes(),
        )
        .map_err(|_| PlanError::Invalid("cwd with a NUL byte".into()))?,
        programs,
        argv: CVec::new(plan::strings(args)?),
        envp: CVec::new(plan::strings(env)?),
        rlimits: plan::rlimits(process),
        tty,
        arg0,
        seccomp: Vec::new(),
    })
}

/// With `process.terminal`, the terminal's first size (rows, columns):
/// `process.consoleSize`, else 24 x 80.
pub(crate) fn terminal_size(process: &SpecProcess) -> Option<(u16, u16)> {
    process.terminal().unwrap_or(false).then(|| {
        let (height, width) = process
            .console_size()
            .map_or((24, 80), |s| (s.height(), s.width()));
        let cap = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
        (cap(height), cap(width))
    })
}

/// The pipes between parent and child.
struct Pipes {
    go_read: OwnedFd,
    go_write: OwnedFd,
    err_read: OwnedFd,
    err_write: OwnedFd,
}

/// The parent's ends of the "go" pipe: the write end, and the read end
/// kept open until the child is released, so that a write to a child that
/// died meanwhile is no `EPIPE` (nor a `SIGPIPE` for an embedding program
/// that did not ignore it).
struct Go {
    write: OwnedFd,
    _read: OwnedFd,
}

impl Pipes {
    /// After the clone: closes the child's end of the error pipe and
    /// returns the parent's ends, `(go, err_read)`.
    fn into_parent_ends(self) -> (Go, OwnedFd) {
        let Pipes {
            go_read,
            go_write,
            err_read,
            err_write,
        } = self;
        drop(err_write);
        (
            Go {
                write: go_write,
                _read: go_read,
            },
            err_read,
        )
    }
}

fn pipes() -> std::io::Result<Pipes> {
    let p = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((
            rustix::io::fcntl_dupfd_cloexec(&r, 3)?,
            rustix::io::fcntl_dupfd_cloexec(&w, 3)?,
        ))
    };
    let (go_read, go_write) = p()?;
    let (err_read, err_write) = p()?;
    Ok(Pipes {
        go_read,
        go_write,
        err_read,
        err_write,
    })
}

/// What a child failure record means.
fn describe_step(step_no: u32, ops: &[String], arg0: &str) -> String {
    if step_no >= step::OPS {
        return ops
            .get((step_no - step::OPS) as usize)
            .cloned()
            .unwrap_or_else(|| format!("step {step_no}"));
    }
    match step_no {
        step::READ_GO => "waiting for the parent".into(),
        step::PDEATHSIG => "setting the parent-death signal".into(),
        step::SETNS => "joining the container's namespaces".into(),
        step::CLONE_INNER => "cloning into the container's pid namespace".into(),
        step::MOUNT_PRIVATE => "making mounts private".into(),
        step::BIND_ROOT => "binding the root filesystem".into(),
        step::OPEN_ROOT => "opening the root filesystem".into(),
        step::PIVOT_ROOT => "pivot_root".into(),
        step::READONLY_ROOT => "remounting the root read-only".into(),
        step::HOSTNAME => "setting the hostname".into(),
        step::LOOPBACK => "bringing up the loopback interface".into(),
        step::RLIMIT => "setting rlimits".into(),
        step::STDIO => "setting up stdio".into(),
        step::SETSID => "setsid".into(),
        step::CONTROLLING_TTY => "making the terminal controlling".into(),
        step::BOUNDING_SET => "dropping the capability bounding set".into(),
        step::KEEPCAPS => "PR_SET_KEEPCAPS".into(),
        step::SETGROUPS => "setgroups".into(),
        step::SETGID => "setgid".into(),
        step::SETUID => "setuid".into(),
        step::CAPSET => "setting capabilities".into(),
        step::AMBIENT => "clearing ambient capabilities".into(),
        step::NO_NEW_PRIVS => "setting no_new_privs".into(),
        step::CLOSE_FDS => "closing inherited descriptors".into(),
        step::CHDIR => "changing to the working directory".into(),
        step::CWD_OUTSIDE_ROOT => "working directory outside the container's root".into(),
        step::INIT_FORK => "forking the init process".into(),
        step::EXEC => format!("executing {}", arg0.escape_debug()),
        step::SECCOMP => "installing the seccomp filter".into(),
        n => format!("step {n}"),
    }
}

/// What an operation does, its paths escaped (an image names them).
fn describe_op(op: &sys::Op) -> String {
    let s = |c: &CString| c.to_string_lossy().escape_debug().to_string();
    match op {
        sys::Op::Mount { fstype, target, .. } => format!(
            "mounting {} on /{}",
            fstype.as_ref().map(s).unwrap_or_default(),
            s(target)
        ),
        sys::Op::Bind { source, target, .. } => {
            format!("binding {} on /{}", s(source), s(target))
        }
        sys::Op::Mkdir { parent, name, .. } => format!("mkdir /{}/{}", s(parent), s(name)),
        sys::Op::Mknod { parent, name, .. } => format!("mknod /{}/{}", s(parent), s(name)),
        sys::Op::Touch { parent, name } => format!("creating /{}/{}", s(parent), s(name)),
        sys::Op::Symlink { parent, name, .. } => {
            format!("symlink /{}/{}", s(parent), s(name))
        }
        sys::Op::Mask { target, .. } => format!("masking /{}", s(target)),
        sys::Op::ReadOnly { target } => format!("making /{} read-only", s(target)),
    }
}

/// The error of a step the child reported (`what`, `errno`): EPERM, and
/// EACCES outside `execve`, are [`BackendError::PermissionDenied`]; any
/// other errno stays the typed source of a [`BackendError::Io`], so that its
/// class (`ENOENT` not found, `EINVAL` invalid input...) is the errno's.
fn child_error(id: &str, operation: &'static str, what: String, errno: i32) -> BackendError {
    let err = std::io::Error::from_raw_os_error(errno);
    let executing = what.starts_with("executing");
    if errno == libc::EPERM || errno == libc::EACCES && !executing {
        return BackendError::PermissionDenied {
            runtime: NAME.into(),
            operation,
            id: id.into(),
            message: format!("{what}: {err}"),
        };
    }
    let what = if executing && errno == libc::ENOENT {
        format!("{what}: executable file not found")
    } else {
        what
    };
    BackendError::Io {
        context: format!("{NAME} {operation} {id}: {what}"),
        source: err,
    }
}

fn reap(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        while let Err(rustix::io::Errno::INTR) =
            rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty())
        {}
    }
}

fn write_id_maps(pid: i32, spec: &Spec) -> std::io::Result<()> {
    let map = |m: Option<&Vec<LinuxIdMapping>>| -> String {
        m.map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let linux = spec.linux().as_ref();
    let gid = map(linux.and_then(|l| l.gid_mappings().as_ref()));
    let uid = map(linux.and_then(|l| l.uid_mappings().as_ref()));
    std::fs::write(format!("/proc/{pid}/gid_map"), gid)?;
    std::fs::write(format!("/proc/{pid}/uid_map"), uid)?;
    Ok(())
}

/// A clone, released and checked: the part shared by start and exec.
struct Launch<'a> {
    id: &'a str,
    operation: &'static str,
    op_names: Vec<String>,
    arg0: String,
    /// The clone's time when the start is traced ([`trace_base`]).
    trace_base_us: Option<i64>,
}

/// The variable that makes the native backend print the child's timing of
/// each start and exec on stderr (`bench/runtime/start.sh` shows it).
pub const TRACE_VAR: &str = "IMAGE_RUNTIME_START_TRACE";

/// `Some(now)` when [`TRACE_VAR`] is set to `1`.
fn trace_base() -> Option<i64> {
    (std::env::var_os(TRACE_VAR).as_deref() == Some(std::ffi::OsStr::new("1")))
        .then(sys::monotonic_us)
}

impl Launch<'_> {
    /// Lets the cloned child `pid` go and checks it, in two steps (see
    /// `ChildPlan::go_read`): writes the uid/gid maps of `id_maps` (a spec,
    /// when the child has a new user namespace) and a first byte on `go`,
    /// so that the child sets up its mounts while we join it to `cgroups`
    /// (both wait for an RCU grace period: the waits overlap), then a
    /// second byte for it to go on to `execve`; `go` is closed whatever
    /// happened. On a failure the child is reaped and the error returned
    /// (the child's own, when it failed first); otherwise
    /// [`Launch::verdict`].
    fn release(
        &self,
        pid: i32,
        id_maps: Option<&Spec>,
        cgroups: &[CgroupDir],
        go: Go,
        err_read: &OwnedFd,
    ) -> Result<(), BackendError> {
        let signal = |go: &Go| {
            rustix::io::write(&go.write, b"g")
                .map(drop)
                .map_err(|e| io_err("releasing the child")(e.into()))
        };
        let maps = id_maps.map_or(Ok(()), |spec| {
            write_id_maps(pid, spec).map_err(io_err("writing uid/gid maps"))
        });
        if let Err(e) = maps.and_then(|()| signal(&go)) {
            drop(go);
            reap(pid);
            return Err(e);
        }
        let joined = cgroup::join(cgroups, pid as u32)
            .map_err(|source| BackendError::Cgroup {
                id: self.id.into(),
                source,
            })
            .and_then(|()| signal(&go));
        drop(go);
        if let Err(e) = joined {
            // The child's own failure, if it had one, says more.
            self.verdict(pid, err_read)?;
            reap(pid);
            return Err(e);
        }
        self.verdict(pid, err_read)
    }

    /// Waits for the child's verdict on the error pipe (timing records of
    /// a traced start are printed on stderr, in ms since the clone).
    fn verdict(&self, pid: i32, err_read: &OwnedFd) -> Result<(), BackendError> {
        let mut phases = Vec::new();
        let verdict = loop {
            match sys::read_child_error(err_read.as_raw_fd()) {
                Ok(Some((s, us))) if s >= step::TRACE => {
                    let name = step::TRACE_PHASES.get((s - step::TRACE) as usize);
                    phases.push(format!(
                        "{} {:.2}",
                        name.unwrap_or(&"?"),
                        f64::from(us) / 1000.0
                    ));
                }
                other => break other,
            }
        };
        if let Some(base) = self.trace_base_us {
            let ms = (sys::monotonic_us() - base) as f64 / 1000.0;
            eprintln!(
                "{NAME} {} {} trace (ms since clone): {}, execve seen {ms:.2}",
                self.operation,
                self.id,
                phases.join(", ")
            );
        }
        match verdict {
            Ok(None) => Ok(()),
            Ok(Some((step_no, errno))) => {
                reap(pid);
                let what = describe_step(step_no, &self.op_names, &self.arg0);
                Err(child_error(self.id, self.operation, what, errno))
            }
            Err(e) => {
                reap(pid);
                Err(io_err("reading the child's error pipe")(e))
            }
        }
    }
}

impl Backend for NativeRuntime {
    fn name(&self) -> &str {
        NAME
    }

    fn create(&self, id: &str, bundle: &Path) -> Result<(), BackendError> {
        let spec = self.read_spec(bundle)?;
        self.namespaces(&spec)
            .map_err(|e| self.failure(id, "create", e))?;
        process_plan(spec.process().as_ref()).map_err(|e| self.failure(id, "create", e))?;
        self.seccomp(id, &spec)?;
        let userns = self.namespaces(&spec).unwrap_or(0) & libc::CLONE_NEWUSER != 0;
        self.save(
            id,
            &State {
                bundle: bundle.to_owned(),
                pid: None,
                start_time: None,
                cgroups: Vec::new(),
                userns,
            },
        )
    }

    fn start(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        let mut st = self.load(id)?;
        if st.pid.is_some_and(|p| alive(p, st.start_time)) {
            return Err(BackendError::RuntimeFailed {
                runtime: NAME.into(),
                operation: "start",
                id: id.into(),
                message: "the container is running already".into(),
            });
        }
        let spec = self.read_spec(bundle)?;
        let flags = self
            .namespaces(&spec)
            .map_err(|e| self.failure(id, "start", e))?;
        let userns = flags & libc::CLONE_NEWUSER != 0;
        let pp = process_plan(spec.process().as_ref()).map_err(|e| self.failure(id, "start", e))?;
        let root = plan::root_path(&spec, bundle).map_err(|e| self.failure(id, "start", e))?;
        let root = std::fs::canonicalize(&root)
            .map_err(io_err(format!("root filesystem {}", root.display())))?;

        // Cgroups first: a limit that cannot be enforced fails here.
        cgroup::remove(&st.cgroups, Duration::from_millis(500));
        let limits = Limits::from_spec(&spec);
        let hierarchies = crate::cgroup::hierarchies().map_err(io_err("reading cgroups"))?;
        let cgroups = cgroup::create(&hierarchies, &self.options.cgroup_subpath, id, &limits)
            .map_err(|e| BackendError::of_cgroup(id, e))?;
        let result = self.launch(id, &spec, flags, pp, &root, &cgroups, stdio);
        let (pid, pumps) = match result {
            Ok(v) => v,
            Err(e) => {
                cgroup::remove(&cgroups, Duration::from_secs(2));
                return Err(e);
            }
        };
        let start_time = crate::model::start_time(pid as u32);
        st.pid = Some(pid as u32);
        st.start_time = start_time;
        st.cgroups = cgroups.clone();
        st.userns = userns;
        st.bundle = bundle.to_owned();
        if let Err(e) = self.save(id, &st) {
            let mut p = NativeProcess::new(id, pid, pumps, cgroups);
            p.kill_now();
            return Err(e);
        }
        Ok(Box::new(NativeProcess::new(id, pid, pumps, cgroups)))
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<(), BackendError> {
        let st = self.load(id)?;
        match st.pid.filter(|p| alive(*p, st.start_time)) {
            Some(pid) => crate::sys::kill(pid_of(pid)?, signal)
                .map_err(io_err(format!("kill {id} with {signal}"))),
            None => Err(BackendError::RuntimeFailed {
                runtime: NAME.into(),
                operation: "kill",
                id: id.into(),
                message: "the container is not running".into(),
            }),
        }
    }

    fn state(&self, id: &str) -> Result<BackendState, BackendError> {
        let st = self.load(id)?;
        Ok(match st.pid {
            None => BackendState {
                status: Status::Created,
                pid: None,
            },
            Some(p) if alive(p, st.start_time) => BackendState {
                status: Status::Running,
                pid: Some(p),
            },
            Some(_) => BackendState {
                status: Status::Stopped,
                pid: None,
            },
        })
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
        let st = match self.load(id) {
            Ok(st) => st,
            Err(BackendError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(pid) = st.pid.filter(|p| alive(*p, st.start_time)) {
            if !force {
                return Err(BackendError::RuntimeFailed {
                    runtime: NAME.into(),
                    operation: "delete",
                    id: id.into(),
                    message: "the container is running (delete with force)".into(),
                });
            }
            let _ = rustix::process::kill_process(pid_of(pid)?, rustix::process::Signal::KILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid, st.start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let left = cgroup::remove(&st.cgroups, Duration::from_secs(5));
        if let Some(dir) = left.first() {
            return Err(BackendError::Io {
                context: format!("removing cgroup {}", dir.display()),
                source: std::io::Error::from(std::io::ErrorKind::ResourceBusy),
            });
        }
        match std::fs::remove_file(self.state_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("removing native state")(e))
            }
            _ => Ok(()),
        }
    }

    fn exec(
        &self,
        id: &str,
        _bundle: &Path,
        process: &SpecProcess,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        let st = self.load(id)?;
        let Some(target) = st.pid.filter(|p| alive(*p, st.start_time)) else {
            return Err(BackendError::RuntimeFailed {
                runtime: NAME.into(),
                operation: "exec",
                id: id.into(),
                message: "the container is not running".into(),
            });
        };
        let mut pp = process_plan(Some(process)).map_err(|e| self.failure(id, "exec", e))?;
        // A process joining the container is confined as its init is.
        pp.seccomp = self.seccomp(id, &self.read_spec(&st.bundle)?)?;
        let (pid, pumps) = self.exec_launch(id, target, st.userns, pp, &st.cgroups, stdio)?;
        Ok(Box::new(NativeProcess::new(id, pid, pumps, Vec::new())))
    }
}

impl NativeRuntime {
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        id: &str,
        spec: &Spec,
        flags: libc::c_int,
        pp: ProcessPlan,
        root: &Path,
        cgroups: &[CgroupDir],
        stdio: Stdio,
    ) -> Result<(i32, io::Pumps), BackendError> {
        let userns = flags & libc::CLONE_NEWUSER != 0;
        let mounts = plan::spec_mounts(spec).map_err(|e| self.failure(id, "start", e))?;
        plan::check_mount_targets(&mounts, root).map_err(|e| self.failure(id, "start", e))?;
        // Device nodes are bound from the host's where mknod is refused:
        // in the spec's user namespace, or in a rootless command's.
        let bind_devices = userns || crate::rootless::in_user_namespace();
        let ops = plan::mount_ops(spec, &mounts, bind_devices, cgroups)
            .map_err(|e| self.failure(id, "start", e))?;
        let op_names: Vec<String> = ops.iter().map(describe_op).collect();
        let seccomp = self.seccomp(id, spec)?;
        let prepared = io::prepare(stdio, pp.tty).map_err(io_err("preparing stdio"))?;
        let pipes = pipes().map_err(io_err("creating pipes"))?;
        let hostname = match spec.hostname().as_deref() {
            Some(h) if flags & libc::CLONE_NEWUTS != 0 && !h.is_empty() => {
                Some(CString::new(h).map_err(|_| {
                    self.failure(id, "start", PlanError::Invalid("hostname".into()))
                })?)
            }
            _ => None,
        };
        let child = ChildPlan {
            root: Some(
                CString::new(root.as_os_str().as_encoded_bytes())
                    .map_err(|_| self.failure(id, "start", PlanError::Invalid("root".into())))?,
            ),
            ops,
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            hostname,
            loopback: flags & libc::CLONE_NEWNET != 0,
            rlimits: pp.rlimits,
            stdio: [
                prepared.child[0].as_raw_fd(),
                prepared.child[1].as_raw_fd(),
                prepared.child[2].as_raw_fd(),
            ],
            tty: pp.tty.is_some(),
            init: self.wants_init(spec),
            caps: pp.caps,
            uid: pp.uid,
            gid: pp.gid,
            groups: pp.groups,
            umask: pp.umask,
            no_new_privs: pp.no_new_privs,
            seccomp,
            cwd: pp.cwd,
            programs: pp.programs,
            argv: pp.argv,
            envp: pp.envp,
            go_read: pipes.go_read.as_raw_fd(),
            close_first: vec![pipes.go_write.as_raw_fd(), pipes.err_read.as_raw_fd()],
            err_write: pipes.err_write.as_raw_fd(),
            setns: Vec::new(),
            trace_base_us: trace_base(),
        };
        let trace_base_us = child.trace_base_us;
        let pid = spawner::run(move || sys::spawn(flags, &child, None))
            .and_then(|r| r)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) {
                    BackendError::PermissionDenied {
                        runtime: NAME.into(),
                        operation: "start",
                        id: id.into(),
                        message: format!("clone into new namespaces: {e}"),
                    }
                } else {
                    io_err("clone")(e)
                }
            })?;
        let (go, err_read) = pipes.into_parent_ends();
        let launch = Launch {
            id,
            operation: "start",
            op_names,
            arg0: pp.arg0,
            trace_base_us,
        };
        launch.release(pid, userns.then_some(spec), cgroups, go, &err_read)?;
        Ok((pid, prepared.start()))
    }

    fn exec_launch(
        &self,
        id: &str,
        target: u32,
        userns: bool,
        pp: ProcessPlan,
        cgroups: &[CgroupDir],
        stdio: Stdio,
    ) -> Result<(i32, io::Pumps), BackendError> {
        // Namespace descriptors, opened before any clone.
        let mut ns: Vec<(OwnedFd, libc::c_int)> = Vec::new();
        let mut kinds = vec![];
        if userns {
            kinds.push(("user", libc::CLONE_NEWUSER));
        }
        kinds.extend([
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("net", libc::CLONE_NEWNET),
            ("pid", libc::CLONE_NEWPID),
            ("mnt", libc::CLONE_NEWNS),
        ]);
        for (name, flag) in kinds {
            let path = format!("/proc/{target}/ns/{name}");
            let f = std::fs::File::open(&path).map_err(io_err(path))?;
            ns.push((
                rustix::io::fcntl_dupfd_cloexec(&f, 3).map_err(|e| io_err("dup")(e.into()))?,
                flag,
            ));
        }
        // The container may have changed since: it must still be the same.
        let st = self.load(id)?;
        if st.pid != Some(target) || !alive(target, st.start_time) {
            return Err(BackendError::RuntimeFailed {
                runtime: NAME.into(),
                operation: "exec",
                id: id.into(),
                message: "the container exited".into(),
            });
        }
        let prepared = io::prepare(stdio, pp.tty).map_err(io_err("preparing stdio"))?;
        let pipes = pipes().map_err(io_err("creating pipes"))?;
        let (pid_read, pid_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_err("pipe")(e.into()))?;
        let child = ChildPlan {
            root: None,
            ops: Vec::new(),
            readonly_root: false,
            hostname: None,
            loopback: false,
            rlimits: pp.rlimits,
            stdio: [
                prepared.child[0].as_raw_fd(),
                prepared.child[1].as_raw_fd(),
                prepared.child[2].as_raw_fd(),
            ],
            tty: pp.tty.is_some(),
            init: false,
            caps: pp.caps,
            uid: pp.uid,
            gid: pp.gid,
            groups: pp.groups,
            umask: pp.umask,
            no_new_privs: pp.no_new_privs,
            seccomp: pp.seccomp,
            cwd: pp.cwd,
            programs: pp.programs,
            argv: pp.argv,
            envp: pp.envp,
            go_read: pipes.go_read.as_raw_fd(),
            close_first: vec![
                pipes.go_write.as_raw_fd(),
                pipes.err_read.as_raw_fd(),
                pid_read.as_raw_fd(),
            ],
            err_write: pipes.err_write.as_raw_fd(),
            setns: ns.iter().map(|(fd, f)| (fd.as_raw_fd(), *f)).collect(),
            trace_base_us: trace_base(),
        };
        let trace_base_us = child.trace_base_us;
        let pw = pid_write.as_raw_fd();
        let helper = spawner::run(move || sys::spawn(0, &child, Some(pw)))
            .and_then(|r| r)
            .map_err(io_err("clone"))?;
        drop(pid_write);
        drop(ns);
        let (go, err_read) = pipes.into_parent_ends();
        let launch = Launch {
            id,
            operation: "exec",
            op_names: Vec::new(),
            arg0: pp.arg0,
            trace_base_us,
        };
        let inner = sys::read_pid(pid_read.as_raw_fd());
        // The helper exits at once; reap it.
        if let Some(h) = rustix::process::Pid::from_raw(helper) {
            let _ = rustix::process::waitpid(Some(h), rustix::process::WaitOptions::empty());
        }
        let pid = match inner {
            Ok(Some(pid)) => pid,
            _ => {
                // The helper failed (setns): its record is on the error pipe.
                drop(go);
                return match sys::read_child_error(err_read.as_raw_fd()) {
                    Ok(Some((s, errno))) => Err(child_error(
                        id,
                        "exec",
                        describe_step(s, &[], &launch.arg0),
                        errno,
                    )),
                    _ => Err(BackendError::RuntimeFailed {
                        runtime: NAME.into(),
                        operation: "exec",
                        id: id.into(),
                        message: "the exec helper died".into(),
                    }),
                };
            }
        };
        launch.release(pid, None, cgroups, go, &err_read)?;
        Ok((pid, prepared.start()))
    }
}

/// A process started by the native backend: our direct child.
#[derive(Debug)]
struct NativeProcess {
    id: String,
    pid: i32,
    status: Option<ExitStatus>,
    pumps: io::Pumps,
    finished: bool,
    cgroups: Vec<CgroupDir>,
}

/// A `waitpid` status as an exit status (128 + signal when killed).
pub(crate) fn to_status(s: rustix::process::WaitStatus) -> ExitStatus {
    match (s.exit_status(), s.terminating_signal()) {
        (Some(c), _) => ExitStatus(c),
        (None, Some(sig)) => ExitStatus(128 + sig),
        _ => ExitStatus(255),
    }
}

impl NativeProcess {
    fn new(id: &str, pid: i32, pumps: io::Pumps, cgroups: Vec<CgroupDir>) -> NativeProcess {
        NativeProcess {
            id: id.to_owned(),
            pid,
            status: None,
            pumps,
            finished: false,
            cgroups,
        }
    }

    fn reap(&mut self, options: rustix::process::WaitOptions) -> Result<(), BackendError> {
        if self.status.is_some() {
            return Ok(());
        }
        let pid = pid_of(self.pid as u32)?;
        loop {
            match rustix::process::waitpid(Some(pid), options) {
                Ok(Some((_, s))) => {
                    self.status = Some(to_status(s));
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(io_err(format!("waiting for container {}", self.id))(
                        e.into(),
                    ))
                }
            }
        }
    }
}

impl NativeProcess {
    /// Waits on a pidfd of our child (readable once it exited) for at most
    /// `timeout`, then reaps it if it exited; whether it did.
    fn sleep_until_exit(&mut self, timeout: Duration) -> Result<bool, BackendError> {
        let err =
            |e: rustix::io::Errno| io_err(format!("waiting for container {}", self.id))(e.into());
        let pidfd = rustix::process::pidfd_open(
            pid_of(self.pid as u32)?,
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(err)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // In slices of at most an hour (any timeout converts).
            let slice = left.min(Duration::from_secs(3600));
            let t = rustix::event::Timespec {
                tv_sec: slice.as_secs() as i64,
                tv_nsec: i64::from(slice.subsec_nanos()),
            };
            let mut fds = [rustix::event::PollFd::new(
                &pidfd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&t)) {
                Ok(0) if left == slice => return Ok(false),
                Ok(0) => continue,
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        self.reap(rustix::process::WaitOptions::NOHANG)?;
        Ok(self.status.is_some())
    }
}

impl Process for NativeProcess {
    fn pid(&self) -> Option<u32> {
        Some(self.pid as u32)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, BackendError> {
        self.reap(rustix::process::WaitOptions::NOHANG)?;
        Ok(self.status)
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        self.reap(rustix::process::WaitOptions::empty())?;
        let (stdout, stderr) = self.pumps.finish();
        self.finished = true;
        let status = self.status.unwrap_or(ExitStatus(255));
        if status.signal() == Some(9) && cgroup::oom_killed(&self.cgroups) {
            // Still an exit: the code says it was killed; callers that
            // care read the cgroup (docker's OOMKilled).
        }
        Ok(Exit {
            status,
            stdout,
            stderr,
        })
    }

    /// Sleeps on a pidfd until the exit or `timeout` (no polling: the exit
    /// is seen when it happens).
    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, BackendError> {
        if self.status.is_none() && !self.sleep_until_exit(timeout)? {
            self.kill_now();
            return Ok(None);
        }
        self.wait().map(Some)
    }

    fn kill_now(&mut self) {
        if self.finished {
            return;
        }
        if self.status.is_none() {
            if let Some(p) = rustix::process::Pid::from_raw(self.pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            let _ = self.reap(rustix::process::WaitOptions::empty());
        }
        self.pumps.finish();
        self.finished = true;
    }
}

impl Drop for NativeProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_core::error::{Classify, ErrorKind};
    use std::error::Error as _;

    /// A pid in a state that kill(2) would take as a process group (0, or
    /// a number above `i32::MAX`, negative as an `i32`) is refused with a
    /// typed error, naming it; the kill shim refuses this process.
    #[test]
    fn a_state_pid_out_of_range_is_refused_not_signalled() {
        for pid in [0, 1 << 31, (1 << 31) + 1, u32::MAX] {
            let e = pid_of(pid).unwrap_err();
            assert!(
                matches!(e, BackendError::InvalidPid { pid: p } if p == pid),
                "{pid}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.to_string().contains(&pid.to_string()), "{e}");
        }
        assert_eq!(pid_of(1).unwrap().as_raw_nonzero().get(), 1);
        let max = i32::MAX as u32;
        assert_eq!(pid_of(max).unwrap().as_raw_nonzero().get(), i32::MAX);
        let own = crate::sys::kill(rustix::process::getpid(), crate::signal::Signal::CONT);
        assert_eq!(own.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    }

    /// A step's errno stays the typed source of the error, so its class is
    /// the errno's rather than a blanket I/O failure; the message names the
    /// step and does not repeat the errno's text.
    #[test]
    fn a_child_errno_keeps_its_class() {
        for (errno, kind) in [
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::EINVAL, ErrorKind::InvalidInput),
            (libc::EEXIST, ErrorKind::AlreadyExists),
            (libc::EPERM, ErrorKind::PermissionDenied),
            (libc::EACCES, ErrorKind::PermissionDenied),
        ] {
            let e = child_error("c1", "start", "mounting proc on /proc".into(), errno);
            assert_eq!(e.kind(), kind, "{errno}: {e}");
            assert!(e.to_string().contains("mounting proc on /proc"), "{e}");
            if !matches!(e, BackendError::PermissionDenied { .. }) {
                let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
                assert_eq!(source.and_then(|s| s.raw_os_error()), Some(errno), "{e}");
                let text = std::io::Error::from_raw_os_error(errno).to_string();
                assert!(!e.to_string().contains(&text), "{e}");
            }
        }
        let e = child_error("c1", "start", "executing /x".into(), libc::ENOENT);
        assert!(e.to_string().contains("executable file not found"), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    /// What a failed step names from the image (its program, a volume's
    /// path) reaches the error escaped, none of its control characters
    /// printed.
    #[test]
    fn a_failed_steps_hostile_names_are_escaped() {
        let hostile = "\u{1b}]0;pwned\u{7}";
        let c = |s: &str| CString::new(s).unwrap();
        let bind = sys::Op::Bind {
            source: c("/var/lib/volumes/v/_data"),
            target: c(hostile),
            recursive: false,
            remount: 0,
        };
        for what in [describe_step(step::EXEC, &[], hostile), describe_op(&bind)] {
            let e = child_error("c1", "start", what, libc::ENOENT);
            assert!(
                !e.to_string().contains(char::is_control),
                "raw control characters"
            );
        }
    }

    /// A state file that is not JSON is a typed JSON error naming the
    /// file, not an I/O error wrapping serde's text.
    #[test]
    fn a_corrupt_state_file_is_a_json_error() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = NativeRuntime::new(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("c1.json"), b"{not json").unwrap();
        match rt.state("c1") {
            Err(e @ BackendError::Json { .. }) => {
                assert!(e.to_string().contains("c1.json"), "{e}");
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Saving the state writes no file through a symlink planted at a
    /// temporary name beside it (the old fixed name, or the writer's).
    #[test]
    fn saving_the_state_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let rt = NativeRuntime::new(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"precious").unwrap();
        for name in [
            ".c1.json.tmp".to_owned(),
            format!(".c1.json.tmp-{}", std::process::id()),
        ] {
            std::os::unix::fs::symlink(&outside, root.join(name)).unwrap();
        }
        let st = State {
            bundle: "/b".into(),
            pid: None,
            start_time: None,
            cgroups: Vec::new(),
            userns: false,
        };
        let _ = rt.save("c1", &st);
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    }
}
