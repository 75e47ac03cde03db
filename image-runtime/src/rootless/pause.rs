//! The pause process: one user and mount namespace shared by every
//! command of a rootless user, as podman keeps it.
//!
//! The first command starts a pause process, a re-execution of the
//! program ([`PAUSE_ENV`] set; its `main` calls
//! [`finish_entry`](super::finish_entry) first) that moves into new user
//! and mount namespaces, is given the user's maps, leaves the caller's
//! session and descriptors and then only waits, holding the namespaces.
//! Its identity is recorded in a pid file ([`PID_FILE`]) in a directory of
//! the user's; every command then joins its namespaces with `setns`, user
//! first, then mount ([`join_or_start`]), before any thread starts. So a
//! mount, a detached container and its monitor made by one command are
//! there for the next: `ps`, `exec`, `logs`, `stop` of a container run by
//! another command work as they do for root.
//!
//! # Which process
//! The pid file holds the pause process's pid, its start time, the boot
//! ID and the inodes of its two namespaces. A command trusts it only when
//! all of them hold for the process now at that pid, read through a
//! descriptor of its `/proc/<pid>` directory (bound to that very process,
//! so a pid reused meanwhile fails rather than answering), and it opens
//! the namespaces through that same descriptor. A lock file
//! ([`LOCK_FILE`]) is held while the pid file is checked or replaced, so
//! two commands starting at once start one pause process.
//!
//! # When it is gone
//! A pause process that is gone (killed, or the host rebooted) is
//! replaced by the next command. The namespaces it held may still hold
//! processes (a detached container's monitor, the container): they are
//! killed first (every process still in both recorded namespaces), so the
//! namespace really ends with its mounts, and containers of it are what a
//! killed monitor leaves: `ps` reports them unknown, `rm -f` and `gc`
//! remove them.
//!
//! # Security
//! The directory must be the calling user's own; the lock, pid and
//! temporary files are opened beneath its descriptor without following
//! links; the pid file is read bounded ([`MAX_PID_FILE`]) and a file that
//! does not parse is treated as naming no process. The scan for leftover
//! processes reads `/proc` once per round, at most [`KILL_ROUNDS`] rounds.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

use super::{status_code, RootlessError, UserNamespaceMaps};

/// The environment variable that makes a re-executed program the pause
/// process ([`finish_entry`](super::finish_entry) then never returns).
pub const PAUSE_ENV: &str = "IMAGE_RUNTIME_USERNS_PAUSE";
/// The pid file's name in the pause directory.
pub const PID_FILE: &str = "pause.pid";
/// The lock file's name in the pause directory.
pub const LOCK_FILE: &str = "pause.lock";
/// The largest pid file read.
pub const MAX_PID_FILE: u64 = 4096;
/// The most scans of `/proc` for processes left in a dead namespace.
pub const KILL_ROUNDS: usize = 16;
/// What the pause process writes once it is set up.
const READY: &str = "ready";

/// What the pid file says of a pause process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The host's boot ID when it started.
    pub boot_id: String,
    /// Its user namespace: the nsfs device and inode.
    pub user_ns: (u64, u64),
    /// Its mount namespace: the nsfs device and inode.
    pub mnt_ns: (u64, u64),
}

/// A command's place in the pause process's namespaces
/// ([`join_or_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The pause process joined.
    pub pause: PauseRecord,
    /// Whether this command started it.
    pub started: bool,
    /// How many processes left in a dead pause process's namespaces this
    /// command killed before starting a new one.
    pub killed: usize,
}

fn state_err(op: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> RootlessError {
    let path = path.to_owned();
    move |e| RootlessError::PauseState {
        op,
        path,
        source: e.into(),
    }
}

/// Joins the namespaces of the calling user's pause process recorded in
/// `dir` (made if missing, mode 0700), starting one when there is none or
/// it is gone. Must be called while the process is single-threaded (the
/// kernel refuses `setns` of a user namespace otherwise): first thing in
/// `main`, before anything starts a thread. The working directory is kept
/// (entered again by its path in the joined mount namespace).
///
/// # Errors
/// [`RootlessError::PauseState`] for the directory, lock or pid file;
/// [`RootlessError::DirNotOwned`]; the maps' and the helpers' errors when
/// a pause process is started; [`RootlessError::ChildEnded`] when it ended
/// before it was ready (it said why on stderr); [`RootlessError::Enter`]
/// when the kernel refuses the join.
pub fn join_or_start(dir: &Path) -> Result<Joined, RootlessError> {
    let dirfd = open_dir(dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = rustix::fs::openat(
        &dirfd,
        LOCK_FILE,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(state_err("open", &lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(state_err("lock", &lock_path))?;
    let recorded = read_record(&dirfd, dir)?;
    let (pause, ns, started, killed) = match recorded.as_ref().and_then(open_namespaces) {
        Some((ns, pause)) => (pause, ns, false, 0),
        None => {
            let killed = recorded.as_ref().map_or(0, kill_leftovers);
            let pause = start(&dirfd, dir)?;
            let (ns, pause) = open_namespaces(&pause).ok_or(RootlessError::Enter {
                step: "opening the new pause process's namespaces",
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            (pause, ns, true, killed)
        }
    };
    join(&ns)?;
    drop(lock);
    Ok(Joined {
        pause,
        started,
        killed,
    })
}

/// The pause process recorded in `dir` when it is alive, without joining
/// it or starting one; `None` when there is no pid file, it names no live
/// pause process, or `dir` is missing.
///
/// # Errors
/// [`RootlessError::PauseState`] when the pid file cannot be read;
/// [`RootlessError::DirNotOwned`].
pub fn current(dir: &Path) -> Result<Option<PauseRecord>, RootlessError> {
    let dirfd = match rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        r => r.map_err(state_err("open", dir))?,
    };
    check_owner(&dirfd, dir)?;
    Ok(read_record(&dirfd, dir)?
        .as_ref()
        .and_then(open_namespaces)
        .map(|(_, r)| r))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, RootlessError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => {
            return Err(RootlessError::PauseState {
                op: "create",
                path: dir.to_owned(),
                source,
            })
        }
    }
    let fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(state_err("open", dir))?;
    check_owner(&fd, dir)?;
    Ok(fd)
}

fn check_owner(fd: &OwnedFd, dir: &Path) -> Result<(), RootlessError> {
    let st = rustix::fs::fstat(fd).map_err(state_err("stat", dir))?;
    let uid = rustix::process::getuid().as_raw();
    if st.st_uid != uid {
        return Err(RootlessError::DirNotOwned {
            path: dir.to_owned(),
            owner: st.st_uid,
            uid,
        });
    }
    Ok(())
}

/// The pid file's record; `None` when there is none or it does not parse.
fn read_record(dirfd: &OwnedFd, dir: &Path) -> Result<Option<PauseRecord>, RootlessError> {
    let path = dir.join(PID_FILE);
    let fd = match rustix::fs::openat(
        dirfd,
        PID_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        r => r.map_err(state_err("open", &path))?,
    };
    // Only a file this user wrote and nobody linked elsewhere: a file
    // planted by someone who can write to the directory (a group-writable
    // parent of the store) names no pause process.
    let st = rustix::fs::fstat(&fd).map_err(state_err("stat", &path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_uid != rustix::process::getuid().as_raw()
        || st.st_nlink != 1
    {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_PID_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RootlessError::PauseState {
            op: "read",
            path,
            source,
        })?;
    if bytes.len() as u64 > MAX_PID_FILE {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The two namespace descriptors of a pause process.
#[derive(Debug)]
struct Namespaces {
    user: OwnedFd,
    mnt: OwnedFd,
}

/// The namespaces of the process `r` names, when it is that very process
/// (same start time, boot and namespaces), read through one descriptor of
/// its `/proc` directory; the record as found.
fn open_namespaces(r: &PauseRecord) -> Option<(Namespaces, PauseRecord)> {
    if r.boot_id != crate::model::boot_id() {
        return None;
    }
    let proc_dir = rustix::fs::open(
        format!("/proc/{}", r.pid),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let ns = |name: &str| {
        rustix::fs::openat(
            &proc_dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    };
    let user = ns("ns/user")?;
    let mnt = ns("ns/mnt")?;
    // Read after the namespaces were opened: the directory descriptor
    // answers for the process it was opened on, or not at all.
    let stat = ns("stat")?;
    let mut text = String::new();
    std::fs::File::from(stat)
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    let start_time = crate::model::parse_start_time(&text)?;
    let found = PauseRecord {
        pid: r.pid,
        start_time,
        boot_id: r.boot_id.clone(),
        user_ns: ns_id(&user)?,
        mnt_ns: ns_id(&mnt)?,
    };
    (found == *r).then_some((Namespaces { user, mnt }, found))
}

/// The (device, inode) of the file `fd` opens.
fn ns_id(fd: &OwnedFd) -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// The (device, inode) of what `path` names, its last link followed (a
/// namespace's or `exe`'s magic link in `/proc`).
fn stat_id(path: impl rustix::path::Arg) -> Option<(u64, u64)> {
    let st = rustix::fs::stat(path).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Kills every process of this program (the same executable: monitors
/// and commands that had joined) still in both namespaces of the dead
/// pause process `r` (same boot only), scanning `/proc` until a scan
/// finds none (at most [`KILL_ROUNDS`]); how many were killed. A
/// namespace's inode number is reused once it is freed, so the numbers
/// alone could name another program's sandbox: that program is never
/// another run of this executable, and the caller's own namespaces are
/// never the dead ones.
fn kill_leftovers(r: &PauseRecord) -> usize {
    if r.boot_id != crate::model::boot_id() {
        return 0;
    }
    if stat_id("/proc/self/ns/user") == Some(r.user_ns)
        || stat_id("/proc/self/ns/mnt") == Some(r.mnt_ns)
    {
        return 0;
    }
    let Some(exe) = stat_id("/proc/self/exe") else {
        return 0;
    };
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return killed;
        };
        let mut found = 0;
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if stat_id(format!("/proc/{pid}/ns/user")) == Some(r.user_ns)
                && stat_id(format!("/proc/{pid}/ns/mnt")) == Some(r.mnt_ns)
                && stat_id(format!("/proc/{pid}/exe")) == Some(exe)
            {
                if let Some(p) = Pid::from_raw(pid) {
                    if rustix::process::kill_process(p, Signal::KILL).is_ok() {
                        found += 1;
                    }
                }
            }
        }
        if found == 0 {
            break;
        }
        killed += found;
        // A killed process leaves its namespaces when it has exited.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}

/// Starts a pause process, records it in the pid file, lets it go on.
fn start(dirfd: &OwnedFd, dir: &Path) -> Result<PauseRecord, RootlessError> {
    use rustix::process::{kill_process, waitpid, WaitOptions};
    let maps = UserNamespaceMaps::for_current_user()?;
    let mut child = Command::new("/proc/self/exe")
        .env(PAUSE_ENV, std::process::id().to_string())
        .env_remove(super::ENTER_ENV)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| RootlessError::Process {
            step: "starting the pause process",
            source,
        })?;
    let pid = Pid::from_raw(child.id() as i32).ok_or(RootlessError::Process {
        step: "reading the pause process's pid",
        source: std::io::ErrorKind::InvalidData.into(),
    })?;
    let fail = |child: &mut std::process::Child, e: RootlessError| {
        let _ = child.kill();
        let _ = child.wait();
        e
    };
    let status = loop {
        match waitpid(Some(pid), WaitOptions::UNTRACED) {
            Err(rustix::io::Errno::INTR) | Ok(None) => continue,
            Err(e) => {
                let e = RootlessError::Process {
                    step: "waiting for the pause process to stop",
                    source: e.into(),
                };
                return Err(fail(&mut child, e));
            }
            Ok(Some((_, s))) => break s,
        }
    };
    if !status.stopped() {
        return Err(RootlessError::ChildEnded {
            status: status_code(status),
        });
    }
    if let Err(e) = maps.apply(child.id()) {
        return Err(fail(&mut child, e));
    }
    if let Err(e) = kill_process(pid, Signal::CONT) {
        let e = RootlessError::Process {
            step: "continuing the pause process",
            source: e.into(),
        };
        return Err(fail(&mut child, e));
    }
    // It says when its mounts are set up; nothing (end of file) when it
    // failed, after saying why on stderr.
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = std::io::BufReader::new(stdout.take(64)).read_line(&mut line);
    }
    if line.trim_end() != READY {
        let status = child.wait().map_or(1, |s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(1)
        });
        return Err(RootlessError::ChildEnded { status });
    }
    let record = open_record_of(child.id()).ok_or_else(|| {
        fail(
            &mut child,
            RootlessError::Enter {
                step: "reading the pause process's namespaces",
                source: std::io::ErrorKind::NotFound.into(),
            },
        )
    })?;
    if let Err(e) = write_record(dirfd, dir, &record) {
        return Err(fail(&mut child, e));
    }
    // The go: from here it outlives this command. Had this command died
    // before, the pause process would have read the end of its input and
    // left, rather than lived on unrecorded.
    let go = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(b"g"),
        None => Err(std::io::ErrorKind::BrokenPipe.into()),
    };
    if let Err(source) = go {
        let e = RootlessError::Process {
            step: "releasing the pause process",
            source,
        };
        return Err(fail(&mut child, e));
    }
    Ok(record)
}

/// The record of the process `pid` as it is now.
fn open_record_of(pid: u32) -> Option<PauseRecord> {
    let ns = |name: &str| stat_id(format!("/proc/{pid}/ns/{name}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(PauseRecord {
        pid,
        start_time: crate::model::parse_start_time(&stat)?,
        boot_id: crate::model::boot_id(),
        user_ns: ns("user")?,
        mnt_ns: ns("mnt")?,
    })
}

/// Writes the pid file atomically (a temporary file renamed over it).
fn write_record(dirfd: &OwnedFd, dir: &Path, r: &PauseRecord) -> Result<(), RootlessError> {
    const TMP: &str = "pause.pid.tmp";
    let tmp_path = dir.join(TMP);
    let bytes = serde_json::to_vec(r).map_err(|e| RootlessError::PauseState {
        op: "encode",
        path: tmp_path.clone(),
        source: e.into(),
    })?;
    let _ = rustix::fs::unlinkat(dirfd, TMP, rustix::fs::AtFlags::empty());
    let fd = rustix::fs::openat(
        dirfd,
        TMP,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(state_err("create", &tmp_path))?;
    std::fs::File::from(fd)
        .write_all(&bytes)
        .map_err(|source| RootlessError::PauseState {
            op: "write",
            path: tmp_path.clone(),
            source,
        })?;
    rustix::fs::renameat(dirfd, TMP, dirfd, PID_FILE)
        .map_err(state_err("rename", &dir.join(PID_FILE)))
}

/// Moves this process into `ns`: user first (which gives it every
/// capability there), then mount; back into its working directory by
/// path, or, where the path is not there, by descriptor.
fn join(ns: &Namespaces) -> Result<(), RootlessError> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    let cwd = rustix::process::getcwd(Vec::new()).ok();
    let cwd_fd = rustix::fs::open(
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let enter = |step| {
        move |e: rustix::io::Errno| RootlessError::Enter {
            step,
            source: e.into(),
        }
    };
    move_into_link_name_space(ns.user.as_fd(), Some(LinkNameSpaceType::User))
        .map_err(enter("joining the pause process's user namespace"))?;
    move_into_link_name_space(ns.mnt.as_fd(), Some(LinkNameSpaceType::Mount))
        .map_err(enter("joining the pause process's mount namespace"))?;
    let by_path = cwd.is_some_and(|c| rustix::process::chdir(c.as_c_str()).is_ok());
    if !by_path {
        if let Some(fd) = cwd_fd {
            rustix::process::fchdir(&fd).map_err(enter("entering the working directory"))?;
        }
    }
    Ok(())
}

/// The pause process's own part, in the re-executed program (see
/// [`finish_entry`](super::finish_entry)): enter, stop for the maps, make
/// the mounts receive the host's, leave the session, say ready, wait for
/// the go, then only wait. Never returns; exits 1 on a failure, having
/// said why on stderr.
pub(super) fn run(parent: Option<u32>) -> ! {
    match set_up(parent) {
        Ok(()) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("imagectl pause process: {e}");
            std::process::exit(1)
        }
    }
}

fn set_up(parent: Option<u32>) -> Result<(), RootlessError> {
    use rustix::process::{getpid, getuid, kill_process};
    let enter = |step| {
        move |e: rustix::io::Errno| RootlessError::Enter {
            step,
            source: e.into(),
        }
    };
    crate::sys::unshare_user_and_mount().map_err(|source| RootlessError::Enter {
        step: "unshare",
        source,
    })?;
    // Killed with the command that starts it while it waits for the maps.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(enter("PR_SET_PDEATHSIG"))?;
    let parent_is_there =
        || rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) == parent;
    if !parent_is_there() {
        std::process::exit(1);
    }
    kill_process(getpid(), Signal::STOP).map_err(enter("stopping for the maps"))?;
    if !getuid().is_root() {
        return Err(RootlessError::Enter {
            step: "the uid map",
            source: std::io::Error::other("the parent wrote no map"),
        });
    }
    // Slaves of the host's mounts: what the host mounts later shows here;
    // nothing mounted here reaches the host.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(enter("making mounts slaves of the host's"))?;
    rustix::process::setsid().map_err(enter("setsid"))?;
    rustix::process::chdir("/").map_err(enter("chdir /"))?;
    rustix::process::set_parent_process_death_signal(None).map_err(enter("PR_SET_PDEATHSIG"))?;
    // Had the command died before the line above, this process would be
    // gone; after it, its input ends without the go below.
    if !parent_is_there() {
        std::process::exit(1);
    }
    let mut out = std::io::stdout();
    writeln!(out, "{READY}")
        .and_then(|()| out.flush())
        .map_err(|source| RootlessError::Process {
            step: "saying ready",
            source,
        })?;
    let mut go = [0u8; 1];
    if !matches!(std::io::stdin().read(&mut go), Ok(1)) {
        // The command ended before it recorded this process.
        std::process::exit(1);
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| RootlessError::Process {
            step: "opening /dev/null",
            source,
        })?;
    for dup in [
        rustix::stdio::dup2_stdin,
        rustix::stdio::dup2_stdout,
        rustix::stdio::dup2_stderr,
    ] {
        dup(&null).map_err(enter("closing the standard streams"))?;
    }
    drop(null);
    crate::sys::close_from(3);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_core::{Classify, ErrorKind};

    /// This test process as a pause record: a live process whose identity
    /// the checks can read.
    fn me() -> PauseRecord {
        open_record_of(std::process::id()).expect("own record")
    }

    fn write(dir: &Path, r: &PauseRecord) {
        let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        write_record(&fd, dir, r).unwrap();
    }

    #[test]
    fn a_record_names_a_process_only_when_every_part_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(current(&dir.join("missing")).unwrap(), None);
        assert_eq!(current(dir).unwrap(), None);
        let live = me();
        write(dir, &live);
        assert_eq!(current(dir).unwrap(), Some(live.clone()));
        // A pid reused (another start time), another boot, other namespaces.
        for changed in [
            PauseRecord {
                start_time: live.start_time + 1,
                ..live.clone()
            },
            PauseRecord {
                boot_id: "another-boot".into(),
                ..live.clone()
            },
            PauseRecord {
                user_ns: (live.user_ns.0, live.user_ns.1 + 1),
                ..live.clone()
            },
            PauseRecord {
                mnt_ns: (live.mnt_ns.0, live.mnt_ns.1 + 1),
                ..live.clone()
            },
        ] {
            write(dir, &changed);
            assert_eq!(current(dir).unwrap(), None, "{changed:?}");
        }
        // Nothing for a process that is gone; nothing left in namespaces
        // no process is in.
        let gone = PauseRecord {
            pid: u32::MAX / 2,
            ..live.clone()
        };
        write(dir, &gone);
        assert_eq!(current(dir).unwrap(), None);
        let dead_ns = PauseRecord {
            user_ns: (0, 1),
            mnt_ns: (0, 2),
            ..gone
        };
        assert_eq!(kill_leftovers(&dead_ns), 0);
        // A dead pause process whose namespace numbers are the caller's own
        // (reused, or planted): nothing is killed, this process included.
        assert_eq!(
            kill_leftovers(&PauseRecord {
                pid: u32::MAX / 2,
                ..live
            }),
            0
        );
    }

    #[test]
    fn hostile_pid_files_name_no_process_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let pid_file = dir.join(PID_FILE);
        for junk in [
            b"".to_vec(),
            b"{".to_vec(),
            b"12345".to_vec(),
            vec![b' '; MAX_PID_FILE as usize + 1],
        ] {
            std::fs::write(&pid_file, &junk).unwrap();
            assert_eq!(current(dir).unwrap(), None);
        }
        // A record padded past the limit is not read whole, so not trusted.
        let mut padded = serde_json::to_vec(&me()).unwrap();
        padded.resize(MAX_PID_FILE as usize + 1, b' ');
        std::fs::write(&pid_file, &padded).unwrap();
        assert_eq!(current(dir).unwrap(), None);
        // A pid file that is a link, to a valid record, is refused.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, serde_json::to_vec(&me()).unwrap()).unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &pid_file).unwrap();
        let e = current(dir).unwrap_err();
        assert!(matches!(e, RootlessError::PauseState { .. }), "{e:?}");
        // A valid record hard-linked from elsewhere, or written by another
        // user (root gives it away here), names no process.
        std::fs::remove_file(&pid_file).unwrap();
        std::fs::hard_link(&elsewhere, &pid_file).unwrap();
        assert_eq!(current(dir).unwrap(), None);
        std::fs::remove_file(&elsewhere).unwrap();
        assert_eq!(current(dir).unwrap(), Some(me()));
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&pid_file, Some(54321), None).unwrap();
            assert_eq!(current(dir).unwrap(), None);
        }
        // So is a directory that is a link.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(dir, &link).unwrap();
        let e = join_or_start(&link).unwrap_err();
        assert!(matches!(e, RootlessError::PauseState { .. }), "{e:?}");
    }

    #[test]
    fn another_users_directory_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(54321), None).unwrap();
        for e in [current(&dir).unwrap_err(), join_or_start(&dir).unwrap_err()] {
            assert!(
                matches!(e, RootlessError::DirNotOwned { owner: 54321, .. }),
                "{e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        }
    }
}
