//! The monitor's process side (see [`crate::monitor`] for the design): the
//! hook that turns a re-executed program into a monitor, the monitor's
//! loop (start, pump the output into the log, wait, record, restart) and
//! its spawning by the caller.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image_core::{Classify, ErrorKind};

use crate::backend::{Input, Output, Stdio};
use crate::container::handle::Container;
use crate::error::ContainerError;
use crate::model::{ContainerStatus, Detached};
use crate::monitor::attach::{self, Hub};
use crate::monitor::log;
use crate::monitor::{
    chain, kind_named, next_delay, read_report, report, should_restart, DetachError, DetachOptions,
    MonitorArgs, Report, ReportRead, ARGS_ENV, MONITOR_ENV, MONITOR_LOG, START_TIMEOUT, STOP_FILE,
};
use crate::runtime::Runtime;

/// Runs the monitor when this process was started as one (see the
/// [module docs](crate::monitor)) and then exits; returns at once otherwise. Call it
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

struct Monitor {
    runtime: Runtime,
    id: String,
    dir: PathBuf,
    detached: Detached,
    log: Arc<Mutex<log::LogWriter>>,
    /// The attach socket's attachers and the run's stdin.
    hub: Arc<Hub>,
}

impl Monitor {
    fn new(runtime: Runtime, id: &str) -> Result<Monitor, ContainerError> {
        let c = runtime.load(id)?;
        let dir = runtime.state().dir(id);
        let detached = c.record.detached.clone().unwrap_or_default();
        let log = log::LogWriter::open(&dir, detached.log)
            .map_err(ContainerError::state(dir.join(log::LOG_FILE)))?;
        // Before the monitor starts a thread of its own (the bind changes
        // the process-wide umask for a moment).
        let hub = Hub::listen(&dir).map_err(ContainerError::state(dir.join(attach::SOCKET)))?;
        Ok(Monitor {
            runtime,
            id: id.to_owned(),
            dir,
            detached,
            log: Arc::new(Mutex::new(log)),
            hub,
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
        let (stdin, keep) = self.stdin_of(&c)?;
        let (master_tx, master_rx) = std::sync::mpsc::channel();
        let stdin = match stdin {
            Some(input) => Input::Terminal {
                input,
                master: master_tx,
            },
            None => Input::Null,
        };
        let stdio = Stdio {
            stdin,
            stdout: Output::Fd(out_w),
            stderr: Output::Fd(err_w),
        };
        let mut running = c.start(stdio)?;
        // A terminal's master is sent while the start makes it.
        self.hub.begin_run(keep, master_rx.try_recv().ok());
        if first {
            report(&Report::Started);
        }
        let pumps = [
            pump(
                out_r,
                "stdout",
                Arc::clone(&self.log),
                Arc::clone(&self.hub),
            ),
            pump(
                err_r,
                "stderr",
                Arc::clone(&self.log),
                Arc::clone(&self.hub),
            ),
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
        let saved = self.runtime.state().save(&c.record);
        // Attachers read the exit from the record once disconnected.
        self.hub.end_run();
        saved?;
        Ok(code)
    }

    /// The container's stdin for one run, when it was made with stdin
    /// (`-i`) or a terminal (whose master the monitor needs for window
    /// sizes): the read end for the container, and the write end the
    /// attachers' input goes to (`None` without `-i`: no input).
    fn stdin_of(
        &self,
        c: &Container,
    ) -> Result<(Option<OwnedFd>, Option<attach::RunStdin>), ContainerError> {
        let spec = c.spec()?;
        let wants_stdin = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::spec::ANNOTATION_STDIN))
            .is_some_and(|v| v == "true");
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if !wants_stdin && !terminal {
            return Ok((None, None));
        }
        let (r, w) = pipe(&self.dir)?;
        let w = wants_stdin
            .then(|| attach::RunStdin::new(w))
            .transpose()
            .map_err(ContainerError::state(&self.dir))?;
        Ok((Some(r), w))
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
    hub: Arc<Hub>,
) -> std::thread::JoinHandle<()> {
    let kind = if stream == "stderr" {
        attach::OUT_STDERR
    } else {
        attach::OUT_STDOUT
    };
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
                Ok(n) => {
                    hub.broadcast(kind, &buf[..n]);
                    split.feed(&buf[..n], &mut write)
                }
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
