//! Docker's defaults (moby's `oci/defaults.go` and `caps`), as data.

use image_core::oci_spec::runtime::Capability;

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
/// `(type, major, minor, access)`, `-1` meaning any.
pub const ALLOWED_DEVICES: [(&str, i64, i64, &str); 12] = [
    ("c", -1, -1, "m"),
    ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"),    // /dev/null
    ("c", 1, 8, "rwm"),    // /dev/random
    ("c", 1, 7, "rwm"),    // /dev/full
    ("c", 5, 0, "rwm"),    // /dev/tty
    ("c", 1, 5, "rwm"),    // /dev/zero
    ("c", 1, 9, "rwm"),    // /dev/urandom
    ("c", 136, -1, "rwm"), // /dev/pts/*
    ("c", 5, 2, "rwm"),    // /dev/ptmx
    ("c", 10, 200, "rwm"), // /dev/net/tun
    ("c", 5, 1, "rwm"),    // /dev/console
];

/// Docker's default file-descriptor limit (soft and hard), lowered to the
/// host's hard limit when that is smaller.
pub const DEFAULT_NOFILE: u64 = 1_048_576;
