//! Seccomp: profiles in Docker's format, Docker's default profile, and
//! their resolution into the spec's `linux.seccomp`.
//!
//! A [`Profile`] is what `docker run --security-opt seccomp=FILE` reads
//! (moby's `profiles/seccomp` format): a default action, an architecture
//! map, and rules that apply only with (`includes`) or without
//! (`excludes`) some capabilities, architectures or kernel versions.
//! [`Profile::resolve`] evaluates those conditions against the container's
//! bounding set, the host's architecture and kernel, as Docker does when it
//! builds a spec; the result is the plain [`LinuxSeccomp`] that runc, crun
//! and the native backend read.
//!
//! [`default_profile`] is Docker's default: an allow list with argument
//! filters (`personality` limited to a few personas, `clone` without
//! namespace flags, `socket` without `AF_VSOCK`) and calls allowed only
//! with a capability (`mount`, `unshare`, `setns` with `CAP_SYS_ADMIN`,
//! `reboot` with `CAP_SYS_BOOT`, `clock_settime` with `CAP_SYS_TIME`, ...).
//! It is kept here as data, written after moby's `default.json`; a
//! system call missing from it is denied with `EPERM`.
//!
//! # Security
//! A profile is input from a user: [`Profile::from_reader`] reads at most
//! [`MAX_PROFILE_BYTES`] and [`Profile::check_limits`] bounds the rules,
//! the names and the arguments before anything is built from it.

use std::collections::BTreeSet;
use std::io::Read;

use image_core::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use image_core::{Classify, ErrorKind};
use serde::{Deserialize, Serialize};

/// The largest profile file read (moby's default is about 13 KiB).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// The most rules (`syscalls[]` entries) in a profile.
pub const MAX_RULES: usize = 4096;
/// The most system call names in a profile, over all its rules.
pub const MAX_NAMES: usize = 16384;
/// The most argument conditions of one rule (a system call has six
/// arguments).
pub const MAX_ARGS: usize = 6;

/// Errors of reading and checking a seccomp profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// The profile could not be read.
    #[error("reading the seccomp profile")]
    Read(#[source] std::io::Error),
    /// The profile is larger than [`MAX_PROFILE_BYTES`].
    #[error("the seccomp profile is larger than {max} bytes", max = MAX_PROFILE_BYTES)]
    TooLarge,
    /// The profile is not valid JSON in Docker's format.
    #[error("parsing the seccomp profile")]
    Parse(#[source] serde_json::Error),
    /// More rules or names than the limits allow.
    #[error("the seccomp profile has {found} {what}, above the limit of {max}")]
    TooMany {
        /// `rules`, `system call names`, or `arguments in one rule`.
        what: &'static str,
        /// How many.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// An argument index is not 0 to 5.
    #[error("seccomp rule for {syscall:?}: argument index {index} is not 0 to 5")]
    ArgIndex {
        /// The rule's first system call name.
        syscall: String,
        /// The index.
        index: usize,
    },
    /// A `minKernel` that is not `MAJOR.MINOR`.
    #[error("seccomp rule for {syscall:?}: minKernel {value:?} is not MAJOR.MINOR")]
    MinKernel {
        /// The rule's first system call name.
        syscall: String,
        /// The value.
        value: String,
    },
}

impl Classify for SeccompError {
    fn kind(&self) -> ErrorKind {
        match self {
            SeccompError::Read(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            SeccompError::Read(_) => ErrorKind::Io,
            SeccompError::TooLarge
            | SeccompError::Parse(_)
            | SeccompError::TooMany { .. }
            | SeccompError::ArgIndex { .. }
            | SeccompError::MinKernel { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// A seccomp profile in Docker's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The action for a system call no rule matches.
    pub default_action: LinuxSeccompAction,
    /// The errno of `defaultAction` `SCMP_ACT_ERRNO` (`EPERM` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures, when there is no `archMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<Arch>>,
    /// Per native architecture, the architectures the filter covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_map: Option<Vec<ArchMap>>,
    /// Filter flags, passed on to the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    /// The rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<SyscallRule>>,
}

/// One entry of a profile's `archMap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// The native architecture this entry is for.
    pub architecture: Arch,
    /// The other architectures of its system call tables (`x86` and `x32`
    /// for `x86_64`).
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

/// One rule: an action for some system calls, maybe on conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// The system calls.
    #[serde(default)]
    pub names: Vec<String>,
    /// One system call (the older form of `names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The action when the rule matches.
    pub action: LinuxSeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` (`EPERM` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<SyscallArg>>,
    /// The rule applies only when all of these hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Selector>,
    /// The rule does not apply when any of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Selector>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A condition on one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallArg {
    /// Which argument (0 to 5).
    pub index: usize,
    /// The value compared with (the mask of `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The second value (what `SCMP_CMP_MASKED_EQ` expects after masking).
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: LinuxSeccompOperator,
}

/// Conditions of a rule: capabilities in the bounding set, Go names of
/// architectures (`amd64`, `arm64`, `x86`), a kernel version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Capability names (`CAP_SYS_ADMIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// Architectures, as Go names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    /// `MAJOR.MINOR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// What [`Profile::resolve`] evaluates a profile's conditions against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The architecture, as Go names it (`amd64`, `arm64`).
    pub arch: String,
    /// The container's bounding set, as `CAP_*` names.
    pub caps: BTreeSet<String>,
    /// The kernel's `(major, minor)`; `None` when unknown (then no rule
    /// with a `minKernel` applies).
    pub kernel: Option<(u32, u32)>,
}

impl Target {
    /// The host's architecture and kernel with the given capability names.
    pub fn host(caps: impl IntoIterator<Item = String>) -> Target {
        Target {
            arch: host_arch().to_owned(),
            caps: caps.into_iter().collect(),
            kernel: host_kernel(),
        }
    }
}

/// The host's architecture, as Go names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

/// The seccomp architecture of a Go architecture name.
fn native_arch(goarch: &str) -> Option<Arch> {
    Some(match goarch {
        "amd64" => Arch::ScmpArchX86_64,
        "arm64" => Arch::ScmpArchAarch64,
        "386" => Arch::ScmpArchX86,
        "arm" => Arch::ScmpArchArm,
        "riscv64" => Arch::ScmpArchRiscv64,
        "s390x" => Arch::ScmpArchS390x,
        "ppc64le" => Arch::ScmpArchPpc64le,
        _ => return None,
    })
}

/// The running kernel's `(major, minor)` from `uname`.
pub fn host_kernel() -> Option<(u32, u32)> {
    let uts = rustix::system::uname();
    parse_kernel(uts.release().to_str().ok()?)
}

/// `(major, minor)` from the start of a release string (`6.1.0-18-amd64`).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

impl Profile {
    /// Reads a profile of at most [`MAX_PROFILE_BYTES`] and checks its
    /// limits.
    ///
    /// # Errors
    /// [`SeccompError::Read`], [`SeccompError::TooLarge`],
    /// [`SeccompError::Parse`] and those of [`Profile::check_limits`].
    pub fn from_reader(r: impl Read) -> Result<Profile, SeccompError> {
        let mut buf = Vec::new();
        r.take(MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(SeccompError::Read)?;
        if buf.len() as u64 > MAX_PROFILE_BYTES {
            return Err(SeccompError::TooLarge);
        }
        Profile::from_slice(&buf)
    }

    /// Parses a profile and checks its limits.
    ///
    /// # Errors
    /// As [`Profile::from_reader`].
    pub fn from_slice(bytes: &[u8]) -> Result<Profile, SeccompError> {
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(SeccompError::TooLarge);
        }
        let p: Profile = serde_json::from_slice(bytes).map_err(SeccompError::Parse)?;
        p.check_limits()?;
        Ok(p)
    }

    /// Checks the counts of [`MAX_RULES`], [`MAX_NAMES`] and [`MAX_ARGS`],
    /// the argument indexes and the `minKernel` values.
    ///
    /// # Errors
    /// [`SeccompError::TooMany`], [`SeccompError::ArgIndex`],
    /// [`SeccompError::MinKernel`].
    pub fn check_limits(&self) -> Result<(), SeccompError> {
        let rules = self.syscalls.as_deref().unwrap_or(&[]);
        let too_many = |what, found, max| {
            if found > max {
                Err(SeccompError::TooMany { what, found, max })
            } else {
                Ok(())
            }
        };
        too_many("rules", rules.len(), MAX_RULES)?;
        let names: usize = rules.iter().map(|r| r.names().count()).sum();
        too_many("system call names", names, MAX_NAMES)?;
        for r in rules {
            let first = || r.names().next().unwrap_or_default().to_owned();
            let args = r.args.as_deref().unwrap_or(&[]);
            too_many("arguments in one rule", args.len(), MAX_ARGS)?;
            if let Some(a) = args.iter().find(|a| a.index >= MAX_ARGS) {
                return Err(SeccompError::ArgIndex {
                    syscall: first(),
                    index: a.index,
                });
            }
            for sel in [&r.includes, &r.excludes].into_iter().flatten() {
                if let Some(v) = &sel.min_kernel {
                    if parse_kernel(v).is_none() {
                        return Err(SeccompError::MinKernel {
                            syscall: first(),
                            value: v.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The spec's `linux.seccomp` for `target`, as Docker builds it: the
    /// architectures of the `archMap` entry of the native architecture
    /// (or `architectures`), and the rules whose `includes` all hold and
    /// none of whose `excludes` does. Rules without names are dropped.
    pub fn resolve(&self, target: &Target) -> LinuxSeccomp {
        let native = native_arch(&target.arch);
        let arches: Vec<Arch> = match &self.arch_map {
            Some(map) => map
                .iter()
                .filter(|m| Some(m.architecture) == native)
                .flat_map(|m| {
                    std::iter::once(m.architecture)
                        .chain(m.sub_architectures.iter().flatten().copied())
                })
                .collect(),
            None => self.architectures.clone().unwrap_or_default(),
        };
        let syscalls: Vec<LinuxSyscall> = self
            .syscalls
            .iter()
            .flatten()
            .filter(|r| r.applies_to(target))
            .filter_map(|r| {
                let names: Vec<String> = r.names().map(str::to_owned).collect();
                if names.is_empty() {
                    return None;
                }
                let mut s = LinuxSyscall::default();
                s.set_names(names)
                    .set_action(r.action)
                    .set_errno_ret(r.errno_ret)
                    .set_args(r.args.as_ref().map(|a| a.iter().map(spec_arg).collect()));
                Some(s)
            })
            .collect();
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action)
            .set_default_errno_ret(self.default_errno_ret)
            .set_architectures((!arches.is_empty()).then_some(arches))
            .set_flags(self.flags.clone())
            .set_syscalls(Some(syscalls));
        out
    }
}

// `LinuxSeccompArg` has no setters; its builder has a default for every
// field and no validation, so `build` has no error to return.
#[allow(clippy::expect_used)]
fn spec_arg(a: &SyscallArg) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(a.index)
        .value(a.value)
        .op(a.op);
    let b = if a.op == LinuxSeccompOperator::ScmpCmpMaskedEq || a.value_two != 0 {
        b.value_two(a.value_two)
    } else {
        b
    };
    b.build()
        .expect("every field of LinuxSeccompArg has a default")
}

impl SyscallRule {
    /// The rule's system call names (`names` then `name`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .chain(self.name.as_deref())
    }

    /// Whether the rule's `includes` all hold for `target` and none of its
    /// `excludes` does.
    pub fn applies_to(&self, target: &Target) -> bool {
        let kernel_at_least = |v: &str| match (parse_kernel(v), target.kernel) {
            (Some(min), Some(k)) => k >= min,
            _ => false,
        };
        if let Some(inc) = &self.includes {
            let caps_ok = inc.caps.iter().flatten().all(|c| target.caps.contains(c));
            let arch_ok = inc
                .arches
                .as_ref()
                .is_none_or(|a| a.is_empty() || a.contains(&target.arch));
            let kernel_ok = inc.min_kernel.as_deref().is_none_or(kernel_at_least);
            if !(caps_ok && arch_ok && kernel_ok) {
                return false;
            }
        }
        if let Some(exc) = &self.excludes {
            let caps_hit = exc.caps.iter().flatten().any(|c| target.caps.contains(c));
            let arch_hit = exc.arches.iter().flatten().any(|a| *a == target.arch);
            let kernel_hit = exc.min_kernel.as_deref().is_some_and(kernel_at_least);
            if caps_hit || arch_hit || kernel_hit {
                return false;
            }
        }
        true
    }
}

/// Which seccomp profile a container gets (`--security-opt seccomp=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// Docker's default profile ([`default_profile`]).
    #[default]
    Default,
    /// No seccomp filter (`seccomp=unconfined`).
    Unconfined,
    /// The caller's profile.
    Profile(Box<Profile>),
}

// Docker's default profile, as data. The allow list holds the calls any
// process may make; the groups after it are the conditional rules.

/// System calls the default profile allows unconditionally, on every
/// architecture (names unknown on an architecture are ignored).
const ALLOWED: &str = "
    accept accept4 access adjtimex alarm bind brk
    capget capset chdir chmod chown chown32
    clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64
    close close_range connect copy_file_range creat dup dup2 dup3
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
    epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group
    faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark
    fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync
    fgetxattr flistxattr flock fork fremovexattr fsetxattr
    fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64
    futex futex_time64 futex_waitv futimesat
    getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32
    getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
    getpid getppid getpriority getrandom getresgid getresgid32 getresuid
    getresuid32 getrlimit get_robust_list getrusage getsid getsockname
    getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
    io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64
    ioprio_get ioprio_set io_setup io_submit
    io_uring_enter io_uring_register io_uring_setup ipc kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self
    lchown lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek
    lremovexattr lseek lsetxattr lstat lstat64
    madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod
    mknodat mlock mlock2 mlockall mmap mmap2 mprotect
    mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap
    msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
    name_to_handle_at nanosleep newfstatat _newselect open openat openat2
    pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
    pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
    prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2
    read readahead readlink readlinkat readv recv recvfrom recvmmsg
    recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat
    renameat2 restart_syscall rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
    rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
    sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr
    sched_setparam sched_setscheduler sched_yield seccomp select
    semctl semget semop semtimedop semtimedop_time64
    send sendfile sendfile64 sendmmsg sendmsg sendto
    setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups
    setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
    set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
    setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack
    signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice
    stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range
    syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
    timer_settime timer_settime64 timerfd_create timerfd_gettime
    timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill
    truncate truncate64 ugetrlimit umask uname unlink unlinkat
    utime utimensat utimensat_time64 utimes vfork vmsplice
    wait4 waitid waitpid write writev
";

/// `AF_VSOCK`: the one socket family the default profile denies.
const AF_VSOCK: u64 = 40;
/// Personas `personality(2)` may set: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32|UNAME26`, and `0xffffffff` (the query).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`: `clone` without
/// `CAP_SYS_ADMIN` must have all of them clear.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `ENOSYS`, what `clone3` fails with without `CAP_SYS_ADMIN` so that libc
/// falls back to `clone`, whose flags can be filtered.
const ENOSYS: u32 = 38;

/// Calls allowed only with a capability: `(capability, names)`.
const WITH_CAPABILITY: &[(&str, &str)] = &[
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick
         lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open
         quotactl quotactl_fd setdomainname sethostname setns syslog umount
         umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    (
        "CAP_SYS_TIME",
        "settimeofday stime clock_settime clock_settime64",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// Calls allowed only on some architectures: `(Go arches, names)`.
const ON_ARCH: &[(&[&str], &str)] = &[
    (&["ppc64le"], "sync_file_range2 swapcontext"),
    (
        &["arm", "arm64"],
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
    ),
    (&["amd64", "x32"], "arch_prctl"),
    (&["amd64", "x32", "x86"], "modify_ldt"),
    (
        &["s390", "s390x"],
        "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
    ),
    (&["riscv64"], "riscv_flush_icache"),
];

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn strs(s: &[&str]) -> Option<Vec<String>> {
    Some(s.iter().map(|s| (*s).to_owned()).collect())
}

fn rule(names: &str, action: LinuxSeccompAction) -> SyscallRule {
    SyscallRule {
        names: words(names),
        name: None,
        action,
        errno_ret: None,
        args: None,
        includes: None,
        excludes: None,
        comment: None,
    }
}

fn allow(names: &str) -> SyscallRule {
    rule(names, LinuxSeccompAction::ScmpActAllow)
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64, value_two: u64) -> SyscallArg {
    SyscallArg {
        index,
        value,
        value_two,
        op,
    }
}

/// Docker's default seccomp profile (moby's `profiles/seccomp/default.json`
/// as of 2024), written here as data: default action `SCMP_ACT_ERRNO`
/// (`EPERM`), the x86_64, aarch64 and riscv64 architecture maps.
pub fn default_profile() -> Profile {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpMaskedEq, ScmpCmpNe};
    let only = |sel: Selector| Some(sel);
    let mut rules = vec![allow(ALLOWED)];
    rules.push(SyscallRule {
        includes: only(Selector {
            min_kernel: Some("4.8".into()),
            ..Selector::default()
        }),
        ..allow("process_vm_readv process_vm_writev ptrace")
    });
    rules.push(SyscallRule {
        args: Some(vec![arg(0, ScmpCmpNe, AF_VSOCK, 0)]),
        ..allow("socket")
    });
    for p in PERSONAS {
        rules.push(SyscallRule {
            args: Some(vec![arg(0, ScmpCmpEq, p, 0)]),
            ..allow("personality")
        });
    }
    for (arches, names) in ON_ARCH {
        rules.push(SyscallRule {
            includes: only(Selector {
                arches: strs(arches),
                ..Selector::default()
            }),
            ..allow(names)
        });
    }
    for (cap, names) in WITH_CAPABILITY {
        rules.push(SyscallRule {
            includes: only(Selector {
                caps: strs(&[cap]),
                ..Selector::default()
            }),
            ..allow(names)
        });
    }
    // Without CAP_SYS_ADMIN: clone without namespace flags (its flags are
    // the second argument on s390), clone3 fails with ENOSYS.
    rules.push(SyscallRule {
        args: Some(vec![arg(0, ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS, 0)]),
        excludes: only(Selector {
            caps: strs(&["CAP_SYS_ADMIN"]),
            arches: strs(&["s390", "s390x"]),
            ..Selector::default()
        }),
        ..allow("clone")
    });
    rules.push(SyscallRule {
        args: Some(vec![arg(1, ScmpCmpMaskedEq, CLONE_NAMESPACE_FLAGS, 0)]),
        includes: only(Selector {
            arches: strs(&["s390", "s390x"]),
            ..Selector::default()
        }),
        excludes: only(Selector {
            caps: strs(&["CAP_SYS_ADMIN"]),
            ..Selector::default()
        }),
        ..allow("clone")
    });
    rules.push(SyscallRule {
        errno_ret: Some(ENOSYS),
        excludes: only(Selector {
            caps: strs(&["CAP_SYS_ADMIN"]),
            ..Selector::default()
        }),
        ..rule("clone3", LinuxSeccompAction::ScmpActErrno)
    });
    let map = |native, subs: &[Arch]| ArchMap {
        architecture: native,
        sub_architectures: (!subs.is_empty()).then(|| subs.to_vec()),
    };
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(1),
        architectures: None,
        arch_map: Some(vec![
            map(
                Arch::ScmpArchX86_64,
                &[Arch::ScmpArchX86, Arch::ScmpArchX32],
            ),
            map(Arch::ScmpArchAarch64, &[Arch::ScmpArchArm]),
            map(Arch::ScmpArchRiscv64, &[]),
        ]),
        flags: None,
        syscalls: Some(rules),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(arch: &str, caps: &[&str]) -> Target {
        Target {
            arch: arch.into(),
            caps: caps.iter().map(|c| (*c).to_owned()).collect(),
            kernel: Some((6, 1)),
        }
    }

    fn allowed(s: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    #[test]
    fn the_default_resolves_against_capabilities_and_arch() {
        let p = default_profile();
        p.check_limits().unwrap();
        let plain = p.resolve(&target("amd64", &["CAP_CHOWN"]));
        assert_eq!(
            plain.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain.default_errno_ret(), Some(1));
        for denied in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "clock_settime",
            "keyctl",
        ] {
            assert!(allowed(&plain, denied).is_empty(), "{denied}");
        }
        assert!(!allowed(&plain, "arch_prctl").is_empty());
        assert!(allowed(&plain, "set_tls").is_empty());
        let clone = allowed(&plain, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 0);
        let clone3 = allowed(&plain, "clone3");
        assert_eq!(clone3[0].errno_ret(), Some(38));
        assert_eq!(allowed(&plain, "personality").len(), 5);

        let admin = p.resolve(&target("arm64", &["CAP_SYS_ADMIN", "CAP_SYS_TIME"]));
        assert_eq!(
            admin.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        for name in ["mount", "unshare", "setns", "clock_settime", "set_tls"] {
            assert!(!allowed(&admin, name).is_empty(), "{name}");
        }
        let clone = allowed(&admin, "clone");
        assert!(clone.iter().all(|r| r.args().is_none()), "{clone:?}");
        assert!(allowed(&admin, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn min_kernel_and_unknown_kernels() {
        let p = default_profile();
        let mut t = target("amd64", &[]);
        assert!(!allowed(&p.resolve(&t), "ptrace").is_empty());
        t.kernel = Some((4, 7));
        assert!(allowed(&p.resolve(&t), "ptrace").is_empty());
        t.kernel = None;
        assert!(allowed(&p.resolve(&t), "ptrace").is_empty());
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("4.19"), Some((4, 19)));
        assert_eq!(parse_kernel("x"), None);
    }

    #[test]
    fn the_default_goes_through_json_and_back() {
        let p = default_profile();
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(Profile::from_slice(&json).unwrap(), p);
    }

    #[test]
    fn docker_format_parses_with_its_older_and_newer_fields() {
        let json = br#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"name": "uname", "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "comment": "x"},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}],
                 "includes": {"caps": ["CAP_SYS_ADMIN"], "minKernel": "5.4"}}
            ]
        }"#;
        let p = Profile::from_slice(json).unwrap();
        let none = p.resolve(&target("amd64", &[]));
        assert_eq!(
            none.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64][..])
        );
        let rules = none.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].names(), &["uname".to_owned()]);
        let admin = p.resolve(&target("amd64", &["CAP_SYS_ADMIN"]));
        let a = admin.syscalls().as_ref().unwrap()[1]
            .args()
            .as_ref()
            .unwrap()[0];
        assert_eq!((a.value(), a.value_two()), (255, Some(8)));
    }

    #[test]
    fn hostile_profiles_are_refused_by_their_limits() {
        let big = vec![b' '; MAX_PROFILE_BYTES as usize + 1];
        assert!(matches!(
            Profile::from_reader(&big[..]),
            Err(SeccompError::TooLarge)
        ));
        let rules: Vec<String> = (0..=MAX_RULES)
            .map(|_| r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"}"#.to_owned())
            .collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
            rules.join(",")
        );
        assert!(matches!(
            Profile::from_slice(json.as_bytes()),
            Err(SeccompError::TooMany { what: "rules", .. })
        ));
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("\"c{i}\"")).collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
            names.join(",")
        );
        assert!(matches!(
            Profile::from_slice(json.as_bytes()),
            Err(SeccompError::TooMany {
                what: "system call names",
                ..
            })
        ));
        let json = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        let e = Profile::from_slice(json).unwrap_err();
        assert!(matches!(e, SeccompError::ArgIndex { index: 6, .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let json = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"new"}}]}"#;
        assert!(matches!(
            Profile::from_slice(json),
            Err(SeccompError::MinKernel { .. })
        ));
        assert!(matches!(
            Profile::from_slice(b"{\"defaultAction\":\"SCMP_ACT_NOPE\"}"),
            Err(SeccompError::Parse(_))
        ));
    }
}
