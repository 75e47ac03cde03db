//! Resource limits of native containers through cgroups.
//!
//! Each container gets a cgroup named `image-runtime-<id>` under the calling
//! process's own cgroup (plus [`crate::NativeOptions::cgroup_subpath`]) in
//! every hierarchy: every v1 hierarchy on v1 and hybrid hosts (these
//! machines: memory, pids, cpu, cpuacct, ... on v1, only hugetlb on v2), the
//! unified hierarchy on pure v2 hosts. The parent writes the child's pid
//! into each `cgroup.procs` before releasing it, so the container's process
//! is limited from its first instruction. Only the directories created here
//! are ever removed, and only on delete; nothing else is written to.
//!
//! The v2 code is tested against a fake cgroupfs tree only; it is
//! unverified on a real v2 host (where our own cgroup must be a leaf that
//! may enable controllers for its children).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image_core::oci_spec::runtime::{LinuxResources, Spec};
use image_core::{Classify, ErrorKind};

use super::hierarchy::{Hierarchy, CGROUP_PREFIX};

/// The limits a spec's `linux.resources` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.limit`, bytes.
    pub memory: Option<i64>,
    /// `memory.swap` (memory + swap), bytes.
    pub memory_swap: Option<i64>,
    /// `pids.limit`.
    pub pids: Option<i64>,
    /// `cpu.quota`, microseconds per period.
    pub cpu_quota: Option<i64>,
    /// `cpu.period`, microseconds.
    pub cpu_period: Option<u64>,
    /// `cpu.shares` (v1 weight, 2..=262144).
    pub cpu_shares: Option<u64>,
}

impl Limits {
    /// The limits of a spec's `linux.resources` (none without one).
    pub fn from_spec(spec: &Spec) -> Limits {
        spec.linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .map(Limits::from_resources)
            .unwrap_or_default()
    }

    /// The memory, pids and CPU limits of `r`; zero and negative values
    /// (the spec's "unlimited") are none.
    pub fn from_resources(r: &LinuxResources) -> Limits {
        let positive = |v: Option<i64>| v.filter(|v| *v > 0);
        let memory = r.memory().as_ref();
        let cpu = r.cpu().as_ref();
        Limits {
            memory: positive(memory.and_then(|m| m.limit())),
            memory_swap: positive(memory.and_then(|m| m.swap())),
            pids: positive(r.pids().as_ref().map(|p| p.limit())),
            cpu_quota: positive(cpu.and_then(|c| c.quota())),
            cpu_period: cpu.and_then(|c| c.period()).filter(|v| *v > 0),
            cpu_shares: cpu.and_then(|c| c.shares()).filter(|v| *v > 0),
        }
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() || self.memory_swap.is_some() {
            c.push("memory");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some() {
            c.push("cpu");
        }
        c
    }
}

/// Errors of setting up a container's cgroups.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// A limit was asked for and no hierarchy here has its controller.
    #[error("{limit} limit cannot be enforced: {reason}")]
    Unavailable {
        /// `memory`, `pids`, `cpu`.
        limit: &'static str,
        /// Why.
        reason: String,
    },
    /// A limit was asked for and the cgroup a container's cgroup would be
    /// made in is not delegated to this user (not writable): a rootless
    /// command on a host whose cgroups only root may write, as cgroup v1
    /// always is and v2 is unless a manager delegates a subtree (systemd's
    /// `Delegate=yes`).
    #[error(
        "{limit} limit cannot be enforced: cgroup {} is not delegated to this user (not \
         writable; an unprivileged user's limits need a cgroup v2 subtree delegated to it)",
        dir.display()
    )]
    NotDelegated {
        /// `memory`, `pids`, `cpu`.
        limit: &'static str,
        /// The cgroup directory that is not writable.
        dir: PathBuf,
    },
    /// A cgroup file or directory could not be written.
    #[error("cgroup {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Classify for CgroupError {
    fn kind(&self) -> ErrorKind {
        match self {
            CgroupError::Unavailable { .. } | CgroupError::NotDelegated { .. } => {
                ErrorKind::Unsupported
            }
            CgroupError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One cgroup directory made for a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupDir {
    /// `true` in the unified (v2) hierarchy.
    pub v2: bool,
    /// v1 controllers of its hierarchy.
    pub controllers: Vec<String>,
    /// The hierarchy's mount point (its last component names the
    /// container's `/sys/fs/cgroup/<name>`).
    pub mount_point: PathBuf,
    /// The directory.
    pub dir: PathBuf,
}

impl CgroupDir {
    fn has(&self, controller: &str) -> bool {
        if self.v2 {
            read_words(&self.dir.join("cgroup.controllers")).contains(&controller.to_owned())
        } else {
            self.controllers.iter().any(|c| c == controller)
        }
    }
}

fn read_words(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io_err(path))
}

/// Which hierarchies a container's cgroups go in: every v1 hierarchy when
/// there is one, else the unified one.
pub fn select(hierarchies: &[Hierarchy]) -> Vec<&Hierarchy> {
    let v1: Vec<&Hierarchy> = hierarchies.iter().filter(|h| !h.v2).collect();
    if v1.is_empty() {
        hierarchies.iter().filter(|h| h.v2).collect()
    } else {
        v1
    }
}

/// True when the memory controller here can limit memory + swap: v1's
/// `memory.memsw.limit_in_bytes` (swap accounting on) or v2's
/// `memory.swap.max`, in our own memory cgroup (the hierarchies a
/// container's cgroups go in: v1 where there is any, see
/// `select`).
pub fn swap_limit_supported() -> bool {
    let Ok(all) = super::hierarchy::hierarchies() else {
        return false;
    };
    select(&all).iter().any(|h| {
        if h.v2 {
            h.own_dir.join("memory.swap.max").exists()
                || h.own_dir.join("memory.swap.current").exists()
        } else {
            h.controllers.iter().any(|c| c == "memory")
                && h.own_dir.join("memory.memsw.limit_in_bytes").exists()
        }
    })
}

/// Checks that every limit `spec` (as JSON) asks for in `linux.resources`
/// has its controller in a hierarchy a container's cgroups would go in,
/// and that the cgroups there are delegated to us ([`undelegated`]).
///
/// # Errors
/// [`CgroupError::Unavailable`] or [`CgroupError::NotDelegated`] for the
/// first limit that cannot be enforced, [`CgroupError::Io`] when the
/// hierarchies cannot be read.
pub fn check_limits(spec: &Spec) -> Result<(), CgroupError> {
    let limits = Limits::from_spec(spec);
    if limits.controllers().is_empty() {
        return Ok(());
    }
    let all = super::hierarchy::hierarchies().map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    let chosen = select(&all);
    check(&chosen, &limits)?;
    match undelegated(&chosen).and_then(|dir| not_delegated(&chosen, &limits, dir)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`CgroupError::NotDelegated`] for the first of `limits`, naming the
/// cgroup of its controller (else `dir`, the first not delegated);
/// `None` without limits.
fn not_delegated(chosen: &[&Hierarchy], limits: &Limits, dir: PathBuf) -> Option<CgroupError> {
    let limit = *limits.controllers().first()?;
    let dir = chosen
        .iter()
        .find(|h| h.v2 || h.controllers.iter().any(|c| c == limit))
        .map_or(dir, |h| h.own_dir.clone());
    Some(CgroupError::NotDelegated { limit, dir })
}

/// Whether the cgroups a container's cgroups would be made in are
/// delegated to this process ([`undelegated`] finds none that is not);
/// `false` when the hierarchies cannot be read.
pub fn delegated() -> bool {
    super::hierarchy::hierarchies().is_ok_and(|all| undelegated(&select(&all)).is_none())
}

/// The first of `chosen`'s own cgroup directories (where a container's
/// cgroups are made) this process may not write: the cgroup is not
/// delegated to it. Root may write them all (a read-only cgroupfs is
/// reported by the write itself, not here).
pub fn undelegated(chosen: &[&Hierarchy]) -> Option<PathBuf> {
    use rustix::fs::{access, Access};
    chosen
        .iter()
        .find_map(|h| match access(&h.own_dir, Access::WRITE_OK) {
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => Some(h.own_dir.clone()),
            _ => None,
        })
}

/// Creates the container's cgroups in `hierarchies` (see [`select`]) under
/// `subpath`, and writes `limits`. On failure what was created is removed.
/// Where the cgroups are not delegated to this process ([`undelegated`]:
/// a rootless command) a container without limits gets none, as rootless
/// podman's on cgroup v1, and one with limits is refused.
///
/// # Errors
/// [`CgroupError::Unavailable`] when a limit's controller is missing,
/// [`CgroupError::NotDelegated`], [`CgroupError::Io`].
pub fn create(
    hierarchies: &[Hierarchy],
    subpath: &Path,
    id: &str,
    limits: &Limits,
) -> Result<Vec<CgroupDir>, CgroupError> {
    let chosen = select(hierarchies);
    if let Some(dir) = undelegated(&chosen) {
        check(&chosen, limits)?;
        return match not_delegated(&chosen, limits, dir) {
            Some(e) => Err(e),
            None => Ok(Vec::new()),
        };
    }
    let mut made = Vec::new();
    let r = create_in(&chosen, subpath, id, limits, &mut made);
    if let Err(e) = r {
        remove(&made, Duration::from_millis(100));
        return Err(e);
    }
    Ok(made)
}

fn create_in(
    chosen: &[&Hierarchy],
    subpath: &Path,
    id: &str,
    limits: &Limits,
    made: &mut Vec<CgroupDir>,
) -> Result<(), CgroupError> {
    check(chosen, limits)?;
    for h in chosen {
        let parent = h.own_dir.join(subpath);
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        if h.v2 {
            enable_v2_controllers(&parent, &h.own_dir, &limits.controllers())?;
        }
        let dir = parent.join(format!("{CGROUP_PREFIX}{id}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Left by a crashed run of the same container: ours to reuse.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let cg = CgroupDir {
            v2: h.v2,
            controllers: h.controllers.clone(),
            mount_point: h.mount_point.clone(),
            dir,
        };
        made.push(cg.clone());
        if !h.v2 && h.controllers.iter().any(|c| c == "cpuset") {
            // A new v1 cpuset is empty and refuses tasks: inherit.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = std::fs::read_to_string(cg.dir.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let v = std::fs::read_to_string(parent.join(f)).map_err(io_err(&parent))?;
                    write(&cg.dir.join(f), v.trim())?;
                }
            }
        }
        apply(&cg, limits)?;
    }
    Ok(())
}

/// Checks that every controller `limits` need is in one of `chosen`
/// (see [`select`]), before anything is created.
///
/// # Errors
/// [`CgroupError::Unavailable`] naming the first missing one.
pub fn check(chosen: &[&Hierarchy], limits: &Limits) -> Result<(), CgroupError> {
    for c in limits.controllers() {
        let found = chosen.iter().any(|h| {
            if h.v2 {
                read_words(&h.own_dir.join("cgroup.controllers"))
                    .iter()
                    .any(|w| w == c)
            } else {
                h.controllers.iter().any(|x| x == c)
            }
        });
        if !found {
            return Err(CgroupError::Unavailable {
                limit: c,
                reason: format!("no cgroup hierarchy here has the {c} controller"),
            });
        }
    }
    Ok(())
}

/// `+controller` in `cgroup.subtree_control` from `own` down to `parent`,
/// where not already there (v2).
fn enable_v2_controllers(parent: &Path, own: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let mut chain = vec![parent.to_owned()];
    let mut p = parent;
    while p != own {
        match p.parent() {
            Some(q) => {
                chain.push(q.to_owned());
                p = q;
            }
            None => break,
        }
    }
    chain.reverse();
    for dir in chain {
        let have = read_words(&dir.join("cgroup.subtree_control"));
        for c in wanted {
            if !have.iter().any(|h| h == c) {
                write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
            }
        }
    }
    Ok(())
}

/// Writes the limits that belong to this cgroup's controllers.
fn apply(cg: &CgroupDir, l: &Limits) -> Result<(), CgroupError> {
    let d = &cg.dir;
    if cg.v2 {
        if cg.has("memory") {
            if let Some(m) = l.memory {
                write(&d.join("memory.max"), &m.to_string())?;
                // v2 counts swap separately: memory + swap = memory_swap.
                let swap = l.memory_swap.map_or(0, |s| (s - m).max(0));
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), &swap.to_string())?;
                }
            }
        }
        if cg.has("pids") {
            if let Some(p) = l.pids {
                write(&d.join("pids.max"), &p.to_string())?;
            }
        }
        if cg.has("cpu") {
            if l.cpu_quota.is_some() || l.cpu_period.is_some() {
                let period = l.cpu_period.unwrap_or(100_000);
                let quota = l.cpu_quota.map_or("max".to_owned(), |q| q.to_string());
                write(&d.join("cpu.max"), &format!("{quota} {period}"))?;
            }
            if let Some(s) = l.cpu_shares {
                // The conversion runc and crun use.
                let w = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
                write(&d.join("cpu.weight"), &w.to_string())?;
            }
        }
        return Ok(());
    }
    if cg.has("memory") {
        if let Some(m) = l.memory {
            write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
            // Without a swap limit, no swap beyond the memory limit.
            let sw = d.join("memory.memsw.limit_in_bytes");
            if sw.exists() {
                write(&sw, &l.memory_swap.unwrap_or(m).max(m).to_string())?;
            }
        }
    }
    if cg.has("pids") {
        if let Some(p) = l.pids {
            write(&d.join("pids.max"), &p.to_string())?;
        }
    }
    if cg.has("cpu") {
        if let Some(p) = l.cpu_period {
            write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
        }
        if let Some(q) = l.cpu_quota {
            write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
        }
        if let Some(s) = l.cpu_shares {
            write(&d.join("cpu.shares"), &s.to_string())?;
        }
    }
    Ok(())
}

/// Puts `pid` into every cgroup of `dirs`.
///
/// # Errors
/// [`CgroupError::Io`].
pub fn join(dirs: &[CgroupDir], pid: u32) -> Result<(), CgroupError> {
    for d in dirs {
        write(&d.dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes the directories (deepest first as listed), waiting up to
/// `patience` for their processes to be gone. Returns those left.
pub fn remove(dirs: &[CgroupDir], patience: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + patience;
    let mut left = Vec::new();
    for d in dirs.iter().rev() {
        loop {
            match std::fs::remove_dir(&d.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => {
                    left.push(d.dir.clone());
                    break;
                }
            }
        }
    }
    left
}

/// True when the memory cgroup recorded an OOM kill (v1 `memory.oom_control`
/// `oom_kill N`, v2 `memory.events` `oom_kill N`).
pub fn oom_killed(dirs: &[CgroupDir]) -> bool {
    dirs.iter().any(|d| {
        let f = if d.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(d.dir.join(f))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v2(root: &Path, controllers: &str) -> Hierarchy {
        let own = root.join("user.slice/me");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        Hierarchy {
            v2: true,
            controllers: vec![],
            mount_point: root.to_owned(),
            own_dir: own,
        }
    }

    /// A fake cgroupfs: the kernel would create the interface files in a
    /// new cgroup; here `cgroup.controllers` is copied by hand.
    #[test]
    fn v2_limits_against_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let h = fake_v2(tmp.path(), "cpu memory pids");
        let limits = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(96 << 20),
            pids: Some(32),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(1024),
        };
        let sub = Path::new("ci/jobs");
        // The kernel makes the files: pre-create the directory as it would.
        let dir = h.own_dir.join(sub).join("image-runtime-c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(dir.join("memory.swap.max"), "max").unwrap();
        for d in [h.own_dir.join("ci"), h.own_dir.join("ci/jobs")] {
            std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        }
        let made = create(std::slice::from_ref(&h), sub, "c1", &limits).unwrap();
        assert_eq!(made.len(), 1);
        let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(rd("memory.max"), (64u64 << 20).to_string());
        assert_eq!(rd("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(rd("pids.max"), "32");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cpu.weight"), "39");
        for d in [
            &h.own_dir,
            &h.own_dir.join("ci"),
            &h.own_dir.join("ci/jobs"),
        ] {
            // Each write of a fake file replaces it: the last controller.
            let s = std::fs::read_to_string(d.join("cgroup.subtree_control")).unwrap();
            assert!(s.starts_with('+'), "{}: {s}", d.display());
        }
        join(&made, 4242).unwrap();
        assert_eq!(rd("cgroup.procs"), "4242");
        assert!(!oom_killed(&made));
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(oom_killed(&made));
    }

    #[test]
    fn v2_missing_controller_is_a_typed_error() {
        let tmp = tempfile::tempdir().unwrap();
        let h = fake_v2(tmp.path(), "hugetlb");
        let limits = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let e = create(std::slice::from_ref(&h), Path::new(""), "c2", &limits).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::Unavailable {
                    limit: "memory",
                    ..
                }
            ),
            "{e}"
        );
        // Nothing was created.
        assert!(!h.own_dir.join("image-runtime-c2").exists());
    }

    #[test]
    fn v1_missing_controller_is_a_typed_error() {
        let memory = Hierarchy {
            v2: false,
            controllers: vec!["memory".into()],
            mount_point: PathBuf::from("/x/memory"),
            own_dir: PathBuf::from("/x/memory"),
        };
        let limits = Limits {
            memory: Some(16 << 20),
            pids: Some(10),
            ..Limits::default()
        };
        let e = check(&[&memory], &limits).unwrap_err();
        assert!(
            matches!(e, CgroupError::Unavailable { limit: "pids", .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("pids limit cannot be enforced"),
            "{e}"
        );
        let only_memory = Limits {
            memory: Some(16 << 20),
            ..Limits::default()
        };
        assert!(check(&[&memory], &only_memory).is_ok());
        assert!(check(&[], &Limits::default()).is_ok());
    }

    #[test]
    fn hybrid_hosts_use_v1_only() {
        let h = |v2: bool, c: &str| Hierarchy {
            v2,
            controllers: if v2 { vec![] } else { vec![c.to_owned()] },
            mount_point: PathBuf::from("/x").join(c),
            own_dir: PathBuf::from("/x").join(c),
        };
        let all = vec![h(false, "memory"), h(false, "pids"), h(true, "unified")];
        assert_eq!(select(&all).len(), 2);
        assert!(select(&all).iter().all(|h| !h.v2));
        let v2only = vec![h(true, "unified")];
        assert_eq!(select(&v2only).len(), 1);
    }

    #[test]
    fn limits_from_spec() {
        let spec = serde_json::json!({"linux": {"resources": {
            "memory": {"limit": 1048576}, "pids": {"limit": 10},
            "cpu": {"quota": 20000, "period": 100000}
        }}});
        let l = Limits::from_spec(&serde_json::from_value(spec).unwrap());
        assert_eq!(l.memory, Some(1 << 20));
        assert_eq!(l.pids, Some(10));
        assert_eq!(l.controllers(), vec!["memory", "pids", "cpu"]);
        assert_eq!(
            Limits::from_spec(&serde_json::from_value(serde_json::json!({})).unwrap()),
            Limits::default()
        );
    }
}
