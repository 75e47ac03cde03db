//! A runtime spec (as JSON) turned into what the child does: the mount
//! operations, devices, masked and read-only paths, credentials,
//! capabilities, rlimits and the program to exec, all prepared before the
//! clone (see [`crate::sys`]).

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use libc::c_ulong;
use serde_json::Value;

use crate::rootfs::{RootDir, RootfsError};
use crate::spec::defaults::DEFAULT_PATH;
use crate::sys::{Caps, Op};

use crate::cgroup::manager::CgroupDir;

/// Why a spec cannot be run natively.
#[derive(Debug)]
pub(crate) enum PlanError {
    /// Something the native backend does not do.
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
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
fn parent_and_name(rel: &str) -> (String, String) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p.to_owned(), n.to_owned()),
        None => (".".to_owned(), rel.to_owned()),
    }
}

/// Mount flags and data of an OCI mount's options; propagation options are
/// dropped (everything is made private first).
pub(crate) fn mount_options(options: &[String]) -> (c_ulong, bool, bool, String) {
    let mut flags: c_ulong = 0;
    let mut bind = false;
    let mut rec = false;
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                rec = true;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {}
            other => data.push(other),
        }
    }
    (flags, bind, rec, data.join(","))
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
pub(crate) fn check_mount_targets(spec: &Value, root: &Path) -> Result<(), PlanError> {
    let root_dir = RootDir::open(root).map_err(|source| PlanError::Rootfs {
        what: "checking mount targets".into(),
        source: Box::new(source),
    })?;
    for m in spec["mounts"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let typ = m["type"].as_str().unwrap_or("");
        if !needs_ordinary_dir(typ) {
            continue;
        }
        let dest = m["destination"].as_str().unwrap_or("");
        match root_dir.ordinary_dir(Path::new(&format!("/{}", rel(dest)))) {
            Ok(()) => {}
            Err(e) if image_core::Classify::kind(&e) == image_core::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PlanError::Rootfs {
                    what: format!("{typ} must be mounted on an ordinary directory"),
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

/// The filesystem operations for a spec's mounts, masked and read-only
/// paths. `cgroups` are the container's cgroup directories (bound under a
/// `cgroup` mount's destination, read-only).
pub(crate) fn mount_ops(
    spec: &Value,
    userns: bool,
    cgroups: &[CgroupDir],
) -> Result<Vec<Op>, PlanError> {
    let mut ops = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for m in spec["mounts"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let dest = m["destination"]
            .as_str()
            .ok_or_else(|| PlanError::Invalid("a mount without a destination".into()))?;
        let target = rel(dest);
        let typ = m["type"].as_str().unwrap_or("");
        let source = m["source"].as_str().unwrap_or("");
        let options: Vec<String> = m["options"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let (flags, bind, rec, data) = mount_options(&options);
        let bind = bind || typ == "bind";
        let is_file = bind && Path::new(source).metadata().is_ok_and(|md| !md.is_dir());
        make_path(&mut ops, &target, is_file)?;
        if bind {
            ops.push(Op::Bind {
                source: cstr(source)?,
                target: cstr(&target)?,
                recursive: rec,
                remount: flags,
            });
        } else if typ == "cgroup" || typ == "cgroup2" {
            cgroup_ops(&mut ops, &target, cgroups)?;
        } else {
            ops.push(Op::Mount {
                source: Some(cstr(source)?),
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
        done.push(target);
    }
    let linux = &spec["linux"];
    for p in linux["maskedPaths"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if let Some(p) = p.as_str() {
            ops.push(Op::Mask {
                target: cstr(rel(p))?,
                dev_null: cstr("dev/null")?,
            });
        }
    }
    for p in linux["readonlyPaths"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if let Some(p) = p.as_str() {
            ops.push(Op::ReadOnly {
                target: cstr(rel(p))?,
            });
        }
    }
    Ok(ops)
}

/// `/sys/fs/cgroup` as runc makes it without a cgroup namespace: a tmpfs,
/// and each hierarchy's container cgroup bound read-only under its name.
fn cgroup_ops(ops: &mut Vec<Op>, target: &str, cgroups: &[CgroupDir]) -> Result<(), PlanError> {
    let v1: Vec<&CgroupDir> = cgroups.iter().filter(|c| !c.v2).collect();
    let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
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

/// Linux capability names, by number (capabilities(7)).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_mask(v: &Value) -> Result<u64, PlanError> {
    let mut m = 0u64;
    for c in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let name = c.as_str().unwrap_or("");
        let n = CAP_NAMES
            .iter()
            .position(|x| *x == name)
            .ok_or_else(|| PlanError::Invalid(format!("unknown capability {name}")))?;
        m |= 1 << n;
    }
    Ok(m)
}

/// The highest capability number of this kernel.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The process's capability sets (`None`: the spec sets none).
pub(crate) fn caps(process: &Value) -> Result<Option<Caps>, PlanError> {
    let c = &process["capabilities"];
    if c.is_null() {
        return Ok(None);
    }
    if c["ambient"].as_array().is_some_and(|a| !a.is_empty()) {
        return Err(PlanError::Unsupported("ambient capabilities"));
    }
    Ok(Some(Caps {
        bounding: cap_mask(&c["bounding"])?,
        effective: cap_mask(&c["effective"])?,
        permitted: cap_mask(&c["permitted"])?,
        inheritable: cap_mask(&c["inheritable"])?,
        last_cap: last_cap(),
    }))
}

/// `(uid, gid, supplementary gids)` of `process.user`, each at most
/// [`crate::user::MAX_ID`], as runc requires: a spec written by someone
/// else may hold `4294967295`, which `setresuid` and `setgroups` read as
/// "unchanged" (the process would stay root), or a number above `u32`.
pub(crate) fn credentials(process: &Value) -> Result<(u32, u32, Vec<u32>), PlanError> {
    let user = &process["user"];
    let id = |what: &str, v: &Value| -> Result<u32, PlanError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= crate::user::MAX_ID)
            .ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{what} {v} is out of range 0-{}",
                    crate::user::MAX_ID
                ))
            })
    };
    let uid = if user["uid"].is_null() {
        0
    } else {
        id("uid", &user["uid"])?
    };
    let gid = if user["gid"].is_null() {
        0
    } else {
        id("gid", &user["gid"])?
    };
    let groups = user["additionalGids"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|g| id("supplementary gid", g))
        .collect::<Result<Vec<u32>, PlanError>>()?;
    Ok((uid, gid, groups))
}

/// `(resource, soft, hard)` of the process's rlimits.
pub(crate) fn rlimits(process: &Value) -> Result<Vec<(libc::c_int, u64, u64)>, PlanError> {
    let mut out = Vec::new();
    for r in process["rlimits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = r["type"].as_str().unwrap_or("");
        let res = match name {
            "RLIMIT_CPU" => libc::RLIMIT_CPU,
            "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
            "RLIMIT_DATA" => libc::RLIMIT_DATA,
            "RLIMIT_STACK" => libc::RLIMIT_STACK,
            "RLIMIT_CORE" => libc::RLIMIT_CORE,
            "RLIMIT_RSS" => libc::RLIMIT_RSS,
            "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
            "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
            "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
            "RLIMIT_AS" => libc::RLIMIT_AS,
            "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
            "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
            "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => libc::RLIMIT_NICE,
            "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
            other => return Err(PlanError::Invalid(format!("unknown rlimit {other}"))),
        };
        out.push((
            res as libc::c_int,
            r["soft"].as_u64().unwrap_or(0),
            r["hard"].as_u64().unwrap_or(0),
        ));
    }
    Ok(out)
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

/// C strings of a JSON string array.
pub(crate) fn strings(v: &Value) -> Result<Vec<CString>, PlanError> {
    v.as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|s| cstr(s.as_str().unwrap_or("")))
        .collect()
}

/// The spec's root, absolute.
pub(crate) fn root_path(spec: &Value, bundle: &Path) -> Result<PathBuf, PlanError> {
    let p = spec["root"]["path"]
        .as_str()
        .ok_or(PlanError::Invalid("no root.path".into()))?;
    let p = Path::new(p);
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        bundle.join(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_options() {
        assert_eq!(rel("/"), ".");
        assert_eq!(rel("/proc/../etc//hosts"), "etc/hosts");
        assert_eq!(parent_and_name("a/b/c"), ("a/b".into(), "c".into()));
        let o: Vec<String> = ["rbind", "rprivate", "ro", "mode=755", "nosuid"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (f, bind, rec, data) = mount_options(&o);
        assert!(bind && rec);
        assert_eq!(f, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(data, "mode=755");
        let mut ops = Vec::new();
        make_path(&mut ops, "etc/hosts", true).unwrap();
        assert!(matches!(ops[0], Op::Mkdir { .. }));
        assert!(matches!(ops[1], Op::Touch { .. }));
    }

    #[test]
    fn credentials_out_of_range_are_refused() {
        let p = |user: Value| serde_json::json!({ "user": user });
        assert_eq!(
            credentials(&p(
                serde_json::json!({"uid": 5, "gid": 6, "additionalGids": [7]})
            ))
            .unwrap(),
            (5, 6, vec![7])
        );
        assert_eq!(credentials(&p(Value::Null)).unwrap(), (0, 0, vec![]));
        for user in [
            serde_json::json!({"uid": 4_294_967_295_u64, "gid": 0}),
            serde_json::json!({"uid": 0, "gid": 2_147_483_648_u64}),
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [4_294_967_295_u64]}),
            serde_json::json!({"uid": 4_294_967_296_u64, "gid": 0}),
            serde_json::json!({"uid": -1, "gid": 0}),
            serde_json::json!({"uid": "0", "gid": 0}),
        ] {
            assert!(
                matches!(credentials(&p(user.clone())), Err(PlanError::Invalid(_))),
                "{user}"
            );
        }
    }

    #[test]
    fn capabilities_and_programs() {
        let p = serde_json::json!({"capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"]}});
        let c = caps(&p).unwrap().unwrap();
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
}
