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

pub mod attach;
pub mod log;
pub(crate) mod query;

pub(crate) use query::observed;
pub use query::{follow, logs, try_wait, wait};

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use image_core::{Classify, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::ContainerError;
use crate::model::RestartPolicy;

pub use crate::model::{Detached, LogOptions};
pub use attach::{AttachEnd, AttachError, AttachInput, Attachment, DetachKeys, TerminalLink};
pub use log::{LogEntry, LogFollower, LogQuery};

/// The environment variable that marks a run of the program as a monitor
/// (`1`: the first re-execution, `2`: the monitor).
pub const MONITOR_ENV: &str = "IMAGE_RUNTIME_MONITOR";
/// The environment variable holding the monitor's arguments (JSON).
pub(crate) const ARGS_ENV: &str = "IMAGE_RUNTIME_MONITOR_ARGS";
/// The prefix of the monitor's report line on its standard output (other
/// lines, such as a test harness's, are ignored).
pub(crate) const REPORT_PREFIX: &str = "image-runtime-monitor: ";
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

impl std::str::FromStr for RestartPolicy {
    type Err = log::DetachOptionError;

    /// Docker's forms: `no`, `on-failure`, `on-failure:N`, `always`,
    /// `unless-stopped`.
    fn from_str(s: &str) -> Result<RestartPolicy, log::DetachOptionError> {
        Ok(match s.split_once(':') {
            None if s == "no" => RestartPolicy::No,
            None if s == "always" => RestartPolicy::Always,
            None if s == "unless-stopped" => RestartPolicy::UnlessStopped,
            None if s == "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max_retries: Some(n.parse().map_err(|_| log::DetachOptionError::Value {
                    option: s.to_owned(),
                    why: "the most restarts must be a number",
                })?),
            },
            _ => {
                return Err(log::DetachOptionError::Unknown {
                    option: s.to_owned(),
                })
            }
        })
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::No => f.write_str("no"),
        }
    }
}

/// Runs the monitor when this process was started as one (see the
/// [module docs](self)) and then exits; returns at once otherwise.
pub use crate::container::monitor::run_if_requested;

/// The class a monitor's report names ([`ErrorKind::Io`] for a name this
/// build does not know).
pub(crate) fn kind_named(name: &str) -> ErrorKind {
    ErrorKind::from_name(name).unwrap_or(ErrorKind::Io)
}

/// Writes the report line on standard output (the caller's pipe), then
/// points standard output at `/dev/null`, so the caller sees the pipe's
/// end even when it missed the line.
pub(crate) fn report(r: &Report) {
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

/// Asks the monitor of the container in `dir` not to restart it (a file
/// it looks for; no symlink followed).
pub(crate) fn request_stop(dir: &std::path::Path) -> Result<(), ContainerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(STOP_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map(drop)
        .map_err(ContainerError::state(&path))
}

/// The whole error chain of `e`, as one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
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

/// How long the caller waits for the monitor's report.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) enum ReportRead {
    /// The report.
    Report(Report),
    /// The pipe ended (or overflowed) without one.
    Ended,
    /// None came in time.
    TimedOut,
}

/// Reads the monitor's report from `out`: the first line holding
/// [`REPORT_PREFIX`] (a test harness may print before it on the same
/// line); other output is skipped. Bounded in time and in bytes (1 MiB).
pub(crate) fn read_report(out: std::process::ChildStdout, timeout: Duration) -> ReportRead {
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

    /// Every policy's text parses back to it.
    #[test]
    fn restart_policies_round_trip() {
        use RestartPolicy::*;
        for p in [
            No,
            Always,
            UnlessStopped,
            OnFailure { max_retries: None },
            OnFailure {
                max_retries: Some(2),
            },
        ] {
            assert_eq!(p.to_string().parse::<RestartPolicy>().unwrap(), p);
        }
        for bad in ["", "sometimes", "on-failure:x", "always:3"] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_cross_the_pipe() {
        for k in ErrorKind::ALL {
            assert_eq!(kind_named(k.as_str()), k);
        }
    }
}
