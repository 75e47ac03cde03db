//! `create`: an image config, a root filesystem and options become a
//! prepared [`Container`] whose bundle is written and registered with the
//! backend.

use std::path::{Path, PathBuf};

use image_core::config::RunConfig;
use image_core::ImageConfig;

use crate::bundle::{self, BundleLayout};
use crate::container::handle::Container;
use crate::error::ContainerError;
use crate::model::ImageRef;
use crate::model::{ContainerRecord, ContainerStatus, Owner};
use crate::rootfs::Rootfs;
use crate::runtime::Runtime;
use crate::snapshots::{self, SnapshotRef, Snapshots};
use crate::spec::{NetworkMode, RunOptions, Volume};
use crate::state;
use image_overlay::mount::SysMounter;

/// Builds a container; see [`Runtime::container`]. Setters take and return
/// the builder by value and compose in any order: [`options`](Self::options)
/// replaces the base options, and every other option setter (`cmd`, `env`,
/// `memory`, ...) applies over them whether it was called before or after,
/// in the order the setters were called.
///
/// ```
/// # use image_runtime::{NativeOptions, Rootfs, RunOptions, Runtime};
/// # let tmp = tempfile::tempdir()?;
/// # let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default())?;
/// # let rootfs = Rootfs::Directory(tmp.path().to_owned());
/// let mut base = RunOptions::new();
/// base.hostname = Some("web".into());
/// let a = rt.container(rootfs.clone()).cmd(["sh"]).memory(64 << 20).options(base.clone());
/// let b = rt.container(rootfs).options(base).memory(64 << 20).cmd(["sh"]);
/// assert_eq!(a.run_options(), b.run_options());
/// assert_eq!(a.run_options().cmd, Some(vec!["sh".to_string()]));
/// assert_eq!(a.run_options().hostname.as_deref(), Some("web"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct ContainerBuilder {
    runtime: Runtime,
    rootfs: Rootfs,
    config: RunConfig,
    image: Option<String>,
    /// The options of [`ContainerBuilder::options`] (default: none).
    options: RunOptions,
    /// The other option setters' changes, applied over `options` in order.
    edits: Vec<Edit>,
    id: Option<String>,
    snapshot: Option<PendingSnapshot>,
    auto_remove: bool,
    /// The policies a later detached start uses, recorded at create.
    detach: Option<crate::model::Detached>,
}

/// One option setter's change, kept apart from the base options so that
/// [`ContainerBuilder::options`] does not undo it.
#[derive(Debug, Clone)]
enum Edit {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(String),
    User(String),
    WorkingDir(String),
    Hostname(String),
    ReadOnly(bool),
    Volume(Volume),
    Memory(u64),
    Pids(u64),
    NanoCpus(u64),
    Network(NetworkMode),
    Init(bool),
    Privileged(bool),
}

impl Edit {
    fn apply(&self, o: &mut RunOptions) {
        match self.clone() {
            Edit::Cmd(v) => o.cmd = Some(v),
            Edit::Entrypoint(v) => o.entrypoint = Some(v),
            Edit::Env(v) => o.env.push(v),
            Edit::User(v) => o.user = Some(v),
            Edit::WorkingDir(v) => o.working_dir = Some(v),
            Edit::Hostname(v) => o.hostname = Some(v),
            Edit::ReadOnly(v) => o.read_only = v,
            Edit::Volume(v) => o.volumes.push(v),
            Edit::Memory(v) => o.resources.memory = Some(v),
            Edit::Pids(v) => o.resources.pids = Some(v),
            Edit::NanoCpus(v) => o.resources.nano_cpus = Some(v),
            Edit::Network(v) => o.network = v,
            Edit::Init(v) => o.init = v,
            Edit::Privileged(v) => o.privileged = v,
        }
    }
}

/// Refuses `operation` up front when this process lacks `CAP_SYS_ADMIN`:
/// every container needs namespaces, and one from an image needs mounts.
/// Where the capabilities cannot be read, the kernel decides later.
pub(crate) fn require_root(operation: &'static str) -> Result<(), ContainerError> {
    use rustix::thread::{capabilities, CapabilitySet};
    match capabilities(None) {
        Ok(caps) if !caps.effective.contains(CapabilitySet::SYS_ADMIN) => {
            Err(ContainerError::NeedsRoot { operation })
        }
        _ => Ok(()),
    }
}

/// The writable snapshot a container from an image gets at create time.
#[derive(Debug, Clone)]
pub(crate) struct PendingSnapshot {
    /// Where.
    pub(crate) snapshots: Snapshots,
    /// The committed parent (the image's top chain ID).
    pub(crate) parent: Option<String>,
    /// The image.
    pub(crate) image: ImageRef,
}

impl ContainerBuilder {
    pub(crate) fn new(runtime: Runtime, rootfs: Rootfs) -> ContainerBuilder {
        ContainerBuilder {
            runtime,
            rootfs,
            config: RunConfig::default(),
            image: None,
            options: RunOptions::default(),
            edits: Vec::new(),
            id: None,
            snapshot: None,
            auto_remove: false,
            detach: None,
        }
    }

    pub(crate) fn snapshot(mut self, snapshot: PendingSnapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Runs the image of this config (its `config` section; the image ID is recorded).
    pub fn image_config(mut self, config: &ImageConfig) -> Self {
        self.config = config.file().config.clone().unwrap_or_default();
        self.image
            .get_or_insert_with(|| config.image_id().to_string());
        self
    }

    /// Uses this run config directly.
    pub fn run_config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Records the image's name (a reference) with the container.
    pub fn image_name(mut self, name: impl Into<String>) -> Self {
        self.image = Some(name.into());
        self
    }

    /// Sets the base options. The other option setters apply over them
    /// whether they were called before or after this.
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// The options the container gets: those of [`Self::options`] with
    /// every other option setter's change applied, in call order.
    pub fn run_options(&self) -> RunOptions {
        let mut o = self.options.clone();
        for e in &self.edits {
            e.apply(&mut o);
        }
        o
    }

    fn edit(mut self, edit: Edit) -> Self {
        self.edits.push(edit);
        self
    }

    /// The container ID (default: 64 random hex digits).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The command (replaces the image's Cmd).
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(self, cmd: I) -> Self {
        self.edit(Edit::Cmd(cmd.into_iter().map(Into::into).collect()))
    }

    /// The entrypoint (replaces the image's; drops its Cmd unless [`Self::cmd`] is set).
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(self, ep: I) -> Self {
        self.edit(Edit::Entrypoint(ep.into_iter().map(Into::into).collect()))
    }

    /// Adds `KEY=value` to the environment.
    pub fn env(self, entry: impl Into<String>) -> Self {
        self.edit(Edit::Env(entry.into()))
    }

    /// The user (`name`, `uid`, `name:group`, `uid:gid`).
    pub fn user(self, user: impl Into<String>) -> Self {
        self.edit(Edit::User(user.into()))
    }

    /// The working directory.
    pub fn working_dir(self, dir: impl Into<String>) -> Self {
        self.edit(Edit::WorkingDir(dir.into()))
    }

    /// The hostname.
    pub fn hostname(self, name: impl Into<String>) -> Self {
        self.edit(Edit::Hostname(name.into()))
    }

    /// Mounts the root filesystem read-only.
    pub fn read_only(self, yes: bool) -> Self {
        self.edit(Edit::ReadOnly(yes))
    }

    /// Removes the container when its run ends (`run --rm`; see
    /// [`ContainerRecord::auto_remove`]): a failed [`Container::start`]
    /// deletes it, and [`Runtime::gc`] collects it once its owner is gone.
    /// The caller still deletes it after a successful run.
    pub fn auto_remove(mut self, yes: bool) -> Self {
        self.auto_remove = yes;
        self
    }

    /// Records the restart policy and log options that a later detached
    /// start of the container uses when it is given none of its own
    /// (`docker create --restart --log-opt`, then `docker start`): kept
    /// in its record's [`detached`](ContainerRecord::detached) settings,
    /// which [`Runtime::restart`] and imagectl's `start -d` read.
    pub fn detach_policies(
        mut self,
        restart: crate::model::RestartPolicy,
        log: crate::model::LogOptions,
    ) -> Self {
        self.detach = Some(crate::model::Detached {
            restart,
            log,
            ..crate::model::Detached::default()
        });
        self
    }

    /// Adds a bind mount.
    pub fn volume(self, volume: Volume) -> Self {
        self.edit(Edit::Volume(volume))
    }

    /// Limits memory to `bytes` (`--memory`; swap too, where the host can).
    pub fn memory(self, bytes: u64) -> Self {
        self.edit(Edit::Memory(bytes))
    }

    /// Limits the processes and threads at once (`--pids-limit`).
    pub fn pids(self, max: u64) -> Self {
        self.edit(Edit::Pids(max))
    }

    /// Limits CPU time to `cpus` CPUs (`--cpus 1.5`), kept to the
    /// billionth (`nano_cpus`); a negative or NaN value is zero, which
    /// [`create`](Self::create) refuses.
    pub fn cpus(self, cpus: f64) -> Self {
        // `as` saturates: NaN and negatives become 0, huge values u64::MAX.
        self.edit(Edit::NanoCpus((cpus * 1e9).round() as u64))
    }

    /// The network: a namespace with loopback only (the default) or the host's.
    pub fn network(self, mode: NetworkMode) -> Self {
        self.edit(Edit::Network(mode))
    }

    /// Runs a reaper as pid 1 (`--init`; native backend only).
    pub fn init(self, yes: bool) -> Self {
        self.edit(Edit::Init(yes))
    }

    /// Runs the container privileged (`--privileged`; see
    /// [`RunOptions::privileged`]).
    pub fn privileged(self, yes: bool) -> Self {
        self.edit(Edit::Privileged(yes))
    }

    /// Creates the container: state directory, writable snapshot prepared
    /// (for a container from an image), root filesystem mounted (for
    /// [`Rootfs::Mounts`]), checks inside it, bundle written, backend told.
    /// On failure everything made is removed again.
    ///
    /// # Errors
    /// [`ContainerError`]: `NeedsRoot` (no `CAP_SYS_ADMIN`) before anything
    /// is made, `Spec(NoCommand)`, `Lookup` (program missing or
    /// not executable), `User` (not found), `Rootfs` (mount refused:
    /// classified `PermissionDenied`), `Backend`, `AlreadyExists`, `State`.
    pub fn create(self) -> Result<Container, ContainerError> {
        require_root("creating a container")?;
        let id = match &self.id {
            Some(id) => {
                state::validate_id(id)?;
                id.clone()
            }
            None => ContainerError::random_id()?,
        };
        let sd = self.runtime.state();
        let dir = sd.dir(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::AlreadyExists { id });
            }
            Err(e) => return Err(ContainerError::state(&dir)(e)),
        }
        let mut record = ContainerRecord {
            id: id.clone(),
            image: self.image.clone(),
            backend: self.runtime.backend().name().to_owned(),
            bundle: dir.clone(),
            rootfs: self.rootfs.clone(),
            status: ContainerStatus::Creating,
            owner: Owner::current(),
            exit_code: None,
            image_ref: self.snapshot.as_ref().map(|p| p.image.clone()),
            // Named before it is prepared, so a crash in between leaves
            // nothing that `gc` cannot find.
            snapshot: self.snapshot.as_ref().map(|p| SnapshotRef {
                driver: p.snapshots.driver(),
                root: p.snapshots.root().to_owned(),
                key: id.clone(),
                parent: Some(snapshots::init_name(&id)),
                init: Some(snapshots::init_name(&id)),
            }),
            auto_remove: self.auto_remove,
            detached: self.detach.clone(),
        };
        let options = self.run_options();
        let result = sd
            .save(&record)
            .and_then(|()| self.prepare(&id, &dir, &options, &mut record));
        if let Err(e) = result {
            let cleanup = crate::container::volumes::delete_with_volumes(&self.runtime, &id);
            return Err(e.with_cleanup(cleanup));
        }
        record.status = ContainerStatus::Created;
        if let Err(e) = sd.save(&record) {
            let cleanup = crate::container::volumes::delete_with_volumes(&self.runtime, &id);
            return Err(e.with_cleanup(cleanup));
        }
        Ok(Container::from_record(self.runtime, record))
    }

    fn prepare(
        &self,
        id: &str,
        dir: &Path,
        options: &RunOptions,
        record: &mut ContainerRecord,
    ) -> Result<(), ContainerError> {
        if let Some(p) = &self.snapshot {
            let target = dir.join("rootfs");
            std::fs::create_dir(&target).map_err(ContainerError::state(&target))?;
            let init = snapshots::make_init(
                self.runtime.root(),
                &p.snapshots,
                id,
                p.parent.as_deref(),
                &target,
            )?;
            std::fs::remove_dir(&target).map_err(ContainerError::state(&target))?;
            let mounts = p
                .snapshots
                .snapshotter()
                .prepare_with(id, Some(&init), snapshots::labels(self.runtime.root(), id))
                .map_err(snapshots::snapshot_err(id))?;
            record.rootfs = Rootfs::Mounts(mounts);
            self.runtime.state().save(record)?;
        }
        let rootfs: PathBuf = match &record.rootfs {
            Rootfs::Directory(p) => {
                std::fs::canonicalize(p).map_err(|source| crate::rootfs::RootfsError::OpenRoot {
                    path: p.clone(),
                    source,
                })?
            }
            Rootfs::Mounts(mounts) => {
                let target = dir.join("rootfs");
                std::fs::create_dir(&target).map_err(ContainerError::state(&target))?;
                crate::rootfs::mount_all(&SysMounter, mounts, &target)?;
                target
            }
        };
        // Named volumes and the image's VOLUME paths become directories
        // of the state's volumes, filled from the image when new.
        let image_volumes: Vec<String> = self
            .config
            .volumes
            .iter()
            .flat_map(|m| m.keys().cloned())
            .collect();
        let root = crate::rootfs::RootDir::open(&rootfs)?;
        let options = &crate::container::volumes::resolve(
            &self.runtime,
            dir,
            &root,
            &image_volumes,
            options,
        )?;
        // As `docker run -v`: a missing host source directory is created.
        for v in &options.volumes {
            if !v.source.exists() {
                std::fs::create_dir_all(&v.source).map_err(ContainerError::state(&v.source))?;
            }
        }
        bundle::write(
            &BundleLayout {
                dir,
                rootfs: &rootfs,
                root_path: rootfs.clone(),
                id,
            },
            &self.config,
            options,
        )?;
        self.runtime.backend().create(id, dir)?;
        Ok(())
    }
}

impl Runtime {
    /// Starts building a container on `rootfs`.
    pub fn container(&self, rootfs: Rootfs) -> ContainerBuilder {
        ContainerBuilder::new(self.clone(), rootfs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NativeOptions;

    /// Every option setter, in one order.
    fn setters(b: ContainerBuilder) -> ContainerBuilder {
        b.cmd(["sh", "-c", "true"])
            .entrypoint(["/init"])
            .env("A=1")
            .env("B=2")
            .user("1000:50")
            .working_dir("/srv")
            .hostname("box")
            .read_only(true)
            .volume(Volume {
                source: "/tmp/src".into(),
                destination: "/data".into(),
                read_only: true,
            })
            .memory(64 << 20)
            .pids(100)
            .cpus(1.5)
            .network(NetworkMode::Host)
            .init(true)
    }

    fn base() -> RunOptions {
        let mut o = RunOptions::new();
        o.cmd = Some(vec!["replaced".into()]);
        o.env = vec!["BASE=1".into()];
        o.tty = true;
        o.additional_gids = vec![7];
        o.resources.memory = Some(1 << 30);
        o
    }

    /// `options()` before or after the other setters gives the same
    /// options: the setters' values over the base's, the base's own fields
    /// (tty, groups) kept, lists extended in call order.
    #[test]
    fn setters_compose_with_options_in_any_order() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
        let rootfs = Rootfs::Directory(tmp.path().to_owned());
        let before = setters(rt.container(rootfs.clone()).options(base())).run_options();
        let after = setters(rt.container(rootfs.clone()))
            .options(base())
            .run_options();
        assert_eq!(before, after);
        assert_eq!(
            after.cmd,
            Some(vec!["sh".to_string(), "-c".into(), "true".into()])
        );
        assert_eq!(after.entrypoint, Some(vec!["/init".to_string()]));
        assert_eq!(after.env, ["BASE=1", "A=1", "B=2"]);
        assert_eq!(after.user.as_deref(), Some("1000:50"));
        assert_eq!(after.working_dir.as_deref(), Some("/srv"));
        assert_eq!(after.hostname.as_deref(), Some("box"));
        assert!(after.read_only && after.tty && after.init);
        assert_eq!(after.additional_gids, [7]);
        assert_eq!(after.volumes.len(), 1);
        assert_eq!(after.resources.memory, Some(64 << 20));
        assert_eq!(after.resources.pids, Some(100));
        assert_eq!(after.resources.nano_cpus, Some(1_500_000_000));
        assert_eq!(after.network, NetworkMode::Host);
        // Without options() the setters alone make the same, less the base.
        let alone = setters(rt.container(rootfs)).run_options();
        assert_eq!(alone.env, ["A=1", "B=2"]);
        assert!(!alone.tty);
    }

    /// A NaN or negative CPU count is zero, which the spec refuses.
    #[test]
    fn cpus_out_of_range_become_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default()).unwrap();
        let b = rt.container(Rootfs::Directory(tmp.path().to_owned()));
        let b = b.cpus(f64::NAN);
        assert_eq!(b.run_options().resources.nano_cpus, Some(0));
        assert!(b.run_options().resources.validate().is_err());
        let b = b.cpus(-2.0);
        assert_eq!(b.run_options().resources.nano_cpus, Some(0));
    }
}
