//! Raw system calls of the native backend: `clone` into new namespaces and
//! everything the child does between `clone` and `execve`. The only module
//! of this crate with `unsafe` code.
//!
//! # Safety
//!
//! The child of a `clone` made from a multi-threaded process owns a copy of
//! memory in which other threads may have held locks (the allocator's,
//! stdio's, the environment's) at the moment of the clone; those locks stay
//! held forever in the child. So between [`spawn`] and `execve` the child
//! (see [`child_main`]) only:
//! - reads the [`ChildPlan`] prepared before the clone (C strings, argv and
//!   envp pointer arrays, file descriptors, numbers): no allocation, no
//!   `String`, no formatting, no `std::io`, no locks, no panics (no
//!   indexing that could panic, no `unwrap`);
//! - calls raw system calls through `libc` (thin, async-signal-safe
//!   wrappers or `libc::syscall`), keeps small buffers on its stack;
//! - reports a failure as a fixed 8-byte record (step number, errno) on a
//!   `CLOEXEC` pipe and leaves with `_exit`, never unwinding.
//!
//! The clone is a raw `clone(2)` system call with a null stack, which has
//! `fork(2)` semantics (the child runs on a copy of the caller's stack) but
//! runs no `pthread_atfork` handlers. glibc's cached thread data in the
//! child is stale (its TID), so no pthread function is called there.
//!
//! Each `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use libc::{c_char, c_int, c_ulong};

/// `PR_CAP_AMBIENT` / `PR_CAP_AMBIENT_CLEAR_ALL` (prctl(2)).
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
/// `SIOCGIFFLAGS` / `SIOCSIFFLAGS` (netdevice(7)).
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
/// `_LINUX_CAPABILITY_VERSION_3` (capget(2)).
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Fixed step numbers reported by the child with its errno; operations of
/// [`ChildPlan::steps`] report `STEP_OPS + index`.
pub(crate) mod step {
    pub const READ_GO: u32 = 1;
    pub const PDEATHSIG: u32 = 2;
    pub const SETNS: u32 = 3;
    pub const CLONE_INNER: u32 = 4;
    pub const MOUNT_PRIVATE: u32 = 5;
    pub const BIND_ROOT: u32 = 6;
    pub const OPEN_ROOT: u32 = 7;
    pub const PIVOT_ROOT: u32 = 8;
    pub const READONLY_ROOT: u32 = 9;
    pub const HOSTNAME: u32 = 10;
    pub const LOOPBACK: u32 = 11;
    pub const RLIMIT: u32 = 12;
    pub const STDIO: u32 = 13;
    pub const SETSID: u32 = 14;
    pub const CONTROLLING_TTY: u32 = 15;
    pub const BOUNDING_SET: u32 = 16;
    pub const KEEPCAPS: u32 = 17;
    pub const SETGROUPS: u32 = 18;
    pub const SETGID: u32 = 19;
    pub const SETUID: u32 = 20;
    pub const CAPSET: u32 = 21;
    pub const AMBIENT: u32 = 22;
    pub const NO_NEW_PRIVS: u32 = 23;
    pub const CLOSE_FDS: u32 = 24;
    pub const CHDIR: u32 = 25;
    pub const CWD_OUTSIDE_ROOT: u32 = 26;
    pub const INIT_FORK: u32 = 27;
    pub const EXEC: u32 = 28;
    pub const SECCOMP: u32 = 29;
    /// A timing record, not a failure (`ChildPlan::trace_base_us`): this
    /// plus the phase's index in [`TRACE_PHASES`], with the microseconds
    /// since the clone in place of the errno.
    pub const TRACE: u32 = 1 << 30;
    /// The phases a traced child reports the end of.
    pub const TRACE_PHASES: [&str; 6] = [
        "released",
        "root set up",
        "hostname, loopback",
        "in its cgroups",
        "credentials",
        "before execve",
    ];
    pub const OPS: u32 = 100;
}

/// One filesystem operation of the child, before `pivot_root`. Paths named
/// `target`/`parent` are relative to the container's root and resolved with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink in the
/// image can never point a mount outside the root; the operation then acts
/// on `/proc/self/fd/N` of what was resolved.
#[derive(Debug)]
pub(crate) enum Op {
    /// `mount(source, target, fstype, flags, data)`. With
    /// `ordinary_dir`, `target` must be a directory reached through no
    /// symlink at all (`RESOLVE_NO_SYMLINKS`, `O_DIRECTORY`), runc's rule
    /// for proc and sysfs: else `ELOOP` or `ENOTDIR`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
        ordinary_dir: bool,
    },
    /// A bind mount of the host path `source` (resolved in the child's mount
    /// namespace) on `target`, then, when `remount` has flags, a remount
    /// adding them (`ro`, `nosuid`, ...).
    Bind {
        source: CString,
        target: CString,
        recursive: bool,
        remount: c_ulong,
    },
    /// `mkdirat(parent, name, mode)`; an existing entry is fine.
    Mkdir {
        parent: CString,
        name: CString,
        mode: u32,
    },
    /// `mknodat(parent, name, mode, dev)`.
    Mknod {
        parent: CString,
        name: CString,
        mode: u32,
        dev: u64,
    },
    /// Creates an empty file (a bind target); an existing one is fine.
    Touch { parent: CString, name: CString },
    /// `symlinkat(target, parent, name)`.
    Symlink {
        parent: CString,
        name: CString,
        target: CString,
    },
    /// Masks `target`: the container's `dev/null` bound over a file, an
    /// empty read-only tmpfs over a directory; absent paths are skipped.
    Mask { target: CString, dev_null: CString },
    /// Makes `target` read-only (bind on itself, remount read-only keeping
    /// its other flags); absent paths are skipped.
    ReadOnly { target: CString },
}

/// Capability sets (bit n = capability n) and the highest capability number
/// the kernel knows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub last_cap: u32,
}

/// Everything the child needs, prepared before the clone.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// Host path of the root filesystem; `None` when joining a running
    /// container (exec), which has its root already.
    pub root: Option<CString>,
    /// Filesystem operations, in order.
    pub ops: Vec<Op>,
    /// Remount `/` read-only after `pivot_root`.
    pub readonly_root: bool,
    /// `sethostname`.
    pub hostname: Option<CString>,
    /// Bring `lo` up (a new network namespace).
    pub loopback: bool,
    /// `(resource, soft, hard)`.
    pub rlimits: Vec<(c_int, u64, u64)>,
    /// Descriptors to become 0, 1 and 2 (all >= 3).
    pub stdio: [RawFd; 3],
    /// Make fd 0 the controlling terminal (after `setsid`).
    pub tty: bool,
    /// Fork a reaper as pid 1 (see [`init_loop`]).
    pub init: bool,
    /// Capability sets to end with; `None` keeps them.
    pub caps: Option<Caps>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub umask: u32,
    pub no_new_privs: bool,
    /// Seccomp BPF programs, installed in order (see
    /// `native::seccomp`): the last step before `execve` with
    /// `no_new_privs`, else before the credentials change (installing a
    /// filter without `no_new_privs` needs `CAP_SYS_ADMIN`), as runc does.
    pub seccomp: Vec<Vec<libc::sock_filter>>,
    /// The working directory (absolute, inside the container).
    pub cwd: CString,
    /// Paths to try `execve` on, in order (PATH lookup done in advance).
    pub programs: Vec<CString>,
    pub argv: CVec,
    pub envp: CVec,
    /// The read end of the "go" pipe: the child waits for one byte before
    /// anything (the uid/gid maps are written), and for a second one once
    /// its mounts are done, before its limits, credentials and `execve`
    /// (it is in its cgroups: the parent joins them meanwhile, so that the
    /// cgroup move's RCU grace period overlaps the mount work instead of
    /// preceding it). EOF means the parent is gone, or gave up.
    pub go_read: RawFd,
    /// Descriptors the child closes at once (the parent's ends of pipes).
    pub close_first: Vec<RawFd>,
    /// The write end of the error pipe (`CLOEXEC`).
    pub err_write: RawFd,
    /// Namespaces to join first (exec): `(fd, CLONE_NEW*)`.
    pub setns: Vec<(RawFd, c_int)>,
    /// With a value (the parent's [`monotonic_us`] at the clone), the
    /// child reports the end of each of [`step::TRACE_PHASES`] on the
    /// error pipe (`IMAGE_RUNTIME_START_TRACE`, for the start bench).
    pub trace_base_us: Option<i64>,
}

/// `CLOCK_MONOTONIC` in microseconds (async-signal-safe).
pub(crate) fn monotonic_us() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the timespec it is given; it is
    // async-signal-safe.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000
}

/// Sends `signal` to process `pid` (kill(2)), a real-time one too:
/// rustix names only the standard signals safely. A `pid` that is not
/// positive (a process group, or every process, to kill(2)) or that is
/// this process is refused (`InvalidInput`).
pub(crate) fn kill(pid: rustix::process::Pid, signal: crate::signal::Signal) -> io::Result<()> {
    let raw = pid.as_raw_nonzero().get();
    if raw <= 0 || pid == rustix::process::getpid() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    // `raw` is positive and not this process's ID, so it names one other
    // process (checked above); `Signal` holds 1..=31 or 34..=64, never
    // glibc's own 32 and 33.
    let r = unsafe { libc::kill(raw, signal.as_raw()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reports the end of trace phase `phase` on `fd` when tracing.
fn trace(plan: &ChildPlan, fd: c_int, phase: u32) {
    if let Some(base) = plan.trace_base_us {
        let us = (monotonic_us() - base).clamp(0, i64::from(i32::MAX)) as i32;
        let rec = record(step::TRACE + phase, us);
        // SAFETY: write(2) of an 8-byte stack buffer.
        unsafe {
            libc::write(fd, rec.as_ptr().cast(), rec.len());
        }
    }
}

/// A null-terminated array of C strings, as `execve` wants it.
#[derive(Debug)]
pub(crate) struct CVec {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and
// never mutated; moving the value moves the `Vec`s, whose heap buffers stay
// in place, so the pointers stay valid on any thread.
unsafe impl Send for CVec {}

impl CVec {
    pub(crate) fn new(strings: Vec<CString>) -> CVec {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CVec {
            _strings: strings,
            ptrs,
        }
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Clones a child into new namespaces (`flags`: `CLONE_NEW*`) that runs
/// `plan` ([`child_main`]); returns its pid. With `plan.setns` set, the
/// clone instead makes a helper that joins those namespaces and clones the
/// real child as a sibling (`CLONE_PARENT`, so it is our child): the pid
/// returned is the helper's, and the real child's pid comes on
/// `pid_write` (see [`read_pid`]).
///
/// # Errors
/// `clone(2)` failures.
pub(crate) fn spawn(flags: c_int, plan: &ChildPlan, pid_write: Option<RawFd>) -> io::Result<i32> {
    let flags = (flags as c_ulong) | libc::SIGCHLD as c_ulong;
    // SAFETY: a raw clone(2) without CLONE_VM and with a null stack has
    // fork(2) semantics: the child gets a copy of the address space and
    // continues on a copy of this stack. The child branch never returns
    // from this function: `child_main` and `exec_helper` end in execve or
    // _exit and do only async-signal-safe work (module docs).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        if plan.setns.is_empty() {
            child_main(plan);
        } else {
            exec_helper(plan, pid_write.unwrap_or(-1));
        }
    }
    Ok(pid as i32)
}

/// Reads the pid an exec helper sent (4 bytes); `None` on EOF.
///
/// # Errors
/// `read(2)` failures.
pub(crate) fn read_pid(fd: RawFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let n = read_full(fd, &mut buf)?;
    Ok((n == 4).then(|| i32::from_ne_bytes(buf)))
}

/// Reads the child's error record: `None` at EOF without one (its exec
/// succeeded or it died), `Some((step, errno))` otherwise.
///
/// # Errors
/// `read(2)` failures.
pub(crate) fn read_child_error(fd: RawFd) -> io::Result<Option<(u32, i32)>> {
    let mut buf = [0u8; 8];
    let n = read_full(fd, &mut buf)?;
    if n < 8 {
        return Ok(None);
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let err = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(Some((step, err)))
}

fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let rest = &mut buf[n..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let r = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        n += r as usize;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// The child. Everything below runs between clone and execve: see the module
// docs for the rules. No allocation, no panics.
// ---------------------------------------------------------------------------

/// The 8-byte failure record (no indexing, so no panic path).
fn record(step: u32, err: c_int) -> [u8; 8] {
    let [a, b, c, d] = step.to_ne_bytes();
    let [e, f, g, h] = err.to_ne_bytes();
    [a, b, c, d, e, f, g, h]
}

/// Reports `(step, errno)` on the error pipe and exits.
fn fail(plan: &ChildPlan, step: u32, err: c_int) -> ! {
    let rec = record(step, err);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `rec` is a
    // valid 8-byte buffer on this stack.
    unsafe {
        libc::write(plan.err_write, rec.as_ptr().cast(), rec.len());
        libc::_exit(127)
    }
}

/// Checks a libc return value: negative means failure at `step`.
fn check(plan: &ChildPlan, step: u32, r: libc::c_long) {
    if r < 0 {
        fail(plan, step, errno());
    }
}

/// `/proc/self/fd/<fd>` as a NUL-terminated string in a stack buffer.
struct FdPath([u8; 32]);

impl FdPath {
    fn new(fd: c_int) -> FdPath {
        let mut buf = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        let mut i = 0;
        for b in prefix {
            buf[i] = *b;
            i += 1;
        }
        let mut digits = [0u8; 12];
        let mut n = 0;
        let mut v = fd.max(0) as u32;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 || n == digits.len() {
                break;
            }
        }
        while n > 0 && i < buf.len() - 1 {
            n -= 1;
            buf[i] = digits[n];
            i += 1;
        }
        FdPath(buf)
    }

    fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// `struct open_how` (openat2(2)).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The kernel's `struct statfs` on 64-bit Linux (statfs(2)), read with the
/// raw system call: glibc's `statvfs` may parse `/proc/mounts` (allocating).
#[repr(C)]
struct KStatfs {
    f_type: i64,
    f_bsize: i64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_fsid: [i32; 2],
    f_namelen: i64,
    f_frsize: i64,
    f_flags: i64,
    f_spare: [i64; 4],
}

/// Opens `rel` inside the root `rootfd` (`O_PATH`), never leaving it.
fn open_in_root(rootfd: c_int, rel: &CString, extra: u64) -> Result<c_int, c_int> {
    open_in_root_with(rootfd, rel, extra, 0)
}

/// [`open_in_root`] with more `RESOLVE_*` flags.
fn open_in_root_with(
    rootfd: c_int,
    rel: &CString,
    extra: u64,
    resolve: u64,
) -> Result<c_int, c_int> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64 | extra,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | resolve,
    };
    // EAGAIN: a rename or mount anywhere on the system raced a `..` of the
    // path; openat2(2) says to retry (bounded here: a steady race is an
    // error like any other).
    let mut tries = 0;
    loop {
        // SAFETY: openat2(2) with a valid C string and a valid open_how of
        // the size passed; it only returns a descriptor or an error.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                rootfd,
                rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            return Ok(fd as c_int);
        }
        let e = errno();
        tries += 1;
        if e != libc::EAGAIN || tries >= OPENAT2_TRIES {
            return Err(e);
        }
    }
}

/// How often an `openat2` that failed with `EAGAIN` is tried in all.
const OPENAT2_TRIES: u32 = 64;

fn close(fd: c_int) {
    // SAFETY: closing a descriptor this child opened and no longer uses.
    unsafe {
        libc::close(fd);
    }
}

fn mount_raw(
    source: *const c_char,
    target: *const c_char,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
) -> c_int {
    // SAFETY: mount(2) with NUL-terminated strings or nulls, all valid for
    // the call.
    let r = unsafe { libc::mount(source, target, fstype, flags, data.cast()) };
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The flags of the mount at `path` that a bind remount must keep.
fn kept_flags(path: *const c_char) -> c_ulong {
    // SAFETY: all-zero is a valid KStatfs (integers only).
    let mut st: KStatfs = unsafe { std::mem::zeroed() };
    // SAFETY: the raw statfs(2) writes one `struct statfs`, which KStatfs
    // lays out exactly; `path` is NUL-terminated.
    if unsafe { libc::syscall(libc::SYS_statfs, path, &mut st as *mut KStatfs) } < 0 {
        return 0;
    }
    let f = st.f_flags as c_ulong;
    let mut out = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag as c_ulong != 0 {
            out |= ms_flag;
        }
    }
    out
}

fn remount_at(path: *const c_char, flags: c_ulong) -> c_int {
    let keep = kept_flags(path);
    mount_raw(
        std::ptr::null(),
        path,
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REMOUNT | keep | flags,
        std::ptr::null(),
    )
}

/// Runs one [`Op`]; returns 0 or an errno.
fn run_op(rootfd: c_int, op: &Op) -> c_int {
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            ordinary_dir,
        } => {
            let opened = if *ordinary_dir {
                open_in_root_with(
                    rootfd,
                    target,
                    libc::O_DIRECTORY as u64,
                    libc::RESOLVE_NO_SYMLINKS,
                )
            } else {
                open_in_root(rootfd, target, 0)
            };
            let fd = match opened {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            let p = FdPath::new(fd);
            let r = mount_raw(
                opt_ptr(source),
                p.as_ptr(),
                opt_ptr(fstype),
                *flags,
                opt_ptr(data),
            );
            close(fd);
            r
        }
        Op::Bind {
            source,
            target,
            recursive,
            remount,
        } => {
            let fd = match open_in_root(rootfd, target, 0) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            let p = FdPath::new(fd);
            let rec = if *recursive { libc::MS_REC } else { 0 };
            let r = mount_raw(
                source.as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | rec,
                std::ptr::null(),
            );
            close(fd);
            if r != 0 || *remount == 0 {
                return r;
            }
            // Resolve again: the new mount now sits on top of the target.
            let fd = match open_in_root(rootfd, target, 0) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            let p = FdPath::new(fd);
            let r = remount_at(p.as_ptr(), *remount);
            close(fd);
            r
        }
        Op::Mkdir { parent, name, mode } => {
            let fd = match open_in_root(rootfd, parent, libc::O_DIRECTORY as u64) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            // SAFETY: mkdirat(2) on a directory descriptor and a C string.
            let r = unsafe { libc::mkdirat(fd, name.as_ptr(), *mode) };
            let e = if r < 0 { errno() } else { 0 };
            close(fd);
            if e == libc::EEXIST {
                0
            } else {
                e
            }
        }
        Op::Mknod {
            parent,
            name,
            mode,
            dev,
        } => {
            let fd = match open_in_root(rootfd, parent, libc::O_DIRECTORY as u64) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            // SAFETY: mknodat(2) on a directory descriptor and a C string.
            let r = unsafe { libc::mknodat(fd, name.as_ptr(), *mode, *dev) };
            let e = if r < 0 { errno() } else { 0 };
            close(fd);
            if e == libc::EEXIST {
                0
            } else {
                e
            }
        }
        Op::Touch { parent, name } => {
            let fd = match open_in_root(rootfd, parent, libc::O_DIRECTORY as u64) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            // A directory opened O_PATH cannot be used with openat(O_CREAT)
            // on every kernel: reopen it for real through /proc.
            let p = FdPath::new(fd);
            // SAFETY: open(2) of a NUL-terminated path.
            let dir = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            close(fd);
            if dir < 0 {
                return errno();
            }
            // SAFETY: openat(2) on a directory descriptor and a C string.
            let f = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644 as libc::c_uint,
                )
            };
            let e = if f < 0 { errno() } else { 0 };
            if f >= 0 {
                close(f);
            }
            close(dir);
            e
        }
        Op::Symlink {
            parent,
            name,
            target,
        } => {
            let fd = match open_in_root(rootfd, parent, libc::O_DIRECTORY as u64) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            // SAFETY: symlinkat(2) with C strings and a directory descriptor.
            let r = unsafe { libc::symlinkat(target.as_ptr(), fd, name.as_ptr()) };
            let e = if r < 0 { errno() } else { 0 };
            close(fd);
            if e == libc::EEXIST {
                0
            } else {
                e
            }
        }
        Op::Mask { target, dev_null } => {
            let fd = match open_in_root(rootfd, target, 0) {
                Ok(fd) => fd,
                Err(libc::ENOENT) => return 0,
                Err(e) => return e,
            };
            // SAFETY: fstat(2) into a zeroed struct on this stack.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is open, `st` valid for writes.
            if unsafe { libc::fstat(fd, &mut st) } < 0 {
                let e = errno();
                close(fd);
                return e;
            }
            let p = FdPath::new(fd);
            let r = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                mount_raw(
                    c"tmpfs".as_ptr(),
                    p.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY,
                    std::ptr::null(),
                )
            } else {
                match open_in_root(rootfd, dev_null, 0) {
                    Ok(nfd) => {
                        let np = FdPath::new(nfd);
                        let r = mount_raw(
                            np.as_ptr(),
                            p.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        );
                        close(nfd);
                        r
                    }
                    Err(e) => e,
                }
            };
            close(fd);
            r
        }
        Op::ReadOnly { target } => {
            let fd = match open_in_root(rootfd, target, 0) {
                Ok(fd) => fd,
                Err(libc::ENOENT) => return 0,
                Err(e) => return e,
            };
            let p = FdPath::new(fd);
            let r = mount_raw(
                p.as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            );
            close(fd);
            if r != 0 {
                return r;
            }
            let fd = match open_in_root(rootfd, target, 0) {
                Ok(fd) => fd,
                Err(e) => return e,
            };
            let p = FdPath::new(fd);
            let r = remount_at(p.as_ptr(), libc::MS_RDONLY);
            close(fd);
            r
        }
    }
}

/// Brings the loopback interface up (netdevice(7)).
fn loopback_up() -> c_int {
    // SAFETY: socket(2); the descriptor is closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return errno();
    }
    // SAFETY: a zeroed ifreq is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    let r = unsafe { libc::ioctl(s, SIOCGIFFLAGS as _, &mut ifr) };
    if r < 0 {
        let e = errno();
        close(s);
        return e;
    }
    // SAFETY: the flags member of the union is the one the ioctl filled.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(s, SIOCSIFFLAGS as _, &ifr) };
    let e = if r < 0 { errno() } else { 0 };
    close(s);
    e
}

fn set_caps(c: &Caps) -> c_int {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: c.effective as u32,
            permitted: c.permitted as u32,
            inheritable: c.inheritable as u32,
        },
        Data {
            effective: (c.effective >> 32) as u32,
            permitted: (c.permitted >> 32) as u32,
            inheritable: (c.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset(2) with a v3 header and its two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    if r < 0 {
        errno()
    } else {
        0
    }
}

/// The exec helper (first child of an exec into a running container):
/// joins the namespaces, clones the real child as our sibling, sends its
/// pid and exits.
fn exec_helper(plan: &ChildPlan, pid_write: RawFd) -> ! {
    for fd in &plan.close_first {
        close(*fd);
    }
    for (fd, nstype) in &plan.setns {
        // SAFETY: setns(2) on a namespace descriptor opened by the parent.
        let r = unsafe { libc::setns(*fd, *nstype) };
        check(plan, step::SETNS, r as libc::c_long);
    }
    // SAFETY: as in `spawn`: fork semantics; the child branch ends in
    // `child_main`, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT as c_ulong) | libc::SIGCHLD as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if pid < 0 {
        fail(plan, step::CLONE_INNER, errno());
    }
    if pid == 0 {
        child_main(plan);
    }
    let b = (pid as i32).to_ne_bytes();
    // SAFETY: write(2) of a 4-byte stack buffer, then _exit(2).
    unsafe {
        libc::write(pid_write, b.as_ptr().cast(), b.len());
        libc::_exit(0)
    }
}

/// Reads one byte of the "go" pipe; the parent gone (EOF) ends the child.
fn await_parent(plan: &ChildPlan) {
    let mut go = [0u8; 1];
    loop {
        // SAFETY: read(2) into a 1-byte stack buffer.
        let r = unsafe { libc::read(plan.go_read, go.as_mut_ptr().cast(), 1) };
        if r == 1 {
            return;
        }
        if r == 0 {
            // The parent is gone or gave up: nobody wants this container.
            // SAFETY: _exit(2).
            unsafe { libc::_exit(125) }
        }
        if errno() != libc::EINTR {
            fail(plan, step::READ_GO, errno());
        }
    }
}

/// The container's process from clone to execve.
pub(crate) fn child_main(plan: &ChildPlan) -> ! {
    for fd in &plan.close_first {
        close(*fd);
    }
    // Wait for the parent: uid/gid maps written.
    await_parent(plan);
    trace(plan, plan.err_write, 0);
    // SAFETY: prctl(2) with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0) };
    check(plan, step::PDEATHSIG, r as libc::c_long);

    if let Some(root) = &plan.root {
        setup_root(plan, root);
    }
    trace(plan, plan.err_write, 1);

    if let Some(h) = &plan.hostname {
        // SAFETY: sethostname(2) with a buffer and its length.
        let r = unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) };
        check(plan, step::HOSTNAME, r as libc::c_long);
    }
    if plan.loopback {
        let e = loopback_up();
        if e != 0 {
            fail(plan, step::LOOPBACK, e);
        }
    }
    trace(plan, plan.err_write, 2);
    // Wait for the parent again: in the container's cgroups now.
    await_parent(plan);
    close(plan.go_read);
    trace(plan, plan.err_write, 3);
    for (res, soft, hard) in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit(2) with a valid struct.
        let r = unsafe { libc::setrlimit(*res as _, &lim) };
        check(plan, step::RLIMIT, r as libc::c_long);
    }

    // A session of its own: the host terminal's signals never reach it.
    // SAFETY: setsid(2).
    let r = unsafe { libc::setsid() };
    check(plan, step::SETSID, r as libc::c_long);
    for (target, fd) in plan.stdio.iter().enumerate() {
        // SAFETY: dup2(2) of a descriptor the parent prepared (>= 3) onto
        // 0..=2; dup2 clears CLOEXEC on the new descriptor.
        let r = unsafe { libc::dup2(*fd, target as c_int) };
        check(plan, step::STDIO, r as libc::c_long);
    }
    if plan.tty {
        // SAFETY: ioctl(TIOCSCTTY) on fd 0, our terminal's slave side.
        let r = unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) };
        check(plan, step::CONTROLLING_TTY, r as libc::c_long);
    }

    if let Some(caps) = &plan.caps {
        for cap in 0..=caps.last_cap.min(63) {
            if caps.bounding & (1u64 << cap) == 0 {
                // SAFETY: prctl(2) with integer arguments.
                let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) };
                check(plan, step::BOUNDING_SET, r as libc::c_long);
            }
        }
        // SAFETY: prctl(2) with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as c_ulong, 0, 0, 0) };
        check(plan, step::KEEPCAPS, r as libc::c_long);
    }
    if !plan.no_new_privs {
        let e = install_seccomp(&plan.seccomp);
        if e != 0 {
            fail(plan, step::SECCOMP, e);
        }
    }
    // SAFETY: raw setgroups/setresgid/setresuid system calls: the glibc
    // wrappers broadcast the change to every thread glibc knows of (a stale
    // list in this child, with locks), the raw calls change only this
    // single-threaded process. setgroups gets a pointer to `len` gids.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) };
    check(plan, step::SETGROUPS, r);
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) };
    check(plan, step::SETGID, r);
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) };
    check(plan, step::SETUID, r);
    if let Some(caps) = &plan.caps {
        // SAFETY: prctl(2) with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0 as c_ulong, 0, 0, 0) };
        check(plan, step::KEEPCAPS, r as libc::c_long);
        let e = set_caps(caps);
        if e != 0 {
            fail(plan, step::CAPSET, e);
        }
        // SAFETY: prctl(2) with integer arguments.
        let r = unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
        check(plan, step::AMBIENT, r as libc::c_long);
    }
    if plan.no_new_privs {
        // SAFETY: prctl(2) with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) };
        check(plan, step::NO_NEW_PRIVS, r as libc::c_long);
    }
    // SAFETY: umask(2) cannot fail.
    unsafe {
        libc::umask(plan.umask as libc::mode_t);
    }
    trace(plan, plan.err_write, 4);

    // Every descriptor but 0-2 goes (runc CVE-2024-21626): the error pipe
    // becomes 3 (close-on-exec), the rest is closed before the chdir, so no
    // leaked host directory can serve as a way out of the root.
    let mut err_fd = plan.err_write;
    if err_fd != 3 {
        // SAFETY: dup3(2) onto 3 with O_CLOEXEC.
        let r = unsafe { libc::dup3(err_fd, 3, libc::O_CLOEXEC) };
        check(plan, step::CLOSE_FDS, r as libc::c_long);
        err_fd = 3;
    }
    let plan_err = ErrFd(err_fd);
    // SAFETY: close_range(2) on descriptors this process no longer needs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            4 as libc::c_uint,
            !0 as libc::c_uint,
            0,
        )
    };
    if r < 0 {
        plan_err.fail(step::CLOSE_FDS, errno());
    }
    // SAFETY: chdir(2) with a NUL-terminated path.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        plan_err.fail(step::CHDIR, errno());
    }
    let mut buf = [0u8; 4096];
    // SAFETY: the raw getcwd(2) system call writes at most `len` bytes; it
    // returns "(unreachable)..." when the cwd is outside our root.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if r >= 0 && buf[0] != b'/' {
        plan_err.fail(step::CWD_OUTSIDE_ROOT, libc::EPERM);
    }
    if r < 0 && errno() != libc::ERANGE {
        plan_err.fail(step::CWD_OUTSIDE_ROOT, errno());
    }

    // With no_new_privs the filter comes last, so that it need not allow
    // what only the setup does; the init process is confined with it.
    if plan.no_new_privs {
        let e = install_seccomp(&plan.seccomp);
        if e != 0 {
            plan_err.fail(step::SECCOMP, e);
        }
    }
    if plan.init {
        init_fork(&plan_err);
    }
    trace(plan, plan_err.0, 5);

    let mut last = libc::ENOENT;
    for prog in &plan.programs {
        // SAFETY: execve(2) with NUL-terminated argv/envp arrays prepared
        // before the clone.
        unsafe {
            libc::execve(prog.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        }
        let e = errno();
        // As execvp: keep looking after "not there", remember "no access".
        if e == libc::EACCES {
            last = e;
        } else if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
            break;
        }
    }
    plan_err.fail(step::EXEC, last)
}

/// Installs each program with `seccomp(SECCOMP_SET_MODE_FILTER)`; the
/// errno of the first failure, or 0.
fn install_seccomp(programs: &[Vec<libc::sock_filter>]) -> c_int {
    for p in programs {
        let prog = libc::sock_fprog {
            len: p.len() as libc::c_ushort,
            filter: p.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp(2) with a sock_fprog pointing at `p`, which
        // outlives the call; the kernel copies the program.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return errno();
        }
    }
    0
}

/// The error pipe after it was moved to fd 3.
struct ErrFd(c_int);

impl ErrFd {
    fn fail(&self, step: u32, err: c_int) -> ! {
        let rec = record(step, err);
        // SAFETY: write(2) of a stack buffer, then _exit(2).
        unsafe {
            libc::write(self.0, rec.as_ptr().cast(), rec.len());
            libc::_exit(127)
        }
    }
}

/// Mounts, devices, masked paths and `pivot_root` (see [`Op`]).
fn setup_root(plan: &ChildPlan, root: &CString) {
    // Device nodes and directories get exactly their modes (0666 for
    // /dev/null); the process's umask is set before exec.
    // SAFETY: umask(2) cannot fail.
    unsafe {
        libc::umask(0);
    }
    let r = mount_raw(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    );
    if r != 0 {
        fail(plan, step::MOUNT_PRIVATE, r);
    }
    let r = mount_raw(
        root.as_ptr(),
        root.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REC,
        std::ptr::null(),
    );
    if r != 0 {
        fail(plan, step::BIND_ROOT, r);
    }
    // SAFETY: open(2) of a NUL-terminated path.
    let rootfd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if rootfd < 0 {
        fail(plan, step::OPEN_ROOT, errno());
    }
    for (i, op) in plan.ops.iter().enumerate() {
        let e = run_op(rootfd, op);
        if e != 0 {
            fail(plan, step::OPS + i as u32, e);
        }
    }
    // pivot_root(".", "."): the old root ends up on top of the new one and
    // is detached at once (as runc does), no directory for it needed.
    // SAFETY: fchdir(2) / pivot_root(2) / umount2(2) / chdir(2) with valid
    // descriptors and NUL-terminated paths.
    unsafe {
        if libc::fchdir(rootfd) < 0 {
            fail(plan, step::PIVOT_ROOT, errno());
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
            fail(plan, step::PIVOT_ROOT, errno());
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
            fail(plan, step::PIVOT_ROOT, errno());
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            fail(plan, step::PIVOT_ROOT, errno());
        }
    }
    close(rootfd);
    if plan.readonly_root {
        let r = remount_at(c"/".as_ptr(), libc::MS_RDONLY);
        if r != 0 {
            fail(plan, step::READONLY_ROOT, r);
        }
    }
}

/// `--init`: this process stays pid 1 and reaps; its child goes on to exec.
fn init_fork(err: &ErrFd) {
    // SAFETY: a zeroed sigset_t is valid; sigfillset/sigprocmask fill and
    // install it (sigprocmask is async-signal-safe; the process has one
    // thread).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
    }
    // SAFETY: fork semantics as in `spawn`; the child returns to exec.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if pid < 0 {
        err.fail(step::INIT_FORK, errno());
    }
    if pid == 0 {
        // SAFETY: restore the mask the program should start with.
        unsafe {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        return;
    }
    // The reaper keeps no error pipe: only the exec'ing child reports.
    close(err.0);
    init_loop(pid as libc::pid_t, &all)
}

/// pid 1's loop: forwards every signal to `child`, reaps every zombie, and
/// exits as `child` did (128 + signal when killed).
fn init_loop(child: libc::pid_t, all: &libc::sigset_t) -> ! {
    loop {
        // SAFETY: a zeroed siginfo_t is valid; sigwaitinfo(2) fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` is a valid set, `info` valid for writes.
        let sig = unsafe { libc::sigwaitinfo(all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            loop {
                let mut status: c_int = 0;
                // SAFETY: waitpid(2) with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    let code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        128 + libc::WTERMSIG(status)
                    };
                    // SAFETY: _exit(2).
                    unsafe { libc::_exit(code) }
                }
            }
        } else {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe {
                libc::kill(child, sig);
            }
        }
    }
}

/// `unshare(CLONE_NEWUSER | CLONE_NEWNS)` ([unshare(2)]): the calling
/// process moves into a new user namespace and a new mount namespace owned
/// by it (see `crate::rootless`). The kernel refuses (`EINVAL`) in a
/// multi-threaded process.
///
/// [unshare(2)]: https://man7.org/linux/man-pages/man2/unshare.2.html
pub(crate) fn unshare_user_and_mount() -> io::Result<()> {
    use rustix::thread::UnshareFlags;
    // SAFETY: `unshare_unsafe` is unsafe only for `CLONE_FILES` (threads
    // that would then disagree on the descriptor table); these flags leave
    // the descriptor table and memory shared as they were.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(io::Error::from)
}

/// Closes every descriptor from `first` on ([close_range(2)]); errors are
/// ignored (nothing to close, or a kernel before 5.9).
///
/// [close_range(2)]: https://man7.org/linux/man-pages/man2/close_range.2.html
pub(crate) fn close_from(first: u32) {
    // SAFETY: close_range(2) on descriptors no object of this process owns
    // any more: the caller (the pause process, single-threaded, past its
    // set-up) keeps none of its own from `first` on, and nothing reads or
    // writes them afterwards.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            !0 as libc::c_uint,
            0,
        );
    }
}
