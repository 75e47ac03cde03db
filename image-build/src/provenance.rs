//! Provenance records, and OCI referrers kept in a store.
//!
//! # The record
//!
//! A build's provenance ([`Provenance`]: the base images by digest, the
//! build args, the Dockerfile's name and digest, the target and the
//! frontend) is an in-toto statement ([`Provenance::statement`]) whose
//! predicate is SLSA provenance v0.2, as BuildKit's `--provenance` writes
//! it. It is attached to the image as an OCI 1.1 referrer: a manifest of
//! `artifactType` [`IN_TOTO_MEDIA_TYPE`] whose `subject` is the image's
//! manifest, whose config is the OCI empty descriptor and whose one layer
//! is the statement, annotated with its predicate type
//! ([`PREDICATE_TYPE_ANNOTATION`]). Secrets are never build args, so none
//! is in it.
//!
//! # Referrers in a store
//!
//! The store keeps the list of a manifest's referrers
//! ([`image_store::referrers`]: an index tagged
//! `image-build.local/referrers:sha256-<hex>`, the distribution spec's
//! referrers tag schema); [`attach`] adds to it and [`referrers`] reads
//! it, as `imagectl copy --referrers` does.

use std::collections::{BTreeMap, HashMap};

use image_core::manifest::descriptor;
use image_core::oci_spec::image::MediaType as OciMediaType;
use image_core::{
    Classify, Descriptor, DescriptorExt, Digest, ErrorKind, Manifest, MediaType, ParseError,
};
use image_store::{ContentError, Ingester, Provider, TagStore};
use serde_json::json;

/// The media type (and `artifactType`) of an in-toto statement.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// The annotation of a statement layer naming its predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// SLSA provenance v0.2's predicate type.
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";

pub use image_store::referrers::{
    is_referrers_reference, referrers_tag, MAX_REFERRERS, REFERRERS_REPOSITORY,
};

/// The OCI empty descriptor's media type (a config of `{}`).
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A base image a build used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// Its name as the Dockerfile gives it.
    pub name: String,
    /// Its manifest's digest.
    pub digest: Digest,
}

/// What a build was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Provenance {
    /// The Dockerfile's file name (a build records no path of its
    /// machine).
    pub dockerfile: String,
    /// The digest of the Dockerfile's text.
    pub dockerfile_digest: Digest,
    /// The target stage, when one was asked.
    pub target: Option<String>,
    /// The build args given.
    pub build_args: BTreeMap<String, String>,
    /// The base images of the stages built, by digest.
    pub materials: Vec<Material>,
}

impl Provenance {
    /// The in-toto statement (SLSA provenance v0.2) about `subject`.
    pub fn statement(&self, subject: &Descriptor) -> serde_json::Value {
        let hex = |d: &Digest| json!({ d.algorithm().to_string(): d.hex() });
        let materials: Vec<serde_json::Value> = self
            .materials
            .iter()
            .map(|m| json!({ "uri": format!("pkg:docker/{}", m.name), "digest": hex(&m.digest) }))
            .collect();
        let subject_digest: Digest = subject
            .digest()
            .as_ref()
            .parse()
            .unwrap_or_else(|_| Digest::sha256(b""));
        let mut params = serde_json::Map::new();
        params.insert("frontend".into(), json!("dockerfile.v0"));
        if let Some(t) = &self.target {
            params.insert("target".into(), json!(t));
        }
        params.insert("args".into(), json!(self.build_args));
        json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": SLSA_PROVENANCE,
            "subject": [{ "name": "_", "digest": hex(&subject_digest) }],
            "predicate": {
                "builder": { "id": "image-build" },
                "buildType": "https://mobyproject.org/buildkit@v1",
                "invocation": {
                    "configSource": {
                        "entryPoint": self.dockerfile,
                        "digest": hex(&self.dockerfile_digest),
                    },
                    "parameters": params,
                },
                "materials": materials,
            }
        })
    }
}

/// A failed attach or lookup of referrers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferrerError {
    /// A blob could not be written.
    #[error("writing the referrer's {what}")]
    Write {
        /// Which blob.
        what: &'static str,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A document could not be made or parsed.
    #[error("the referrers of {subject}")]
    Parse {
        /// The subject.
        subject: Digest,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// The store's list of referrers could not be read or written.
    #[error("the store's list of referrers")]
    Store(#[source] Box<image_store::referrers::ReferrersError>),
}

impl From<image_store::referrers::ReferrersError> for ReferrerError {
    fn from(e: image_store::referrers::ReferrersError) -> ReferrerError {
        ReferrerError::Store(Box::new(e))
    }
}

impl Classify for ReferrerError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReferrerError::Write { source, .. } => source.kind(),
            ReferrerError::Parse { source, .. } => source.kind(),
            ReferrerError::Store(source) => source.kind(),
        }
    }
}

/// The referrers of the manifest `subject` in `store`: the descriptors of
/// the manifests whose subject it is (with their `artifactType` and
/// annotations), oldest first; none when it has none (the store's list:
/// [`image_store::referrers`]).
///
/// # Errors
/// [`ReferrerError`] when the list cannot be read or parsed.
pub fn referrers<S>(store: &S, subject: &Digest) -> Result<Vec<Descriptor>, ReferrerError>
where
    S: Provider + TagStore + ?Sized,
{
    Ok(image_store::referrers::referrers(store, subject)?)
}

/// Attaches `content` (of media type `artifact_type`, with `annotations`
/// on its layer) to the manifest `subject` as a referrer: writes the
/// empty config, the content and the referrer's manifest, and adds it to
/// the subject's list of referrers. Returns the referrer's descriptor.
/// Call it through a lease of the store until it returns (its blobs are
/// tagged last).
///
/// # Errors
/// [`ReferrerError`].
pub fn attach<S>(
    store: &S,
    subject: &Descriptor,
    artifact_type: &str,
    content: &[u8],
    annotations: HashMap<String, String>,
) -> Result<Descriptor, ReferrerError>
where
    S: Provider + Ingester + TagStore + ?Sized,
{
    let subject_digest = subject
        .checked_digest()
        .map_err(|source| ReferrerError::Parse {
            subject: Digest::sha256(b""),
            source,
        })?;
    let write = |what, bytes: &[u8]| {
        store
            .write_blob(bytes)
            .map_err(|source| ReferrerError::Write {
                what,
                source: Box::new(source),
            })
    };
    let parse = |source| ReferrerError::Parse {
        subject: subject_digest.clone(),
        source,
    };
    let empty = write("config", b"{}")?;
    let content_digest = write("content", content)?;
    let mut layer = descriptor(
        &MediaType::from(artifact_type),
        &content_digest,
        content.len() as u64,
    );
    layer.set_annotations(Some(annotations.clone()));
    let config = descriptor(&MediaType::from(EMPTY_MEDIA_TYPE), &empty, 2);
    let mut bare_subject = descriptor(
        &image_core::manifest::descriptor_media_type(subject),
        &subject_digest,
        subject.size(),
    );
    bare_subject.set_annotations(None);
    let manifest = Manifest::build(&MediaType::OciManifest, config, vec![layer], None)
        .and_then(|m| {
            m.modify(|i| {
                i.set_artifact_type(Some(OciMediaType::from(artifact_type)));
                i.set_subject(Some(bare_subject));
                i.set_annotations(Some(annotations.clone()));
            })
        })
        .map_err(parse)?;
    write("manifest", manifest.raw())?;
    let mut entry = manifest.descriptor();
    entry.set_artifact_type(Some(OciMediaType::from(artifact_type)));
    entry.set_annotations(Some(annotations));

    image_store::referrers::add(store, &subject_digest, &entry)?;
    Ok(entry)
}

/// Attaches `provenance`'s statement about `subject` (see [`attach`]).
///
/// # Errors
/// As [`attach`].
pub fn attach_provenance<S>(
    store: &S,
    subject: &Descriptor,
    provenance: &Provenance,
) -> Result<Descriptor, ReferrerError>
where
    S: Provider + Ingester + TagStore + ?Sized,
{
    let statement = provenance.statement(subject);
    let bytes =
        image_core::json::to_canonical_vec(&statement).map_err(|e| ReferrerError::Parse {
            subject: Digest::sha256(b""),
            source: ParseError::Serialize {
                what: "a provenance statement",
                source: e,
            },
        })?;
    attach(
        store,
        subject,
        IN_TOTO_MEDIA_TYPE,
        &bytes,
        HashMap::from([(
            PREDICATE_TYPE_ANNOTATION.to_owned(),
            SLSA_PROVENANCE.to_owned(),
        )]),
    )
}
