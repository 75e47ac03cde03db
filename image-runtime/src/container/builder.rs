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
use crate::mount;
use crate::rootfs::Rootfs;
use crate::runtime::Runtime;
use crate::snapshots::{self, SnapshotRef, Snapshots};
use crate::spec::{RunOptions, Volume};
use crate::state;

/// Builds a container; see [`Runtime::container`]. Setters take and return
/// the builder by value.
#[derive(Debug)]
#[must_use]
pub struct ContainerBuilder {
    runtime: Runtime,
    rootfs: Rootfs,
    config: RunConfig,
    image: Option<String>,
    options: RunOptions,
    id: Option<String>,
    snapshot: Option<PendingSnapshot>,
    auto_remove: bool,
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
            id: None,
            snapshot: None,
            auto_remove: false,
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

    /// Replaces all options.
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// The container ID (default: 64 random hex digits).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The command (replaces the image's Cmd).
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cmd: I) -> Self {
        self.options.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }

    /// The entrypoint (replaces the image's; drops its Cmd unless [`Self::cmd`] is set).
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ep: I) -> Self {
        self.options.entrypoint = Some(ep.into_iter().map(Into::into).collect());
        self
    }

    /// Adds `KEY=value` to the environment.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.options.env.push(entry.into());
        self
    }

    /// The user (`name`, `uid`, `name:group`, `uid:gid`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.options.user = Some(user.into());
        self
    }

    /// The working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.options.working_dir = Some(dir.into());
        self
    }

    /// The hostname.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.options.hostname = Some(name.into());
        self
    }

    /// Mounts the root filesystem read-only.
    pub fn read_only(mut self, yes: bool) -> Self {
        self.options.read_only = yes;
        self
    }

    /// Removes the container when its run ends (`run --rm`; see
    /// [`ContainerRecord::auto_remove`]): a failed [`Container::start`]
    /// deletes it, and [`Runtime::gc`] collects it once its owner is gone.
    /// The caller still deletes it after a successful run.
    pub fn auto_remove(mut self, yes: bool) -> Self {
        self.auto_remove = yes;
        self
    }

    /// Adds a bind mount.
    pub fn volume(mut self, volume: Volume) -> Self {
        self.options.volumes.push(volume);
        self
    }

    /// Creates the container: state directory, writable snapshot prepared
    /// (for a container from an image), root filesystem mounted (for
    /// [`Rootfs::Mounts`]), checks inside it, bundle written, backend told.
    /// On failure everything made is removed again.
    ///
    /// # Errors
    /// [`ContainerError`]: `Spec(NoCommand)`, `Lookup` (program missing or
    /// not executable), `User` (not found), `Rootfs` (mount refused:
    /// classified `PermissionDenied`), `Backend`, `AlreadyExists`, `State`.
    pub fn create(self) -> Result<Container, ContainerError> {
        let id = match &self.id {
            Some(id) => {
                state::validate_id(id)?;
                id.clone()
            }
            None => state::random_id()?,
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
        };
        let result = sd
            .save(&record)
            .and_then(|()| self.prepare(&id, &dir, &mut record));
        if let Err(e) = result {
            let cleanup = crate::container::delete::delete(&self.runtime, &id);
            return Err(e.with_cleanup(cleanup));
        }
        record.status = ContainerStatus::Created;
        if let Err(e) = sd.save(&record) {
            let cleanup = crate::container::delete::delete(&self.runtime, &id);
            return Err(e.with_cleanup(cleanup));
        }
        Ok(Container::from_record(self.runtime, record))
    }

    fn prepare(
        &self,
        id: &str,
        dir: &Path,
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
            record.rootfs = Rootfs::Mounts(snapshots::mount_specs(mounts)?);
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
                mount::mount_all(mounts, &target)?;
                target
            }
        };
        // As `docker run -v`: a missing host source directory is created.
        for v in &self.options.volumes {
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
            &self.options,
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
