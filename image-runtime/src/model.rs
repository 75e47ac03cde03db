//! The data of the runtime's model, on which everything else is built:
//! a container's [`ContainerStatus`], [`Owner`] and [`ContainerRecord`],
//! the [`ImageRef`] of the image it was made from, the [`SnapshotRef`] of
//! its writable snapshot and the snapshot [`Driver`]s, and container IDs.
//! Plain values (serde for the record on disk); of the crate's own modules
//! only [`rootfs`](crate::rootfs) (what a root filesystem is) lies below.

use std::path::PathBuf;

use image_core::{Descriptor, Digest};
use image_store::image::{resolve_descriptor, ImageError};
use image_store::{Image, Provider};
use serde::{Deserialize, Serialize};

use crate::rootfs::Rootfs;

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ContainerStatus {
    /// Being set up (a crash here leaves something for `gc`).
    Creating,
    /// Ready to start.
    Created,
    /// Its process was started by `owner`.
    Running,
    /// Its process exited.
    Stopped,
    /// Never saved, only observed: a detached container whose monitor died
    /// while it ran (killed, not a reboot), so whether its process still
    /// runs and how it ended are not known. `rm -f` and `gc` remove it.
    Unknown,
}

/// The process that started a container, identified beyond PID reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// PID.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// True while that very process exists and has not exited. A zombie
    /// (exited, not yet reaped) is gone: when its parent reaps it is the
    /// parent's business (init reaps late under load; a pid 1 that never
    /// reaps keeps it forever), and the process does nothing more. A
    /// zombie leader whose other threads still run (its main thread
    /// called `pthread_exit`) is alive.
    pub fn is_alive(&self) -> bool {
        running(self.pid, self.start_time)
    }
}

/// Whether process `pid`, started at `start_time` (clock ticks after boot),
/// still exists and has not [`exited`].
pub(crate) fn running(pid: u32, start_time: u64) -> bool {
    ProcEntry::open(pid).and_then(|p| p.running_since()) == Some(start_time)
}

/// The most bytes read of one file of a `/proc/<pid>` directory (its
/// `stat`, `status` and `cgroup` hold a few hundred bytes to a few KiB).
const MAX_PROC_FILE: u64 = 64 << 10;

/// A process's `/proc/<pid>` directory, opened once: every file read
/// through it is that very process's, never another's that reused the
/// PID (the directory of a reaped process reads nothing), so that all one
/// look reads of it (state, threads, start time, cgroups) is of one
/// process.
#[derive(Debug)]
pub(crate) struct ProcEntry(std::os::fd::OwnedFd);

impl ProcEntry {
    /// Opens `/proc/<pid>`; `None` when there is no such process.
    pub(crate) fn open(pid: u32) -> Option<ProcEntry> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(format!("/proc/{pid}"), flags, Mode::empty())
            .ok()
            .map(ProcEntry)
    }

    /// The text of its file `name` (`stat`, `status`, `cgroup`; at most
    /// [`MAX_PROC_FILE`] bytes); `None` once the process is reaped.
    pub(crate) fn read(&self, name: &str) -> Option<String> {
        use rustix::fs::{Mode, OFlags};
        use std::io::Read;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.0, name, flags, Mode::empty()).ok()?;
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_PROC_FILE)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    }

    /// Its start time (clock ticks after boot) while it has not
    /// [`exited`]; `None` once it has, or is gone.
    pub(crate) fn running_since(&self) -> Option<u64> {
        let stat = self.read("stat")?;
        if exited(&stat, || self.read("status")) {
            return None;
        }
        parse_start_time(&stat)
    }
}

/// Whether the process of the `/proc/<pid>/stat` text `stat` has exited:
/// dead (`X`), or a zombie (`Z`) with no thread of its group left, as
/// `status` (its `/proc/<pid>/status` text, read only for a zombie; `None`
/// once it is gone) counts them. The `Z` of a thread-group leader says
/// only that its own thread ended: its `Threads:` count includes itself
/// until the last thread of the group exits.
pub(crate) fn exited(stat: &str, status: impl FnOnce() -> Option<String>) -> bool {
    match parse_state(stat) {
        Some('X' | 'x') => true,
        Some('Z') => status()
            .and_then(|s| parse_threads(&s))
            .is_none_or(|n| n <= 1),
        _ => false,
    }
}

/// The `Threads:` count in a `/proc/<pid>/status` text.
fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The state letter in a `/proc/<pid>/stat` text (field 3: `R`, `S`, `Z`...).
pub(crate) fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The start time in a `/proc/<pid>/stat` text (field 22).
pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What is kept on disk about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Its ID.
    pub id: String,
    /// The image it was made from (a reference or an image ID), if known.
    pub image: Option<String>,
    /// The backend's name (`runc`, `crun`).
    pub backend: String,
    /// The bundle directory (also the container's state directory).
    pub bundle: PathBuf,
    /// Where the root filesystem comes from.
    pub rootfs: Rootfs,
    /// The lifecycle status.
    pub status: ContainerStatus,
    /// The process that created or started it.
    pub owner: Option<Owner>,
    /// The exit code once stopped.
    pub exit_code: Option<i32>,
    /// The image it was made from, when made from a store (what commit
    /// appends to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    /// Its writable snapshot, when made from an image: removed on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
    /// Removed when its run ends (`run --rm`, Docker's `AutoRemove`):
    /// deleted when it fails to start, and collected by `gc` in any status
    /// once its owner is gone (a `run --rm` killed before it could delete).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
    /// Set when it runs detached, under a monitor process (the
    /// [`owner`](Self::owner) while it runs): its policies and its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached: Option<Detached>,
}

/// A detached container's settings and the story of its runs, kept by its
/// monitor (see [`Container::start_detached`](crate::Container::start_detached)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    /// When the monitor restarts it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The cap and rotation of its log.
    #[serde(default)]
    pub log: LogOptions,
    /// The host's boot ID (`/proc/sys/kernel/random/boot_id`) when it was
    /// started: another one means the host rebooted since.
    #[serde(default)]
    pub boot_id: String,
    /// When its last run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When its last run ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How many times the monitor restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// How many of its runs have ended (what `wait` watches).
    #[serde(default)]
    pub exits: u64,
}

/// Docker's restart policies (`--restart`), honoured by a detached
/// container's monitor. With no daemon here, `always` and `unless-stopped`
/// behave alike: restarted after every exit, never after a `stop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restarted (the default).
    #[default]
    No,
    /// Restarted after a non-zero exit, at most `max_retries` times when set.
    OnFailure {
        /// The most restarts.
        max_retries: Option<u32>,
    },
    /// Restarted after every exit, unless stopped.
    Always,
    /// As `Always`.
    UnlessStopped,
}

/// The size cap and rotation of a detached container's log (`--log-opt
/// max-size=,max-file=`). The defaults are bounded: 10 MiB, 3 files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogOptions {
    /// The largest a log file grows before it is rotated (bytes; at least
    /// [`LogOptions::MIN_SIZE`]).
    pub max_size: u64,
    /// How many files are kept, the current one included (1..=100; with 1
    /// the file is emptied instead of rotated).
    pub max_file: u32,
}

impl LogOptions {
    /// The least `max_size` accepted (64 KiB).
    pub const MIN_SIZE: u64 = 64 << 10;
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            max_size: 10 << 20,
            max_file: 3,
        }
    }
}

/// The host's current boot ID, empty when unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl ContainerRecord {
    /// True when nobody is managing it any more, so `gc` removes it: its
    /// owner died while creating or running it, or, for an
    /// [`auto_remove`](Self::auto_remove) container, before it could delete
    /// it (in any status). A created or stopped container that is not
    /// auto-removed is kept: it waits for a `start` or an `rm`.
    pub fn is_stale(&self) -> bool {
        let owner_gone = !self.owner.is_some_and(|o| o.is_alive());
        match self.status {
            _ if self.auto_remove => owner_gone,
            // Reconciled by `gc` (recorded as stopped), not removed.
            ContainerStatus::Running if self.ran_before_reboot() => false,
            ContainerStatus::Stopped | ContainerStatus::Created => false,
            ContainerStatus::Creating | ContainerStatus::Running | ContainerStatus::Unknown => {
                owner_gone
            }
        }
    }

    /// True for a detached container recorded as running in an earlier
    /// boot of the host (its monitor, process and mounts are gone with it).
    pub fn ran_before_reboot(&self) -> bool {
        self.status == ContainerStatus::Running
            && self
                .detached
                .as_ref()
                .is_some_and(|d| !d.boot_id.is_empty() && d.boot_id != boot_id())
    }
}

/// The image a container was made from, as resolved when it was created,
/// so that commit finds exactly that image again (even if the name moved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The name it was resolved from.
    pub name: String,
    /// The image ID (config digest).
    pub id: Digest,
    /// The descriptor of its manifest (the platform's, below any index).
    pub manifest: Descriptor,
}

impl ImageRef {
    /// Of a resolved image.
    pub fn of(image: &Image) -> ImageRef {
        ImageRef {
            name: image.name.clone(),
            id: image.id().clone(),
            manifest: image.manifest.descriptor(),
        }
    }

    /// The image again, from `store`.
    ///
    /// # Errors
    /// [`ImageError`] when its blobs are gone or corrupt.
    pub fn resolve<P: Provider + ?Sized>(&self, store: &P) -> Result<Image, ImageError> {
        resolve_descriptor(store, &self.name, &self.manifest, None)
    }
}

/// The snapshot drivers a container's record can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Driver {
    /// overlayfs ([`OverlaySnapshotter`](image_overlay::OverlaySnapshotter)): a container's changes land in
    /// its own upper directory.
    Overlay,
    /// Full copies ([`CopySnapshotter`](image_overlay::CopySnapshotter)): portable, no overlayfs needed.
    Copy,
}

impl Driver {
    /// `overlay` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }
}

/// Where a container's writable snapshot is: enough to find and remove it
/// from any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The driver.
    pub driver: Driver,
    /// The snapshotter root.
    pub root: PathBuf,
    /// The active snapshot's key (the container ID).
    pub key: String,
    /// The committed parent: the container's init snapshot when it has
    /// one, else the chain ID of the image's top layer (none for an image
    /// without layers).
    pub parent: Option<String>,
    /// The name of the container's init snapshot (committed, on the
    /// image's top layer): the mount points the runtime needs (`/proc`,
    /// `/sys`, `/dev`, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`)
    /// made when the image lacks them, so that they are not part of the
    /// container's changes (Docker's init layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

/// True for a caller-chosen container ID: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at
/// most 128 bytes (a single path component, never `.` or `..`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A random 64-hex-digit container ID, as Docker makes them.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/<pid>/stat` of a process in state `state` (captured from a
    /// real one, its command name holding a space and a parenthesis).
    fn stat(state: char) -> String {
        format!(
            "4242 (my (prog) x) {state} 1 4242 4242 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 \
             2 0 987654 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    /// `/proc/<pid>/status` (its first lines) with `threads` threads.
    fn status(state: &str, threads: u32) -> Option<String> {
        Some(format!(
            "Name:\tmy (prog) x\nUmask:\t0022\nState:\t{state}\nTgid:\t4242\n\
             Ngid:\t0\nPid:\t4242\nPPid:\t1\nTracerPid:\t0\n\
             Threads:\t{threads}\nSigQ:\t0/63448\n"
        ))
    }

    #[test]
    fn a_zombie_leader_whose_threads_run_on_has_not_exited() {
        assert_eq!(parse_start_time(&stat('Z')), Some(987654));
        // Its main thread called pthread_exit; another one still runs.
        assert!(!exited(&stat('Z'), || status("Z (zombie)", 2)));
        // The last thread gone: only the leader's zombie is left.
        assert!(exited(&stat('Z'), || status("Z (zombie)", 1)));
        // Reaped between the two reads.
        assert!(exited(&stat('Z'), || None));
        assert!(exited(&stat('X'), || panic!("not read for a dead one")));
        for running in ['R', 'S', 'D', 'T', 't', 'I'] {
            assert!(!exited(&stat(running), || panic!("not read")), "{running}");
        }
    }
}
