//! Copy: an image between registries, stores and OCI layouts, as
//! `skopeo copy --all` and `crane copy` do, with the referrers too on
//! request (which skopeo cannot: containers/skopeo#1674).
//!
//! [`copy`] takes a source and a destination [`Location`]: a registry
//! reference, a store (an image-store, an OCI layout: any
//! [`OciDir`](image_store::OciDir)) with the image's name in it, or an
//! OCI archive file (skopeo's `oci-archive:`; read in place at a source,
//! written whole then renamed into place at a destination). Every
//! platform of an index is copied unless [`CopyOptions::platform`] picks
//! one. A layout named without a reference (skopeo's `oci:DIR`) is its
//! only image at a source ([`Location::OnlyImage`]) and, at a
//! destination ([`Location::Untagged`]), an entry of its `index.json`
//! without a name, as skopeo writes it. The documents keep their bytes,
//! so every digest is the source's.
//! Each pair is one of the operations this crate and image-store already
//! have, so there is one walk of an image for push and copy alike:
//! - registry to store: [`pull`](crate::pull()), tagged with the
//!   destination's name, under a lease until tagged;
//! - store to registry, and registry to registry: the push's walk and
//!   blob transfer ([`push`](crate::push::push)) reading from the store or
//!   streaming from the source registry (each blob hashed while it passes
//!   and checked before its upload is closed; nothing is buffered whole).
//!   Blobs the destination has are skipped (`HEAD`); between two
//!   repositories of the same registry they are mounted
//!   (`mount=&from=`), never sent;
//! - store to store: image-store's [`copy_image_with`], under a lease
//!   until tagged.
//!
//! With [`CopyOptions::referrers`], the referrers of every document
//! copied (signatures, SBOMs, attestations: manifests whose `subject`
//! names it), found through the referrers API or its tag-schema fallback,
//! are copied too, and theirs in turn, each once (a visited set, so a
//! loop of referrers ends), at most [`MAX_REFERRER_DEPTH`] deep and
//! [`CopyOptions::max_referrers`] in all. They go to the destination as
//! any manifest with a `subject` is pushed: a registry without the
//! referrers API gets its tag-schema index updated. A store lists them in
//! its lists of referrers ([`image_store::referrers`]); an OCI layout
//! ([`Location::Layout`]) and an OCI archive as the image layout spec
//! allows and oras does: each referrer an untagged entry of `index.json`,
//! found by its `subject` (skopeo's layout transport keeps no referrers).
//! A source store, layout or archive is read in both forms.
//!
//! Progress and cancellation go through [`CopyOptions::tracker`], one
//! item per blob.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use image_core::error::unless_named;
use image_core::{
    platform::{select_manifest, PlatformError},
    Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, Platform, Reference, Tracker,
};
use image_store::archive::{ArchiveError, OciArchive};
use image_store::{copy_image_with, LeaseError, Provider, TagError, TagStore};

use crate::client::{check_interrupt, Client};
use crate::error::RegistryError;
use crate::pull::{pull, PullError, PullOptions, PullStore};
use crate::push::{
    check_destination, push_from, put_tag, PushError, PushOptions, PushReport, Source,
};

mod archive;

/// The deepest chain of referrers followed (a signature of an SBOM of an
/// image is 2).
pub const MAX_REFERRER_DEPTH: usize = 8;

/// Where an image is copied from or to.
#[derive(Debug)]
pub enum Location<'a, S: ?Sized> {
    /// A registry reference: the image its tag or digest names; at a
    /// destination, the repository, tagged with its tag when it has one
    /// (a digest there must be the source's).
    Registry(Reference),
    /// A store (an image-store or any OCI layout) and the image's name in
    /// it: a tag, or at a source a digest reference (never empty: a
    /// store's only image is [`Location::OnlyImage`]).
    Store {
        /// The store.
        store: &'a S,
        /// The image's name.
        name: String,
    },
    /// An OCI layout (`oci:DIR:REF`; `oci:DIR` at a source is
    /// [`Location::OnlyImage`]) and the image's name in it: read as
    /// a store; at a destination, referrers are listed in its `index.json`
    /// untagged (oras's form) rather than in a store's lists.
    Layout {
        /// The layout.
        store: &'a S,
        /// The image's name.
        name: String,
    },
    /// At a source only: the one image a store or layout holds besides
    /// its referrers (`oci:DIR`, as skopeo names a layout's only image:
    /// [`image_store::referrers::only_image`]), asked for explicitly so
    /// that an empty name stays an error.
    OnlyImage {
        /// The store or layout.
        store: &'a S,
    },
    /// At a destination only: an OCI layout named without a reference
    /// (skopeo's `oci:DIR`), which lists the image in its `index.json`
    /// without a name, unless an unnamed entry of its digest is there
    /// (as skopeo's layout destination does: a named entry of that digest
    /// is left as it is, and the unnamed one added beside it). A source
    /// named so is [`Location::OnlyImage`]: given as a source, this is
    /// read as that.
    Untagged {
        /// The layout.
        store: &'a S,
    },
    /// An OCI archive file (skopeo's `oci-archive:PATH[:REF]`) and the
    /// image's name in it (`None`: the archive's only image besides its
    /// referrers, and an
    /// unnamed image when written). A source archive is read in place
    /// ([`OciArchive`]: an uncompressed tar); a destination is written
    /// whole once the image is read, beside its path, then renamed over
    /// it (nothing half-written is ever at the path).
    Archive {
        /// The archive file.
        path: PathBuf,
        /// The image's name in it (its `ref.name`, as given).
        name: Option<String>,
    },
}

impl<'a, S: ?Sized> Location<'a, S> {
    /// A layout as the store it is (how everything but the referrers'
    /// listing treats it); an unnamed layout as its only image.
    fn as_store(&self) -> Option<Location<'a, S>> {
        match self {
            Location::Layout { store, name } => Some(Location::Store {
                store: *store,
                name: name.clone(),
            }),
            Location::Untagged { store } => Some(Location::OnlyImage { store: *store }),
            _ => None,
        }
    }
}

/// How to copy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// The platform to take from an index; every platform when `None`.
    pub platform: Option<Platform>,
    /// Copy the referrers of every document copied, recursively.
    pub referrers: bool,
    /// The most referrers one copy takes (default 1024); a list that
    /// would pass it is refused before any of it is copied.
    pub max_referrers: usize,
    /// Blobs moved at once (at least 1; default 4).
    pub parallel: usize,
    /// Progress and cancellation.
    pub tracker: Tracker,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            platform: None,
            referrers: false,
            max_referrers: 1024,
            parallel: 4,
            tracker: Tracker::default(),
        }
    }
}

impl CopyOptions {
    /// Takes only `platform` from an index.
    pub fn with_platform(mut self, platform: Platform) -> CopyOptions {
        self.platform = Some(platform);
        self
    }

    /// Copies the referrers too.
    pub fn with_referrers(mut self, referrers: bool) -> CopyOptions {
        self.referrers = referrers;
        self
    }

    /// The most referrers one copy takes.
    pub fn with_max_referrers(mut self, max: usize) -> CopyOptions {
        self.max_referrers = max;
        self
    }

    /// Progress and cancellation.
    pub fn with_tracker(mut self, tracker: Tracker) -> CopyOptions {
        self.tracker = tracker;
        self
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// The descriptor copied (the index, or the manifest chosen).
    pub descriptor: Option<Descriptor>,
    /// The tag set at the destination, if any.
    pub tag: Option<String>,
    /// Blobs written to the destination (configs, layers; documents too
    /// between stores).
    pub copied: usize,
    /// Blobs the destination had.
    pub skipped: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// The referrers copied (manifests with a `subject`).
    pub referrers: Vec<Digest>,
}

impl CopyReport {
    fn add_push(&mut self, r: &PushReport) {
        self.copied += r.uploaded.len();
        self.skipped += r.skipped.len();
        self.mounted += r.mounted.len();
    }
}

/// Why a copy failed. The destination may hold some of the image's blobs
/// (verified, and collected by gc in a store) but no tag was set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading from a registry into a store failed.
    #[error("copying into the store")]
    Pull(#[source] Box<PullError>),
    /// Copying to a registry failed.
    #[error("copying to {dest}")]
    Push {
        /// The destination.
        dest: String,
        /// Why.
        source: Box<PushError>,
    },
    /// Copying between stores failed.
    #[error("copying between stores")]
    Store(#[source] image_store::CopyError),
    /// The source store has no image of that name, or the destination
    /// store refused the tag.
    #[error("naming {name} in a store")]
    Name {
        /// The name.
        name: String,
        /// Why.
        source: Box<TagError>,
    },
    /// The destination store's lease could not be taken or kept.
    #[error("leasing the copy's blobs")]
    Lease(#[source] LeaseError),
    /// The source registry did not give the image.
    #[error("reading {reference}")]
    Source {
        /// The source.
        reference: String,
        /// Why.
        source: Box<RegistryError>,
    },
    /// The source's index could not be read to choose a platform.
    #[error("reading index{} from the source", unless_named(.digest, &**.source))]
    Read {
        /// The index.
        digest: String,
        /// Why.
        source: Box<PushError>,
    },
    /// No manifest of the source's index fits the platform.
    #[error("choosing the platform from {digest}")]
    Platform {
        /// The index.
        digest: Digest,
        /// The platforms offered.
        source: PlatformError,
    },
    /// The referrers of a document could not be listed.
    #[error("listing the referrers{}", unless_named(.digest, &**.source))]
    Referrers {
        /// The document.
        digest: Digest,
        /// Why.
        source: Box<RegistryError>,
    },
    /// A document has more referrers (not yet copied) than the copy still
    /// takes ([`CopyOptions::max_referrers`] in all).
    #[error("{digest} has {found} referrers, more than the {limit} the copy still takes")]
    TooManyReferrers {
        /// The document referred to.
        digest: Digest,
        /// The referrers it lists.
        found: usize,
        /// The limit left.
        limit: usize,
    },
    /// Referrers of referrers nest deeper than [`MAX_REFERRER_DEPTH`].
    #[error("referrer {digest} is nested deeper than {MAX_REFERRER_DEPTH}")]
    ReferrersTooDeep {
        /// The referrer past the depth.
        digest: Digest,
    },
    /// A store's list of referrers could not be read or written.
    #[error("the store's referrers{}", unless_named(.digest, &**.source))]
    StoreReferrers {
        /// The document referred to.
        digest: Digest,
        /// Why.
        source: Box<image_store::referrers::ReferrersError>,
    },
    /// A referrers listing names an unusable descriptor.
    #[error("referrer {digest} of {parent} is unusable")]
    Referrer {
        /// The descriptor's digest as written.
        digest: String,
        /// The document it refers to.
        parent: Digest,
    },
    /// An OCI archive could not be read or written.
    #[error("copying through archive {}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: Box<ArchiveError>,
    },
    /// A source archive holds several images and none was named.
    #[error("archive {} holds {images} images: name one (oci-archive:PATH:REF)", path.display())]
    ArchiveImage {
        /// The archive.
        path: PathBuf,
        /// The images it holds.
        images: usize,
    },
    /// A source named without a reference ([`Location::OnlyImage`],
    /// `oci:DIR`; an archive without one) holds no one image besides its referrers (an
    /// archive of several images is [`CopyError::ArchiveImage`]).
    #[error("choosing the image of {of}, named without a reference")]
    OnlyImage {
        /// The source.
        of: String,
        /// Why.
        source: Box<image_store::referrers::OnlyImageError>,
    },
    /// [`Location::OnlyImage`] given as a destination, which needs a name.
    #[error("a copy's destination needs a name: \"the only image\" names a source")]
    UnnamedDestination,
    /// The image copied could not be listed without a name in the
    /// destination layout's index ([`Location::Untagged`]).
    #[error("listing {digest} in the destination layout without a name")]
    Untagged {
        /// The image's digest.
        digest: String,
        /// Why.
        source: Box<TagError>,
    },
    /// The scratch store a registry source is pulled into before it is
    /// written as an archive could not be made.
    #[error("making scratch store {}", path.display())]
    Scratch {
        /// The scratch store's directory.
        path: PathBuf,
        /// Why.
        source: Box<image_store::LayoutError>,
    },
    /// No longer returned: referrers are copied to and from archives too
    /// (kept so that code matching it still builds).
    #[error("referrers are copied between registries and stores only")]
    ReferrersNeedRegistries,
}

impl Classify for CopyError {
    fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Pull(source) => source.kind(),
            CopyError::Push { source, .. } | CopyError::Read { source, .. } => source.kind(),
            CopyError::Store(source) => source.kind(),
            CopyError::Name { source, .. } | CopyError::Untagged { source, .. } => source.kind(),
            CopyError::Lease(source) => source.kind(),
            CopyError::Source { source, .. } | CopyError::Referrers { source, .. } => source.kind(),
            CopyError::Platform { source, .. } => source.kind(),
            CopyError::TooManyReferrers { .. } | CopyError::ReferrersTooDeep { .. } => {
                ErrorKind::Unsafe
            }
            CopyError::Referrer { .. } | CopyError::UnnamedDestination => ErrorKind::InvalidInput,
            CopyError::ReferrersNeedRegistries => ErrorKind::Unsupported,
            CopyError::Archive { source, .. } => source.kind(),
            CopyError::ArchiveImage { .. } => ErrorKind::InvalidInput,
            CopyError::OnlyImage { source, .. } => source.kind(),
            CopyError::Scratch { source, .. } => source.kind(),
            CopyError::StoreReferrers { source, .. } => source.kind(),
        }
    }
}

/// Copies the image `src` names to `dst`; see the
/// [module documentation](self).
///
/// # Errors
/// [`CopyError`]; its class tells a retryable failure (`Unavailable`)
/// from a refusal (`NotFound`, `DigestMismatch`, `Unsafe` for a bound
/// passed...).
pub async fn copy<S, D>(
    client: &Client,
    src: &Location<'_, S>,
    dst: &Location<'_, D>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError>
where
    S: Provider + TagStore + Sync,
    D: PullStore,
{
    let src_store = src.as_store();
    let src = src_store.as_ref().unwrap_or(src);
    if let Location::OnlyImage { .. } = dst {
        return Err(CopyError::UnnamedDestination);
    }
    if let Location::Archive { path, name } = dst {
        return archive::to_archive(client, src, path, name.as_deref(), options).await;
    }
    match src {
        Location::Archive { path, name } => {
            let archive = OciArchive::open(path).map_err(|e| archive::error(path, e))?;
            let top = archive::image(&archive, name.as_deref())?;
            from_store(client, &archive, top, dst, options).await
        }
        Location::Store { store, name } => {
            let top = resolve(*store, name)?;
            from_store(client, *store, top, dst, options).await
        }
        Location::OnlyImage { store } => {
            let top = the_only_image(*store)?;
            from_store(client, *store, top, dst, options).await
        }
        Location::Registry(from) => from_registry(client, from, dst, options).await,
        Location::Layout { .. } | Location::Untagged { .. } => {
            unreachable!("a layout source is read as a store")
        }
    }
}

/// Copies `from` to a registry or a store.
async fn from_registry<D: PullStore>(
    client: &Client,
    from: &Reference,
    dst: &Location<'_, D>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let (store, name) = match dst {
        Location::Store { store, name } | Location::Layout { store, name } => (*store, Some(name)),
        Location::Untagged { store } => (*store, None),
        Location::Registry(to) => {
            let top = source_document(client, from).await?.descriptor();
            let source: Source<'_, D> = Source::Registry {
                client,
                reference: from,
            };
            // Between repositories of one registry, blobs are mounted.
            let mount = (from.domain() == to.domain() && from.repository() != to.repository())
                .then(|| from.repository());
            return to_registry(client, &source, top, to, mount, options).await;
        }
        Location::Archive { .. } => unreachable!("an archive destination is written first"),
        Location::OnlyImage { .. } => unreachable!("refused as a destination first"),
    };
    let pull_options = pull_options(options);
    let r = match name {
        Some(name) => pull(client, from, store, &pull_options.with_tag(name.clone()))
            .await
            .map_err(|e| CopyError::Pull(Box::new(e)))?,
        None => pull_untagged(client, from, store, &pull_options, options).await?,
    };
    let mut report = CopyReport {
        descriptor: r.descriptor,
        tag: r.tag,
        copied: r.fetched.len(),
        skipped: r.skipped.len(),
        ..CopyReport::default()
    };
    if let (true, Some(top)) = (options.referrers, &report.descriptor) {
        let roots = documents_in(store, top).await?;
        let from: End<'_, D> = End::Registry(from);
        let to = End::of(dst);
        let push_options = PushOptions::default();
        copy_referrers(client, from, roots, to, &push_options, options, &mut report).await?;
    }
    Ok(report)
}

/// The pull's options for a copy: every platform, or the one asked for.
fn pull_options(options: &CopyOptions) -> PullOptions {
    let pull_options = PullOptions::default()
        .with_parallel(options.parallel)
        .with_tracker(options.tracker.clone())
        .with_all_platforms(options.platform.is_none());
    match &options.platform {
        Some(p) => pull_options.with_platform(p.clone()),
        None => pull_options,
    }
}

/// The top document `from` names on its registry.
async fn source_document(client: &Client, from: &Reference) -> Result<Document, CopyError> {
    client
        .get_manifest(from)
        .await
        .map_err(|source| CopyError::Source {
            reference: from.to_string(),
            source: Box::new(source),
        })
}

/// Pulls `from` into the layout `store` and lists it there without a name
/// ([`Location::Untagged`]): the image is chosen first (an index's
/// manifest for the platform asked for), then pulled by its digest (which
/// sets no tag) under a lease holding it from before the pull until it is
/// listed, so gc never takes it in between.
async fn pull_untagged<D: PullStore>(
    client: &Client,
    from: &Reference,
    store: &D,
    pull_options: &PullOptions,
    options: &CopyOptions,
) -> Result<crate::pull::PullReport, CopyError> {
    let document = source_document(client, from).await?;
    let source: Source<'_, D> = Source::Registry {
        client,
        reference: from,
    };
    let top = select(&source, document.descriptor(), options).await?;
    let digest = top.checked_digest().map_err(|_| CopyError::Read {
        digest: document.digest().to_string(),
        source: Box::new(PushError::Descriptor {
            digest: top.digest().to_string(),
            parent: document.digest().clone(),
        }),
    })?;
    let lease = store.begin_lease().map_err(CopyError::Lease)?;
    lease
        .add(std::slice::from_ref(&digest))
        .map_err(CopyError::Lease)?;
    let by_digest = from.without_tag().without_digest().with_digest(digest);
    let mut r = pull(client, &by_digest, store, pull_options)
        .await
        .map_err(|e| CopyError::Pull(Box::new(e)))?;
    let pulled = r.descriptor.get_or_insert(top);
    name_in(store, None, pulled)?;
    lease.release().map_err(CopyError::Lease)?;
    Ok(r)
}

/// Copies `top` from a store (or an archive read in place) to a registry
/// or a store.
async fn from_store<S: Provider + TagStore + Sync + ?Sized, D: PullStore>(
    client: &Client,
    store: &S,
    top: Descriptor,
    dst: &Location<'_, D>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let (to, as_name) = match dst {
        Location::Store { store, name } | Location::Layout { store, name } => (*store, Some(name)),
        Location::Untagged { store } => (*store, None),
        Location::Registry(to) => {
            return to_registry(client, &Source::Store(store), top, to, None, options).await
        }
        Location::Archive { .. } => unreachable!("an archive destination is written first"),
        Location::OnlyImage { .. } => unreachable!("refused as a destination first"),
    };
    let top = select(&Source::Store(store), top, options).await?;
    let lease = to.begin_lease().map_err(CopyError::Lease)?;
    let store_options = image_store::CopyOptions::default().with_tracker(options.tracker.clone());
    let r = copy_image_with(store, &lease.protect(to), &top, &store_options)
        .map_err(CopyError::Store)?;
    options
        .tracker
        .check()
        .map_err(|e| CopyError::Store(e.into()))?;
    name_in(to, as_name, &r.descriptor)?;
    lease.release().map_err(CopyError::Lease)?;
    let mut report = CopyReport {
        descriptor: Some(r.descriptor),
        tag: as_name.cloned(),
        copied: r.copied,
        skipped: r.skipped,
        ..CopyReport::default()
    };
    if options.referrers {
        let roots = documents_in(to, &top).await?;
        let (from, to) = (End::Store(store), End::of(dst));
        let push_options = PushOptions::default();
        copy_referrers(client, from, roots, to, &push_options, options, &mut report).await?;
    }
    Ok(report)
}

/// Names the image `descriptor` copied into the destination store `to`:
/// tags it `name`, or lists it in the layout's index without a name
/// ([`Location::Untagged`]).
fn name_in<D: TagStore + ?Sized>(
    to: &D,
    name: Option<&String>,
    descriptor: &Descriptor,
) -> Result<(), CopyError> {
    match name {
        Some(name) => to
            .set_tag(name, descriptor)
            .map_err(|source| CopyError::Name {
                name: name.clone(),
                source: Box::new(source),
            }),
        None => to
            .list_untagged(descriptor)
            .map(drop)
            .map_err(|source| CopyError::Untagged {
                digest: descriptor.digest().to_string(),
                source: Box::new(source),
            }),
    }
}

/// The documents of the image `top` in `store`: itself and, for an
/// index, the manifests it lists that the store holds (a copy for one
/// platform holds one).
async fn documents_in<S: Provider + Sync + ?Sized>(
    store: &S,
    top: &Descriptor,
) -> Result<Vec<Digest>, CopyError> {
    let read_err = |source| CopyError::Read {
        digest: top.digest().to_string(),
        source: Box::new(source),
    };
    let mut out = Vec::new();
    match Source::Store(store).document(top).await.map_err(read_err)? {
        Document::Index(index) => {
            out.push(index.digest().clone());
            for m in index.manifests() {
                let Ok(d) = m.checked_digest() else { continue };
                let present = store.exists(&d).map_err(|e| {
                    read_err(PushError::Store {
                        digest: d.clone(),
                        source: Box::new(e),
                    })
                })?;
                if present {
                    out.push(d);
                }
            }
        }
        Document::Manifest(m) => out.push(m.digest().clone()),
    }
    Ok(out)
}

/// The only image of a source store besides its referrers.
fn the_only_image<S: Provider + TagStore>(store: &S) -> Result<Descriptor, CopyError> {
    image_store::referrers::only_image(store).map_err(|source| CopyError::OnlyImage {
        of: "the source store".to_owned(),
        source: Box::new(source),
    })
}

/// The image `name` names in a source store (an empty name is refused).
fn resolve<S: Provider + TagStore>(store: &S, name: &str) -> Result<Descriptor, CopyError> {
    image_store::resolve_reference(store, name).map_err(|source| CopyError::Name {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

/// `top`, or the manifest of its index for the platform asked for.
async fn select<S: Provider + Sync + ?Sized>(
    source: &Source<'_, S>,
    top: Descriptor,
    options: &CopyOptions,
) -> Result<Descriptor, CopyError> {
    let Some(platform) = &options.platform else {
        return Ok(top);
    };
    if !image_core::manifest::descriptor_media_type(&top).is_index() {
        return Ok(top);
    }
    let read_err = |source| CopyError::Read {
        digest: top.digest().to_string(),
        source: Box::new(source),
    };
    let Document::Index(index) = source.document(&top).await.map_err(read_err)? else {
        return Ok(top);
    };
    select_manifest(&index, platform)
        .cloned()
        .map_err(|source| CopyError::Platform {
            digest: index.digest().clone(),
            source,
        })
}

/// Copies `top` from `source` to registry reference `to` (mounting from
/// repository `mount` of the same registry), then its referrers when
/// asked.
async fn to_registry<S: Provider + TagStore + Sync + ?Sized>(
    client: &Client,
    source: &Source<'_, S>,
    top: Descriptor,
    to: &Reference,
    mount: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let push_err = |source| CopyError::Push {
        dest: to.to_string(),
        source: Box::new(source),
    };
    let top = select(source, top, options).await?;
    check_destination(to, &top).map_err(push_err)?;
    let mut push_options = PushOptions::default()
        .with_parallel(options.parallel)
        .with_tracker(options.tracker.clone());
    if let Some(from) = mount {
        push_options = push_options.with_mount_from(from);
    }
    let referrers = match source {
        _ if !options.referrers => None,
        Source::Registry { reference, .. } => Some(End::Registry(reference)),
        Source::Store(store) => Some(End::Store(*store)),
    };
    // With referrers, the tag is set after them: last, as always.
    let first = match referrers {
        Some(_) => to.without_tag(),
        None => to.clone(),
    };
    let (pushed, documents) = push_from(client, source, &top, &first, &push_options)
        .await
        .map_err(push_err)?;
    let mut report = CopyReport {
        descriptor: pushed.descriptor.clone(),
        tag: pushed.tag.clone(),
        ..CopyReport::default()
    };
    report.add_push(&pushed);
    if let Some(from) = referrers {
        let roots = documents.iter().map(|d| d.digest().clone()).collect();
        let dest: End<'_, image_store::MemoryStore> = End::Registry(to);
        copy_referrers(
            client,
            from,
            roots,
            dest,
            &push_options,
            options,
            &mut report,
        )
        .await?;
        let top_doc = documents.last().expect("a push yields its top document");
        report.tag = put_tag(client, to, top_doc).await.map_err(push_err)?;
    }
    Ok(report)
}

/// One end of a copy of referrers: a registry's repository, a store (its
/// lists of referrers, [`image_store::referrers`], and at a source its
/// index's untagged referrers too), or a layout destination (its index).
enum End<'a, T: ?Sized> {
    Registry(&'a Reference),
    Store(&'a T),
    Layout(&'a T),
}

impl<'a, T: ?Sized> End<'a, T> {
    /// The end a store or layout destination is.
    fn of(location: &Location<'a, T>) -> End<'a, T> {
        match location {
            Location::Layout { store, .. } | Location::Untagged { store } => End::Layout(*store),
            Location::Store { store, .. } => End::Store(*store),
            _ => unreachable!("referrers go into a store or a layout here"),
        }
    }
}

/// Copies the referrers of `roots` (documents already copied) from `from`
/// to `to`, recursively, each once: listed by the registry's referrers API
/// (or its tag schema) or the store's lists; pushed to a registry (which
/// lists them as any pushed referrer), or pulled or copied into a store
/// and added to its list of the subject's referrers.
async fn copy_referrers<S, D>(
    client: &Client,
    from: End<'_, S>,
    roots: Vec<Digest>,
    to: End<'_, D>,
    push_options: &PushOptions,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), CopyError>
where
    S: Provider + TagStore + Sync + ?Sized,
    D: PullStore,
{
    let mut seen: HashSet<Digest> = roots.iter().cloned().collect();
    let mut pending: Vec<(Digest, usize)> = roots.into_iter().map(|d| (d, 0)).collect();
    let mut taken = 0usize;
    // A source store's (layout's, archive's) untagged referrers, read once.
    let mut in_index: Option<HashMap<Digest, Vec<Descriptor>>> = None;
    while let Some((digest, depth)) = pending.pop() {
        check_interrupt(options.tracker.interrupt()).map_err(|source| CopyError::Referrers {
            digest: digest.clone(),
            source: Box::new(source),
        })?;
        let listed =
            match &from {
                End::Registry(reference) => client
                    .referrers(reference, &digest, None)
                    .await
                    .map_err(|source| CopyError::Referrers {
                        digest: digest.clone(),
                        source: Box::new(source),
                    })?,
                End::Store(store) | End::Layout(store) => {
                    let store_err = |source| CopyError::StoreReferrers {
                        digest: digest.clone(),
                        source: Box::new(source),
                    };
                    let mut listed =
                        image_store::referrers::referrers(*store, &digest).map_err(store_err)?;
                    let in_index = match &mut in_index {
                        Some(m) => m,
                        None => in_index
                            .insert(image_store::referrers::in_index(*store).map_err(store_err)?),
                    };
                    listed.extend(in_index.get(&digest).into_iter().flatten().cloned());
                    listed
                }
            };
        let mut fresh = Vec::new();
        for r in listed {
            let rd = r.checked_digest().map_err(|_| CopyError::Referrer {
                digest: r.digest().to_string(),
                parent: digest.clone(),
            })?;
            if seen.insert(rd.clone()) {
                fresh.push((r, rd));
            }
        }
        let limit = options.max_referrers.saturating_sub(taken);
        if fresh.len() > limit {
            return Err(CopyError::TooManyReferrers {
                digest,
                found: fresh.len(),
                limit,
            });
        }
        for (r, rd) in fresh {
            if depth + 1 > MAX_REFERRER_DEPTH {
                return Err(CopyError::ReferrersTooDeep { digest: rd });
            }
            taken += 1;
            let how = How {
                client,
                push_options,
                options,
            };
            copy_referrer(&how, &from, &r, &digest, &to, report).await?;
            report.referrers.push(rd.clone());
            pending.push((rd, depth + 1));
        }
    }
    Ok(())
}

/// How referrers are moved: the client and the options.
struct How<'a> {
    client: &'a Client,
    push_options: &'a PushOptions,
    options: &'a CopyOptions,
}

/// Copies the referrer `r` of `subject` from `from` to `to`.
async fn copy_referrer<S, D>(
    how: &How<'_>,
    from: &End<'_, S>,
    r: &Descriptor,
    subject: &Digest,
    to: &End<'_, D>,
    report: &mut CopyReport,
) -> Result<(), CopyError>
where
    S: Provider + TagStore + Sync + ?Sized,
    D: PullStore,
{
    let How {
        client,
        push_options,
        options,
    } = *how;
    let source = match from {
        End::Registry(reference) => Source::Registry { client, reference },
        End::Store(store) | End::Layout(store) => Source::Store(*store),
    };
    let (store, layout) = match to {
        End::Registry(to) => {
            let dest = to.without_tag().without_digest();
            let (pushed, _) = push_from(client, &source, r, &dest, push_options)
                .await
                .map_err(|source| CopyError::Push {
                    dest: dest.to_string(),
                    source: Box::new(source),
                })?;
            report.add_push(&pushed);
            return Ok(());
        }
        End::Store(store) => (*store, false),
        End::Layout(store) => (*store, true),
    };
    let digest = r.checked_digest().map_err(|_| CopyError::Referrer {
        digest: r.digest().to_string(),
        parent: subject.clone(),
    })?;
    match from {
        End::Registry(reference) => {
            let by_digest = reference
                .without_tag()
                .without_digest()
                .with_digest(digest.clone());
            let pull_options = PullOptions::default()
                .with_parallel(options.parallel)
                .with_tracker(options.tracker.clone())
                .with_all_platforms(true);
            // The referrer held from before its pull until it is listed:
            // the pull's own lease ends with the pull, and an untagged
            // manifest (and what it names) is gc's.
            let lease = store.begin_lease().map_err(CopyError::Lease)?;
            lease
                .add(std::slice::from_ref(&digest))
                .map_err(CopyError::Lease)?;
            let pulled = pull(client, &by_digest, store, &pull_options)
                .await
                .map_err(|e| CopyError::Pull(Box::new(e)))?;
            report.copied += pulled.fetched.len();
            report.skipped += pulled.skipped.len();
            add_referrer(store, layout, subject, r)?;
            lease.release().map_err(CopyError::Lease)
        }
        End::Store(from) | End::Layout(from) => {
            let lease = store.begin_lease().map_err(CopyError::Lease)?;
            let store_options =
                image_store::CopyOptions::default().with_tracker(options.tracker.clone());
            let copied = copy_image_with(*from, &lease.protect(store), r, &store_options)
                .map_err(CopyError::Store)?;
            report.copied += copied.copied;
            report.skipped += copied.skipped;
            add_referrer(store, layout, subject, r)?;
            lease.release().map_err(CopyError::Lease)
        }
    }
}

/// Lists `r` among the referrers of `subject` in `store`: in its list of
/// them, or in a layout's index, untagged.
fn add_referrer<D: PullStore>(
    store: &D,
    layout: bool,
    subject: &Digest,
    r: &Descriptor,
) -> Result<(), CopyError> {
    match layout {
        true => image_store::referrers::list_in_index(store, r),
        false => image_store::referrers::add(store, subject, r),
    }
    .map_err(|source| CopyError::StoreReferrers {
        digest: subject.clone(),
        source: Box::new(source),
    })
}
