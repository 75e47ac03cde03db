//! `commit` (`docker commit`): a container's changes become a layer on its
//! image, and a new image with a history entry.
//!
//! The changes are packed straight into the store (compressed and hashed in
//! one pass, never held in memory). For a container made from an image they
//! are its writable snapshot's changes as the snapshotter shows them,
//! found by [`image_overlay::compare`] (an overlay upper directory, or a
//! full copy compared with its parent), the same call a build step uses;
//! for a root of overlay mounts given by the caller, the upper directory.
//!
//! The new config is the image's, with the caller's changes applied: unlike
//! Docker, the container's own command and environment are not copied
//! into it (what a build's `RUN` needs); pass a change for that.
//!
//! As root (containers need `CAP_SYS_ADMIN`), with an image made by
//! [`image_overlay::append_dir`] from busybox-static:
//!
//! ```
//! use image_core::Platform;
//! use image_overlay::{append_dir, ConfigChanges};
//! use image_runtime::CommitOptions;
//! use image_runtime::snapshots::Snapshots;
//! use image_runtime::{NativeOptions, Runtime, Stdio};
//!
//! let tmp = tempfile::tempdir()?;
//! let store = image_store::OciDir::open_or_create(tmp.path().join("images"))?;
//! let dir = tmp.path().join("busybox");
//! std::fs::create_dir_all(dir.join("bin"))?;
//! std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
//! std::os::unix::fs::symlink("busybox", dir.join("bin/sh"))?;
//! let platform = Platform::host();
//! let changes = ConfigChanges::new().env("PATH=/bin").cmd(["sh"]);
//! append_dir(&store, None, &dir, &platform, &changes, "busybox:latest")?;
//!
//! let snapshots = Snapshots::open_default(&tmp.path().join("snapshots"))?;
//! let rt = Runtime::native(&tmp.path().join("state"), NativeOptions::default())?
//!     .with_snapshots(snapshots)?;
//! let c = rt
//!     .container_from_image(&store, "busybox:latest")?
//!     .cmd(["sh", "-c", "echo hi > /greeting"])
//!     .create()?;
//! let (c, exit) = c.run(Stdio::capture(), std::time::Duration::from_secs(30))?;
//! assert!(exit.expect("finished in time").status.success());
//! let committed = c.commit(&store, &CommitOptions::new().tag("busybox:greeting"))?;
//! assert_eq!(committed.manifest.layers().len(), 2);
//! c.delete()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;

use image_core::config::{ConfigFile, History};
use image_core::error::unless_named;
use image_core::{Classify, Compression, ErrorKind, ImageConfig, Manifest, Platform};
use image_overlay::compare::{compare, store_layer, CompareError};
use image_overlay::snapshot::SnapshotError;
use image_overlay::{
    pack_overlay_upper, DiffError, OverlayXattrs, PackError, PackOptions, PackReport,
};
use image_store::image::ImageError;
use image_store::mutate::{self, MutateError, NewLayer};
use image_store::{ContentError, LeaseError, Leases, TagError, TagStore};

use crate::container::handle::Container;
use crate::error::ContainerError;
use crate::image::ImageStore;
use crate::model::ContainerStatus;
use crate::rootfs::Rootfs;

/// Knobs of a commit.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommitOptions {
    /// The history entry's and the config's author.
    pub author: Option<String>,
    /// The history entry's comment.
    pub comment: Option<String>,
    /// The history entry's `created_by` (default: the container's command).
    pub created_by: Option<String>,
    /// The name to tag the new image with.
    pub tag: Option<String>,
    /// Compression and timestamps of the new layer (default: gzip).
    pub pack: PackOptions,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            author: None,
            comment: None,
            created_by: None,
            tag: None,
            pack: PackOptions::new(Compression::Gzip),
        }
    }
}

impl CommitOptions {
    /// The defaults: gzip, no author, comment or tag.
    pub fn new() -> CommitOptions {
        CommitOptions::default()
    }

    /// Sets the author.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.author = Some(author.into());
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Sets `created_by`.
    pub fn created_by(mut self, created_by: impl Into<String>) -> Self {
        self.created_by = Some(created_by.into());
        self
    }

    /// Tags the new image with `name`.
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tag = Some(name.into());
        self
    }

    /// Sets the layer's pack options.
    pub fn pack(mut self, pack: PackOptions) -> Self {
        self.pack = pack;
        self
    }

    /// Reports the layer's packing to `tracker` and stops when its
    /// interrupt is set (the pack options' tracker).
    pub fn with_tracker(mut self, tracker: image_core::Tracker) -> Self {
        self.pack.tracker = tracker;
        self
    }
}

/// What a commit made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Committed {
    /// The new manifest, as stored.
    pub manifest: Manifest,
    /// The new config; its digest is the image ID.
    pub config: ImageConfig,
    /// The new layer.
    pub layer: PackReport,
    /// The tag set, if any.
    pub tag: Option<String>,
}

/// Errors of committing a container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The container's process runs.
    #[error("cannot commit container {id}: it is {status:?}")]
    Running {
        /// The container.
        id: String,
        /// Its status.
        status: ContainerStatus,
    },
    /// The container's changes cannot be told apart from its image (a
    /// plain directory as root filesystem).
    #[error("cannot commit container {id}: {reason}")]
    NotCommittable {
        /// The container.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// Reading the container's spec or snapshots failed.
    #[error(transparent)]
    Container(Box<ContainerError>),
    /// A snapshot operation failed.
    #[error("snapshot {key}")]
    Snapshot {
        /// The key.
        key: String,
        /// The cause.
        source: Box<SnapshotError>,
    },
    /// Packing the changes failed.
    #[error("packing the changes of container {id}")]
    Pack {
        /// The container.
        id: String,
        /// The cause.
        source: Box<PackError>,
    },
    /// Diffing the copy against its parent failed.
    #[error("diffing container {id} against its image")]
    Diff {
        /// The container.
        id: String,
        /// The cause.
        source: Box<DiffError>,
    },
    /// Writing the layer into the store failed.
    #[error("storing the layer of container {id}")]
    Content {
        /// The container.
        id: String,
        /// The cause.
        source: Box<ContentError>,
    },
    /// The container's image is no longer readable in the store.
    #[error("the image of container {id}")]
    Image {
        /// The container.
        id: String,
        /// The cause.
        source: Box<ImageError>,
    },
    /// Writing the new config or manifest failed.
    #[error("making the new image")]
    Mutate(#[source] Box<MutateError>),
    /// Tagging the new image failed.
    #[error("tagging{}", unless_named(.name, &**.source))]
    Tag {
        /// The name.
        name: String,
        /// The cause.
        source: Box<TagError>,
    },
    /// Taking the lease that keeps gc off the new image's blobs failed.
    #[error("taking a lease on the store to commit container {id}")]
    Lease {
        /// The container.
        id: String,
        /// The cause.
        source: Box<LeaseError>,
    },
}

impl Classify for CommitError {
    fn kind(&self) -> ErrorKind {
        match self {
            CommitError::Running { .. } => ErrorKind::FailedPrecondition,
            CommitError::NotCommittable { .. } => ErrorKind::Unsupported,
            CommitError::Container(e) => e.kind(),
            CommitError::Snapshot { source, .. } => source.kind(),
            CommitError::Pack { source, .. } => source.kind(),
            CommitError::Diff { source, .. } => source.kind(),
            CommitError::Content { source, .. } => source.kind(),
            CommitError::Image { source, .. } => source.kind(),
            CommitError::Mutate(e) => e.kind(),
            CommitError::Tag { source, .. } => source.kind(),
            CommitError::Lease { source, .. } => source.kind(),
        }
    }
}

impl From<MutateError> for CommitError {
    fn from(e: MutateError) -> Self {
        CommitError::Mutate(Box::new(e))
    }
}

impl From<ContainerError> for CommitError {
    fn from(e: ContainerError) -> Self {
        CommitError::Container(Box::new(e))
    }
}

impl Container {
    /// Packs the container's changes (see the module docs) as a layer into
    /// `out`.
    ///
    /// # Errors
    /// [`CommitError::NotCommittable`] for a plain directory root;
    /// [`CommitError::Pack`], [`CommitError::Diff`], [`CommitError::Snapshot`].
    pub fn pack_changes<W: Write>(
        &self,
        out: W,
        options: &PackOptions,
    ) -> Result<PackReport, CommitError> {
        self.pack_changes_dyn(&mut { out }, options)
    }

    fn pack_changes_dyn(
        &self,
        out: &mut dyn Write,
        options: &PackOptions,
    ) -> Result<PackReport, CommitError> {
        let id = self.id();
        let pack_err = |source| CommitError::Pack {
            id: id.to_owned(),
            source: Box::new(source),
        };
        if let Some(sref) = &self.record.snapshot {
            let snapshots = sref.open(self.runtime.snapshots())?;
            return compare(snapshots.snapshotter(), &sref.key, out, options)
                .map_err(|e| from_compare(id, e));
        }
        match &self.record.rootfs {
            Rootfs::Mounts(_) => match self.upper_dir() {
                Some(upper) => pack_overlay_upper(&upper, out, options, OverlayXattrs::Trusted)
                    .map_err(pack_err),
                None => Err(CommitError::NotCommittable {
                    id: id.to_owned(),
                    reason: "its root filesystem mounts have no overlay upper directory",
                }),
            },
            _ => Err(CommitError::NotCommittable {
                id: id.to_owned(),
                reason: "its root filesystem is a plain directory",
            }),
        }
    }

    /// Commits the container's changes as a new image in `store` (see the
    /// module docs): its image plus one layer, with a history entry.
    ///
    /// # Errors
    /// As [`Container::commit_with`].
    pub fn commit<S: ImageStore + Leases + ?Sized>(
        &self,
        store: &S,
        options: &CommitOptions,
    ) -> Result<Committed, CommitError> {
        self.commit_with(store, options, |_| {})
    }

    /// As [`Container::commit`], with `change` applied to the new config
    /// (after the history entry is added).
    ///
    /// # Errors
    /// [`CommitError::Running`] while its process runs; the errors of
    /// [`Container::pack_changes`]; [`CommitError::Content`],
    /// [`CommitError::Image`] (its image's blobs gone from `store`),
    /// [`CommitError::Mutate`], [`CommitError::Tag`], [`CommitError::Lease`].
    pub fn commit_with<S: ImageStore + Leases + ?Sized>(
        &self,
        store: &S,
        options: &CommitOptions,
        change: impl FnOnce(&mut ConfigFile),
    ) -> Result<Committed, CommitError> {
        let id = self.id().to_owned();
        let status = self.record.status;
        let running = matches!(status, ContainerStatus::Running | ContainerStatus::Creating)
            && self.record.owner.is_some_and(|o| o.is_alive());
        if running {
            return Err(CommitError::Running { id, status });
        }
        // The tag is checked before anything is written (as append does):
        // a name the store would refuse (one with a digest) must not leave
        // a layer, config and manifest behind.
        if let Some(name) = &options.tag {
            image_store::tags::normalize_name(name).map_err(|source| CommitError::Tag {
                name: name.clone(),
                source: Box::new(source),
            })?;
        }
        // Held until the tag is set, and taken before the base image is
        // read: its blobs, the new layer, config and manifest are each
        // added before they are checked or committed, so gc cannot remove
        // them in between.
        let lease = store.begin_lease().map_err(|source| CommitError::Lease {
            id: id.clone(),
            source: Box::new(source),
        })?;
        let store = &lease.protect(store);
        let base = self
            .record
            .image_ref
            .as_ref()
            .map(|r| r.resolve(store))
            .transpose()
            .map_err(|source| CommitError::Image {
                id: id.clone(),
                source: Box::new(source),
            })?;
        let content_err = |source| CommitError::Content {
            id: id.clone(),
            source: Box::new(source),
        };

        let layer = store_layer(store, content_err, |out| {
            self.pack_changes_dyn(out, &options.pack)
        })?;

        let created_by = match &options.created_by {
            Some(c) => c.clone(),
            None => self.command().unwrap_or_default(),
        };
        let created = image_core::time::created_now();
        let new_layer = NewLayer {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            diff_id: layer.diff_id.clone(),
            history: History {
                created: Some(created.clone()),
                created_by: Some(created_by),
                author: options.author.clone(),
                comment: options.comment.clone(),
                ..History::default()
            },
        };
        // With a base the new config is the base's, platform included.
        let appended =
            mutate::append(store, base.as_ref(), &Platform::host(), &[new_layer], |c| {
                c.created = Some(created.clone());
                if let Some(a) = &options.author {
                    c.author = Some(a.clone());
                }
                change(c);
            })?;
        if let Some(name) = &options.tag {
            store
                .set_tag(name, &appended.manifest.descriptor())
                .map_err(|source| CommitError::Tag {
                    name: name.clone(),
                    source: Box::new(source),
                })?;
        }
        drop(lease);
        Ok(Committed {
            manifest: appended.manifest,
            config: appended.config,
            layer,
            tag: options.tag.clone(),
        })
    }

    /// The container's command line (`process.args` of its spec), joined
    /// by spaces.
    ///
    /// # Errors
    /// [`ContainerError::State`] when the spec cannot be read.
    pub fn command(&self) -> Result<String, ContainerError> {
        let spec = self.spec()?;
        Ok(spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .map(|a| a.join(" "))
            .unwrap_or_default())
    }
}

/// A comparison's error as the commit of container `id` reports it.
fn from_compare(id: &str, e: CompareError) -> CommitError {
    let id = id.to_owned();
    match e {
        CompareError::Snapshot { key, source } => CommitError::Snapshot {
            key,
            source: Box::new(source),
        },
        CompareError::Unsupported { reason, .. } => CommitError::NotCommittable { id, reason },
        CompareError::Pack { source, .. } => CommitError::Pack {
            id,
            source: Box::new(source),
        },
        CompareError::Diff { source, .. } => CommitError::Diff {
            id,
            source: Box::new(source),
        },
        CompareError::Content { source, .. } => CommitError::Content {
            id,
            source: Box::new(source),
        },
        // A variant added later keeps its class through the container's
        // commit as an unsupported snapshot shape would.
        _ => CommitError::NotCommittable {
            id,
            reason: "its snapshot's changes cannot be compared",
        },
    }
}
