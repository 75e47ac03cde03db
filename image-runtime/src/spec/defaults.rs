//! Docker's defaults (moby's `oci/defaults.go` and `caps`), as data.

use image_core::oci_spec::runtime::{Capability, LinuxDeviceType};

use LinuxDeviceType::{B, C};

/// `PATH` when neither the image nor the caller sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's 14 default capabilities (bounding, effective and permitted sets).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability capabilities(7) numbers, by number (0 to 40): what a
/// privileged container holds, as far as the host kernel knows them
/// (`/proc/sys/kernel/cap_last_cap`).
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Paths hidden from the container (a `/dev/null` bind or an empty tmpfs).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in the container.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default device cgroup rules after "deny all":
/// `(type, major, minor, access)`, `None` meaning any.
pub const ALLOWED_DEVICES: [(LinuxDeviceType, Option<i64>, Option<i64>, &str); 12] = [
    (C, None, None, "m"),
    (B, None, None, "m"),
    (C, Some(1), Some(3), "rwm"),    // /dev/null
    (C, Some(1), Some(8), "rwm"),    // /dev/random
    (C, Some(1), Some(7), "rwm"),    // /dev/full
    (C, Some(5), Some(0), "rwm"),    // /dev/tty
    (C, Some(1), Some(5), "rwm"),    // /dev/zero
    (C, Some(1), Some(9), "rwm"),    // /dev/urandom
    (C, Some(136), None, "rwm"),     // /dev/pts/*
    (C, Some(5), Some(2), "rwm"),    // /dev/ptmx
    (C, Some(10), Some(200), "rwm"), // /dev/net/tun
    (C, Some(5), Some(1), "rwm"),    // /dev/console
];

/// Docker's default file-descriptor limit (soft and hard), lowered to the
/// host's hard limit when that is smaller.
pub const DEFAULT_NOFILE: u64 = 1_048_576;
