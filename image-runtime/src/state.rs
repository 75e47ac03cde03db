//! Container state on disk: a directory per container under
//! `<root>/containers/<id>/`, holding `container.json` (the
//! [`ContainerRecord`]), the bundle (`config.json`, `rootfs/` when the root
//! filesystem is mounted), the `/etc` files and the runtime's log. Any
//! process can list the records and clean up after a crashed one.

use std::path::{Path, PathBuf};

use image_store::fs::Root;

use crate::error::ContainerError;
pub use crate::model::{ContainerRecord, ContainerStatus, Owner};

impl ContainerRecord {
    /// The status as it is now rather than as last saved: a container
    /// recorded as running whose owner is gone has stopped, with no exit
    /// code known, unless its init still runs. The native backend's init
    /// dies with its owner (`PR_SET_PDEATHSIG`); runc's and crun's
    /// foreground `run` outlives a killed owner, so for them the init named
    /// in the bundle's pid file is looked up, in one opening of its
    /// `/proc/<pid>` (see `model::ProcEntry`), and counts only if it is in
    /// the container's own cgroup, started after the owner that started
    /// the container (not a process that reused the PID) and has not
    /// exited (a zombie, exited but not yet reaped, has, as for
    /// [`Owner::is_alive`]). `gc` kills and removes such an orphan. Cheap:
    /// a few reads under `/proc`, no lock and no backend call, so `ps`
    /// can use it.
    ///
    /// A detached container's owner is its monitor: when the monitor is
    /// gone while the record says running, the container is
    /// [`Unknown`](ContainerStatus::Unknown) (the monitor was killed: its
    /// process may or may not run, its exit is not known), or stopped when
    /// the host rebooted since it started (see
    /// [`ran_before_reboot`](ContainerRecord::ran_before_reboot)).
    pub fn observed_status(&self) -> ContainerStatus {
        match self.status {
            ContainerStatus::Running if !self.owner.is_some_and(|o| o.is_alive()) => {
                if self.ran_before_reboot() {
                    ContainerStatus::Stopped
                } else if self.detached.is_some() {
                    ContainerStatus::Unknown
                } else if self.orphan_runs() {
                    ContainerStatus::Running
                } else {
                    ContainerStatus::Stopped
                }
            }
            status => status,
        }
    }

    /// True when a runc or crun container's init runs (see
    /// [`ContainerRecord::observed_status`]).
    fn orphan_runs(&self) -> bool {
        if self.backend == crate::native::NAME {
            return false;
        }
        let pid_file = self.bundle.join(crate::oci_runtime::INIT_PID_FILE);
        let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            return false;
        };
        let Some(init) = crate::model::ProcEntry::open(pid) else {
            return false;
        };
        let own = crate::cgroup::cgroups_path(&self.id);
        let in_own_cgroup = init.read("cgroup").is_some_and(|cg| {
            cg.lines()
                .any(|l| l.rsplit('/').next() == Some(own.as_str()))
        });
        // Read last: an init that exits after its cgroup was read has exited.
        let started = init.running_since();
        in_own_cgroup && started.is_some_and(|t| self.owner.is_none_or(|o| t >= o.start_time))
    }

    /// The record with its [`observed_status`](Self::observed_status).
    pub fn observed(&self) -> ContainerRecord {
        let mut r = self.clone();
        r.status = self.observed_status();
        r
    }
}

/// The records of every container under the runtime state directory
/// `root` (as [`Runtime::list`](crate::Runtime::list) gives them, without
/// opening a runtime: no backend needed, nothing collected), what `ps`
/// shows; unreadable records are skipped.
///
/// # Errors
/// [`ContainerError::State`] when the directory cannot be listed.
pub fn list(root: &Path) -> Result<Vec<ContainerRecord>, ContainerError> {
    StateDir::open(root)?.list()
}

/// The record of container `id` under the runtime state directory `root`.
///
/// # Errors
/// [`ContainerError::InvalidId`] for an ID that is not a single name (so
/// that nothing outside the state directory is read);
/// [`ContainerError::NotFound`]; [`ContainerError::State`].
pub fn load(root: &Path, id: &str) -> Result<ContainerRecord, ContainerError> {
    validate_id(id)?;
    StateDir::open(root)?.load(id)
}

/// The directory of container states.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

/// The record's file name inside a container's directory.
pub const RECORD_FILE: &str = "container.json";

impl StateDir {
    /// Opens (creating) `<root>/containers`.
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub(crate) fn open(root: &Path) -> Result<StateDir, ContainerError> {
        let dir = root.join("containers");
        std::fs::create_dir_all(&dir).map_err(ContainerError::state(&dir))?;
        Ok(StateDir { root: dir })
    }

    /// The directory of container `id`.
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Writes a record atomically and durably through the family's one
    /// atomic write ([`Root::write_atomic`]: a temporary file unique to the
    /// writer, fsync, rename, fsync of the directory), with no symlink
    /// followed inside the state directory.
    ///
    /// # Errors
    /// [`ContainerError::Json`], [`ContainerError::State`].
    pub(crate) fn save(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        let path = self.dir(&record.id).join(RECORD_FILE);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| ContainerError::Json {
            what: format!("serialising the container record {}", path.display()),
            source,
        })?;
        Root::open(&self.root)
            .and_then(|root| root.write_atomic(&path, &bytes))
            .map_err(ContainerError::state(&path))
    }

    /// Reads the record of `id`.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`], [`ContainerError::State`].
    pub(crate) fn load(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let path = self.dir(id).join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ContainerError::NotFound { id: id.to_owned() }
            } else {
                ContainerError::State {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ContainerError::Json {
            what: format!("parsing the container record {}", path.display()),
            source,
        })
    }

    /// The IDs of every container directory (with or without a record).
    ///
    /// # Errors
    /// [`ContainerError::State`].
    pub(crate) fn ids(&self) -> Result<Vec<String>, ContainerError> {
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(ContainerError::state(&self.root))? {
            let e = e.map_err(ContainerError::state(&self.root))?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Some(name) = e.file_name().to_str() {
                    ids.push(name.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every readable record.
    ///
    /// # Errors
    /// [`ContainerError::State`] when the directory cannot be listed.
    pub(crate) fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        Ok(self
            .ids()?
            .iter()
            .filter_map(|id| self.load(id).ok())
            .collect())
    }
}

/// Checks a caller-chosen container ID: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes.
///
/// # Errors
/// [`ContainerError::InvalidId`].
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    if crate::model::is_valid_id(id) {
        Ok(())
    } else {
        Err(ContainerError::InvalidId { id: id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::Rootfs;

    /// A stopped record of `id` whose bundle is `bundle`.
    fn record(id: &str, bundle: PathBuf) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            image: None,
            backend: "runc".into(),
            bundle,
            rootfs: Rootfs::Directory("/x".into()),
            status: ContainerStatus::Stopped,
            owner: None,
            exit_code: None,
            image_ref: None,
            snapshot: None,
            auto_remove: false,
            detached: None,
        }
    }

    /// Reading a record by ID never leaves the state directory: an ID
    /// that is a path is refused, even where a record lies at its end.
    #[test]
    fn load_refuses_an_id_that_is_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        let outside = tmp.path().join("x");
        std::fs::create_dir_all(&outside).unwrap();
        let r = record("x", outside.clone());
        std::fs::write(outside.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(
            sd.load("../x").is_ok(),
            "the planted record is where ../x leads"
        );
        assert!(matches!(
            load(tmp.path(), "../x"),
            Err(ContainerError::InvalidId { .. })
        ));
        assert_eq!(list(tmp.path()).unwrap(), Vec::new());
    }

    /// A record that is not JSON is a typed JSON error naming the file.
    #[test]
    fn a_corrupt_record_is_a_json_error() {
        use image_core::error::{Classify, ErrorKind};
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        std::fs::create_dir_all(sd.dir("c1")).unwrap();
        std::fs::write(sd.dir("c1").join(RECORD_FILE), b"{not json").unwrap();
        match load(tmp.path(), "c1") {
            Err(e @ ContainerError::Json { .. }) => {
                assert!(e.to_string().contains(RECORD_FILE), "{e}");
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Saving a record follows no symlink inside the state directory: a
    /// container directory that is a symlink to elsewhere is refused, and
    /// nothing is written where it leads.
    #[test]
    fn saving_a_record_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("state")).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, sd.dir("c1")).unwrap();
        assert!(sd.save(&record("c1", outside.clone())).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    /// Threads of one process saving the same record at once each write a
    /// temporary file of their own: every save succeeds and the record
    /// read back is whole.
    #[test]
    fn concurrent_saves_of_one_record_do_not_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        std::fs::create_dir_all(sd.dir("c1")).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let sd = &sd;
                s.spawn(move || {
                    for i in 0..100 {
                        let r = record("c1", format!("/bundle/{t}/{i}").into());
                        sd.save(&r).unwrap();
                    }
                });
            }
        });
        assert_eq!(sd.load("c1").unwrap().id, "c1");
        let left: Vec<_> = std::fs::read_dir(sd.dir("c1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [RECORD_FILE], "no temporary file is left");
    }

    #[test]
    fn records_round_trip_and_staleness() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        let id = crate::model::random_id().unwrap();
        assert_eq!(id.len(), 64);
        validate_id(&id).unwrap();
        assert!(validate_id("../x").is_err());
        std::fs::create_dir_all(sd.dir(&id)).unwrap();
        let mut r = ContainerRecord {
            id: id.clone(),
            image: Some("busybox".into()),
            backend: "runc".into(),
            bundle: sd.dir(&id),
            rootfs: Rootfs::Directory("/x".into()),
            status: ContainerStatus::Running,
            owner: Owner::current(),
            exit_code: None,
            image_ref: None,
            snapshot: None,
            auto_remove: false,
            detached: None,
        };
        sd.save(&r).unwrap();
        assert_eq!(sd.load(&id).unwrap(), r);
        assert!(!r.is_stale());
        r.owner = Some(Owner {
            pid: u32::MAX - 1,
            start_time: 1,
        });
        assert!(r.is_stale());
        assert_eq!(r.observed_status(), ContainerStatus::Stopped);
        assert_eq!(sd.list().unwrap().len(), 1);
        assert!(matches!(
            sd.load("nope"),
            Err(ContainerError::NotFound { .. })
        ));
    }

    /// Which records `gc` collects, for every status, owner alive or gone,
    /// with and without auto-remove; and what `ps` shows for them.
    #[test]
    fn staleness_by_status_owner_and_auto_remove() {
        let alive = Owner::current();
        let gone = Some(Owner {
            pid: u32::MAX - 1,
            start_time: 1,
        });
        use ContainerStatus::*;
        for status in [Creating, Created, Running, Stopped] {
            for auto_remove in [false, true] {
                for (owner, owner_alive) in [(alive, true), (gone, false), (None, false)] {
                    let r = ContainerRecord {
                        id: "c".into(),
                        image: None,
                        backend: "native".into(),
                        bundle: "/x".into(),
                        rootfs: Rootfs::Directory("/x".into()),
                        status,
                        owner,
                        exit_code: None,
                        image_ref: None,
                        snapshot: None,
                        auto_remove,
                        detached: None,
                    };
                    let expected =
                        !owner_alive && (auto_remove || matches!(status, Creating | Running));
                    assert_eq!(r.is_stale(), expected, "{status:?} {auto_remove} {owner:?}");
                    let shown = if status == Running && !owner_alive {
                        Stopped
                    } else {
                        status
                    };
                    assert_eq!(r.observed_status(), shown);
                    assert_eq!(r.observed().status, shown);
                }
            }
        }
    }

    /// A `cat` reading a pipe: it exits when its `stdin` is dropped, and
    /// stays a zombie until waited for.
    fn cat() -> std::process::Child {
        use std::process::{Command, Stdio};
        Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Ends the input of `child` (a [`cat`]) and waits until it has exited,
    /// not waited for: a zombie.
    fn exit_unreaped(child: &mut std::process::Child) {
        let pid = child.id();
        drop(child.stdin.take());
        let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while crate::model::parse_state(&stat()) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "cat never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A detached record whose monitor has exited but is not reaped yet (a
    /// zombie: its parent, init, reaps late under load): unknown, as for
    /// a monitor reaped, not running until the reap.
    #[test]
    fn a_detached_record_whose_monitor_is_a_zombie_is_unknown() {
        let mut child = cat();
        let pid = child.id();
        let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let monitor = Owner {
            pid,
            start_time: crate::model::parse_start_time(&stat()).unwrap(),
        };
        let mut r = record("c", "/x".into());
        r.status = ContainerStatus::Running;
        r.owner = Some(monitor);
        r.detached = Some(crate::model::Detached {
            boot_id: crate::model::boot_id(),
            ..Default::default()
        });
        assert!(monitor.is_alive());
        assert_eq!(r.observed_status(), ContainerStatus::Running);
        exit_unreaped(&mut child);
        assert!(!monitor.is_alive(), "a zombie is not alive");
        assert_eq!(r.observed_status(), ContainerStatus::Unknown);
        assert!(r.is_stale());
        child.wait().unwrap();
        assert!(!monitor.is_alive());
    }

    /// A detached record whose monitor is gone: unknown in this boot
    /// (collected by `gc`), stopped and kept when the host rebooted since
    /// it started (`gc` reconciles it), collected when auto-removed.
    #[test]
    fn a_detached_record_without_its_monitor() {
        let gone = Some(Owner {
            pid: u32::MAX - 1,
            start_time: 1,
        });
        let mut r = record("c", "/x".into());
        r.status = ContainerStatus::Running;
        r.owner = gone;
        r.detached = Some(crate::model::Detached {
            boot_id: crate::model::boot_id(),
            ..Default::default()
        });
        assert_eq!(r.observed_status(), ContainerStatus::Unknown);
        assert!(r.is_stale());
        assert!(!r.ran_before_reboot());
        r.detached.as_mut().unwrap().boot_id = "another-boot".into();
        assert!(r.ran_before_reboot());
        assert_eq!(r.observed_status(), ContainerStatus::Stopped);
        assert!(!r.is_stale());
        r.auto_remove = true;
        assert!(r.is_stale());
        // With its monitor alive it runs.
        r.owner = Owner::current();
        r.auto_remove = false;
        r.detached.as_mut().unwrap().boot_id = crate::model::boot_id();
        assert_eq!(r.observed_status(), ContainerStatus::Running);
        // A record of before this change still loads.
        let old = br#"{"id":"c","image":null,"backend":"native","bundle":"/x",
            "rootfs":{"Directory":"/x"},"status":"running","owner":null,"exit_code":null}"#;
        let parsed: ContainerRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(parsed.detached, None);
    }

    /// A runc record whose owner is gone counts as running only while the
    /// PID in its pid file is a process in the container's cgroup: this
    /// test process (in no container cgroup) is not.
    #[test]
    fn an_orphan_needs_its_init_in_its_own_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(crate::oci_runtime::INIT_PID_FILE),
            std::process::id().to_string(),
        )
        .unwrap();
        let r = ContainerRecord {
            id: "c".into(),
            image: None,
            backend: "runc".into(),
            bundle: tmp.path().to_owned(),
            rootfs: Rootfs::Directory("/x".into()),
            status: ContainerStatus::Running,
            owner: Some(Owner {
                pid: u32::MAX - 1,
                start_time: 1,
            }),
            exit_code: None,
            image_ref: None,
            snapshot: None,
            auto_remove: false,
            detached: None,
        };
        assert_eq!(r.observed_status(), ContainerStatus::Stopped);
    }

    /// A runc record whose owner is gone, with its init a real process in
    /// a cgroup named as the container's on the unified (v2) hierarchy
    /// (where a pure v2 host makes the container's cgroups): running
    /// while the init runs; stopped once it has exited, while it is a
    /// zombie not yet reaped, and once it is reaped. The kernel shows an
    /// exiting task's v1 cgroups as `/` but keeps its v2 path in
    /// `/proc/<pid>/cgroup`, so on v2 the cgroup alone took the zombie for
    /// the container's running init.
    #[test]
    fn an_orphan_whose_init_is_a_zombie_has_stopped() {
        if !image_testsupport::tools::root("making a container's cgroup") {
            return;
        }
        let id = format!("orphan-zombie-{}", std::process::id());
        let Some(unified) = crate::cgroup::hierarchies()
            .unwrap()
            .into_iter()
            .find(|h| h.v2)
        else {
            image_testsupport::tools::skip_or_fail("a cgroup v2 hierarchy");
            return;
        };
        let cgroup = unified.own_dir.join(crate::cgroup::cgroups_path(&id));
        std::fs::create_dir(&cgroup).unwrap();
        let mut child = cat();
        let pid = child.id();
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(crate::oci_runtime::INIT_PID_FILE),
            pid.to_string(),
        )
        .unwrap();
        let mut r = record(&id, tmp.path().to_owned());
        r.status = ContainerStatus::Running;
        r.owner = Some(Owner {
            pid: u32::MAX - 1,
            start_time: 1,
        });
        let in_own_cgroup = || {
            let own = format!("/{}", crate::cgroup::cgroups_path(&id));
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cg| cg.lines().any(|l| l.ends_with(&own)))
        };
        assert!(in_own_cgroup());
        let running = r.observed_status();
        // An owner that started after the process did not start it.
        let mut later = r.clone();
        later.owner = Some(Owner {
            pid: u32::MAX - 1,
            start_time: crate::model::start_time(pid).unwrap() + 1,
        });
        let older_than_its_owner = later.observed_status();
        exit_unreaped(&mut child);
        let zombie_in_cgroup = in_own_cgroup();
        let zombie = r.observed_status();
        child.wait().unwrap();
        let reaped = r.observed_status();
        std::fs::remove_dir(&cgroup).unwrap();
        assert_eq!(running, ContainerStatus::Running);
        assert_eq!(older_than_its_owner, ContainerStatus::Stopped);
        assert!(zombie_in_cgroup, "the zombie still names its cgroup");
        assert_eq!(zombie, ContainerStatus::Stopped, "a zombie init has exited");
        assert_eq!(reaped, ContainerStatus::Stopped);
    }
}
