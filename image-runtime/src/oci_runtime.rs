//! The [`Backend`] that hands the bundle to an external OCI runtime: runc
//! or crun, with a `--root` state directory private to this library so the
//! machine's other containers are never seen or touched.
//!
//! The process is started with `<runtime> run` in the foreground rather
//! than `create` + `start`: only the parent of the runtime's process learns
//! the container's exit status, and `run` keeps the runtime as our child
//! (it forwards signals and exits with the container's code, 128 + signal
//! when killed). [`Backend::create`] therefore only checks the bundle.
//! Runtime commands are bounded in time and run in their own process group,
//! which is killed on timeout; a [`Process`] dropped before it was waited
//! for is killed (container first, then the runtime's group).
//!
//! A terminal (`process.terminal`) comes through the console socket
//! ([`crate::console`]): runc takes `--console-socket` only when detached,
//! so such a container is made with `create --console-socket`, its pty
//! master received and sized (the caller's terminal's size, else the
//! spec's `consoleSize`) and driven as the native backend drives its own
//! pty (raw caller terminal, `SIGWINCH`), and only then `start`ed. The
//! runtime exits after `create`; for its exit status to reach us the
//! calling process is made a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, as containerd's shim and conmon are), so
//! the orphaned container becomes our child and is reaped with `waitpid`.
//!
//! crun 1.8 needs help on v1 and hybrid hosts, so every crun command runs
//! through `unshare -m --propagation private` and, in that private mount
//! namespace only:
//! - the v2 mount (found in mountinfo) is unmounted on hybrid hosts (v1
//!   controllers plus a v2 mount), which crun refuses ("cgroups in hybrid
//!   mode not supported"), leaving crun a plain v1 host;
//! - each v1 hierarchy where our own cgroup is not the root is replaced by
//!   a bind of our own cgroup directory: crun takes a relative
//!   `cgroupsPath` from the hierarchy's root (runc takes it from its own
//!   cgroup), so this puts crun's container cgroups under ours too.

use std::ffi::OsStr;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, BackendError, BackendState, Exit, ExitStatus, Process, Signal, Status,
};
use crate::stdio::{self, Pumps, Stdio};

/// The file in the bundle where runc and crun write the host PID of the
/// container's init (`--pid-file`).
pub(crate) const INIT_PID_FILE: &str = "init.pid";

/// Which OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// runc.
    Runc,
    /// crun.
    Crun,
}

impl RuntimeKind {
    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<RuntimeKind, String> {
        match s {
            "runc" => Ok(RuntimeKind::Runc),
            "crun" => Ok(RuntimeKind::Crun),
            other => Err(format!("unknown runtime {other:?} (runc or crun)")),
        }
    }
}

/// A runc or crun backend.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    kind: RuntimeKind,
    binary: PathBuf,
    state_root: PathBuf,
    /// For crun: `unshare`, to run it in a private mount namespace.
    unshare: Option<PathBuf>,
    timeout: Duration,
}

/// Finds `program` in the host's `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn not_found(program: &str) -> BackendError {
    BackendError::RuntimeNotFound {
        program: program.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in PATH"),
    }
}

/// What crun needs changed in its private mount namespace: the v2 mount
/// to unmount (hybrid hosts), and (own cgroup dir, mount point) binds.
fn crun_cgroup_fixups() -> (Option<PathBuf>, Vec<(PathBuf, PathBuf)>) {
    let Ok(h) = crate::cgroup::hierarchies() else {
        return (None, Vec::new());
    };
    let v1 = h.iter().any(|h| !h.v2);
    let unified = crate::mountinfo::current()
        .ok()
        .and_then(|m| m.into_iter().find(|m| m.fs_type == "cgroup2"))
        .map(|m| m.mount_point)
        .filter(|_| v1);
    let binds = h
        .into_iter()
        .filter(|h| !h.v2 && h.own_dir != h.mount_point)
        .map(|h| (h.own_dir, h.mount_point))
        .collect();
    (unified, binds)
}

/// The script run by `sh -c` inside crun's private mount namespace:
/// `$1` the v2 mount to unmount (or `-`), then pairs of bind source and
/// target up to `--`, then crun's argv. In a rootless user namespace the
/// v2 mount is locked (the kernel refuses to unmount what a more
/// privileged namespace mounted), so it is covered by an empty tmpfs
/// instead, which crun takes for no v2 mount just as well.
const CRUN_WRAPPER: &str = r#"u=$1; shift
if [ "$u" != - ]; then
  umount "$u" 2>/dev/null || umount -l "$u" 2>/dev/null || mount -t tmpfs -o ro none "$u" || exit 125
fi
while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done
shift
exec "$@""#;

impl OciRuntime {
    /// A backend for `kind`, found in `PATH`, keeping its state under
    /// `state_root` (created if missing).
    ///
    /// # Errors
    /// [`BackendError::RuntimeNotFound`] when the program (or, for crun on a
    /// hybrid host, `unshare`) is missing; [`BackendError::Io`].
    pub fn new(kind: RuntimeKind, state_root: &Path) -> Result<OciRuntime, BackendError> {
        let binary = which(kind.program()).ok_or_else(|| not_found(kind.program()))?;
        OciRuntime::with_binary(kind, &binary, state_root)
    }

    /// As [`OciRuntime::new`] with an explicit binary.
    ///
    /// # Errors
    /// As [`OciRuntime::new`].
    pub fn with_binary(
        kind: RuntimeKind,
        binary: &Path,
        state_root: &Path,
    ) -> Result<OciRuntime, BackendError> {
        if !binary.is_file() {
            return Err(not_found(&binary.display().to_string()));
        }
        let unshare = match kind {
            RuntimeKind::Crun => Some(which("unshare").ok_or_else(|| not_found("unshare"))?),
            RuntimeKind::Runc => None,
        };
        std::fs::create_dir_all(state_root).map_err(|source| BackendError::Io {
            context: format!("creating runtime state directory {}", state_root.display()),
            source,
        })?;
        Ok(OciRuntime {
            kind,
            binary: binary.to_owned(),
            state_root: state_root.to_owned(),
            unshare,
            timeout: Duration::from_secs(60),
        })
    }

    /// Changes the limit on each runtime command other than `run`.
    pub fn with_timeout(mut self, timeout: Duration) -> OciRuntime {
        self.timeout = timeout;
        self
    }

    /// Which runtime.
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The runtime's `--root`.
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// The command line prefix: `<runtime> --root <state>`, wrapped for
    /// crun (see the module docs).
    pub fn command(&self) -> Command {
        let (unified, binds) = crun_cgroup_fixups();
        let mut cmd = match &self.unshare {
            Some(unshare) if unified.is_some() || !binds.is_empty() => {
                let mut c = Command::new(unshare);
                c.args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    CRUN_WRAPPER,
                    "sh",
                ]);
                match &unified {
                    Some(u) => c.arg(u),
                    None => c.arg("-"),
                };
                for (src, dst) in &binds {
                    c.arg(src).arg(dst);
                }
                c.arg("--").arg(&self.binary);
                c
            }
            _ => Command::new(&self.binary),
        };
        cmd.arg("--root").arg(&self.state_root);
        cmd.process_group(0);
        cmd
    }

    fn spawn_err(&self, e: std::io::Error) -> BackendError {
        if e.kind() == std::io::ErrorKind::NotFound {
            BackendError::RuntimeNotFound {
                program: self.binary.display().to_string(),
                source: e,
            }
        } else {
            BackendError::Io {
                context: format!("spawning {}", self.kind.program()),
                source: e,
            }
        }
    }

    /// Runs a short runtime command to completion, bounded in time.
    fn run_cmd<S: AsRef<OsStr>>(
        &self,
        operation: &'static str,
        id: &str,
        args: &[S],
    ) -> Result<Exit, BackendError> {
        let mut cmd = self.command();
        cmd.args(args);
        let pending = stdio::apply(&mut cmd, Stdio::capture());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(e))?;
        let mut pumps = pending.start(child.stdin.take(), child.stdout.take(), child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    pumps.finish();
                    return Err(BackendError::Timeout {
                        runtime: self.kind.program().into(),
                        operation,
                        id: id.into(),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(BackendError::Io {
                        context: format!("waiting for {} {operation}", self.kind.program()),
                        source,
                    })
                }
            }
        };
        let (stdout, stderr) = pumps.finish();
        Ok(Exit {
            status: exit_status(status),
            stdout,
            stderr,
        })
    }

    /// Spawns `<runtime> --log <log> --log-format json <verb> <flag> <path>
    /// --pid-file <pid_file> <id>` in the foreground with `stdio` (`run` and
    /// `exec`) and returns it as an [`OciProcess`]. `exec_files`, an exec's
    /// process document, is removed when the spawn fails.
    fn spawn_foreground(
        &self,
        id: &str,
        (verb, flag, path): (&str, &str, &Path),
        log: PathBuf,
        pid_file: PathBuf,
        stdio: Stdio,
        exec_files: Option<PathBuf>,
    ) -> Result<Box<dyn Process>, BackendError> {
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", verb, flag])
            .arg(path)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id);
        let pending = stdio::apply(&mut cmd, stdio);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(f) = &exec_files {
                    let _ = std::fs::remove_file(f);
                }
                return Err(self.spawn_err(e));
            }
        };
        let pumps = pending.start(child.stdin.take(), child.stdout.take(), child.stderr.take());
        Ok(Box::new(OciProcess {
            runtime: self.clone(),
            id: id.to_owned(),
            child: Waited::Runtime(child),
            pumps,
            log,
            pid_file,
            status: None,
            finished: false,
            exec_files,
        }))
    }

    /// `start` of a container with a terminal (see the module docs):
    /// `create --console-socket`, the master received and driven, `start`,
    /// and the orphaned container reaped by us as its subreaper.
    fn start_with_console(
        &self,
        id: &str,
        bundle: &Path,
        (log, pid_file): (PathBuf, PathBuf),
        stdio: Stdio,
        size: (u16, u16),
    ) -> Result<Box<dyn Process>, BackendError> {
        let io = |context: &str| {
            let context = format!("{} {context} {id}", self.kind.program());
            move |source| BackendError::Io { context, source }
        };
        // Before the runtime can exit: its orphans must come to us.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| io("becoming the subreaper of")(e.into()))?;
        let console =
            crate::console::ConsoleSocket::bind().map_err(|source| BackendError::Console {
                runtime: self.kind.program().into(),
                id: id.into(),
                source,
            })?;
        let args: Vec<&OsStr> = vec![
            "--log".as_ref(),
            log.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "create".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            "--console-socket".as_ref(),
            console.path().as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
            id.as_ref(),
        ];
        let out = self.run_cmd("create", id, &args)?;
        if !out.status.success() {
            let mut errors = log_errors(&log);
            if errors.is_empty() {
                errors.push(out.stderr_str().trim().to_owned());
            }
            let _ = self.delete(id, true);
            return Err(self.failure("create", id, errors.join("; ")));
        }
        // From here a failure deletes the created container.
        let started = (|| -> Result<(i32, Pumps), BackendError> {
            let master = console
                .receive(self.timeout)
                .map_err(|source| BackendError::Console {
                    runtime: self.kind.program().into(),
                    id: id.into(),
                    source,
                })?;
            drop(console);
            let pid = std::fs::read_to_string(&pid_file)
                .map_err(io("reading the pid file of"))?
                .trim()
                .parse::<i32>()
                .map_err(|e| {
                    io("reading the pid file of")(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e,
                    ))
                })?;
            let pumps = crate::native::drive_master(master, stdio, size)
                .map_err(io("attaching the terminal of"))?;
            let out = self.run_cmd("start", id, &["start", id])?;
            if !out.status.success() {
                return Err(self.failure("start", id, out.stderr_str().trim().to_owned()));
            }
            Ok((pid, pumps))
        })();
        let (pid, pumps) = match started {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete(id, true);
                return Err(e);
            }
        };
        Ok(Box::new(OciProcess {
            runtime: self.clone(),
            id: id.to_owned(),
            child: Waited::Orphan(pid),
            pumps,
            log,
            pid_file,
            status: None,
            finished: false,
            exec_files: None,
        }))
    }

    /// The error of a failed `operation`, classified by the runtime's
    /// `message`, which is kept with its control characters escaped (it
    /// may quote what an image controls: its program, a mount path).
    fn failure(&self, operation: &'static str, id: &str, message: String) -> BackendError {
        let message = escape_controls(&message);
        let lower = message.to_lowercase();
        // runc: "container does not exist"; crun: "error opening file
        // `<root>/<id>/status`: No such file or directory", or (delete)
        // "cannot open directory '<root>/<id>': No such file or directory".
        let crun_missing = lower.contains("no such file or directory")
            && ["/", "'", "`"]
                .iter()
                .any(|end| message.contains(&format!("/{id}{end}")));
        if lower.contains("does not exist") || crun_missing {
            return BackendError::NotFound { id: id.into() };
        }
        if lower.contains("operation not permitted") || lower.contains("permission denied") {
            return BackendError::PermissionDenied {
                runtime: self.kind.program().into(),
                operation,
                id: id.into(),
                message,
            };
        }
        BackendError::RuntimeFailed {
            runtime: self.kind.program().into(),
            operation,
            id: id.into(),
            message,
        }
    }
}

fn exit_status(s: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
}

fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Error messages from a runtime's JSON log (`level` error or fatal).
pub fn log_errors(log: &Path) -> Vec<String> {
    let Ok(f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).ok()?;
            let level = v.get("level")?.as_str()?;
            matches!(level, "error" | "fatal" | "panic")
                .then(|| v.get("msg")?.as_str().map(str::to_owned))?
        })
        .collect()
}

impl Backend for OciRuntime {
    fn name(&self) -> &str {
        self.kind.program()
    }

    fn create(&self, id: &str, bundle: &Path) -> Result<(), BackendError> {
        let config = bundle.join("config.json");
        let spec = image_core::oci_spec::runtime::Spec::load(&config).map_err(|source| {
            BackendError::RuntimeSpec {
                path: config.clone(),
                source,
            }
        })?;
        // An init as pid 1 is the native backend's (runc and crun run the
        // program as pid 1; `docker run --init` bind-mounts tini instead).
        let init = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::spec::ANNOTATION_INIT))
            .is_some_and(|v| v == "true");
        if init {
            return Err(BackendError::Unsupported {
                backend: self.kind.program().into(),
                id: id.into(),
                what: "an init process (--init; use the native backend)",
            });
        }
        // A limit without its controller: say so before the runtime fails.
        crate::cgroup::check_limits(&spec).map_err(|e| BackendError::of_cgroup(id, e))
    }

    fn start(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        let log = bundle.join(format!("{}.log", self.kind.program()));
        let pid_file = bundle.join(INIT_PID_FILE);
        let io = |source| BackendError::Io {
            context: format!("preparing {}", bundle.display()),
            source,
        };
        std::fs::write(&log, b"").map_err(io)?;
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let config = bundle.join("config.json");
        let spec = image_core::oci_spec::runtime::Spec::load(&config).map_err(|source| {
            BackendError::RuntimeSpec {
                path: config,
                source,
            }
        })?;
        if let Some(size) = spec
            .process()
            .as_ref()
            .and_then(crate::native::terminal_size)
        {
            return self.start_with_console(id, bundle, (log, pid_file), stdio, size);
        }
        self.spawn_foreground(id, ("run", "--bundle", bundle), log, pid_file, stdio, None)
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<(), BackendError> {
        let sig = signal.as_raw().to_string();
        let out = self.run_cmd("kill", id, &["kill", id, &sig])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failure("kill", id, out.stderr_str().trim().to_owned()))
        }
    }

    fn state(&self, id: &str) -> Result<BackendState, BackendError> {
        let out = self.run_cmd("state", id, &["state", id])?;
        if !out.status.success() {
            return Err(self.failure("state", id, out.stderr_str().trim().to_owned()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| BackendError::Io {
                context: format!("{} state {id}: bad JSON", self.kind.program()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
        let status = match v.get("status").and_then(|s| s.as_str()) {
            Some("created") | Some("creating") => Status::Created,
            Some("running") => Status::Running,
            Some("paused") | Some("pausing") => Status::Paused,
            _ => Status::Stopped,
        };
        let pid = v
            .get("pid")
            .and_then(|p| p.as_u64())
            .filter(|p| *p > 0 && status != Status::Stopped)
            .and_then(|p| u32::try_from(p).ok());
        Ok(BackendState { status, pid })
    }

    /// `<runtime> exec --process <file> <id>` in the foreground (runc and
    /// crun both take an OCI process document); no terminal (it would need
    /// a console socket).
    fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process: &image_core::oci_spec::runtime::Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        if process.terminal() == Some(true) {
            return Err(BackendError::Unsupported {
                backend: self.kind.program().into(),
                id: id.into(),
                what: "a terminal (tty) for exec",
            });
        }
        let n = EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("exec-{}-{n}", std::process::id());
        let process_file = bundle.join(format!("{tag}.json"));
        let log = bundle.join(format!("{tag}.log"));
        let pid_file = bundle.join(format!("{tag}.pid"));
        let io = |source| BackendError::Io {
            context: format!("preparing exec in {}", bundle.display()),
            source,
        };
        let json = serde_json::to_vec(process).map_err(|source| BackendError::Json {
            what: format!("serialising the process of exec {tag}"),
            source,
        })?;
        std::fs::write(&process_file, json).map_err(io)?;
        std::fs::write(&log, b"").map_err(io)?;
        self.spawn_foreground(
            id,
            ("exec", "--process", &process_file),
            log,
            pid_file,
            stdio,
            Some(process_file.clone()),
        )
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        let out = self.run_cmd("delete", id, &args)?;
        if out.status.success() {
            return Ok(());
        }
        match self.failure("delete", id, out.stderr_str().trim().to_owned()) {
            BackendError::NotFound { .. } => Ok(()),
            e => Err(e),
        }
    }
}

/// `s` with each control character escaped (`\u{1b}`), the rest as it is.
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Numbers the exec process files of this process.
static EXEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A `runc run` / `crun run` (or `exec`) in progress.
#[derive(Debug)]
struct OciProcess {
    runtime: OciRuntime,
    id: String,
    child: Waited,
    pumps: Pumps,
    log: PathBuf,
    pid_file: PathBuf,
    status: Option<ExitStatus>,
    finished: bool,
    /// For an exec: its process document, removed with the log and pid
    /// file once it exited. The pid file then names the exec'd process,
    /// which `kill_now` kills (not the container).
    exec_files: Option<PathBuf>,
}

/// What an [`OciProcess`] waits for.
#[derive(Debug)]
enum Waited {
    /// The runtime in the foreground (`run`, `exec`), exiting with the
    /// container's code.
    Runtime(Child),
    /// The container's init itself (pid), orphaned by a runtime that
    /// exited after `create` and reparented to us, its subreaper.
    Orphan(i32),
}

impl Waited {
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Waited::Runtime(child) => Ok(child.try_wait()?.map(exit_status)),
            Waited::Orphan(pid) => reap_orphan(*pid, rustix::process::WaitOptions::NOHANG),
        }
    }

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Waited::Runtime(child) => Ok(exit_status(child.wait()?)),
            Waited::Orphan(pid) => reap_orphan(*pid, rustix::process::WaitOptions::empty())?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::WouldBlock)),
        }
    }

    /// Kills what is waited for (the runtime's group, or the init).
    fn kill(&mut self) {
        match self {
            Waited::Runtime(child) => kill_group(child),
            Waited::Orphan(pid) => {
                if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                let _ = reap_orphan(*pid, rustix::process::WaitOptions::empty());
            }
        }
    }
}

/// `waitpid` on a container init we are the subreaper of.
fn reap_orphan(
    pid: i32,
    options: rustix::process::WaitOptions,
) -> std::io::Result<Option<ExitStatus>> {
    let p = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    loop {
        match rustix::process::waitpid(Some(p), options) {
            Ok(s) => return Ok(s.map(|(_, s)| crate::native::to_status(s))),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl OciProcess {
    fn operation(&self) -> &'static str {
        if self.exec_files.is_some() {
            "exec"
        } else {
            "run"
        }
    }

    /// The error of a failed `wait` / `try_wait` on the runtime's process.
    fn wait_failed(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            context: format!(
                "waiting for {} run {}",
                self.runtime.kind.program(),
                self.id
            ),
            source,
        }
    }

    fn remove_exec_files(&self) {
        if let Some(p) = &self.exec_files {
            for f in [p, &self.log, &self.pid_file] {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

impl Process for OciProcess {
    fn pid(&self) -> Option<u32> {
        // The runtime writes its pid file a little after the container runs.
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| {
                // An exec's pid is only in its pid file.
                if self.exec_files.is_some() {
                    return None;
                }
                self.runtime.state(&self.id).ok()?.pid
            })
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, BackendError> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|e| self.wait_failed(e))?;
        }
        Ok(self.status)
    }

    fn wait(&mut self) -> Result<Exit, BackendError> {
        let status = match self.status {
            Some(s) => s,
            None => {
                let s = self.child.wait().map_err(|e| self.wait_failed(e))?;
                self.status = Some(s);
                s
            }
        };
        let (stdout, stderr) = self.pumps.finish();
        self.finished = true;
        if !status.success() {
            let errors = log_errors(&self.log);
            if !errors.is_empty() {
                self.remove_exec_files();
                return Err(self
                    .runtime
                    .failure(self.operation(), &self.id, errors.join("; ")));
            }
        }
        self.remove_exec_files();
        Ok(Exit {
            status,
            stdout,
            stderr,
        })
    }

    fn kill_now(&mut self) {
        if self.finished {
            return;
        }
        if self.status.is_none() {
            if self.exec_files.is_some() {
                // Only the exec'd process, never the container.
                let pid = std::fs::read_to_string(&self.pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .and_then(rustix::process::Pid::from_raw);
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            } else {
                let _ = self.runtime.kill(&self.id, Signal::KILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(s)) = self.child.try_wait() {
                    self.status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.status.is_none() {
                self.child.kill();
                self.status = Some(ExitStatus(128 + 9));
            }
        }
        self.pumps.finish();
        self.finished = true;
        self.remove_exec_files();
    }
}

impl Drop for OciProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_messages_are_classified() {
        let tmp = tempfile::tempdir().unwrap();
        let rt =
            OciRuntime::with_binary(RuntimeKind::Runc, Path::new("/bin/sh"), tmp.path()).unwrap();
        assert!(matches!(
            rt.failure("state", "c1", "container does not exist".into()),
            BackendError::NotFound { .. }
        ));
        assert!(matches!(
            rt.failure(
                "state",
                "c1",
                "error opening file `/r/c1/status`: No such file or directory".into()
            ),
            BackendError::NotFound { .. }
        ));
        let e = rt.failure("run", "c1", "mount proc: operation not permitted".into());
        assert_eq!(
            image_core::Classify::kind(&e),
            image_core::ErrorKind::PermissionDenied
        );
        assert!(matches!(
            rt.failure("run", "c1", "exec: \"x\": executable file not found".into()),
            BackendError::RuntimeFailed { .. }
        ));
        assert!(
            OciRuntime::with_binary(RuntimeKind::Runc, Path::new("/no/runc"), tmp.path()).is_err()
        );
    }

    /// A runtime's message naming what an image controls (its program, a
    /// mount path) reaches the error with its control characters escaped,
    /// and is classified as before.
    #[test]
    fn runtime_messages_are_shown_escaped() {
        let tmp = tempfile::tempdir().unwrap();
        let rt =
            OciRuntime::with_binary(RuntimeKind::Runc, Path::new("/bin/sh"), tmp.path()).unwrap();
        let e = rt.failure(
            "run",
            "c1",
            "exec: \"\u{1b}]0;pwned\u{7}\": executable file not found".into(),
        );
        assert!(matches!(e, BackendError::RuntimeFailed { .. }), "{e:?}");
        assert!(
            !e.to_string().contains(char::is_control),
            "raw control characters"
        );
        assert!(
            e.to_string().contains(r#"exec: "\u{1b}]0;pwned\u{7}""#),
            "{e}"
        );
        let e = rt.failure("run", "c1", "open /\u{1b}[2J: permission denied".into());
        assert!(matches!(e, BackendError::PermissionDenied { .. }), "{e:?}");
        assert!(
            !e.to_string().contains(char::is_control),
            "raw control characters"
        );
    }

    #[test]
    fn log_errors_reads_json_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"boom\"}\nnot json\n",
        )
        .unwrap();
        assert_eq!(log_errors(&log), vec!["boom".to_owned()]);
        assert!(log_errors(&tmp.path().join("missing")).is_empty());
    }
}
