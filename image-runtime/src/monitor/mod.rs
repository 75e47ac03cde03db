//! The monitor of a detached container, as conmon is for podman and the
//! shim for containerd: a process of its own per container, in a session
//! of its own, that owns the container's process, writes its output to the
//! container's [`log`] (Docker's json-file format, capped and rotated),
//! records each exit (code and time) in the container's record, restarts
//! it as its [`RestartPolicy`] says (Docker's backoff: 100 ms doubling,
//! back to 100 ms after a run of 10 s or more, at most a minute), and
//! deletes an auto-removed container when it is done.
//!
//! # The one requirement: the hook
//! The monitor is the calling program itself, run again: `/proc/self/exe`
//! (or the command of [`DetachOptions::monitor_command`]) with a marker in
//! its environment, as moby's `pkg/reexec` does. A program that calls
//! [`Container::start_detached`](crate::Container::start_detached) must
//! call [`run_if_requested`] first thing in `main`: it returns at once in
//! an ordinary run, and never returns in a monitor. Re-executing is what
//! makes the monitor safe: forking a multithreaded caller and running Rust
//! code in the child could deadlock on a lock some other thread held.
//!
//! ```no_run
//! // First thing in `main`:
//! image_runtime::monitor::run_if_requested();
//! // ... the program, which may call Container::start_detached.
//! ```
//!
//! The start is two re-executions, the classic double fork: the first
//! (a child of the caller) calls `setsid` and spawns the second, the
//! monitor, then exits at once; the monitor, reparented to init (or the
//! nearest subreaper), cannot regain a controlling terminal and is not the
//! caller's child, so the caller never waits for it. The monitor reports
//! the start (or its error, with its class) on a pipe, then the caller
//! returns. Its own diagnostics go to `monitor.log` in the container's
//! directory.
//!
//! For the native backend the monitor runs the container through the
//! ordinary start path, so the container's init dies with the monitor
//! (`PR_SET_PDEATHSIG`); for runc and crun it runs the foreground
//! `runc run`. Either way the monitor is the record's
//! [`owner`](crate::ContainerRecord::owner): while it lives the container
//! is running; a monitor killed while its container ran makes it
//! [`Unknown`](crate::ContainerStatus::Unknown), which `rm -f` and
//! [`Runtime::gc`](crate::Runtime::gc) clean up; after a reboot `gc`
//! records it as stopped (exit code 255, as Docker shows it) and mounts
//! its root filesystem again, so it can be started or removed.

pub mod log;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image_core::{Classify, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::backend::{Input, Output, Stdio};
use crate::container::handle::Container;
use crate::error::ContainerError;
use crate::model::{ContainerStatus, RestartPolicy};
use crate::runtime::Runtime;

pub use crate::model::{Detached, LogOptions};
pub use log::{LogEntry, LogFollower, LogQuery};

/// The environment variable that marks a run of the program as a monitor
/// (`1`: the first re-execution, `2`: the monitor).
pub const MONITOR_ENV: &str = "IMAGE_RUNTIME_MONITOR";
/// The environment variable holding the monitor's arguments (JSON).
const ARGS_ENV: &str = "IMAGE_RUNTIME_MONITOR_ARGS";
/// The prefix of the monitor's report line on its standard output (other
/// lines, such as a test harness's, are ignored).
const REPORT_PREFIX: &str = "image-runtime-monitor: ";
/// The file in a container's directory that asks its monitor not to
/// restart it (`stop`).
pub(crate) const STOP_FILE: &str = "stop-requested";
/// The monitor's own diagnostics, in the container's directory.
pub const MONITOR_LOG: &str = "monitor.log";

/// What the monitor is told.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MonitorArgs {
    /// The runtime's state directory.
    pub(crate) root: PathBuf,
    /// The container.
    pub(crate) id: String,
    /// `native`, `runc` or `crun`.
    pub(crate) backend: String,
}

/// What the monitor reports once the container started (or failed to).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// Running.
    Started,
    /// Not started: the error's class and message.
    Failed {
        /// [`ErrorKind::as_str`].
        kind: String,
        /// The error and its sources.
        message: String,
    },
}

/// How a container is run detached.
#[derive(Debug, Clone, Default)]
pub struct DetachOptions {
    /// When the monitor restarts the container.
    pub restart: RestartPolicy,
    /// The log's cap and rotation.
    pub log: LogOptions,
    /// The program (and arguments) that runs this program's
    /// [`run_if_requested`] hook; `None`: `/proc/self/exe` without
    /// arguments. A test harness names itself with the arguments that run
    /// one test that calls the hook.
    pub monitor_command: Option<Vec<std::ffi::OsString>>,
}

/// Errors of starting a container detached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetachError {
    /// Loading, checking or recording the container failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Its backend cannot be run by a monitor (only native, runc and crun).
    #[error("container {id}: backend {backend} cannot run detached")]
    Unsupported {
        /// The container.
        id: String,
        /// The backend's name.
        backend: String,
    },
    /// A monitor still manages the container (it waits to restart it).
    #[error("container {id} is still managed by its monitor (pid {pid}): stop it first")]
    MonitorRunning {
        /// The container.
        id: String,
        /// The monitor's PID.
        pid: u32,
    },
    /// The monitor could not be started.
    #[error("starting the monitor of container {id}")]
    Spawn {
        /// The container.
        id: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The monitor failed to start the container; the error crossed a
    /// process boundary, so its class and text are what is left of it.
    #[error("container {id} did not start: {message}")]
    Start {
        /// The container.
        id: String,
        /// The class of the monitor's error.
        kind: ErrorKind,
        /// Its text (with its sources).
        message: String,
    },
    /// The monitor did not report in time; it may still start the
    /// container.
    #[error("the monitor of container {id} did not report within {waited:?} (see {log})")]
    NoReport {
        /// The container.
        id: String,
        /// How long the caller waited.
        waited: Duration,
        /// The monitor's diagnostics.
        log: PathBuf,
    },
    /// The monitor ended without reporting (killed, or no hook in the
    /// program: see the [module docs](self)).
    #[error("the monitor of container {id} exited without starting it (see {log})")]
    MonitorDied {
        /// The container.
        id: String,
        /// The monitor's diagnostics.
        log: PathBuf,
    },
}

impl Classify for DetachError {
    fn kind(&self) -> ErrorKind {
        match self {
            DetachError::Container(e) => e.kind(),
            DetachError::Unsupported { .. } => ErrorKind::Unsupported,
            DetachError::MonitorRunning { .. } => ErrorKind::FailedPrecondition,
            DetachError::Spawn { source, .. } => ErrorKind::from_io(source),
            DetachError::Start { kind, .. } => *kind,
            DetachError::MonitorDied { .. } => ErrorKind::Io,
            DetachError::NoReport { .. } => ErrorKind::Unavailable,
        }
    }
}

/// The classes a monitor's report can name.
const KINDS: [ErrorKind; 13] = [
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::InvalidInput,
    ErrorKind::DigestMismatch,
    ErrorKind::SizeMismatch,
    ErrorKind::Unsupported,
    ErrorKind::PermissionDenied,
    ErrorKind::FailedPrecondition,
    ErrorKind::Unsafe,
    ErrorKind::Io,
    ErrorKind::Unauthenticated,
    ErrorKind::Unavailable,
    ErrorKind::Cancelled,
];

pub(crate) fn kind_named(name: &str) -> ErrorKind {
    KINDS
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(ErrorKind::Io)
}

/// Runs the monitor when this process was started as one (see the
/// [module docs](self)) and then exits; returns at once otherwise. Call it
/// first thing in `main` of any program that starts detached containers.
pub fn run_if_requested() {
    match std::env::var(MONITOR_ENV).as_deref() {
        Ok("1") => first_stage(),
        Ok("2") => {
            let code = monitor();
            std::process::exit(code)
        }
        _ => {}
    }
}

/// The first re-execution: a new session, the monitor spawned in it, exit.
fn first_stage() -> ! {
    // Not a process-group leader (a plain child), so setsid succeeds.
    let _ = rustix::process::setsid();
    let spawned = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(MONITOR_ENV, "2")
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            report(&Report::Failed {
                kind: ErrorKind::from_io(&e).as_str().to_owned(),
                message: format!("spawning the monitor: {e}"),
            });
            std::process::exit(1)
        }
    }
}

/// Writes the report line on standard output (the caller's pipe), then
/// points standard output at `/dev/null`, so the caller sees the pipe's
/// end even when it missed the line.
fn report(r: &Report) {
    let line = format!(
        "\n{REPORT_PREFIX}{}\n",
        serde_json::to_string(r).unwrap_or_default()
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// The whole error chain of `e`, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The monitor: returns its exit status.
fn monitor() -> i32 {
    let _ = std::env::set_current_dir("/");
    let args: MonitorArgs = match std::env::var(ARGS_ENV)
        .ok()
        .and_then(|a| serde_json::from_str(&a).ok())
    {
        Some(a) => a,
        None => {
            report(&Report::Failed {
                kind: ErrorKind::InvalidInput.as_str().to_owned(),
                message: format!("the monitor's arguments ({ARGS_ENV}) are missing or malformed"),
            });
            return 2;
        }
    };
    let runtime = match open_runtime(&args) {
        Ok(rt) => rt,
        Err(e) => {
            report(&Report::Failed {
                kind: e.kind().as_str().to_owned(),
                message: chain(&e),
            });
            return 1;
        }
    };
    match Monitor::new(runtime, &args.id) {
        Ok(mut m) => m.run(),
        Err(e) => {
            report(&Report::Failed {
                kind: e.kind().as_str().to_owned(),
                message: chain(&e),
            });
            1
        }
    }
}

/// The runtime of the monitor's container, without the `gc` the public
/// constructors run (the caller just ran it).
fn open_runtime(args: &MonitorArgs) -> Result<Runtime, ContainerError> {
    let state = crate::state::StateDir::open(&args.root)?;
    let backend: Arc<dyn crate::backend::Backend> = match args.backend.as_str() {
        crate::native::NAME => Arc::new(crate::native::NativeRuntime::with_options(
            &args.root.join("native"),
            crate::native::NativeOptions::default(),
        )?),
        name => {
            let kind = match name {
                "crun" => crate::oci_runtime::RuntimeKind::Crun,
                _ => crate::oci_runtime::RuntimeKind::Runc,
            };
            Arc::new(crate::oci_runtime::OciRuntime::new(
                kind,
                &args.root.join(kind.program()),
            )?)
        }
    };
    Ok(Runtime::from_parts(args.root.clone(), state, backend, None))
}

/// Whether a run that ended with `code` (`None`: unknown) is restarted,
/// after `restarts` restarts so far, under `policy`; never after a stop.
pub(crate) fn should_restart(
    policy: RestartPolicy,
    code: Option<i32>,
    restarts: u32,
    stopped: bool,
) -> bool {
    if stopped {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { max_retries } => {
            code != Some(0) && max_retries.is_none_or(|m| restarts < m)
        }
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

/// Docker's restart delay: 100 ms, doubled after each restart, back to
/// 100 ms once a run lasted 10 s, at most a minute.
pub(crate) fn next_delay(previous: Option<Duration>, ran: Duration) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    match previous {
        Some(p) if ran < Duration::from_secs(10) => (p * 2).min(Duration::from_secs(60)),
        _ => FIRST,
    }
}

struct Monitor {
    runtime: Runtime,
    id: String,
    dir: PathBuf,
    detached: Detached,
    log: Arc<Mutex<log::LogWriter>>,
}

impl Monitor {
    fn new(runtime: Runtime, id: &str) -> Result<Monitor, ContainerError> {
        let c = runtime.load(id)?;
        let dir = runtime.state().dir(id);
        let detached = c.record.detached.clone().unwrap_or_default();
        let log = log::LogWriter::open(&dir, detached.log)
            .map_err(ContainerError::state(dir.join(log::LOG_FILE)))?;
        Ok(Monitor {
            runtime,
            id: id.to_owned(),
            dir,
            detached,
            log: Arc::new(Mutex::new(log)),
        })
    }

    fn stop_requested(&self) -> bool {
        self.dir.join(STOP_FILE).exists()
    }

    /// Runs the container until its policy says no more; returns the
    /// monitor's exit status.
    fn run(&mut self) -> i32 {
        let mut delay = None;
        let mut first = true;
        loop {
            let started = Instant::now();
            let code = match self.run_once(first) {
                Ok(code) => code,
                Err(e) => {
                    if first {
                        report(&Report::Failed {
                            kind: e.kind().as_str().to_owned(),
                            message: chain(&e),
                        });
                    } else {
                        eprintln!("monitor of {}: restarting failed: {}", self.id, chain(&e));
                    }
                    return 1;
                }
            };
            first = false;
            if !should_restart(
                self.detached.restart,
                code,
                self.detached.restart_count,
                self.stop_requested(),
            ) {
                break;
            }
            let d = next_delay(delay, started.elapsed());
            delay = Some(d);
            if !self.sleep_unless_stopped(d) {
                break;
            }
            self.detached.restart_count += 1;
        }
        let auto_remove = self
            .runtime
            .state()
            .load(&self.id)
            .is_ok_and(|r| r.auto_remove);
        if auto_remove {
            if let Err(e) = crate::container::volumes::delete_with_volumes(&self.runtime, &self.id)
            {
                eprintln!("monitor of {}: removing it failed: {}", self.id, chain(&e));
                return 1;
            }
        }
        0
    }

    /// Sleeps `d`; false when a stop was asked for meanwhile.
    fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stop_requested() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    /// One run: start, pump the output into the log, wait, record the exit.
    fn run_once(&mut self, first: bool) -> Result<Option<i32>, ContainerError> {
        let mut c: Container = self.runtime.load(&self.id)?;
        let (out_r, out_w) = pipe(&self.dir)?;
        let (err_r, err_w) = pipe(&self.dir)?;
        self.detached.started_at = Some(log::format_rfc3339(SystemTime::now()));
        self.detached.finished_at = None;
        self.detached.boot_id = crate::model::boot_id();
        c.record.detached = Some(self.detached.clone());
        let stdio = Stdio {
            stdin: Input::Null,
            stdout: Output::Fd(out_w),
            stderr: Output::Fd(err_w),
        };
        let mut running = c.start(stdio)?;
        if first {
            report(&Report::Started);
        }
        let pumps = [
            pump(out_r, "stdout", Arc::clone(&self.log)),
            pump(err_r, "stderr", Arc::clone(&self.log)),
        ];
        let result = running.process.wait();
        let code = result.as_ref().ok().map(|e| e.status.code());
        if let Err(e) = &result {
            eprintln!("monitor of {}: waiting failed: {}", self.id, chain(e));
        }
        // Reaped: dropping the process releases the backend's ends of the
        // pipes; once the pumps have logged everything, the exit is
        // recorded (a waiter that sees it finds the whole log).
        let crate::container::handle::RunningContainer {
            container: mut c,
            process,
        } = running;
        drop(process);
        for p in pumps {
            let _ = p.join();
        }
        self.detached.finished_at = Some(log::format_rfc3339(SystemTime::now()));
        self.detached.exits += 1;
        c.record.status = ContainerStatus::Stopped;
        c.record.exit_code = code;
        c.record.detached = Some(self.detached.clone());
        self.runtime.state().save(&c.record)?;
        Ok(code)
    }
}

/// A CLOEXEC pipe (read end, write end).
fn pipe(dir: &Path) -> Result<(OwnedFd, OwnedFd), ContainerError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ContainerError::state(dir)(e.into()))
}

/// Copies one output stream of the container into the log, entry by
/// entry, until its end. A log that cannot be written is reported once and
/// the output then dropped, so the container never blocks on a full pipe.
fn pump(
    fd: OwnedFd,
    stream: &'static str,
    log: Arc<Mutex<log::LogWriter>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(fd);
        let mut split = log::LineSplitter::default();
        let mut buf = vec![0u8; 64 << 10];
        let mut failed = false;
        let mut write = |entry: &[u8]| {
            if failed {
                return;
            }
            let r = match log.lock() {
                Ok(mut w) => w.write(stream, entry),
                Err(_) => Err(std::io::Error::other("log writer poisoned")),
            };
            if let Err(e) = r {
                eprintln!("writing the container log: {e}");
                failed = true;
            }
        };
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => split.feed(&buf[..n], &mut write),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        split.finish(&mut write);
    })
}

/// Starts the monitor of container `c` (see [`crate::Container::start_detached`]).
pub(crate) fn spawn_monitor(
    runtime: &Runtime,
    id: &str,
    backend: &str,
    options: &DetachOptions,
) -> Result<(), DetachError> {
    let dir = runtime.state().dir(id);
    let log_path = dir.join(MONITOR_LOG);
    let stderr = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(ContainerError::state(&log_path))?
    };
    let args = serde_json::to_string(&MonitorArgs {
        root: runtime.root().to_owned(),
        id: id.to_owned(),
        backend: backend.to_owned(),
    })
    .map_err(|source| ContainerError::Json {
        what: format!("serialising the monitor's arguments for {id}"),
        source,
    })?;
    let (program, rest) = match &options.monitor_command {
        Some(cmd) if !cmd.is_empty() => (cmd[0].clone(), cmd[1..].to_vec()),
        _ => ("/proc/self/exe".into(), Vec::new()),
    };
    let spawn_err = |source| DetachError::Spawn {
        id: id.to_owned(),
        source,
    };
    let mut child = std::process::Command::new(program)
        .args(rest)
        .env(MONITOR_ENV, "1")
        .env(ARGS_ENV, args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(spawn_err)?;
    let out = child.stdout.take();
    // The first stage exits as soon as it has spawned the monitor.
    let _ = child.wait();
    let Some(out) = out else {
        return Err(DetachError::MonitorDied {
            id: id.to_owned(),
            log: log_path,
        });
    };
    match read_report(out, START_TIMEOUT) {
        ReportRead::Report(Report::Started) => Ok(()),
        ReportRead::Report(Report::Failed { kind, message }) => Err(DetachError::Start {
            id: id.to_owned(),
            kind: kind_named(&kind),
            message,
        }),
        ReportRead::TimedOut => Err(DetachError::NoReport {
            id: id.to_owned(),
            waited: START_TIMEOUT,
            log: log_path,
        }),
        ReportRead::Ended => Err(DetachError::MonitorDied {
            id: id.to_owned(),
            log: log_path,
        }),
    }
}

/// How long the caller waits for the monitor's report.
const START_TIMEOUT: Duration = Duration::from_secs(120);

enum ReportRead {
    Report(Report),
    Ended,
    TimedOut,
}

/// Reads the monitor's report from `out`: the first line holding
/// [`REPORT_PREFIX`] (a test harness may print before it on the same
/// line); other output is skipped. Bounded in time and in bytes (1 MiB).
fn read_report(out: std::process::ChildStdout, timeout: Duration) -> ReportRead {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = Instant::now() + timeout;
    let mut out = out;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(at) = line.find(REPORT_PREFIX) {
                if let Ok(r) = serde_json::from_str(line[at + REPORT_PREFIX.len()..].trim()) {
                    return ReportRead::Report(r);
                }
            }
        }
        if buf.len() > 1 << 20 {
            return ReportRead::Ended;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ReportRead::TimedOut;
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&out, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return ReportRead::TimedOut,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return ReportRead::Ended,
        }
        match out.read(&mut chunk) {
            Ok(0) | Err(_) => return ReportRead::Ended,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's rules: on-failure counts restarts, a stop always wins.
    #[test]
    fn restart_rules() {
        use RestartPolicy::*;
        let two = OnFailure {
            max_retries: Some(2),
        };
        assert!(!should_restart(No, Some(1), 0, false));
        assert!(should_restart(two, Some(1), 0, false));
        assert!(should_restart(two, Some(1), 1, false));
        assert!(!should_restart(two, Some(1), 2, false));
        assert!(!should_restart(two, Some(0), 0, false));
        assert!(should_restart(two, None, 0, false));
        assert!(should_restart(
            OnFailure { max_retries: None },
            Some(3),
            1000,
            false
        ));
        for p in [Always, UnlessStopped] {
            assert!(should_restart(p, Some(0), 99, false));
            assert!(!should_restart(p, Some(0), 0, true));
        }
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let ms = Duration::from_millis;
        let short = ms(10);
        let mut d = next_delay(None, short);
        let mut seen = vec![d];
        for _ in 0..12 {
            d = next_delay(Some(d), short);
            seen.push(d);
        }
        assert_eq!(&seen[..4], &[ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(60));
        assert_eq!(next_delay(Some(ms(800)), Duration::from_secs(10)), ms(100));
    }

    #[test]
    fn kinds_cross_the_pipe() {
        for k in KINDS {
            assert_eq!(kind_named(k.as_str()), k);
        }
    }
}
