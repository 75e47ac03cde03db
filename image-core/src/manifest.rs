//! Manifests and indexes of either format (OCI or Docker v2 schema 2),
//! kept with their raw bytes.
//!
//! A [`Manifest`] or [`Index`] is parsed from bytes into `oci-spec`'s types
//! and keeps those bytes: its [`digest`](Manifest::digest) is always the
//! digest of the bytes as stored, never of re-serialised JSON. Top-level
//! fields that `oci-spec` does not model are kept and written back, and a
//! new document is serialised through the canonical writer, so the same
//! value always has the same digest. Every descriptor digest is validated
//! with [`Digest`]'s strict rules (oci-spec alone accepts `md5:abc`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::digest::{Algorithm, Digest, DigestError};
use crate::error::{Classify, ErrorKind};
use crate::json::to_canonical_vec;
use crate::media_type::MediaType;

pub use oci_spec::image::Descriptor;

/// Why bytes are not a usable manifest, index or config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes are not JSON, or not JSON of the expected shape.
    #[error("{what} is not valid JSON of its kind")]
    Json {
        /// What was being parsed ("manifest", "index", "image config").
        what: &'static str,
        /// The JSON error, with its line and column.
        source: serde_json::Error,
    },
    /// A Docker schema 1 manifest, which this library does not support.
    #[error("Docker schema 1 manifests are not supported (schemaVersion 1); convert the image to schema 2 or OCI")]
    Schema1,
    /// A `schemaVersion` other than 2.
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(u64),
    /// The document is of another kind than expected.
    #[error("expected {expected}, found a document of media type {found:?}")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
        /// The media type (or shape) found.
        found: String,
    },
    /// A descriptor in the document has an invalid digest.
    #[error("{field} has an invalid digest {value:?}")]
    Digest {
        /// Where the descriptor sits (`config`, `layers[2]`, `manifests[0]`).
        field: String,
        /// The digest as written.
        value: String,
        /// What is wrong with it.
        source: DigestError,
    },
    /// oci-spec's builder refused the fields it was given.
    #[error("building {what}")]
    Build {
        /// What was being built ("an image manifest").
        what: &'static str,
        /// The builder's error.
        source: oci_spec::OciSpecError,
    },
    /// The JSON could not be written.
    #[error("cannot serialise {what}")]
    Serialize {
        /// What was being written.
        what: &'static str,
        /// The serialisation error.
        source: serde_json::Error,
    },
}

impl Classify for ParseError {
    fn kind(&self) -> ErrorKind {
        match self {
            ParseError::Schema1 | ParseError::SchemaVersion(_) => ErrorKind::Unsupported,
            ParseError::Digest { source, .. } => source.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl ParseError {
    /// The [`ParseError::Build`] of `what` for a builder's error.
    fn build(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ParseError {
        move |source| ParseError::Build { what, source }
    }
}

/// Checks a descriptor's digest with the strict rules and returns it.
/// Outside this crate, [`DescriptorExt::checked_digest`] does it, naming
/// the descriptor by its media type.
///
/// # Errors
/// [`ParseError::Digest`] naming `field`.
pub(crate) fn descriptor_digest(desc: &Descriptor, field: &str) -> Result<Digest, ParseError> {
    let value = desc.digest().to_string();
    value.parse().map_err(|source| ParseError::Digest {
        field: field.to_owned(),
        value,
        source,
    })
}

/// What this crate reads from an oci-spec [`Descriptor`] by its own rules,
/// so a caller holding one never handles oci-spec's digest type.
pub trait DescriptorExt {
    /// The descriptor's digest, checked with [`Digest`]'s strict rules
    /// (oci-spec accepts `md5:abc`).
    ///
    /// ```
    /// use image_core::{Descriptor, DescriptorExt, Digest, MediaType};
    ///
    /// let digest = Digest::sha256(b"layer");
    /// let d = image_core::manifest::descriptor(&MediaType::OciLayer, &digest, 5);
    /// assert_eq!(d.checked_digest().unwrap(), digest);
    /// ```
    ///
    /// # Errors
    /// [`ParseError::Digest`], naming the descriptor by its media type.
    fn checked_digest(&self) -> Result<Digest, ParseError>;
}

impl DescriptorExt for Descriptor {
    fn checked_digest(&self) -> Result<Digest, ParseError> {
        let field = format!("{} descriptor", self.media_type());
        descriptor_digest(self, &field)
    }
}

/// Builds a descriptor.
pub fn descriptor(media_type: &MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type.into(), size, digest)
}

/// The media type of a descriptor, as this crate's [`MediaType`].
pub fn descriptor_media_type(desc: &Descriptor) -> MediaType {
    MediaType::from(desc.media_type())
}

/// What [`Raw`] needs to know of the `oci-spec` type behind a [`Manifest`]
/// or an [`Index`]: how the kind is named and told apart, and which
/// descriptors it holds.
trait Kind: Clone + Serialize + DeserializeOwned {
    /// What is parsed, for errors ("manifest", "index").
    const WHAT: &'static str;
    /// The media type of a document that declares none.
    const DEFAULT_MEDIA_TYPE: MediaType;

    /// The media type set in the value, if any.
    fn declared_media_type(&self) -> Option<MediaType>;

    /// Rejects a document of another kind before it is read as `Self`, from
    /// its declared media type and its top-level fields.
    fn check_kind_before_reading(
        _declared: Option<&MediaType>,
        _object: &Map<String, Value>,
    ) -> Result<(), ParseError> {
        Ok(())
    }

    /// Rejects a declared media type of another kind once the document has
    /// been read as `Self` (so a document of the wrong shape reports that).
    fn check_kind_after_reading(_declared: Option<&MediaType>) -> Result<(), ParseError> {
        Ok(())
    }

    /// Checks every descriptor digest with the strict rules.
    fn validate_digests(&self) -> Result<(), ParseError>;
}

impl Kind for oci_spec::image::ImageManifest {
    const WHAT: &'static str = "manifest";
    const DEFAULT_MEDIA_TYPE: MediaType = MediaType::OciManifest;

    fn declared_media_type(&self) -> Option<MediaType> {
        self.media_type().as_ref().map(MediaType::from)
    }

    fn check_kind_before_reading(
        declared: Option<&MediaType>,
        object: &Map<String, Value>,
    ) -> Result<(), ParseError> {
        let found = match declared {
            Some(m) if m.is_schema1() => return Err(ParseError::Schema1),
            Some(m) if !m.is_manifest() => m.to_string(),
            None if object.contains_key("manifests") => "an index (it has \"manifests\")".into(),
            _ => return Ok(()),
        };
        Err(ParseError::WrongKind {
            expected: "an image manifest",
            found,
        })
    }

    fn validate_digests(&self) -> Result<(), ParseError> {
        descriptor_digest(self.config(), "config")?;
        for (i, l) in self.layers().iter().enumerate() {
            descriptor_digest(l, &format!("layers[{i}]"))?;
        }
        if let Some(s) = self.subject() {
            descriptor_digest(s, "subject")?;
        }
        Ok(())
    }
}

impl Kind for oci_spec::image::ImageIndex {
    const WHAT: &'static str = "index";
    const DEFAULT_MEDIA_TYPE: MediaType = MediaType::OciIndex;

    fn declared_media_type(&self) -> Option<MediaType> {
        self.media_type().as_ref().map(MediaType::from)
    }

    fn check_kind_after_reading(declared: Option<&MediaType>) -> Result<(), ParseError> {
        match declared {
            Some(m) if !m.is_index() => Err(ParseError::WrongKind {
                expected: "an image index",
                found: m.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn validate_digests(&self) -> Result<(), ParseError> {
        for (i, m) in self.manifests().iter().enumerate() {
            descriptor_digest(m, &format!("manifests[{i}]"))?;
        }
        if let Some(s) = self.subject() {
            descriptor_digest(s, "subject")?;
        }
        Ok(())
    }
}

/// A typed document with its raw bytes, its media type and the top-level
/// fields its type does not model: the whole of a [`Manifest`] or an
/// [`Index`]. `digest` is always the digest of `bytes`.
#[derive(Debug, Clone, PartialEq)]
struct Raw<T> {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: MediaType,
    value: T,
    extra: Map<String, Value>,
}

impl<T: Kind> Raw<T> {
    /// Parses bytes as stored, keeping them: the schema version, the kind,
    /// the shape, then every descriptor digest.
    fn parse(bytes: Vec<u8>) -> Result<Self, ParseError> {
        let json = |source| ParseError::Json {
            what: T::WHAT,
            source,
        };
        let object: Map<String, Value> = serde_json::from_slice(&bytes).map_err(json)?;
        check_schema(&object)?;
        let declared = media_type_field(&object);
        T::check_kind_before_reading(declared.as_ref(), &object)?;
        let value: T = serde_json::from_value(Value::Object(object.clone())).map_err(json)?;
        T::check_kind_after_reading(declared.as_ref())?;
        let modelled = match serde_json::to_value(&value) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let extra = object
            .into_iter()
            .filter(|(k, _)| !modelled.contains_key(k))
            .collect();
        value.validate_digests()?;
        let digest = Digest::sha256(&bytes);
        Ok(Raw {
            bytes,
            digest,
            media_type: declared.unwrap_or(T::DEFAULT_MEDIA_TYPE),
            value,
            extra,
        })
    }

    /// A new document, serialised canonically, of the media type set in
    /// `value` (the kind's default when none is).
    fn new(value: T) -> Result<Self, ParseError> {
        let media_type = value.declared_media_type().unwrap_or(T::DEFAULT_MEDIA_TYPE);
        Raw::build(value, Map::new(), media_type)
    }

    /// A copy with the value changed by `f`, keeping the media type and the
    /// unmodelled fields, serialised canonically.
    fn modify(&self, f: impl FnOnce(&mut T)) -> Result<Self, ParseError> {
        let mut value = self.value.clone();
        f(&mut value);
        Raw::build(value, self.extra.clone(), self.media_type.clone())
    }

    /// Serialises `value` canonically with the `extra` fields it does not
    /// set, then checks its descriptor digests.
    fn build(
        value: T,
        extra: Map<String, Value>,
        media_type: MediaType,
    ) -> Result<Self, ParseError> {
        let serialize = |source| ParseError::Serialize {
            what: T::WHAT,
            source,
        };
        let mut object = match serde_json::to_value(&value) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(source) => return Err(serialize(source)),
        };
        for (k, v) in &extra {
            object.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let bytes = to_canonical_vec(&Value::Object(object)).map_err(serialize)?;
        value.validate_digests()?;
        let digest = Digest::sha256(&bytes);
        Ok(Raw {
            bytes,
            digest,
            media_type,
            value,
            extra,
        })
    }

    /// The same document keyed by its digest in `algorithm` (hashed again
    /// only when that is not the algorithm it is keyed by).
    fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        if self.digest.algorithm() != algorithm {
            self.digest = Digest::of_bytes(algorithm, &self.bytes);
        }
        self
    }

    /// A descriptor of the document (media type, digest, size).
    fn descriptor(&self) -> Descriptor {
        descriptor(&self.media_type, &self.digest, self.bytes.len() as u64)
    }
}

fn check_schema(object: &Map<String, Value>) -> Result<(), ParseError> {
    match object.get("schemaVersion").and_then(Value::as_u64) {
        Some(1) => Err(ParseError::Schema1),
        Some(2) | None => Ok(()),
        Some(v) => Err(ParseError::SchemaVersion(v)),
    }
}

fn media_type_field(object: &Map<String, Value>) -> Option<MediaType> {
    object
        .get("mediaType")
        .and_then(Value::as_str)
        .map(MediaType::from)
}

/// An image manifest (OCI or Docker v2 schema 2) with its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    raw: Raw<oci_spec::image::ImageManifest>,
}

impl Manifest {
    /// Parses a manifest from its bytes, as stored.
    ///
    /// # Errors
    /// [`ParseError`] for bytes that are not a schema 2 manifest (schema 1 is
    /// recognised and rejected) or hold an invalid digest.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Manifest, ParseError> {
        Raw::parse(bytes.into()).map(|raw| Manifest { raw })
    }

    /// Builds a new manifest, serialised canonically. Its media type is the
    /// one set in `inner` (OCI when none is).
    ///
    /// # Errors
    /// [`ParseError`] when a descriptor digest is invalid or the value cannot
    /// be serialised.
    pub fn new(inner: oci_spec::image::ImageManifest) -> Result<Manifest, ParseError> {
        Raw::new(inner).map(|raw| Manifest { raw })
    }

    /// Builds a new image manifest of `media_type` (OCI's or Docker's v2
    /// schema 2 manifest type) for a config and its layers (bottom first),
    /// with `annotations`, serialised canonically: the one manifest builder
    /// of the family (loading a docker-save archive, appending layers, and
    /// whatever builds an image next).
    ///
    /// # Errors
    /// [`ParseError::WrongKind`] when `media_type` is not a manifest type;
    /// as [`Manifest::new`] for an invalid descriptor digest.
    pub fn build(
        media_type: &MediaType,
        config: Descriptor,
        layers: Vec<Descriptor>,
        annotations: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Manifest, ParseError> {
        if !media_type.is_manifest() {
            return Err(ParseError::WrongKind {
                expected: "an image manifest media type",
                found: media_type.to_string(),
            });
        }
        let mut inner = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(oci_spec::image::MediaType::from(media_type.as_str()))
            .config(config)
            .layers(layers)
            .build()
            .map_err(ParseError::build("an image manifest"))?;
        inner.set_annotations(annotations);
        Manifest::new(inner)
    }

    /// A copy with `inner` changed by `f`, keeping the unmodelled fields, serialised canonically.
    ///
    /// # Errors
    /// As [`Manifest::new`].
    pub fn modify(
        &self,
        f: impl FnOnce(&mut oci_spec::image::ImageManifest),
    ) -> Result<Manifest, ParseError> {
        self.raw.modify(f).map(|raw| Manifest { raw })
    }

    /// The bytes as stored; the digest is of these.
    pub fn raw(&self) -> &[u8] {
        &self.raw.bytes
    }

    /// The digest of the raw bytes: sha256, unless keyed by another
    /// algorithm with [`with_algorithm`](Manifest::with_algorithm).
    pub fn digest(&self) -> &Digest {
        &self.raw.digest
    }

    /// The same manifest keyed by its digest in `algorithm`: what a
    /// manifest read through a descriptor is, whose digest is of that
    /// algorithm (OCI allows sha512), so that it is stored, pushed and
    /// found under the digest its parent names. Hashes again only when
    /// `algorithm` is not the one the manifest is keyed by.
    pub fn with_algorithm(self, algorithm: Algorithm) -> Manifest {
        Manifest {
            raw: self.raw.with_algorithm(algorithm),
        }
    }

    /// The manifest's media type: the declared one, or OCI when none is declared.
    pub fn media_type(&self) -> &MediaType {
        &self.raw.media_type
    }

    /// A descriptor of this manifest (media type, digest, size).
    pub fn descriptor(&self) -> Descriptor {
        self.raw.descriptor()
    }

    /// The parsed manifest.
    pub fn inner(&self) -> &oci_spec::image::ImageManifest {
        &self.raw.value
    }

    /// The config descriptor.
    pub fn config(&self) -> &Descriptor {
        self.raw.value.config()
    }

    /// The config digest (validated at parse time): the image ID.
    pub fn config_digest(&self) -> Digest {
        descriptor_digest(self.raw.value.config(), "config").unwrap_or_else(|_| Digest::sha256(b""))
    }

    /// The layer descriptors, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        self.raw.value.layers()
    }

    /// The layer digests (validated at parse time), bottom first.
    pub fn layer_digests(&self) -> Vec<Digest> {
        self.layers()
            .iter()
            .filter_map(|l| descriptor_digest(l, "layer").ok())
            .collect()
    }

    /// The OCI 1.1 `artifactType`, when set.
    pub fn artifact_type(&self) -> Option<MediaType> {
        self.raw.value.artifact_type().as_ref().map(MediaType::from)
    }

    /// The OCI 1.1 `subject` (the manifest this one refers to), when set.
    pub fn subject(&self) -> Option<&Descriptor> {
        self.raw.value.subject().as_ref()
    }

    /// Top-level fields that oci-spec does not model, kept verbatim.
    pub fn extra_fields(&self) -> &Map<String, Value> {
        &self.raw.extra
    }
}

/// An image index or Docker manifest list with its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    raw: Raw<oci_spec::image::ImageIndex>,
}

impl Index {
    /// Parses an index from its bytes, as stored.
    ///
    /// # Errors
    /// [`ParseError`] for bytes that are not an index or hold an invalid digest.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Index, ParseError> {
        Raw::parse(bytes.into()).map(|raw| Index { raw })
    }

    /// Builds a new index, serialised canonically.
    ///
    /// # Errors
    /// [`ParseError`] when a descriptor digest is invalid.
    pub fn new(inner: oci_spec::image::ImageIndex) -> Result<Index, ParseError> {
        Raw::new(inner).map(|raw| Index { raw })
    }

    /// A copy with `inner` changed by `f`, keeping the unmodelled fields.
    ///
    /// # Errors
    /// As [`Index::new`].
    pub fn modify(
        &self,
        f: impl FnOnce(&mut oci_spec::image::ImageIndex),
    ) -> Result<Index, ParseError> {
        self.raw.modify(f).map(|raw| Index { raw })
    }

    /// The bytes as stored.
    pub fn raw(&self) -> &[u8] {
        &self.raw.bytes
    }

    /// The digest of the raw bytes: sha256, unless keyed by another
    /// algorithm with [`with_algorithm`](Index::with_algorithm).
    pub fn digest(&self) -> &Digest {
        &self.raw.digest
    }

    /// The same index keyed by its digest in `algorithm` (see
    /// [`Manifest::with_algorithm`]).
    pub fn with_algorithm(self, algorithm: Algorithm) -> Index {
        Index {
            raw: self.raw.with_algorithm(algorithm),
        }
    }

    /// The declared media type, or OCI's when none is declared.
    pub fn media_type(&self) -> &MediaType {
        &self.raw.media_type
    }

    /// A descriptor of this index.
    pub fn descriptor(&self) -> Descriptor {
        self.raw.descriptor()
    }

    /// The parsed index.
    pub fn inner(&self) -> &oci_spec::image::ImageIndex {
        &self.raw.value
    }

    /// The descriptors of the manifests (or nested indexes).
    pub fn manifests(&self) -> &[Descriptor] {
        self.raw.value.manifests()
    }

    /// Top-level fields that oci-spec does not model, kept verbatim.
    pub fn extra_fields(&self) -> &Map<String, Value> {
        &self.raw.extra
    }
}

/// A manifest or an index, as found behind a descriptor or a tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// An image manifest (boxed, as both documents are large).
    Manifest(Box<Manifest>),
    /// An index or manifest list.
    Index(Box<Index>),
}

impl Document {
    /// Parses either kind, told by the media type when known (from the
    /// descriptor or the document itself), by its shape otherwise.
    ///
    /// # Errors
    /// [`ParseError`]: schema 1, unknown kind, bad JSON, invalid digests.
    pub fn from_bytes(
        bytes: impl Into<Vec<u8>>,
        hint: Option<&MediaType>,
    ) -> Result<Document, ParseError> {
        let bytes = bytes.into();
        let probe: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|source| ParseError::Json {
                what: "manifest or index",
                source,
            })?;
        check_schema(&probe)?;
        let declared = media_type_field(&probe).or_else(|| hint.cloned());
        let is_index = match &declared {
            Some(m) if m.is_index() => true,
            Some(m) if m.is_manifest() => false,
            Some(m) if m.is_schema1() => return Err(ParseError::Schema1),
            Some(m) => {
                return Err(ParseError::WrongKind {
                    expected: "a manifest or an index",
                    found: m.to_string(),
                })
            }
            None => probe.contains_key("manifests"),
        };
        if is_index {
            Index::from_bytes(bytes).map(|i| Document::Index(Box::new(i)))
        } else {
            Manifest::from_bytes(bytes).map(|m| Document::Manifest(Box::new(m)))
        }
    }

    /// The raw bytes.
    pub fn raw(&self) -> &[u8] {
        match self {
            Document::Manifest(m) => m.raw(),
            Document::Index(i) => i.raw(),
        }
    }

    /// The digest of the raw bytes (sha256 unless keyed otherwise).
    pub fn digest(&self) -> &Digest {
        match self {
            Document::Manifest(m) => m.digest(),
            Document::Index(i) => i.digest(),
        }
    }

    /// The same document keyed by its digest in `algorithm` (see
    /// [`Manifest::with_algorithm`]).
    pub fn with_algorithm(self, algorithm: Algorithm) -> Document {
        match self {
            Document::Manifest(m) => Document::Manifest(Box::new(m.with_algorithm(algorithm))),
            Document::Index(i) => Document::Index(Box::new(i.with_algorithm(algorithm))),
        }
    }

    /// The media type.
    pub fn media_type(&self) -> &MediaType {
        match self {
            Document::Manifest(m) => m.media_type(),
            Document::Index(i) => i.media_type(),
        }
    }

    /// A descriptor of this document.
    pub fn descriptor(&self) -> Descriptor {
        match self {
            Document::Manifest(m) => m.descriptor(),
            Document::Index(i) => i.descriptor(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder's failure is its own variant carrying the builder's error
    /// as its source, not the builder's text posing as a media type.
    #[test]
    fn a_builder_failure_keeps_its_source() {
        use std::error::Error as _;
        let e = oci_spec::image::ImageManifestBuilder::default()
            .build()
            .map_err(ParseError::build("an image manifest"))
            .unwrap_err();
        assert!(matches!(e, ParseError::Build { .. }), "{e:?}");
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<oci_spec::OciSpecError>().is_some());
        assert_eq!(e.to_string(), "building an image manifest");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    const DOCKER_MANIFEST: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1472,
      "digest": "sha256:a9286defaba7b3a519d585ba0e37d0b2cbee74ebfe590960b0b1d6a5e97d1e1d"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 772999,
         "digest": "sha256:50e8d59317eb665383b2ef4d9434aeaa394dcd6f54b96bb7810fdde583e9c2d1"
      }
   ],
   "x-custom": {"kept": [1, 2]}
}"#;

    #[test]
    fn docker_manifest_keeps_bytes_and_unknown_fields() {
        let m = Manifest::from_bytes(DOCKER_MANIFEST).expect("parses");
        assert_eq!(m.raw(), DOCKER_MANIFEST.as_bytes());
        assert_eq!(m.digest(), &Digest::sha256(DOCKER_MANIFEST.as_bytes()));
        assert_eq!(m.media_type(), &MediaType::DockerManifest);
        assert_eq!(
            m.config_digest().to_string(),
            "sha256:a9286defaba7b3a519d585ba0e37d0b2cbee74ebfe590960b0b1d6a5e97d1e1d"
        );
        assert_eq!(
            descriptor_media_type(&m.layers()[0]),
            MediaType::DockerLayerGzip
        );
        assert!(m.extra_fields().contains_key("x-custom"));
        let m2 = m
            .modify(|inner| {
                inner.set_annotations(Some(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".to_string(), "1".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                ));
            })
            .expect("modify");
        let text = String::from_utf8(m2.raw().to_vec()).expect("utf8");
        assert!(
            text.contains(r#""annotations":{"a":"1","b":"2"}"#),
            "{text}"
        );
        assert!(text.contains(r#""x-custom":{"kept":[1,2]}"#), "{text}");
        let again = Manifest::from_bytes(m2.raw().to_vec()).expect("reparse");
        assert_eq!(again.inner(), m2.inner());
        assert_eq!(again.media_type(), &MediaType::DockerManifest);
    }

    #[test]
    fn rejects_schema1_bad_digests_and_wrong_kinds() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = Manifest::from_bytes(s1).expect_err("schema 1");
        assert!(matches!(e, ParseError::Schema1));
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(matches!(
            Document::from_bytes(s1, None),
            Err(ParseError::Schema1)
        ));

        let md5 = DOCKER_MANIFEST.replace(
            "sha256:50e8d59317eb665383b2ef4d9434aeaa394dcd6f54b96bb7810fdde583e9c2d1",
            "md5:abc",
        );
        let e = Manifest::from_bytes(md5).expect_err("md5");
        assert!(
            matches!(&e, ParseError::Digest { field, .. } if field == "layers[0]"),
            "{e}"
        );

        let idx = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(
            Manifest::from_bytes(idx),
            Err(ParseError::WrongKind { .. })
        ));
        assert!(matches!(
            Document::from_bytes(idx, None),
            Ok(Document::Index(_))
        ));
        assert!(matches!(
            Manifest::from_bytes("[1,2]"),
            Err(ParseError::Json { .. })
        ));
        assert!(matches!(
            Document::from_bytes(r#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            Err(ParseError::WrongKind { .. })
        ));
    }

    #[test]
    fn index_checks_kind_and_keeps_unknown_fields() {
        let as_manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#;
        assert!(matches!(
            Index::from_bytes(as_manifest),
            Err(ParseError::WrongKind { .. })
        ));
        // The shape is checked before the declared kind.
        assert!(matches!(
            Index::from_bytes(DOCKER_MANIFEST),
            Err(ParseError::Json { what: "index", .. })
        ));

        let text = r#"{"schemaVersion":2,"manifests":[],"x-custom":true}"#;
        let idx = Index::from_bytes(text).expect("parses");
        assert_eq!(idx.raw(), text.as_bytes());
        assert_eq!(idx.digest(), &Digest::sha256(text.as_bytes()));
        assert_eq!(idx.media_type(), &MediaType::OciIndex);
        let changed = idx
            .modify(|i| {
                i.set_annotations(Some([("a".into(), "1".into())].into()));
            })
            .expect("modify");
        assert_eq!(changed.digest(), &Digest::sha256(changed.raw()));
        assert_eq!(changed.extra_fields(), idx.extra_fields());
        assert_eq!(changed.media_type(), &MediaType::OciIndex);
        let text = String::from_utf8(changed.raw().to_vec()).expect("utf8");
        assert!(text.contains(r#""x-custom":true"#), "{text}");
        assert_eq!(changed.descriptor().size(), changed.raw().len() as u64);
    }

    /// A document keyed by sha512 has the sha512 digest of its bytes in
    /// its digest and descriptor; its bytes and value are unchanged.
    #[test]
    fn a_document_keyed_by_sha512_has_its_sha512_digest() {
        let doc = Document::from_bytes(DOCKER_MANIFEST, None).expect("parses");
        let keyed = doc.clone().with_algorithm(Algorithm::Sha512);
        let want = Digest::of_bytes(Algorithm::Sha512, DOCKER_MANIFEST.as_bytes());
        assert_eq!(keyed.digest(), &want);
        assert_eq!(keyed.descriptor().digest().to_string(), want.to_string());
        assert_eq!(keyed.raw(), doc.raw());
        assert_eq!(keyed.media_type(), doc.media_type());
        let back = keyed.with_algorithm(Algorithm::Sha256);
        assert_eq!(back, doc);
        let text = r#"{"schemaVersion":2,"manifests":[]}"#;
        let idx = Index::from_bytes(text)
            .expect("parses")
            .with_algorithm(Algorithm::Sha512);
        assert_eq!(
            idx.digest(),
            &Digest::of_bytes(Algorithm::Sha512, text.as_bytes())
        );
    }

    #[test]
    fn index_with_artifact_fields() {
        let d = "sha256:a9286defaba7b3a519d585ba0e37d0b2cbee74ebfe590960b0b1d6a5e97d1e1d";
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"application/vnd.example+type","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":7}}}}"#
        );
        let idx = Index::from_bytes(text.clone()).expect("parses");
        assert_eq!(idx.manifests().len(), 1);
        assert!(idx.inner().subject().is_some());
        let rebuilt = Index::new(idx.inner().clone()).expect("new");
        let reparsed = Index::from_bytes(rebuilt.raw().to_vec()).expect("reparse");
        assert_eq!(reparsed.inner(), idx.inner());
        assert_eq!(
            Index::new(idx.inner().clone()).expect("again").raw(),
            rebuilt.raw()
        );
    }

    #[test]
    fn build_makes_either_format_and_refuses_other_types() {
        let config = descriptor(&MediaType::OciConfig, &Digest::sha256(b"{}"), 2);
        let layer = descriptor(&MediaType::OciLayerGzip, &Digest::sha256(b"l"), 1);
        let annotations: std::collections::HashMap<String, String> =
            [("k".to_owned(), "v".to_owned())].into();
        let m = Manifest::build(
            &MediaType::OciManifest,
            config.clone(),
            vec![layer.clone()],
            Some(annotations.clone()),
        )
        .expect("oci");
        assert_eq!(*m.media_type(), MediaType::OciManifest);
        assert_eq!(m.layers(), std::slice::from_ref(&layer));
        assert_eq!(m.inner().annotations().as_ref(), Some(&annotations));
        // Canonical: parsing the bytes gives the same digest and value.
        let back = Manifest::from_bytes(m.raw().to_vec()).expect("parse");
        assert_eq!(back.digest(), m.digest());
        let d = Manifest::build(&MediaType::DockerManifest, config.clone(), vec![], None)
            .expect("docker");
        assert_eq!(*d.media_type(), MediaType::DockerManifest);
        assert!(d.inner().annotations().is_none());
        for wrong in [
            MediaType::OciIndex,
            MediaType::OciLayer,
            MediaType::OciConfig,
        ] {
            assert!(matches!(
                Manifest::build(&wrong, config.clone(), vec![], None),
                Err(ParseError::WrongKind { .. })
            ));
        }
    }
}
