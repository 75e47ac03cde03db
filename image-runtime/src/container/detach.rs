//! Detached containers, the library side of `docker run -d`: a container
//! started under its own monitor process ([`crate::monitor`]), and the
//! verbs an orchestrator calls on it by ID from any process, with no
//! thread of its own per container: [`Runtime::stop`], [`Runtime::wait`]
//! (blocking) and [`Runtime::try_wait`] (not), [`Runtime::logs`] with a
//! [`LogFollower`] to poll, [`Runtime::attach`] (blocking),
//! [`Runtime::restart`]. `gc` reconciles what a reboot left
//! ([`reconcile`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::Signal;
use crate::container::handle::Container;
use crate::error::ContainerError;
use crate::model::{ContainerRecord, ContainerStatus, Detached};
use crate::monitor::log::{self, LogEntry, LogFollower, LogQuery};
use crate::monitor::{follow, logs, observed, try_wait, wait};
use crate::monitor::{request_stop, DetachError, DetachOptions, STOP_FILE};
use crate::monitor::{AttachEnd, AttachError, Attachment, DetachKeys};
use crate::runtime::Runtime;

use crate::monitor::query::POLL;

impl Container {
    /// Starts the container under a monitor process of its own and returns
    /// its record once the monitor reports it running (or the start's
    /// error). The caller may exit at once: the monitor owns the process,
    /// logs its output, records its exit, restarts it as
    /// [`DetachOptions::restart`] says and deletes it afterwards when it
    /// is [auto-removed](crate::ContainerBuilder::auto_remove).
    ///
    /// Blocks only for the start. Needs root, as every start does, and the
    /// program's [`run_if_requested`](crate::monitor::run_if_requested)
    /// hook (the monitor is this program run again: see [`crate::monitor`]).
    /// The native backend's monitor uses the default
    /// [`NativeOptions`](crate::NativeOptions).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use image_runtime::monitor::{DetachOptions, LogQuery};
    /// use image_runtime::{NativeOptions, Rootfs, Runtime};
    ///
    /// image_runtime::monitor::run_if_requested(); // first thing in main
    /// let rt = Runtime::native("/var/lib/c".as_ref(), NativeOptions::default())?;
    /// let c = rt
    ///     .container(Rootfs::Directory("/srv/rootfs".into()))
    ///     .cmd(["/bin/sh", "-c", "echo up; sleep 1000"])
    ///     .create()?;
    /// let record = c.start_detached(&DetachOptions::default())?;
    /// let logs = rt.logs(&record.id, &LogQuery::default())?;
    /// rt.stop(&record.id, Duration::from_secs(10))?;
    /// assert_eq!(rt.wait(&record.id, None)?, Some(143));
    /// # let _ = logs; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DetachError`]: the container not created or stopped
    /// ([`ContainerError::WrongStatus`]), a monitor still waiting to restart
    /// it, a backend other than native, runc and crun, the monitor not
    /// started or dead, or the start's own error with its class.
    pub fn start_detached(
        mut self,
        options: &DetachOptions,
    ) -> Result<ContainerRecord, DetachError> {
        let id = self.record.id.clone();
        match self.record.status {
            ContainerStatus::Created | ContainerStatus::Stopped => {}
            status => {
                return Err(ContainerError::WrongStatus {
                    id,
                    status,
                    operation: "start",
                }
                .into())
            }
        }
        if let Some(owner) = self.record.owner.filter(|_| monitor_alive(&self.record)) {
            if owner.pid != std::process::id() {
                return Err(DetachError::MonitorRunning { id, pid: owner.pid });
            }
        }
        let backend = self.record.backend.clone();
        if !matches!(backend.as_str(), crate::native::NAME | "runc" | "crun") {
            return Err(DetachError::Unsupported { id, backend });
        }
        let dir = self.runtime.state().dir(&id);
        remove_stop_file(&dir)?;
        self.record.detached = Some(Detached {
            restart: options.restart,
            log: options.log,
            boot_id: crate::model::boot_id(),
            ..Detached::default()
        });
        self.runtime.state().save(&self.record)?;
        crate::container::monitor::spawn_monitor(&self.runtime, &id, &backend, options)?;
        match self.runtime.state().load(&id) {
            Ok(r) => Ok(r),
            // Ran and was removed already (auto-removed, quick).
            Err(ContainerError::NotFound { .. }) => Ok(self.record),
            Err(e) => Err(e.into()),
        }
    }
}

/// True while the monitor of a detached record runs.
fn monitor_alive(r: &ContainerRecord) -> bool {
    r.detached.is_some() && r.owner.is_some_and(|o| o.is_alive())
}

fn remove_stop_file(dir: &Path) -> Result<(), ContainerError> {
    let path = dir.join(STOP_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ContainerError::state(&path)(e)),
        _ => Ok(()),
    }
}

impl Runtime {
    /// Stops a running container as `docker stop` does: its monitor is
    /// told not to restart it, SIGTERM goes to its init, and after `grace`
    /// SIGKILL; returns once it is no longer running, with its exit code.
    /// Works on an attached container too (its owner records the exit).
    /// Blocks up to `grace` plus the time the kill takes; needs root.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`],
    /// [`ContainerError::Backend`] when a signal cannot be sent to a
    /// running container, [`ContainerError::Timeout`] when it still runs
    /// 30 s after SIGKILL.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>, ContainerError> {
        self.stop_with(id, Signal::TERM, grace)
    }

    /// As [`Runtime::stop`] with `signal` in place of SIGTERM (`docker
    /// stop --signal`); SIGKILL still follows after `grace`.
    ///
    /// # Errors
    /// As [`Runtime::stop`].
    pub fn stop_with(
        &self,
        id: &str,
        signal: Signal,
        grace: Duration,
    ) -> Result<Option<i32>, ContainerError> {
        crate::state::validate_id(id)?;
        let dir = self.state().dir(id);
        let r = self.state().load(id)?;
        if r.detached.is_some() {
            request_stop(&dir)?;
        }
        let root = self.root().to_owned();
        // A signal that cannot be sent yet (runc still setting the
        // container up) is tried again until the limit.
        let mut unsent = None;
        for (signal, limit) in [(signal, grace), (Signal::KILL, Duration::from_secs(30))] {
            let end = Instant::now() + limit;
            let mut sent = false;
            while try_wait(&root, id)?.is_none() {
                if !sent {
                    match self.backend().kill(id, signal) {
                        Ok(()) => {
                            sent = true;
                            unsent = None;
                        }
                        Err(e) => unsent = Some(e),
                    }
                }
                if Instant::now() >= end {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        if let Some(e) = unsent.filter(|_| matches!(try_wait(&root, id), Ok(None))) {
            return Err(e.into());
        }
        let code = match try_wait(&root, id)? {
            Some(code) => code,
            None => {
                return Err(ContainerError::Timeout {
                    id: id.to_owned(),
                    operation: "stop",
                })
            }
        };
        // Told not to restart, the monitor exits once it has recorded the
        // exit: wait for that, so a start right after finds it gone.
        if r.detached.is_some() {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end && monitor_alive(&self.state().load(id)?) {
                std::thread::sleep(POLL);
            }
        }
        Ok(code)
    }

    /// Waits until the current run of container `id` ends and returns its
    /// exit code, as `docker wait` does (a container that is not running
    /// returns its last code at once; `None` when unknown). Blocks, polling
    /// the record (no thread, no child of ours needed: any process can
    /// wait); `timeout` bounds it.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] (also when it was auto-removed before
    /// this looked), [`ContainerError::State`],
    /// [`ContainerError::Timeout`].
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<Option<i32>, ContainerError> {
        wait(self.root(), id, timeout)
    }

    /// Without blocking: `None` while container `id` runs, else
    /// `Some(exit code)` (the inner `None`: not known). What an
    /// orchestrator polls instead of keeping a thread per container.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`].
    pub fn try_wait(&self, id: &str) -> Result<Option<Option<i32>>, ContainerError> {
        try_wait(self.root(), id)
    }

    /// The log entries of container `id` that `query` selects, oldest
    /// first, and a [`LogFollower`] whose [`poll`](LogFollower::poll)
    /// returns, without blocking, what is written after them (`logs -f`).
    /// Needs read access to the state directory only.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`].
    pub fn logs(
        &self,
        id: &str,
        query: &LogQuery,
    ) -> Result<(Vec<LogEntry>, LogFollower), ContainerError> {
        logs(self.root(), id, query)
    }

    /// Attaches to container `id`'s output: calls `each` for every log
    /// entry written from now until its current run ends, and returns its
    /// exit code. Blocks (polling the log and the record); standard input
    /// is not attached.
    ///
    /// # Errors
    /// [`ContainerError::InvalidId`] for an ID that is not a single name
    /// (nothing outside the state directory is read); as [`Runtime::logs`].
    pub fn attach(
        &self,
        id: &str,
        each: impl FnMut(&LogEntry),
    ) -> Result<Option<i32>, ContainerError> {
        crate::state::validate_id(id)?;
        let r = self.state().load(id)?;
        follow(self.root(), id, LogFollower::at_end(&r.bundle), each)
    }

    /// Connects to the monitor of running detached container `id`, as
    /// `docker attach` does: the [`Attachment`] copies its output as it
    /// comes ([`Attachment::copy_output`]), its [`AttachInput`](crate::monitor::AttachInput) sends input
    /// (when the container was made with stdin), closes the stdin, sizes
    /// its terminal and detaches. Several attachments may be open at once;
    /// each sees the output. No terminal is needed.
    ///
    /// # Errors
    /// [`AttachError::NotRunning`], [`AttachError::Connect`], the record's.
    pub fn attach_stream(&self, id: &str) -> Result<Attachment, AttachError> {
        crate::monitor::attach::connect(self.root(), id)
    }

    /// Attaches the caller's streams to running detached container `id`:
    /// `stdin` (read on a thread of its own) goes to the container until
    /// its end, which closes the container's stdin, or until `keys`, which
    /// detach; the output goes to `stdout` and `stderr`. Blocks until the
    /// run ends ([`AttachEnd::Exited`] with its code) or the keys detach
    /// ([`AttachEnd::Detached`], the container runs on). `None` for
    /// `stdin`: output only (`docker attach --no-stdin`).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use image_runtime::monitor::{AttachEnd, DetachKeys};
    /// # let rt: image_runtime::Runtime = todo!();
    /// let input = std::io::Cursor::new(b"hello\n".to_vec());
    /// let (mut out, mut err) = (Vec::new(), Vec::new());
    /// let end = rt.attach_io("web", Some(Box::new(input)), &mut out, &mut err, DetachKeys::default())?;
    /// assert_eq!(end, AttachEnd::Exited(Some(0)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Runtime::attach_stream`] and [`Attachment::copy_output`].
    pub fn attach_io(
        &self,
        id: &str,
        stdin: Option<Box<dyn std::io::Read + Send>>,
        stdout: &mut dyn std::io::Write,
        stderr: &mut dyn std::io::Write,
        keys: DetachKeys,
    ) -> Result<AttachEnd, AttachError> {
        crate::monitor::attach::attach_io(self.root(), id, stdin, stdout, stderr, keys)
    }

    /// Stops container `id` (see [`Runtime::stop`]), waits for its monitor
    /// to be gone, and starts it detached again with the policies it had
    /// (or the defaults).
    ///
    /// # Errors
    /// As [`Runtime::stop`] and [`Container::start_detached`].
    pub fn restart(
        &self,
        id: &str,
        grace: Duration,
        monitor_command: Option<Vec<std::ffi::OsString>>,
    ) -> Result<ContainerRecord, DetachError> {
        let status = observed(self.root(), id)?.status;
        if status != ContainerStatus::Created {
            self.stop(id, grace)?;
        }
        let record = self.state().load(id)?;
        let detached = record.detached.clone().unwrap_or_default();
        let options = DetachOptions {
            restart: detached.restart,
            log: detached.log,
            monitor_command,
        };
        Container::from_record(self.clone(), record).start_detached(&options)
    }
}

/// What `gc` does to a detached container whose host rebooted while it
/// ran (its monitor, process and mounts are gone): recorded as stopped
/// with exit code 255 (as Docker shows such a container), the backend's
/// state dropped, its root filesystem mounted again so that it can be
/// started, or removed, as any stopped container.
///
/// # Errors
/// The first failure; the record is saved only when the rest worked.
pub(crate) fn reconcile(
    runtime: &Runtime,
    mut record: ContainerRecord,
) -> Result<(), ContainerError> {
    runtime.backend().delete(&record.id, true)?;
    if let crate::rootfs::Rootfs::Mounts(mounts) = &record.rootfs {
        let target = record.bundle.join("rootfs");
        if crate::mountinfo::mounts_under(&target)
            .map(|m| m.is_empty())
            .unwrap_or(false)
        {
            crate::rootfs::mount_all(&image_overlay::mount::SysMounter, mounts, &target)?;
        }
    }
    record.status = ContainerStatus::Stopped;
    record.exit_code = Some(255);
    if let Some(d) = record.detached.as_mut() {
        d.finished_at = Some(log::format_rfc3339(std::time::SystemTime::now()));
        d.boot_id = crate::model::boot_id();
    }
    runtime.state().save(&record)
}

#[cfg(test)]
mod tests {
    use crate::error::ContainerError;

    /// `attach` by an ID that is a path reads nothing outside the state
    /// directory: refused as an invalid ID (it was looked up as
    /// `<root>/x/container.json` and reported missing).
    #[test]
    fn attach_refuses_an_id_that_is_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (rt, _) = crate::container::volumes::tests::runtime_and_rootfs(tmp.path());
        let attach = |id: &str| rt.attach(id, |_| panic!("no entry"));
        assert!(matches!(
            attach("../x"),
            Err(ContainerError::InvalidId { .. })
        ));
    }
}
