//! A runtime [`Spec`] turned into what the child does: the mount
//! operations, devices, masked and read-only paths, credentials,
//! capabilities, rlimits and the program to exec, all prepared before the
//! clone (see [`crate::sys`]). A field of the spec that the native backend
//! does not implement is refused ([`unsupported`]), never ignored.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use image_core::oci_spec::runtime::{
    Capabilities, Capability, LinuxNamespaceType, PosixRlimitType, Process, Spec,
};
use image_overlay::mount::Mount;

use crate::rootfs::{RootDir, RootfsError};
use crate::spec::defaults::DEFAULT_PATH;
use crate::spec::mounts;
use crate::sys::{Caps, Op};

use crate::cgroup::manager::CgroupDir;

/// Why a spec cannot be run natively.
#[derive(Debug)]
pub(crate) enum PlanError {
    /// Something the native backend does not do: the spec's field, named.
    Unsupported(&'static str),
    /// A malformed value.
    Invalid(String),
    /// The root filesystem cannot take a mount as the spec asks (a proc or
    /// sysfs mount point that is a symlink, [`RootfsError::Symlink`]).
    Rootfs {
        /// What was being checked.
        what: String,
        /// The typed cause, kept for the caller's class.
        source: Box<RootfsError>,
    },
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, PlanError> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| PlanError::Invalid("a string with a NUL byte".into()))
}

/// `/a/b/../c` as `a/c` (relative to the root), `.` for the root.
pub(crate) fn rel(dest: &str) -> String {
    let cleaned = crate::spec::clean_absolute(dest);
    match cleaned.to_string_lossy().trim_start_matches('/') {
        "" => ".".into(),
        r => r.to_owned(),
    }
}

/// The target of a mount read from a spec, as [`rel`] gives it.
fn target_of(m: &Mount) -> String {
    m.target
        .as_deref()
        .map_or_else(|| ".".to_owned(), |t| t.to_string_lossy().into_owned())
}

#[cfg(test)]
fn parent_and_name(rel: &str) -> (String, String) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p.to_owned(), n.to_owned()),
        None => (".".to_owned(), rel.to_owned()),
    }
}

/// `Unsupported(field)` when `set`.
fn refuse(set: bool, field: &'static str) -> Result<(), PlanError> {
    if set {
        Err(PlanError::Unsupported(field))
    } else {
        Ok(())
    }
}

/// The first field of `spec` that is set and that the native backend does
/// not implement, named as the spec names it; `Ok` when there is none.
/// runc and crun implement them; running without one of them silently
/// (a seccomp profile, a sysctl, an AppArmor profile) would give the
/// container less confinement or another setup than its spec asks for.
pub(crate) fn unsupported(spec: &Spec) -> Result<(), PlanError> {
    refuse(spec.hooks().is_some(), "hooks")?;
    refuse(spec.domainname().is_some(), "domainname")?;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        refuse(
            m.uid_mappings().is_some() || m.gid_mappings().is_some(),
            "mounts[].uidMappings and gidMappings (idmapped mounts)",
        )?;
    }
    if let Some(p) = spec.process() {
        process_unsupported(p)?;
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    refuse(
        linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()),
        "linux.sysctl",
    )?;
    refuse(
        linux.devices().as_ref().is_some_and(|d| !d.is_empty()),
        "linux.devices",
    )?;
    refuse(linux.net_devices().is_some(), "linux.netDevices")?;
    refuse(linux.intel_rdt().is_some(), "linux.intelRdt")?;
    refuse(linux.personality().is_some(), "linux.personality")?;
    refuse(linux.time_offsets().is_some(), "linux.timeOffsets")?;
    refuse(linux.memory_policy().is_some(), "linux.memoryPolicy")?;
    refuse(
        linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()),
        "linux.mountLabel (an SELinux label)",
    )?;
    refuse(
        !matches!(
            linux.rootfs_propagation().as_deref(),
            None | Some("" | "private" | "rprivate")
        ),
        "linux.rootfsPropagation other than private",
    )?;
    if let Some(r) = linux.resources() {
        refuse(r.block_io().is_some(), "linux.resources.blockIO")?;
        refuse(
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            "linux.resources.hugepageLimits",
        )?;
        refuse(r.network().is_some(), "linux.resources.network")?;
        refuse(r.rdma().is_some(), "linux.resources.rdma")?;
        refuse(
            r.unified().as_ref().is_some_and(|u| !u.is_empty()),
            "linux.resources.unified",
        )?;
        if let Some(m) = r.memory() {
            #[allow(deprecated)]
            let kernel = m.kernel();
            refuse(
                m.reservation().is_some()
                    || kernel.is_some()
                    || m.kernel_tcp().is_some()
                    || m.swappiness().is_some()
                    || m.disable_oom_killer().is_some(),
                "linux.resources.memory other than limit and swap",
            )?;
        }
        if let Some(c) = r.cpu() {
            refuse(
                c.realtime_runtime().is_some()
                    || c.realtime_period().is_some()
                    || c.cpus().is_some()
                    || c.mems().is_some()
                    || c.idle().is_some()
                    || c.burst().is_some(),
                "linux.resources.cpu other than shares, quota and period",
            )?;
        }
    }
    Ok(())
}

/// As [`unsupported`], for a process (a container's or an exec's).
pub(crate) fn process_unsupported(p: &Process) -> Result<(), PlanError> {
    refuse(
        p.capabilities()
            .as_ref()
            .and_then(|c| c.ambient().as_ref())
            .is_some_and(|a| !a.is_empty()),
        "process.capabilities.ambient (ambient capabilities)",
    )?;
    refuse(
        p.apparmor_profile().as_ref().is_some_and(|a| !a.is_empty()),
        "process.apparmorProfile",
    )?;
    refuse(
        p.selinux_label().as_ref().is_some_and(|l| !l.is_empty()),
        "process.selinuxLabel",
    )?;
    refuse(p.scheduler().is_some(), "process.scheduler")?;
    refuse(p.io_priority().is_some(), "process.ioPriority")?;
    refuse(p.oom_score_adj().is_some(), "process.oomScoreAdj")?;
    refuse(p.exec_cpu_affinity().is_some(), "process.execCPUAffinity")?;
    Ok(())
}

/// Namespace flags of the spec (`clone(2)`'s `CLONE_NEW*`).
pub(crate) fn namespaces(spec: &Spec) -> Result<libc::c_int, PlanError> {
    let mut flags = 0;
    let all = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for ns in all.map(Vec::as_slice).unwrap_or(&[]) {
        if ns
            .path()
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty())
        {
            return Err(PlanError::Unsupported(
                "linux.namespaces[].path (joining a namespace)",
            ));
        }
        flags |= match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            LinuxNamespaceType::Time => return Err(PlanError::Unsupported("a time namespace")),
        };
    }
    if flags & libc::CLONE_NEWNS == 0 {
        return Err(PlanError::Unsupported("a spec without a mount namespace"));
    }
    Ok(flags)
}

/// The spec's mounts, read (see [`mounts::from_oci`]).
pub(crate) fn spec_mounts(spec: &Spec) -> Result<Vec<Mount>, PlanError> {
    spec.mounts()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|m| mounts::from_oci(m).map_err(|e| PlanError::Invalid(e.to_string())))
        .collect()
}

/// Filesystems that must be mounted on an ordinary directory, reached
/// through no symlink, as runc and crun require: mounted through an
/// image's `/proc -> /tmp` they would sit where the masked and read-only
/// paths (`/proc/kcore`, `/proc/sys`, ...) do not reach. Other mounts
/// (tmpfs, binds, user volumes) resolve symlinks inside the root, as
/// runc's securejoin does.
fn needs_ordinary_dir(fs_type: &str) -> bool {
    matches!(fs_type, "proc" | "sysfs")
}

/// Checks, before anything is mounted, that each proc and sysfs mount of
/// the spec has an ordinary directory (or nothing yet) at its destination
/// in the root at `root`: no component a symlink, the last one a directory
/// when it exists. The child enforces the same again when it mounts; this
/// check gives the clear error.
pub(crate) fn check_mount_targets(mounts: &[Mount], root: &Path) -> Result<(), PlanError> {
    let root_dir = RootDir::open(root).map_err(|source| PlanError::Rootfs {
        what: "checking mount targets".into(),
        source: Box::new(source),
    })?;
    for m in mounts.iter().filter(|m| needs_ordinary_dir(&m.fs_type)) {
        let target = Path::new("/").join(target_of(m));
        match root_dir.ordinary_dir(&target) {
            Ok(()) => {}
            Err(e) if image_core::Classify::kind(&e) == image_core::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PlanError::Rootfs {
                    what: format!("{} must be mounted on an ordinary directory", m.fs_type),
                    source: Box::new(source),
                })
            }
        }
    }
    Ok(())
}

/// Ops that create `rel` (directories, the last one a file when `file`).
fn make_path(ops: &mut Vec<Op>, rel: &str, file: bool) -> Result<(), PlanError> {
    if rel == "." {
        return Ok(());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let mut parent = ".".to_owned();
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last && file {
            ops.push(Op::Touch {
                parent: cstr(&parent)?,
                name: cstr(name)?,
            });
        } else {
            ops.push(Op::Mkdir {
                parent: cstr(&parent)?,
                name: cstr(name)?,
                mode: 0o755,
            });
        }
        parent = if parent == "." {
            (*name).to_owned()
        } else {
            format!("{parent}/{name}")
        };
    }
    Ok(())
}

/// The devices of a container's `/dev`: (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `/dev`'s device nodes (mknod, or binds of the host's nodes in a user
/// namespace, where mknod is refused) and its usual symlinks.
fn dev_ops(ops: &mut Vec<Op>, dev: &str, userns: bool) -> Result<(), PlanError> {
    for (name, major, minor) in DEVICES {
        if userns {
            ops.push(Op::Touch {
                parent: cstr(dev)?,
                name: cstr(name)?,
            });
            ops.push(Op::Bind {
                source: cstr(format!("/dev/{name}"))?,
                target: cstr(format!("{dev}/{name}"))?,
                recursive: false,
                remount: 0,
            });
        } else {
            ops.push(Op::Mknod {
                parent: cstr(dev)?,
                name: cstr(name)?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(major, minor),
            });
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        ops.push(Op::Symlink {
            parent: cstr(dev)?,
            name: cstr(name)?,
            target: cstr(target)?,
        });
    }
    Ok(())
}

/// The filesystem operations for a spec's mounts (read with
/// [`spec_mounts`]), masked and read-only paths. `cgroups` are the
/// container's cgroup directories (bound under a `cgroup` mount's
/// destination, read-only).
pub(crate) fn mount_ops(
    spec: &Spec,
    mounts: &[Mount],
    userns: bool,
    cgroups: &[CgroupDir],
) -> Result<Vec<Op>, PlanError> {
    let mut ops = Vec::new();
    for m in mounts {
        let target = target_of(m);
        let typ = m.fs_type.as_str();
        let options = m.parsed_options();
        let flags = libc::c_ulong::from(options.flags.bits());
        let bind = m.is_bind();
        let is_file = bind && Path::new(&m.source).metadata().is_ok_and(|md| !md.is_dir());
        make_path(&mut ops, &target, is_file)?;
        if bind {
            ops.push(Op::Bind {
                source: cstr(&m.source)?,
                target: cstr(&target)?,
                recursive: options.recursive,
                remount: flags,
            });
        } else if typ == "cgroup" || typ == "cgroup2" {
            cgroup_ops(&mut ops, &target, cgroups, m.is_read_only())?;
        } else {
            let data = options.data_string();
            ops.push(Op::Mount {
                source: Some(cstr(&m.source)?),
                target: cstr(&target)?,
                fstype: Some(cstr(typ)?),
                flags,
                data: (!data.is_empty()).then(|| cstr(&data)).transpose()?,
                ordinary_dir: needs_ordinary_dir(typ),
            });
            if typ == "tmpfs" && target == "dev" {
                dev_ops(&mut ops, &target, userns)?;
            }
        }
    }
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or(&[])
    {
        ops.push(Op::Mask {
            target: cstr(rel(p))?,
            dev_null: cstr("dev/null")?,
        });
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or(&[])
    {
        ops.push(Op::ReadOnly {
            target: cstr(rel(p))?,
        });
    }
    Ok(ops)
}

/// `/sys/fs/cgroup` as runc makes it without a cgroup namespace: a tmpfs,
/// and each hierarchy's container cgroup bound under its name, read-only
/// unless the mount is writable (a privileged container's).
fn cgroup_ops(
    ops: &mut Vec<Op>,
    target: &str,
    cgroups: &[CgroupDir],
    read_only: bool,
) -> Result<(), PlanError> {
    let v1: Vec<&CgroupDir> = cgroups.iter().filter(|c| !c.v2).collect();
    let ro = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let ro = if read_only { ro | libc::MS_RDONLY } else { ro };
    if v1.is_empty() {
        if let Some(c) = cgroups.iter().find(|c| c.v2) {
            ops.push(Op::Bind {
                source: cstr(c.dir.as_os_str().as_encoded_bytes())?,
                target: cstr(target)?,
                recursive: false,
                remount: ro,
            });
        }
        return Ok(());
    }
    ops.push(Op::Mount {
        source: Some(cstr("tmpfs")?),
        target: cstr(target)?,
        fstype: Some(cstr("tmpfs")?),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: Some(cstr("mode=755")?),
        ordinary_dir: false,
    });
    for c in v1 {
        let Some(name) = c.mount_point.file_name() else {
            continue;
        };
        let name = name.to_string_lossy();
        ops.push(Op::Mkdir {
            parent: cstr(target)?,
            name: cstr(name.as_bytes())?,
            mode: 0o755,
        });
        ops.push(Op::Bind {
            source: cstr(c.dir.as_os_str().as_encoded_bytes())?,
            target: cstr(format!("{target}/{name}"))?,
            recursive: false,
            remount: ro,
        });
    }
    Ok(())
}

/// A capability's number (capabilities(7)).
fn cap_number(c: Capability) -> u32 {
    use Capability as C;
    match c {
        C::Chown => 0,
        C::DacOverride => 1,
        C::DacReadSearch => 2,
        C::Fowner => 3,
        C::Fsetid => 4,
        C::Kill => 5,
        C::Setgid => 6,
        C::Setuid => 7,
        C::Setpcap => 8,
        C::LinuxImmutable => 9,
        C::NetBindService => 10,
        C::NetBroadcast => 11,
        C::NetAdmin => 12,
        C::NetRaw => 13,
        C::IpcLock => 14,
        C::IpcOwner => 15,
        C::SysModule => 16,
        C::SysRawio => 17,
        C::SysChroot => 18,
        C::SysPtrace => 19,
        C::SysPacct => 20,
        C::SysAdmin => 21,
        C::SysBoot => 22,
        C::SysNice => 23,
        C::SysResource => 24,
        C::SysTime => 25,
        C::SysTtyConfig => 26,
        C::Mknod => 27,
        C::Lease => 28,
        C::AuditWrite => 29,
        C::AuditControl => 30,
        C::Setfcap => 31,
        C::MacOverride => 32,
        C::MacAdmin => 33,
        C::Syslog => 34,
        C::WakeAlarm => 35,
        C::BlockSuspend => 36,
        C::AuditRead => 37,
        C::Perfmon => 38,
        C::Bpf => 39,
        C::CheckpointRestore => 40,
    }
}

fn cap_mask(set: &Option<Capabilities>) -> u64 {
    set.iter().flatten().fold(0, |m, c| m | 1 << cap_number(*c))
}

/// The highest capability number of this kernel.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The process's capability sets (`None`: the spec sets none).
/// Ambient capabilities are refused by [`process_unsupported`].
pub(crate) fn caps(process: &Process) -> Option<Caps> {
    process.capabilities().as_ref().map(|c| Caps {
        bounding: cap_mask(c.bounding()),
        effective: cap_mask(c.effective()),
        permitted: cap_mask(c.permitted()),
        inheritable: cap_mask(c.inheritable()),
        last_cap: last_cap(),
    })
}

/// `(uid, gid, supplementary gids)` of `process.user`, each at most
/// [`crate::user::MAX_ID`], as runc requires: a spec written by someone
/// else may hold `4294967295`, which `setresuid` and `setgroups` read as
/// "unchanged" (the process would stay root). (A number above `u32` or
/// below zero is refused when the spec is read.)
pub(crate) fn credentials(process: &Process) -> Result<(u32, u32, Vec<u32>), PlanError> {
    let user = process.user();
    let id = |what: &str, n: u32| -> Result<u32, PlanError> {
        if n <= crate::user::MAX_ID {
            Ok(n)
        } else {
            Err(PlanError::Invalid(format!(
                "{what} {n} is out of range 0-{}",
                crate::user::MAX_ID
            )))
        }
    };
    let groups = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| id("supplementary gid", *g))
        .collect::<Result<Vec<u32>, PlanError>>()?;
    Ok((id("uid", user.uid())?, id("gid", user.gid())?, groups))
}

/// `(resource, soft, hard)` of the process's rlimits.
pub(crate) fn rlimits(process: &Process) -> Vec<(libc::c_int, u64, u64)> {
    use PosixRlimitType as R;
    process
        .rlimits()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|r| {
            let res = match r.typ() {
                R::RlimitCpu => libc::RLIMIT_CPU,
                R::RlimitFsize => libc::RLIMIT_FSIZE,
                R::RlimitData => libc::RLIMIT_DATA,
                R::RlimitStack => libc::RLIMIT_STACK,
                R::RlimitCore => libc::RLIMIT_CORE,
                R::RlimitRss => libc::RLIMIT_RSS,
                R::RlimitNproc => libc::RLIMIT_NPROC,
                R::RlimitNofile => libc::RLIMIT_NOFILE,
                R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
                R::RlimitAs => libc::RLIMIT_AS,
                R::RlimitLocks => libc::RLIMIT_LOCKS,
                R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
                R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
                R::RlimitNice => libc::RLIMIT_NICE,
                R::RlimitRtprio => libc::RLIMIT_RTPRIO,
                R::RlimitRttime => libc::RLIMIT_RTTIME,
            };
            (res as libc::c_int, r.soft(), r.hard())
        })
        .collect()
}

/// The paths `execve` is tried on: `arg0` itself when it has a slash, else
/// each `PATH` entry (the process's, else Docker's default) joined with it,
/// as `execvp` would inside the container.
pub(crate) fn programs(arg0: &str, env: &[String]) -> Result<Vec<CString>, PlanError> {
    if arg0.is_empty() {
        return Err(PlanError::Invalid("an empty program name".into()));
    }
    if arg0.contains('/') {
        return Ok(vec![cstr(arg0)?]);
    }
    let path = crate::spec::process::lookup(env, "PATH").unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cstr(format!("{}/{arg0}", d.trim_end_matches('/'))))
        .collect()
}

/// C strings of `strings`.
pub(crate) fn strings(strings: &[String]) -> Result<Vec<CString>, PlanError> {
    strings.iter().map(cstr).collect()
}

/// The spec's root, absolute.
pub(crate) fn root_path(spec: &Spec, bundle: &Path) -> Result<PathBuf, PlanError> {
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path())
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(PlanError::Invalid("no root.path".into()))?;
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        bundle.join(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    fn process(json: serde_json::Value) -> Process {
        let mut p = serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}});
        for (k, v) in json.as_object().unwrap() {
            p[k] = v.clone();
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn paths_and_options() {
        assert_eq!(rel("/"), ".");
        assert_eq!(rel("/proc/../etc//hosts"), "etc/hosts");
        assert_eq!(parent_and_name("a/b/c"), ("a/b".into(), "c".into()));
        let s = spec(serde_json::json!({"mounts": [{
            "destination": "/proc/../mnt//v", "type": "bind", "source": "/nonexistent",
            "options": ["rbind", "rprivate", "ro", "mode=755", "nosuid"]
        }]}));
        let mounts = spec_mounts(&s).unwrap();
        let ops = mount_ops(&s, &mounts, false, &[]).unwrap();
        assert!(matches!(&ops[0], Op::Mkdir { name, .. } if name.as_bytes() == b"mnt"));
        match &ops[2] {
            Op::Bind {
                source,
                target,
                recursive,
                remount,
            } => {
                assert_eq!(source.as_bytes(), b"/nonexistent");
                assert_eq!(target.as_bytes(), b"mnt/v");
                assert!(*recursive);
                assert_eq!(*remount, libc::MS_RDONLY | libc::MS_NOSUID);
            }
            other => panic!("{other:?}"),
        }
        let mut ops = Vec::new();
        make_path(&mut ops, "etc/hosts", true).unwrap();
        assert!(matches!(ops[0], Op::Mkdir { .. }));
        assert!(matches!(ops[1], Op::Touch { .. }));
        // A mount without a type is refused when read, not mounted as "".
        let s = spec(serde_json::json!({"mounts": [{"destination": "/x"}]}));
        assert!(matches!(spec_mounts(&s), Err(PlanError::Invalid(_))));
    }

    #[test]
    fn credentials_out_of_range_are_refused() {
        let p = |user: serde_json::Value| process(serde_json::json!({ "user": user }));
        assert_eq!(
            credentials(&p(
                serde_json::json!({"uid": 5, "gid": 6, "additionalGids": [7]})
            ))
            .unwrap(),
            (5, 6, vec![7])
        );
        assert_eq!(
            credentials(&p(serde_json::json!({}))).unwrap(),
            (0, 0, vec![])
        );
        for user in [
            serde_json::json!({"uid": 4_294_967_295_u64, "gid": 0}),
            serde_json::json!({"uid": 0, "gid": 2_147_483_648_u64}),
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [4_294_967_295_u64]}),
        ] {
            assert!(
                matches!(credentials(&p(user.clone())), Err(PlanError::Invalid(_))),
                "{user}"
            );
        }
        // Not a u32 at all: refused when the spec is read.
        for user in [
            serde_json::json!({"uid": 4_294_967_296_u64, "gid": 0}),
            serde_json::json!({"uid": -1, "gid": 0}),
            serde_json::json!({"uid": "0", "gid": 0}),
        ] {
            let p = serde_json::json!({"cwd": "/", "user": user});
            assert!(serde_json::from_value::<Process>(p).is_err(), "{user}");
        }
    }

    #[test]
    fn capabilities_and_programs() {
        let p = process(serde_json::json!({"capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"]}}));
        let c = caps(&p).unwrap();
        assert_eq!(c.bounding, 0b10_0001);
        assert_eq!(c.effective, 1 << 5);
        assert_eq!(c.inheritable, 0);
        let env = vec!["PATH=/a:/b/".to_owned()];
        assert_eq!(
            programs("ls", &env).unwrap(),
            vec![cstr("/a/ls").unwrap(), cstr("/b/ls").unwrap()]
        );
        assert_eq!(programs("./x", &env).unwrap(), vec![cstr("./x").unwrap()]);
    }

    #[test]
    fn every_capability_has_its_own_number() {
        let all: Vec<Capability> = (0..=40)
            .map(|n| {
                let name = format!("\"CAP_{}\"", CAP_NAMES_FOR_TEST[n]);
                serde_json::from_str(&name).unwrap()
            })
            .collect();
        for (n, c) in all.into_iter().enumerate() {
            assert_eq!(cap_number(c), n as u32, "{c:?}");
        }
    }

    /// capabilities(7), by number, without `CAP_`.
    const CAP_NAMES_FOR_TEST: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];

    #[test]
    fn fields_the_native_backend_does_not_implement_are_named() {
        let base = serde_json::json!({
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["true"]},
            "linux": {"namespaces": [{"type": "mount"}]}
        });
        assert!(unsupported(&spec(base.clone())).is_ok());
        let cases: [(&str, serde_json::Value, &str); 11] = [
            (
                "/linux/sysctl",
                serde_json::json!({"net.ipv4.ip_forward": "1"}),
                "linux.sysctl",
            ),
            (
                "/linux/devices",
                serde_json::json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]),
                "linux.devices",
            ),
            (
                "/linux/rootfsPropagation",
                serde_json::json!("shared"),
                "linux.rootfsPropagation",
            ),
            (
                "/linux/resources",
                serde_json::json!({"blockIO": {"weight": 10}}),
                "linux.resources.blockIO",
            ),
            (
                "/linux/resources",
                serde_json::json!({"memory": {"swappiness": 0}}),
                "linux.resources.memory",
            ),
            (
                "/linux/resources",
                serde_json::json!({"cpu": {"cpus": "0"}}),
                "linux.resources.cpu",
            ),
            (
                "/process/apparmorProfile",
                serde_json::json!("docker-default"),
                "process.apparmorProfile",
            ),
            (
                "/process/oomScoreAdj",
                serde_json::json!(500),
                "process.oomScoreAdj",
            ),
            (
                "/process/capabilities",
                serde_json::json!({"ambient": ["CAP_KILL"]}),
                "process.capabilities.ambient",
            ),
            (
                "/hooks",
                serde_json::json!({"prestart": [{"path": "/bin/true"}]}),
                "hooks",
            ),
            (
                "/domainname",
                serde_json::json!("example.org"),
                "domainname",
            ),
        ];
        for (pointer, value, field) in cases {
            let mut s = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            s.pointer_mut(if parent.is_empty() { "" } else { parent })
                .unwrap()[key] = value;
            match unsupported(&spec(s)) {
                Err(PlanError::Unsupported(what)) => assert!(what.starts_with(field), "{what}"),
                other => panic!("{pointer}: {other:?}"),
            }
        }
        // What the native backend does: limits, private propagation.
        let mut s = base;
        s["linux"]["rootfsPropagation"] = serde_json::json!("rprivate");
        s["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 1 << 24, "swap": 1 << 24}, "pids": {"limit": 5},
            "cpu": {"quota": 1000, "period": 100_000, "shares": 512},
            "devices": [{"allow": false, "access": "rwm"}]
        });
        assert!(unsupported(&spec(s)).is_ok());
    }

    #[test]
    fn namespaces_are_typed_flags() {
        let s = spec(serde_json::json!({"linux": {"namespaces": [
            {"type": "mount"}, {"type": "pid"}, {"type": "network"}
        ]}}));
        assert_eq!(
            namespaces(&s).unwrap(),
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET
        );
        for bad in [
            serde_json::json!([{"type": "pid"}]),
            serde_json::json!([{"type": "mount"}, {"type": "time"}]),
            serde_json::json!([{"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"}]),
        ] {
            let s = spec(serde_json::json!({"linux": {"namespaces": bad}}));
            assert!(
                matches!(namespaces(&s), Err(PlanError::Unsupported(_))),
                "{bad}"
            );
        }
    }
}
