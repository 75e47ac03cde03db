//! The referrers of a manifest kept in a store (signatures, SBOMs,
//! attestations: OCI 1.1 manifests whose `subject` names it).
//!
//! A store has no referrers API, and finding the manifests whose subject
//! is a given one by reading every manifest would cost the whole store per
//! question. So the referrers of a manifest are listed, as the OCI
//! distribution spec's referrers tag schema lists them on a registry
//! without the API, in an index (the referrers API's answer: each
//! referrer's descriptor with its `artifactType` and annotations) tagged
//! `image-build.local/referrers:<alg>-<hex>` ([`referrers_tag`]; the name
//! image-build's provenance first gave it, kept so that existing stores
//! read the same). A lookup ([`referrers`]) is one tag resolution and one
//! bounded read; [`add`] writes the new index as a blob and moves the tag,
//! under the store's own atomic, locked tagging (crash-safe: the old list
//! or the new one, never a torn one). The move is a compare-and-set
//! ([`TagStore::replace_tag`]: under `index.json`'s lock in an
//! [`OciDir`](crate::OciDir), so across processes): a writer whose list
//! changed since it read it reads it again and adds anew, so writers
//! adding to one list at once (threads or processes) all keep their
//! entries.
//!
//! # OCI layouts
//! A layout written by another tool lists its referrers as the image
//! layout spec allows and oras does: each referrer manifest is an
//! untagged entry of `index.json`, found by its `subject`. [`in_index`]
//! reads those (once per store: a map from subject to referrers), and
//! [`list_in_index`] writes a referrer so into a layout.
//!
//! # gc
//! The list's tag is a root: it keeps its referrers, and through their
//! `subject` link the subject, until the tag is removed. Referrers that
//! no list names are kept while their subject is kept (gc's back link, as
//! containerd's back references keep a referrer while its subject lives).

use std::collections::{HashMap, HashSet};

use image_core::manifest::descriptor_media_type;
use image_core::oci_spec::image::{ImageIndexBuilder, MediaType as OciMediaType};
use image_core::{
    Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, Index, MediaType, ParseError,
};

use crate::content::{ContentError, Ingester, Provider};
use crate::error::TagError;
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::TagStore;

/// The repository of the tags listing referrers.
pub const REFERRERS_REPOSITORY: &str = "image-build.local/referrers";

/// The most referrers one manifest's list keeps.
pub const MAX_REFERRERS: usize = 4096;

/// The most entries of a store's top-level index [`in_index`] reads.
pub const MAX_INDEX_ENTRIES: usize = 65_536;

/// The most bytes of documents [`in_index`] reads in all (each is also
/// bounded alone).
pub const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// The most times [`add`] reads, extends and tries to move a list that
/// other writers keep moving. Each failed attempt means another writer's
/// succeeded, so it takes more writers than this adding at once to
/// exhaust it.
pub const MAX_ADD_ROUNDS: usize = 1024;

/// A failed lookup of, or addition to, a list of referrers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferrersError {
    /// The list could not be read.
    #[error("reading the referrers of {subject}")]
    Read {
        /// The subject.
        subject: Digest,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// The list could not be written.
    #[error("writing the referrers of {subject}")]
    Write {
        /// The subject.
        subject: Digest,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// The list could not be made or parsed.
    #[error("the list of referrers of {subject}")]
    Parse {
        /// The subject.
        subject: Digest,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// The list's tag could not be read or set.
    #[error("tagging the referrers of {subject}")]
    Tag {
        /// The subject.
        subject: Digest,
        /// The store's error.
        #[source]
        source: Box<TagError>,
    },
    /// Other writers moved the list every time this one tried, for
    /// [`MAX_ADD_ROUNDS`] rounds.
    #[error("the referrers of {subject} changed under {rounds} attempts to add to them")]
    Contended {
        /// The subject.
        subject: Digest,
        /// The attempts made.
        rounds: usize,
    },
    /// The store's top-level index has more than [`MAX_INDEX_ENTRIES`]
    /// entries that may be referrers, or more than [`MAX_INDEX_BYTES`] of
    /// them.
    #[error("the store's index lists more than {limit} untagged manifests or bytes of them")]
    TooManyEntries {
        /// The limit passed.
        limit: u64,
    },
    /// The store's top-level index could not be read, or the referrer not
    /// listed in it.
    #[error("the store's index")]
    Index {
        /// The store's error.
        #[source]
        source: Box<TagError>,
    },
    /// The list holds [`MAX_REFERRERS`] already.
    #[error("{subject} has {limit} referrers already")]
    TooMany {
        /// The subject.
        subject: Digest,
        /// The limit.
        limit: usize,
    },
}

impl Classify for ReferrersError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReferrersError::Read { source, .. } | ReferrersError::Write { source, .. } => {
                source.kind()
            }
            ReferrersError::Parse { source, .. } => source.kind(),
            ReferrersError::Tag { source, .. } => source.kind(),
            ReferrersError::TooMany { .. } => ErrorKind::Unsafe,
            ReferrersError::Contended { .. } => ErrorKind::Unavailable,
            ReferrersError::TooManyEntries { .. } => ErrorKind::Unsafe,
            ReferrersError::Index { source } => source.kind(),
        }
    }
}

/// The tag listing the referrers of `subject`:
/// `image-build.local/referrers:<algorithm>-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!(
        "{REFERRERS_REPOSITORY}:{}-{}",
        subject.algorithm(),
        subject.hex()
    )
}

/// Whether an image name is a referrers list's tag (what `imagectl
/// images` hides).
pub fn is_referrers_reference(name: &str) -> bool {
    name.strip_prefix(REFERRERS_REPOSITORY)
        .is_some_and(|rest| rest.starts_with([':', '@']))
}

/// The descriptor a list of referrers gives `doc`: its own, with its
/// artifact type (the config's media type for a manifest without one, as
/// the distribution spec asks) and its annotations.
pub fn entry(doc: &Document) -> Descriptor {
    let mut entry = doc.descriptor();
    let (artifact_type, annotations) = match doc {
        Document::Manifest(m) => (
            m.artifact_type()
                .map(|a| a.to_string())
                .or_else(|| Some(m.config().media_type().to_string())),
            m.inner().annotations().clone(),
        ),
        Document::Index(i) => (
            i.inner().artifact_type().as_ref().map(|a| a.to_string()),
            i.inner().annotations().clone(),
        ),
    };
    entry.set_artifact_type(artifact_type.map(|a| a.as_str().into()));
    entry.set_annotations(annotations);
    entry
}

/// The referrers of `subject` in `store`, oldest first; none when it has
/// no list.
///
/// # Errors
/// [`ReferrersError`] when the list cannot be read or parsed.
pub fn referrers<S>(store: &S, subject: &Digest) -> Result<Vec<Descriptor>, ReferrersError>
where
    S: Provider + TagStore + ?Sized,
{
    Ok(list(store, subject)?
        .map(|i| i.manifests().to_vec())
        .unwrap_or_default())
}

/// The list of referrers of `subject`, if it has one (its digest is the
/// tag's, what [`add`] compares before it moves the tag).
fn list<S>(store: &S, subject: &Digest) -> Result<Option<Index>, ReferrersError>
where
    S: Provider + TagStore + ?Sized,
{
    let d = match store.resolve_tag(&referrers_tag(subject)) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReferrersError::Tag {
                subject: subject.clone(),
                source: Box::new(source),
            })
        }
    };
    let bytes = store
        .read_descriptor_to_vec(&d, MAX_DOCUMENT_SIZE)
        .map_err(|source| ReferrersError::Read {
            subject: subject.clone(),
            source: Box::new(source),
        })?;
    Index::from_bytes(bytes)
        .map(Some)
        .map_err(|source| ReferrersError::Parse {
            subject: subject.clone(),
            source,
        })
}

/// Adds `entry` (a referrer's descriptor, see [`entry`]) to the list of
/// referrers of `subject`, unless it is there; the referrer's blobs must be
/// in the store already (tagging checks the list's whole closure). Call it
/// under a lease holding the referrer until it returns.
///
/// # Errors
/// [`ReferrersError`]; [`ReferrersError::TooMany`] past [`MAX_REFERRERS`].
pub fn add<S>(store: &S, subject: &Digest, entry: &Descriptor) -> Result<(), ReferrersError>
where
    S: Provider + Ingester + TagStore + ?Sized,
{
    let parse = |source| ReferrersError::Parse {
        subject: subject.clone(),
        source,
    };
    for _ in 0..MAX_ADD_ROUNDS {
        let current = list(store, subject)?;
        let mut manifests: Vec<Descriptor> = match &current {
            Some(i) => i.manifests().to_vec(),
            None => Vec::new(),
        };
        if manifests.iter().any(|d| d.digest() == entry.digest()) {
            return Ok(());
        }
        if manifests.len() >= MAX_REFERRERS {
            return Err(ReferrersError::TooMany {
                subject: subject.clone(),
                limit: MAX_REFERRERS,
            });
        }
        manifests.push(entry.clone());
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(OciMediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(|source| {
                parse(ParseError::Build {
                    what: "a list of referrers",
                    source,
                })
            })
            .and_then(|i| Index::new(i).map_err(parse))?;
        store
            .write_blob(index.raw())
            .map_err(|source| ReferrersError::Write {
                subject: subject.clone(),
                source: Box::new(source),
            })?;
        let moved = store
            .replace_tag(
                &referrers_tag(subject),
                current.as_ref().map(Index::digest),
                &index.descriptor(),
            )
            .map_err(|source| ReferrersError::Tag {
                subject: subject.clone(),
                source: Box::new(source),
            })?;
        if moved {
            return Ok(());
        }
    }
    Err(ReferrersError::Contended {
        subject: subject.clone(),
        rounds: MAX_ADD_ROUNDS,
    })
}

/// The referrers an OCI layout lists in its top-level index (oras's form:
/// untagged entries, or entries with an `artifactType`, whose document has
/// a `subject`), by subject. Each entry is read once (by digest), bounded
/// in number ([`MAX_INDEX_ENTRIES`]), each in size and all together
/// ([`MAX_INDEX_BYTES`]); an entry that is no
/// manifest or index, or that cannot be read, is no referrer.
///
/// # Errors
/// [`ReferrersError::Index`] when the index cannot be read;
/// [`ReferrersError::TooManyEntries`].
pub fn in_index<S>(store: &S) -> Result<HashMap<Digest, Vec<Descriptor>>, ReferrersError>
where
    S: Provider + TagStore + ?Sized,
{
    in_entries(store, index_entries(store)?)
}

/// The entries of `store`'s top-level index.
fn index_entries<S>(store: &S) -> Result<Vec<Descriptor>, ReferrersError>
where
    S: TagStore + ?Sized,
{
    store
        .index_entries()
        .map_err(|source| ReferrersError::Index {
            source: Box::new(source),
        })
}

/// The media type of `d` when it is a manifest or an index with a valid
/// digest not in `seen` (then added to it): a document to read once.
fn new_document(d: &Descriptor, seen: &mut HashSet<Digest>) -> Option<MediaType> {
    let media_type = descriptor_media_type(d);
    if !(media_type.is_manifest() || media_type.is_index()) {
        return None;
    }
    let digest = d.checked_digest().ok()?;
    seen.insert(digest).then_some(media_type)
}

/// [`in_index`] of the top-level index's `entries`.
fn in_entries<S>(
    store: &S,
    entries: Vec<Descriptor>,
) -> Result<HashMap<Digest, Vec<Descriptor>>, ReferrersError>
where
    S: Provider + ?Sized,
{
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut out: HashMap<Digest, Vec<Descriptor>> = HashMap::new();
    let mut bytes = 0u64;
    for d in entries {
        let untagged = crate::tags::ref_name(&d).is_none();
        if !(untagged || d.artifact_type().is_some()) {
            continue;
        }
        let Some(media_type) = new_document(&d, &mut seen) else {
            continue;
        };
        bytes = bytes.saturating_add(d.size());
        for (over, limit) in [
            (seen.len() > MAX_INDEX_ENTRIES, MAX_INDEX_ENTRIES as u64),
            (bytes > MAX_INDEX_BYTES, MAX_INDEX_BYTES),
        ] {
            if over {
                return Err(ReferrersError::TooManyEntries { limit });
            }
        }
        let Ok(raw) = store.read_descriptor_to_vec(&d, MAX_DOCUMENT_SIZE) else {
            continue;
        };
        let Ok(doc) = Document::from_bytes(raw, Some(&media_type)) else {
            continue;
        };
        let doc = match d.checked_digest() {
            Ok(digest) => doc.with_algorithm(digest.algorithm()),
            Err(_) => continue,
        };
        let subject = match &doc {
            Document::Manifest(m) => m.inner().subject().clone(),
            Document::Index(i) => i.inner().subject().clone(),
        };
        let Some(subject) = subject.and_then(|s| s.checked_digest().ok()) else {
            continue;
        };
        out.entry(subject).or_default().push(entry(&doc));
    }
    Ok(out)
}

/// Why a store's top-level index means no one image when a source names
/// none (`oci:DIR`, `oci-archive:PATH`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnlyImageError {
    /// The index, or an entry that may be a referrer, could not be read.
    #[error("telling its referrers from its images")]
    Referrers(#[source] ReferrersError),
    /// The index holds several images.
    #[error("{images} images and no reference naming one")]
    Several {
        /// The images (distinct digests) it holds besides referrers.
        images: usize,
    },
    /// The index holds no image, only referrers of what it holds (or
    /// nothing).
    #[error("no image besides {referrers} referrers")]
    NoImage {
        /// The referrers it holds.
        referrers: usize,
    },
}

impl Classify for OnlyImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            OnlyImageError::Referrers(source) => source.kind(),
            OnlyImageError::Several { .. } => ErrorKind::InvalidInput,
            OnlyImageError::NoImage { .. } => ErrorKind::NotFound,
        }
    }
}

/// The one image `store`'s top-level index holds, what a source named
/// without a reference means (`oci:DIR`, `oci-archive:PATH`).
///
/// skopeo takes the index's only entry and refuses any other count. A
/// layout or archive holding referrers in oras's form (as [`in_index`]
/// reads and a copy with referrers writes them) lists each beside the
/// image, so an untagged entry whose document has a `subject` this store
/// holds, listed in the index or reachable from it (a platform manifest
/// of a listed index), is no candidate: it is there as a referrer of
/// something here. A subject that is merely some blob of the store (a
/// manifest nothing listed names) does not make its referrer one.
/// A tagged entry always is (a name is a reason to be there of its own),
/// and so is an entry that cannot be read as a referrer. Entries of one
/// digest are one image. The work is [`in_index`]'s (each entry read
/// once, bounded), one read of each index reachable from the listed
/// entries (bounded alike) and one existence check per subject.
///
/// # Errors
/// [`OnlyImageError::Several`] and [`OnlyImageError::NoImage`] when the
/// index holds more or fewer than one image; [`OnlyImageError::Referrers`]
/// when it cannot be read.
pub fn only_image<S>(store: &S) -> Result<Descriptor, OnlyImageError>
where
    S: Provider + TagStore + ?Sized,
{
    let entries = index_entries(store).map_err(OnlyImageError::Referrers)?;
    let by_subject = in_entries(store, entries.clone()).map_err(OnlyImageError::Referrers)?;
    let documents = reachable(store, &entries).map_err(OnlyImageError::Referrers)?;
    let mut referrers: HashSet<String> = HashSet::new();
    for (subject, listed) in &by_subject {
        if !documents.contains(subject) {
            continue;
        }
        let held = store.exists(subject).map_err(|source| {
            OnlyImageError::Referrers(ReferrersError::Read {
                subject: subject.clone(),
                source: Box::new(source),
            })
        })?;
        if held {
            referrers.extend(listed.iter().map(|d| d.digest().to_string()));
        }
    }
    let mut images: HashSet<String> = HashSet::new();
    let mut image = None;
    for d in entries {
        let digest = d.digest().to_string();
        let referrer = crate::tags::ref_name(&d).is_none() && referrers.contains(&digest);
        if !referrer && images.insert(digest) {
            image.get_or_insert(d);
        }
    }
    match (images.len(), image) {
        (1, Some(image)) => Ok(image),
        (0, _) => Err(OnlyImageError::NoImage {
            referrers: referrers.len(),
        }),
        (images, _) => Err(OnlyImageError::Several { images }),
    }
}

/// The manifests and indexes `entries` (a top-level index's) name, and
/// those their indexes name, read once each (a visited set), as
/// [`in_entries`] bounds them: [`MAX_INDEX_ENTRIES`] documents and
/// [`MAX_INDEX_BYTES`] read. A child that cannot be read is left out.
fn reachable<S>(store: &S, entries: &[Descriptor]) -> Result<HashSet<Digest>, ReferrersError>
where
    S: Provider + ?Sized,
{
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut pending: Vec<Descriptor> = entries.to_vec();
    let mut bytes = 0u64;
    while let Some(d) = pending.pop() {
        let Some(media_type) = new_document(&d, &mut seen) else {
            continue;
        };
        if seen.len() > MAX_INDEX_ENTRIES {
            return Err(ReferrersError::TooManyEntries {
                limit: MAX_INDEX_ENTRIES as u64,
            });
        }
        if !media_type.is_index() {
            continue;
        }
        bytes = bytes.saturating_add(d.size());
        if bytes > MAX_INDEX_BYTES {
            return Err(ReferrersError::TooManyEntries {
                limit: MAX_INDEX_BYTES,
            });
        }
        let Ok(raw) = store.read_descriptor_to_vec(&d, MAX_DOCUMENT_SIZE) else {
            continue;
        };
        if let Ok(Document::Index(index)) = Document::from_bytes(raw, Some(&media_type)) {
            pending.extend(index.manifests().iter().cloned());
        }
    }
    Ok(seen)
}

/// Lists the referrer `entry` in `store`'s top-level index, untagged, as
/// an OCI layout keeps it for oras and [`in_index`] to find (its blobs
/// must be in the store).
///
/// # Errors
/// [`ReferrersError::Index`].
pub fn list_in_index<S>(store: &S, entry: &Descriptor) -> Result<(), ReferrersError>
where
    S: TagStore + ?Sized,
{
    store
        .list_untagged(entry)
        .map(drop)
        .map_err(|source| ReferrersError::Index {
            source: Box::new(source),
        })
}
