//! Rootless operation: an unprivileged user's commands run in a user
//! namespace of the user's, as podman's do.
//!
//! # The namespace
//! The calling user is root inside; inside ids 1 and up map, in order, to
//! the user's subordinate ranges from `/etc/subuid` and `/etc/subgid`
//! (shadow's format, `name-or-uid:start:count`). So an image file owned by
//! 1000 is owned by `start + 999` on the host, and everything the user
//! owns stays the user's. Only the setuid helpers `newuidmap` and
//! `newgidmap` (the uidmap package) may write such maps for an
//! unprivileged user; this module runs them, never writes the maps itself.
//!
//! # One namespace for every command: the pause process
//! A user's commands share one user and mount namespace, held by a pause
//! process ([`pause`], podman's model): each command joins it first thing
//! ([`join_or_start`], `setns`), starting the pause process when there is
//! none. So what one command mounts or starts (a detached container and
//! its monitor) is there for the next.
//!
//! # Entering it: the whole command, once
//! The namespace is entered once per command, before anything else, and
//! everything happens inside it: store and snapshot writes, unpacks,
//! overlay mounts (in a mount namespace owned by the user namespace, which
//! kernels since 5.11 allow) and containers (the native executor creates
//! the container's other namespaces from there). A command that wants this
//! joins the pause process's namespaces ([`join_or_start`]); one that
//! wants a namespace of its own re-executes itself
//! ([`spawn_in_user_namespace`]): the child, still
//! single-threaded, calls [`finish_entry`] first thing, which moves it into
//! new user and mount namespaces and stops itself; the parent, still in the
//! host's namespace, runs the helpers with the child's pid and continues
//! it; the child, now root inside with the maps in place, makes its mounts
//! private and goes on with the command. The parent only waits (and
//! forwards signals: that is the caller's part).
//!
//! # Security
//! `/etc/subuid` and `/etc/subgid` are read bounded ([`MAX_SUBID_FILE`]
//! bytes, [`MAX_RANGES`] ranges); the helpers check the ranges against the
//! same files themselves, so a range we take wrongly is refused by them,
//! not granted. Nothing of the user's environment decides which helper
//! runs: they are looked up in the fixed system directories.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_core::{Classify, ErrorKind};

pub mod pause;
pub use pause::{join_or_start, Joined, PauseRecord};

/// The subordinate user ids file.
pub const SUBUID: &str = "/etc/subuid";
/// The subordinate group ids file.
pub const SUBGID: &str = "/etc/subgid";
/// The largest `/etc/subuid`, `/etc/subgid` or `/etc/passwd` read.
pub const MAX_SUBID_FILE: u64 = 4 << 20;
/// The most ranges of one user used: with the own id, 340 extents, the
/// kernel's limit for one map (since 4.15).
pub const MAX_RANGES: usize = 339;
/// The environment variable that tells a re-executed child it is being
/// moved into a user namespace ([`finish_entry`]).
pub const ENTER_ENV: &str = "IMAGE_RUNTIME_USERNS_ENTER";
/// Where the helpers are looked for, in order (not `$PATH`).
const HELPER_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];

/// One subordinate id range of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// One line of a uid or gid map: `count` ids from `inside` in the
/// namespace are `outside` and on in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The first id inside.
    pub inside: u32,
    /// The first id outside.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// Which of the two id kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// User ids (`/etc/subuid`, `newuidmap`).
    Uid,
    /// Group ids (`/etc/subgid`, `newgidmap`).
    Gid,
}

impl IdKind {
    /// `uid` or `gid`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        }
    }

    fn helper(self) -> &'static str {
        match self {
            IdKind::Uid => "newuidmap",
            IdKind::Gid => "newgidmap",
        }
    }
}

/// Errors of entering or preparing a rootless user namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootlessError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_SUBID_FILE`].
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The calling uid has no `/etc/passwd` entry (the subordinate id
    /// files name users by name).
    #[error("uid {uid} has no entry in /etc/passwd")]
    UnknownUser {
        /// The uid.
        uid: u32,
    },
    /// The user has no subordinate range: a namespace with only the user's
    /// own id cannot hold an image's files owned by other ids.
    #[error(
        "{path} gives user {user} no subordinate {kind} range (add a line {user}:START:COUNT, \
         e.g. with usermod --add-sub{kind}s)",
        kind = kind.as_str()
    )]
    NoRanges {
        /// `/etc/subuid` or `/etc/subgid`.
        path: PathBuf,
        /// The user's name.
        user: String,
        /// Which ids.
        kind: IdKind,
    },
    /// `newuidmap` or `newgidmap` is not installed.
    #[error("{helper} not found in {dirs} (install the uidmap package)", dirs = HELPER_DIRS.join(", "))]
    HelperMissing {
        /// The helper.
        helper: &'static str,
    },
    /// A helper could not be run.
    #[error("running {}", helper.display())]
    HelperSpawn {
        /// The helper.
        helper: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A helper refused the maps.
    #[error("{} {pid} failed ({status}): {stderr}", helper.display())]
    HelperFailed {
        /// The helper.
        helper: PathBuf,
        /// The target process.
        pid: u32,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// The re-executed command could not be started or followed.
    #[error("{step}")]
    Process {
        /// What was done.
        step: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The re-executed command ended before it entered the namespace (it
    /// reported why itself).
    #[error("the command ended before entering the user namespace ({status})")]
    ChildEnded {
        /// Its exit code, or 128 + the signal that ended it.
        status: i32,
    },
    /// The kernel refused a step of entering (`unshare`, making the mounts
    /// private, `setns` into the pause process's namespaces), or the maps
    /// were not in place when the child went on.
    #[error("entering the user namespace: {step}")]
    Enter {
        /// The step.
        step: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The pause process's directory, lock or pid file could not be used
    /// ([`pause`]).
    #[error("{op} {path}")]
    PauseState {
        /// What was done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The pause process's directory belongs to another user.
    #[error("{path} belongs to uid {owner}, not to this user (uid {uid})")]
    DirNotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The calling user.
        uid: u32,
    },
}

impl Classify for RootlessError {
    fn kind(&self) -> ErrorKind {
        match self {
            RootlessError::Read { source, .. }
            | RootlessError::PauseState { source, .. }
            | RootlessError::Process { source, .. }
            | RootlessError::HelperSpawn { source, .. } => ErrorKind::from_io(source),
            RootlessError::TooLarge { .. } => ErrorKind::InvalidInput,
            RootlessError::UnknownUser { .. } | RootlessError::NoRanges { .. } => {
                ErrorKind::FailedPrecondition
            }
            RootlessError::HelperMissing { .. } => ErrorKind::Unsupported,
            RootlessError::HelperFailed { .. }
            | RootlessError::Enter { .. }
            | RootlessError::DirNotOwned { .. } => ErrorKind::PermissionDenied,
            RootlessError::ChildEnded { .. } => ErrorKind::Io,
        }
    }
}

/// The ranges of the user `user` (uid `id`) in subordinate id file text:
/// lines `name-or-id:start:count` naming the user or its id, in file
/// order. Comments, malformed lines, empty ranges and ranges that would
/// pass `u32::MAX` are skipped (as shadow's libsubid skips them), and so
/// are ranges overlapping one taken before or holding `id` itself (the
/// kernel refuses overlapping extents); at most [`MAX_RANGES`] are kept.
pub fn parse_subids(text: &str, user: &str, id: u32) -> Vec<SubIdRange> {
    let id_text = id.to_string();
    let mut out: Vec<SubIdRange> = Vec::new();
    for line in text.lines() {
        if out.len() == MAX_RANGES {
            break;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(owner), Some(start), Some(count), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if owner != user && owner != id_text {
            continue;
        }
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        let Some(end) = start.checked_add(count) else {
            continue;
        };
        let overlaps = |s: u32, e: u32| s < end && start < e;
        if count == 0
            || overlaps(id, id.saturating_add(1))
            || out.iter().any(|r| overlaps(r.start, r.start + r.count))
        {
            continue;
        }
        out.push(SubIdRange { start, count });
    }
    out
}

/// The map of a namespace where `id` is root: inside 0 is `id`, and inside
/// ids from 1 on are `ranges` one after the other. Ranges that would take
/// the inside ids past `u32::MAX - 1` are cut there (`u32::MAX` is never a
/// valid id).
pub fn id_maps(id: u32, ranges: &[SubIdRange]) -> Vec<IdMap> {
    let mut maps = vec![IdMap {
        inside: 0,
        outside: id,
        count: 1,
    }];
    let mut next: u32 = 1;
    for r in ranges.iter().take(MAX_RANGES) {
        let room = u32::MAX - next;
        let count = r.count.min(room);
        if count == 0 {
            break;
        }
        maps.push(IdMap {
            inside: next,
            outside: r.start,
            count,
        });
        next += count;
    }
    maps
}

/// The id `inside` of a namespace with `maps` as seen from its parent.
pub fn to_outside(maps: &[IdMap], inside: u32) -> Option<u32> {
    maps.iter()
        .find(|m| inside >= m.inside && inside - m.inside < m.count)
        .map(|m| m.outside + (inside - m.inside))
}

/// The uid and gid maps of a rootless namespace for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespaceMaps {
    /// The user's name.
    pub user: String,
    /// The uid map.
    pub uid: Vec<IdMap>,
    /// The gid map.
    pub gid: Vec<IdMap>,
}

fn read_bounded(path: &Path) -> Result<String, RootlessError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SUBID_FILE + 1).read_to_string(&mut text))
        .map_err(|source| RootlessError::Read {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_SUBID_FILE {
        return Err(RootlessError::TooLarge {
            path: path.to_owned(),
            limit: MAX_SUBID_FILE,
        });
    }
    Ok(text)
}

impl UserNamespaceMaps {
    /// The maps of the calling user (real uid and gid), from the system's
    /// `/etc/passwd`, [`SUBUID`] and [`SUBGID`].
    ///
    /// # Errors
    /// As [`UserNamespaceMaps::from_files`].
    pub fn for_current_user() -> Result<UserNamespaceMaps, RootlessError> {
        UserNamespaceMaps::from_files(
            Path::new("/etc/passwd"),
            Path::new(SUBUID),
            Path::new(SUBGID),
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    }

    /// The maps of the user `uid` (primary group `gid`), its name found in
    /// `passwd`, its ranges in `subuid` and `subgid`.
    ///
    /// # Errors
    /// [`RootlessError::Read`], [`RootlessError::TooLarge`],
    /// [`RootlessError::UnknownUser`], [`RootlessError::NoRanges`].
    pub fn from_files(
        passwd: &Path,
        subuid: &Path,
        subgid: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<UserNamespaceMaps, RootlessError> {
        let user = crate::user::parse_passwd(&read_bounded(passwd)?)
            .into_iter()
            .find(|e| e.uid == uid)
            .map(|e| e.name)
            .ok_or(RootlessError::UnknownUser { uid })?;
        let ranges = |path: &Path, id: u32, kind: IdKind| {
            let r = parse_subids(&read_bounded(path)?, &user, id);
            if r.is_empty() {
                return Err(RootlessError::NoRanges {
                    path: path.to_owned(),
                    user: user.clone(),
                    kind,
                });
            }
            Ok(id_maps(id, &r))
        };
        Ok(UserNamespaceMaps {
            uid: ranges(subuid, uid, IdKind::Uid)?,
            gid: ranges(subgid, gid, IdKind::Gid)?,
            user,
        })
    }

    /// Writes the maps of process `pid` (which must be in a new user
    /// namespace without maps) with `newuidmap` and `newgidmap`.
    ///
    /// # Errors
    /// [`RootlessError::HelperMissing`], [`RootlessError::HelperSpawn`],
    /// [`RootlessError::HelperFailed`].
    pub fn apply(&self, pid: u32) -> Result<(), RootlessError> {
        for (kind, maps) in [(IdKind::Uid, &self.uid), (IdKind::Gid, &self.gid)] {
            run_helper(kind, pid, maps)?;
        }
        Ok(())
    }
}

fn run_helper(kind: IdKind, pid: u32, maps: &[IdMap]) -> Result<(), RootlessError> {
    let name = kind.helper();
    let helper = HELPER_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or(RootlessError::HelperMissing { helper: name })?;
    let mut cmd = Command::new(&helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.inside.to_string(),
            m.outside.to_string(),
            m.count.to_string(),
        ]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| RootlessError::HelperSpawn {
            helper: helper.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        stderr.truncate(4096);
        return Err(RootlessError::HelperFailed {
            helper,
            pid,
            status: out.status,
            stderr,
        });
    }
    Ok(())
}

/// Whether this process is in a user namespace other than the initial one
/// (its uid map is not the identity over every id).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let fields: Vec<&str> = m.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether a command of this process should enter a rootless user
/// namespace first: the effective user is not root and this process is not
/// a child being moved into one already.
pub fn wants_user_namespace() -> bool {
    !rustix::process::geteuid().is_root() && std::env::var_os(ENTER_ENV).is_none()
}

/// Spawns `cmd` (a re-execution of this program, whose `main` calls
/// [`finish_entry`] first) so that it runs in a new user namespace with
/// the calling user's maps ([`UserNamespaceMaps::for_current_user`]) and a
/// new mount namespace; returns it once it is inside and running, for the
/// caller to wait for ([`Entered::wait`]) and pass signals on to.
///
/// # Errors
/// The maps' errors (before anything is spawned), [`RootlessError::Process`],
/// [`RootlessError::ChildEnded`] when the child ended before stopping
/// (it says why on its stderr), a helper's error (the child is killed).
pub fn spawn_in_user_namespace(cmd: &mut Command) -> Result<Entered, RootlessError> {
    use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
    let maps = UserNamespaceMaps::for_current_user()?;
    let child = cmd
        .env(ENTER_ENV, "1")
        .spawn()
        .map_err(|source| RootlessError::Process {
            step: "starting the command",
            source,
        })?;
    let raw = child.id();
    let pid = Pid::from_raw(raw as i32).ok_or(RootlessError::Process {
        step: "reading the command's pid",
        source: std::io::ErrorKind::InvalidData.into(),
    })?;
    let proc_err = |step| {
        move |e: rustix::io::Errno| RootlessError::Process {
            step,
            source: e.into(),
        }
    };
    let status = loop {
        match waitpid(Some(pid), WaitOptions::UNTRACED) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(proc_err("waiting for the command to stop")(e)),
            Ok(None) => continue,
            Ok(Some((_, s))) => break s,
        }
    };
    if !status.stopped() {
        return Err(RootlessError::ChildEnded {
            status: status_code(status),
        });
    }
    if let Err(e) = maps.apply(raw) {
        let _ = kill_process(pid, Signal::KILL);
        let _ = waitpid(Some(pid), WaitOptions::empty());
        return Err(e);
    }
    kill_process(pid, Signal::CONT).map_err(proc_err("continuing the command"))?;
    Ok(Entered { pid })
}

/// A command started by [`spawn_in_user_namespace`], inside its namespace.
#[derive(Debug)]
pub struct Entered {
    pid: rustix::process::Pid,
}

impl Entered {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Sends it the signal numbered `signal` (a raw signal number); an
    /// unknown number or a process already gone is ignored.
    pub fn signal(&self, signal: i32) {
        if let Some(s) = rustix::process::Signal::from_named_raw(signal) {
            let _ = rustix::process::kill_process(self.pid, s);
        }
    }

    /// Waits for it to end: its exit code, or 128 + the signal that ended
    /// it (as a shell reports it).
    ///
    /// # Errors
    /// [`RootlessError::Process`] when it cannot be waited for.
    pub fn wait(&self) -> Result<i32, RootlessError> {
        use rustix::process::{waitpid, WaitOptions};
        loop {
            match waitpid(Some(self.pid), WaitOptions::empty()) {
                Err(rustix::io::Errno::INTR) | Ok(None) => continue,
                Err(e) => {
                    return Err(RootlessError::Process {
                        step: "waiting for the command",
                        source: e.into(),
                    })
                }
                Ok(Some((_, s))) => return Ok(status_code(s)),
            }
        }
    }
}

fn status_code(s: rustix::process::WaitStatus) -> i32 {
    s.exit_status()
        .or_else(|| s.terminating_signal().map(|n| 128 + n))
        .unwrap_or(1)
}

/// In a child started by [`spawn_in_user_namespace`] (its environment has
/// [`ENTER_ENV`]), moves this process into new user and mount namespaces,
/// stops until the parent has written the maps, then makes every mount
/// private; `Ok(true)` then. In the pause process a command starts
/// ([`pause::PAUSE_ENV`], see [`join_or_start`]), does that process's
/// work and never returns. `Ok(false)` in any other process. Must be
/// called while the process is single-threaded (first thing in `main`).
///
/// # Errors
/// [`RootlessError::Enter`].
pub fn finish_entry() -> Result<bool, RootlessError> {
    use rustix::process::{getpid, getuid, kill_process, Signal};
    if let Some(parent) = std::env::var_os(pause::PAUSE_ENV) {
        std::env::remove_var(pause::PAUSE_ENV);
        pause::run(parent.to_str().and_then(|p| p.parse().ok()));
    }
    if std::env::var_os(ENTER_ENV).is_none() {
        return Ok(false);
    }
    // Not inherited by what this command starts (a nested imagectl is root
    // inside and enters nothing).
    std::env::remove_var(ENTER_ENV);
    let enter = |step| move |e: std::io::Error| RootlessError::Enter { step, source: e };
    crate::sys::unshare_user_and_mount().map_err(enter("unshare"))?;
    // Killed with the parent rather than left stopped forever.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| enter("PR_SET_PDEATHSIG")(e.into()))?;
    kill_process(getpid(), Signal::STOP).map_err(|e| enter("stopping for the maps")(e.into()))?;
    if !getuid().is_root() {
        return Err(enter("the uid map")(std::io::Error::other(
            "the parent wrote no map",
        )));
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| enter("making mounts private")(e.into()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_users_lines_by_name_or_id() {
        let text = "# comment\n\
                    other:100000:65536\n\
                    alice:200000:65536\n\
                    1000:300000:10\n\
                    alice:bad:1\n\
                    alice:1:2:3\n\
                    alice:400000:0\n\
                    alice:4294967295:2\n\
                    alice:210000:5\n";
        assert_eq!(
            parse_subids(text, "alice", 1000),
            vec![
                SubIdRange {
                    start: 200000,
                    count: 65536
                },
                SubIdRange {
                    start: 300000,
                    count: 10
                },
            ]
        );
        // A range holding the user's own id is not taken.
        assert!(parse_subids("alice:900:200\n", "alice", 1000).is_empty());
    }

    #[test]
    fn maps_put_the_user_at_zero_and_the_ranges_after() {
        let maps = id_maps(
            1000,
            &[
                SubIdRange {
                    start: 100000,
                    count: 65536,
                },
                SubIdRange {
                    start: 300000,
                    count: 10,
                },
            ],
        );
        assert_eq!(to_outside(&maps, 0), Some(1000));
        assert_eq!(to_outside(&maps, 1000), Some(100999));
        assert_eq!(to_outside(&maps, 65537), Some(300000));
        assert_eq!(to_outside(&maps, 65547), None);
    }

    /// Generated files: whatever the lines, the maps are ones the kernel
    /// takes (no overlap inside or outside, inside ids contiguous from 0,
    /// at most 340 extents, no id `u32::MAX`).
    #[test]
    fn generated_subid_files_give_valid_maps() {
        let mut rng = image_testsupport::xorshift(0x5eed_0001);
        for _ in 0..2000 {
            let n = rng() % 400;
            let mut text = String::new();
            for _ in 0..n {
                let owner = ["alice", "1000", "bob", "", "alice"][(rng() % 5) as usize];
                let start = match rng() % 4 {
                    0 => rng() as u32,
                    1 => (rng() % 2000) as u32,
                    2 => u32::MAX - (rng() % 10) as u32,
                    _ => 100_000 + (rng() % 50) as u32 * 1000,
                };
                let count = match rng() % 3 {
                    0 => rng() as u32,
                    1 => (rng() % 3) as u32,
                    _ => 65536,
                };
                text.push_str(&format!("{owner}:{start}:{count}\n"));
            }
            let ranges = parse_subids(&text, "alice", 1000);
            assert!(ranges.len() <= MAX_RANGES);
            let maps = id_maps(1000, &ranges);
            assert!(maps.len() <= MAX_RANGES + 1);
            let mut next = 0u64;
            for m in &maps {
                assert!(m.count > 0);
                assert_eq!(u64::from(m.inside), next);
                next += u64::from(m.count);
                assert!(next <= u64::from(u32::MAX));
                assert!(u64::from(m.outside) + u64::from(m.count) <= u64::from(u32::MAX) + 1);
            }
            for (i, a) in maps.iter().enumerate() {
                for b in &maps[i + 1..] {
                    let (a0, a1) = (
                        u64::from(a.outside),
                        u64::from(a.outside) + u64::from(a.count),
                    );
                    let (b0, b1) = (
                        u64::from(b.outside),
                        u64::from(b.outside) + u64::from(b.count),
                    );
                    assert!(a1 <= b0 || b1 <= a0, "{a:?} overlaps {b:?} in {text}");
                }
            }
        }
    }

    #[test]
    fn a_missing_range_and_a_huge_file_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let subuid = dir.path().join("subuid");
        let subgid = dir.path().join("subgid");
        std::fs::write(&passwd, "alice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        std::fs::write(&subuid, "alice:100000:65536\n").unwrap();
        std::fs::write(&subgid, "bob:100000:65536\n").unwrap();
        let e = UserNamespaceMaps::from_files(&passwd, &subuid, &subgid, 1000, 1000).unwrap_err();
        assert!(
            matches!(&e, RootlessError::NoRanges { kind: IdKind::Gid, user, .. } if user == "alice"),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let e = UserNamespaceMaps::from_files(&passwd, &subuid, &subgid, 1001, 1000).unwrap_err();
        assert!(
            matches!(e, RootlessError::UnknownUser { uid: 1001 }),
            "{e:?}"
        );
        let f = std::fs::File::create(&subgid).unwrap();
        f.set_len(MAX_SUBID_FILE + 1).unwrap();
        let e = UserNamespaceMaps::from_files(&passwd, &subuid, &subgid, 1000, 1000).unwrap_err();
        assert!(matches!(e, RootlessError::TooLarge { .. }), "{e:?}");
        std::fs::write(&subgid, "1000:500000:10\n").unwrap();
        let m = UserNamespaceMaps::from_files(&passwd, &subuid, &subgid, 1000, 1000).unwrap();
        assert_eq!(to_outside(&m.uid, 1000), Some(100999));
        assert_eq!(to_outside(&m.gid, 5), Some(500004));
    }
}
