//! `commit` (`docker commit`): a container's changes become a layer on its
//! image, and a new image with a history entry.
//!
//! The changes are packed straight into the store (compressed and hashed in
//! one pass, never held in memory):
//! - overlay snapshot: its upper directory, overlayfs whiteouts (0/0
//!   character devices, opaque-directory xattrs) turned into OCI whiteouts;
//! - copy snapshot: the difference between the parent (a read-only view of
//!   it) and the container's full copy;
//! - a container without a parent snapshot: its whole tree.
//!
//! The new config is the image's, with the caller's changes applied: unlike
//! Docker, the container's own command and environment are not copied
//! into it (what a build's `RUN` needs); pass a change for that.
//!
//! ```no_run
//! use image_runtime::commit::CommitOptions;
//! use image_runtime::snapshots::Snapshots;
//! use image_runtime::{Runtime, RuntimeKind, Stdio};
//! use std::path::Path;
//!
//! let store = image_store::OciDir::open_or_create(Path::new("/var/lib/images"))?;
//! let rt = Runtime::oci(Path::new("/var/lib/runtime"), RuntimeKind::Runc)?
//!     .with_snapshots(Snapshots::open_default(Path::new("/var/lib/snapshots"))?)?;
//! let c = rt
//!     .container_from_image(&store, "busybox:latest")?
//!     .cmd(["sh", "-c", "echo hi > /greeting"])
//!     .create()?;
//! let (c, _exit) = c.run(Stdio::capture(), std::time::Duration::from_secs(30))?;
//! let committed = c.commit(&store, &CommitOptions::new().tag("busybox:greeting"))?;
//! println!("{}", committed.config.image_id());
//! c.delete()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;
use std::path::Path;

use image_core::config::{ConfigFile, History};
use image_core::{Classify, Compression, ErrorKind, ImageConfig, Manifest, Platform};
use image_overlay::snapshot::{SnapshotError, Snapshotter};
use image_overlay::{
    diff_dirs, pack_dir, pack_overlay_upper, DiffError, OverlayXattrs, PackError, PackOptions,
    PackReport,
};
use image_store::image::ImageError;
use image_store::mutate::{self, MutateError, NewLayer};
use image_store::{ContentError, Ingester, LeaseError, Leases, TagError, TagStore};

use crate::container::Container;
use crate::error::ContainerError;
use crate::from_image::ImageStore;
use crate::rootfs::Rootfs;
use crate::snapshots::Driver;
use crate::state::ContainerStatus;

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
    #[error("writing the new image: {0}")]
    Mutate(Box<MutateError>),
    /// Tagging the new image failed.
    #[error("tagging {name}")]
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
            let snapshots = sref.open(&self.runtime)?;
            let sn = snapshots.snapshotter();
            let snap_err = |key: &str| {
                let key = key.to_owned();
                move |source| CommitError::Snapshot {
                    key,
                    source: Box::new(source),
                }
            };
            let mounts = sn.mounts(&sref.key).map_err(snap_err(&sref.key))?;
            let own = match mounts.as_slice() {
                [m] if m.fs_type == "overlay" => m.option("upperdir").map(str::to_owned),
                [m] if m.fs_type == "bind" => Some(m.source.clone()),
                _ => None,
            }
            .ok_or(CommitError::NotCommittable {
                id: id.to_owned(),
                reason: "its snapshot's mounts have no directory of its own",
            })?;
            let own = Path::new(&own);
            return match (sref.driver, &sref.parent) {
                (Driver::Overlay, Some(_)) => {
                    pack_overlay_upper(own, out, options, OverlayXattrs::Trusted).map_err(pack_err)
                }
                (Driver::Copy, Some(parent)) => {
                    diff_against(sn, id, parent, own, out, options, snap_err)
                }
                (_, None) => pack_dir(own, out, options).map_err(pack_err),
            };
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

        let reference = image_store::content::unique_reference();
        let mut w = store.writer(&reference).map_err(content_err)?;
        let layer = match self.pack_changes_dyn(&mut w, &options.pack) {
            Ok(r) => r,
            Err(e) => {
                drop(w);
                let _ = store.abort(&reference);
                return Err(e);
            }
        };
        w.commit(Some(layer.size), Some(&layer.digest))
            .map_err(content_err)?;

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
        let host = Platform::host();
        let platform = match &base {
            Some(b) => (
                b.config.file().os.clone(),
                b.config.file().architecture.clone(),
            ),
            None => (host.os.clone(), host.architecture.clone()),
        };
        let appended = mutate::append(
            store,
            base.as_ref(),
            (&platform.0, &platform.1),
            &[new_layer],
            |c| {
                c.created = Some(created.clone());
                if let Some(a) = &options.author {
                    c.author = Some(a.clone());
                }
                change(c);
            },
        )?;
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

/// The diff of a copy snapshot against a read-only view of its parent.
fn diff_against<F, E>(
    sn: &dyn Snapshotter,
    id: &str,
    parent: &str,
    own: &Path,
    out: &mut dyn Write,
    options: &PackOptions,
    snap_err: F,
) -> Result<PackReport, CommitError>
where
    F: Fn(&str) -> E,
    E: FnOnce(SnapshotError) -> CommitError,
{
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let view = format!("commit-{id}-{}-{nanos}", std::process::id());
    let mounts = sn.view(&view, Some(parent)).map_err(snap_err(&view))?;
    let result = match mounts.as_slice() {
        [m] if m.fs_type == "bind" => {
            diff_dirs(Path::new(&m.source), own, out, options).map_err(|source| CommitError::Diff {
                id: id.to_owned(),
                source: Box::new(source),
            })
        }
        _ => Err(CommitError::NotCommittable {
            id: id.to_owned(),
            reason: "the parent's view is not a single directory",
        }),
    };
    let removed = sn.remove(&view).map_err(snap_err(&view));
    let report = result?;
    removed?;
    Ok(report)
}
